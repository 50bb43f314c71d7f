"""Replaying a slice of the archived log: as JSON lines, into a topic, or as typed events.

Owns ``modelog replay`` (:mod:`modelog.cli.replay` is its command line) and the
SDK's :func:`replay`. It reads the DuckDB ledger (``events``) through
:class:`~modelog.store.reader.Reader` (the projector's query server, else the
file read-only) and imports ``modelog.config``, ``modelog.models``,
``modelog.store`` and :mod:`modelog.streams.kafka`.

A slice is a time range on event time (``since`` inclusive, ``until``
exclusive; ISO dates or times, naive = UTC, or relative to now such as ``2h``,
``30m``, ``7d``) and filters: stream families or topics, event types, model,
model version, aggregate. It comes back ordered by event time, then id -- the
same order for the same slice every time -- in pages (keyset on ``(time, id)``,
so a long replay costs no more per page than a short one). Every filter is a
bound SQL parameter; names are checked against the catalogue first, and a bad
one is a :class:`~modelog.streams.errors.ReplayError` naming the option, the
value and the rule.

Three deliveries:

* :func:`write_lines` -- the ledger's canonical JSON of each event, one per
  line (what the ledger holds, byte for byte);
* :func:`to_topic` -- into a named topic of a broker (this one or another,
  e.g. a staging deployment's), keyed by aggregate, with the event time as the
  record timestamp and the original ids in the payloads; a topic that already
  holds records is refused unless ``append``;
* :func:`replay` -- an iterator of typed :class:`~modelog.models.events.Event`
  objects, decoded (and upcast) by the codec.

Each takes ``rate`` (events per second at most) and ``limit``; the command line
shows a progress bar on stderr (never on stdout, where the JSON goes).

Examples
--------
>>> now = dt.datetime(2026, 3, 3, 12, tzinfo=dt.UTC)
>>> parse_time("2h", option="--since", now=now).isoformat()
'2026-03-03T10:00:00+00:00'
>>> parse_time("2026-03-01", option="--since").isoformat()
'2026-03-01T00:00:00+00:00'
>>> parse_time("yesterday", option="--since")
Traceback (most recent call last):
...
modelog.streams.errors.ReplayError: --since='yesterday' is not a time: use an ISO date or time \
(2026-03-01, 2026-03-01T12:00:00Z) or an age such as 90s, 30m, 2h, 7d, 2w
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from modelog.config import Settings
from modelog.models import codec
from modelog.models.events import CATALOGUE, Event
from modelog.store.reader import Reader
from modelog.streams.errors import ReplayError
from modelog.streams.kafka import new_admin, new_consumer, new_producer
from modelog.streams.topics import STREAMS, Topics

__all__ = ["Pacer", "ReplayQuery", "parse_time", "replay", "stderr_progress", "to_topic",
           "write_lines"]

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PAGE = 10_000
_MAX_NAME = 200

Progress = Callable[[str, int, int], Any]
"""Called with ``(what, done, total)``."""


def parse_time(text: str, *, option: str, now: dt.datetime | None = None) -> dt.datetime:
    """An aware time from ISO text (naive = UTC) or an age before ``now`` (``2h``, ``7d``)."""
    age = _AGE.match(text)
    if age:
        now = now or dt.datetime.now(dt.UTC)
        return now - dt.timedelta(seconds=float(age.group(1)) * _UNITS[age.group(2)])
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(
            f"{option}={text!r} is not a time: use an ISO date or time (2026-03-01, "
            "2026-03-01T12:00:00Z) or an age such as 90s, 30m, 2h, 7d, 2w") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _name(option: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip() or len(value) > _MAX_NAME or any(ord(c) < 32 for c in value):
        raise ReplayError(f"{option}={value!r} is not a name: it must be 1 to {_MAX_NAME} "
                          "printable characters")
    return value


@dataclasses.dataclass(frozen=True)
class ReplayQuery:
    """A validated slice of the ledger; build it with :meth:`build`.

    Examples
    --------
    >>> q = ReplayQuery.build(Settings(), topics=["serving"], model="churn'; drop table x")
    >>> sorted(q.types)
    ['LabelObserved', 'PredictionMade']
    >>> sql, params = q.where()
    >>> "drop" in sql, params[-1]
    (False, "churn'; drop table x")
    >>> ReplayQuery.build(Settings(), types=["Nope"])
    Traceback (most recent call last):
    ...
    modelog.streams.errors.ReplayError: --type='Nope' is not an event type; known types: \
AlertDelivered, AlertSubscriptionCreated, ...
    """

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    types: frozenset[str] = frozenset()
    model: str | None = None
    version: int | None = None
    aggregate: str | None = None
    limit: int | None = None

    @classmethod
    def build(cls, settings: Settings, *, since: str | dt.datetime | None = None,
              until: str | dt.datetime | None = None, topics: Sequence[str] = (),
              types: Sequence[str] = (), model: str | None = None,
              version: int | None = None, aggregate: str | None = None,
              limit: int | None = None, now: dt.datetime | None = None) -> ReplayQuery:
        """Check every filter (raises :class:`ReplayError` naming the bad one)."""
        now = now or dt.datetime.now(dt.UTC)
        start = since if not isinstance(since, str) else parse_time(since, option="--since",
                                                                     now=now)
        end = until if not isinstance(until, str) else parse_time(until, option="--until",
                                                                   now=now)
        for option, value in (("--since", start), ("--until", end)):
            if value is not None and value.tzinfo is None:
                raise ReplayError(f"{option}={value.isoformat()} has no time zone: give an "
                                  "aware datetime (or ISO text, naive = UTC)")
        if start is not None and end is not None and start >= end:
            raise ReplayError(f"--since={start.isoformat()} is not before "
                              f"--until={end.isoformat()}: the range is empty")
        wanted: set[str] = set()
        if topics:
            names = Topics.from_settings(settings)
            families = {s: s for s in STREAMS} | {names.name(s): s for s in STREAMS}
            for topic in topics:
                if topic not in families:
                    raise ReplayError(
                        f"--topic={topic!r} is not a topic of this deployment; use one of "
                        f"{', '.join(STREAMS)} (or its name with the prefix, e.g. "
                        f"{names.serving})")
                wanted |= {n for n, c in CATALOGUE.items() if c.stream == families[topic]}
        for kind in types:
            if kind not in CATALOGUE:
                raise ReplayError(f"--type={kind!r} is not an event type; known types: "
                                  f"{', '.join(sorted(CATALOGUE))}")
        if types:
            wanted = set(types) if not topics else wanted & set(types)
            if not wanted:
                raise ReplayError(f"--type={', '.join(types)} matches no event of --topic="
                                  f"{', '.join(topics)}: the selection is empty")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                    or version < 1):
            raise ReplayError(f"--version={version!r} is not a model version: it must be a "
                              "whole number >= 1")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ReplayError(f"--limit={limit!r} must be a whole number >= 1")
        return cls(start, end, frozenset(wanted), _name("--model", model), version,
                   _name("--aggregate", aggregate), limit)

    def where(self) -> tuple[str, list[Any]]:
        """The ``where`` clause and its bound parameters (nothing of the input in the SQL)."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.since is not None:
            clauses.append("time >= ?::TIMESTAMPTZ")
            params.append(self.since.isoformat())
        if self.until is not None:
            clauses.append("time < ?::TIMESTAMPTZ")
            params.append(self.until.isoformat())
        if self.types:
            clauses.append(f"type in ({', '.join('?' for _ in self.types)})")
            params += sorted(self.types)
        if self.version is not None:
            clauses.append("try_cast(json_extract_string(payload, '$.model_version') "
                           "as BIGINT) = ?")
            params.append(self.version)
        if self.aggregate is not None:
            clauses.append("aggregate = ?")
            params.append(self.aggregate)
        if self.model is not None:
            clauses.append("json_extract_string(payload, '$.model') = ?")
            params.append(self.model)
        return (" and ".join(clauses) or "true"), params

    def describe(self) -> str:
        """The slice in words (for "no events" messages)."""
        parts = [f"since {self.since.isoformat()}" if self.since else "",
                 f"until {self.until.isoformat()}" if self.until else "",
                 f"model {self.model}" if self.model else "",
                 f"version {self.version}" if self.version else "",
                 f"aggregate {self.aggregate}" if self.aggregate else "",
                 f"types {', '.join(sorted(self.types))}" if self.types else ""]
        return ", ".join(p for p in parts if p) or "the whole ledger"

    def count(self, reader: Reader) -> int:
        """How many events the slice holds (at most ``limit``)."""
        where, params = self.where()
        n = int(reader.query(f"select count(*) from events where {where}",
                             params).column(0).to_pylist()[0])
        return n if self.limit is None else min(n, self.limit)

    def rows(self, reader: Reader, page: int = _PAGE) -> Iterator[tuple[str, str, int, str]]:
        """``(id, aggregate, event time in µs, canonical JSON)`` in (time, id) order."""
        where, params = self.where()
        after: tuple[int, str] | None = None
        left = self.limit
        while left is None or left > 0:
            size = page if left is None else min(page, left)
            keyset = "" if after is None else " and (epoch_us(time), id) > (?, ?)"
            table = reader.query(
                "select id, aggregate, epoch_us(time) as us, payload from events "
                f"where ({where}){keyset} order by time, id limit {size}",
                params + ([] if after is None else list(after)))
            if table.num_rows == 0:
                return
            ids, aggregates, stamps, payloads = (table.column(i).to_pylist() for i in range(4))
            yield from zip(ids, aggregates, stamps, (str(p) for p in payloads), strict=True)
            after = (int(stamps[-1]), str(ids[-1]))
            if left is not None:
                left -= table.num_rows
            if table.num_rows < size:
                return


class Pacer:
    """At most ``rate`` events per second (``None`` or ``0``: no limit).

    Examples
    --------
    >>> p = Pacer(None)
    >>> p.tick(); p.count
    1
    """

    def __init__(self, rate: float | None) -> None:
        if rate is not None and not rate >= 0:
            raise ReplayError(f"--rate={rate!r} must be a number of events per second >= 0 "
                              "(0: as fast as possible)")
        self.rate = rate or None
        self.count = 0
        self._start = time.monotonic()

    def tick(self) -> None:
        """Count one event; sleep first if it would come too early."""
        if self.rate is not None:
            ahead = self._start + self.count / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        self.count += 1


def _paced(query: ReplayQuery, settings: Settings, rate: float | None,
           progress: Progress | None, what: str) -> Iterator[tuple[str, str, int, str]]:
    reader = Reader(settings)
    total = query.count(reader) if progress is not None else 0
    pacer = Pacer(rate)
    for row in query.rows(reader):
        pacer.tick()
        yield row
        if progress is not None and (pacer.count % 1000 == 0 or pacer.count == total):
            progress(what, pacer.count, total)


def replay(settings: Settings, *, since: str | dt.datetime | None = None,
           until: str | dt.datetime | None = None, topics: Sequence[str] = (),
           types: Sequence[str] = (), model: str | None = None, version: int | None = None,
           aggregate: str | None = None, limit: int | None = None,
           rate: float | None = None) -> Iterator[Event]:
    """The archived events of a slice as typed events, by event time then id (the SDK's replay).

    Example: ``for ev in replay(settings, since="2h", model="churn", types=["PredictionMade"])``.
    Raises :class:`~modelog.streams.errors.ReplayError` on a bad filter (before yielding).
    """
    query = ReplayQuery.build(settings, since=since, until=until, topics=topics, types=types,
                              model=model, version=version, aggregate=aggregate, limit=limit)
    return (codec.decode(payload.encode())
            for _id, _agg, _us, payload in _paced(query, settings, rate, None, "replay"))


def write_lines(settings: Settings, query: ReplayQuery, out: IO[str], *,
                rate: float | None = None, progress: Progress | None = None) -> int:
    """Write the slice as JSON lines (the ledger's canonical JSON); how many were written."""
    n = 0
    for _id, _agg, _us, payload in _paced(query, settings, rate, progress, "events"):
        out.write(payload)
        out.write("\n")
        n += 1
    out.flush()
    return n


def to_topic(settings: Settings, query: ReplayQuery, topic: str, *, broker: str | None = None,
             append: bool = False, rate: float | None = None,
             progress: Progress | None = None) -> int:
    """Produce the slice into ``topic`` (of ``broker``, default this deployment's).

    Records are keyed by aggregate with the event time as timestamp; the payload is the
    canonical JSON (ids kept). A topic holding records is refused unless ``append``;
    a missing one is created with ``settings.partitions`` partitions.
    """
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", topic):
        raise ReplayError(f"--to-topic={topic!r} is not a Kafka topic name: 1 to 249 "
                          "letters, digits, '.', '_' or '-'")
    target = settings.replace(broker=broker) if broker else settings
    held = _records_in(target, topic)
    if held and not append:
        raise ReplayError(f"--to-topic={topic} already holds records on "
                          f"{target.bootstrap_servers}; replay into an empty topic, or pass "
                          "--append to add to it")
    producer = new_producer(target, client_id="modelog-replay", linger_ms=20, bulk=True)
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    n = 0
    for _id, aggregate, us, payload in _paced(query, settings, rate, progress, topic):
        while True:
            try:
                producer.produce(topic, payload.encode(), str(aggregate).encode(),
                                 timestamp=int(us) // 1000, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        if n % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining or failures:
        raise ReplayError(f"{remaining} of {n} replayed events were not acknowledged by "
                          f"{target.bootstrap_servers} ({failures[0] if failures else 'timeout'})"
                          f"; check the broker and replay again with --append")
    return n


def _records_in(settings: Settings, topic: str) -> int:
    """Whether ``topic`` holds records (0: none), creating it when missing.

    The count is a lower bound: some brokers (Tansu) under-report the end of a batch.
    """
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    consumer = new_consumer(settings, client_id="modelog-replay-probe")
    try:
        md = consumer.list_topics(timeout=10).topics
        if topic not in md or not md[topic].partitions:
            admin = new_admin(settings)
            futures = admin.create_topics([NewTopic(topic, settings.partitions,
                                                    settings.replication)])
            with contextlib.suppress(Exception):  # created meanwhile: fine
                futures[topic].result(15)
            return 0
        return sum(max(high - low, 0) for low, high in (
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in md[topic].partitions))
    finally:
        consumer.close()


@contextlib.contextmanager
def stderr_progress(label: str, *, enabled: bool = True) -> Iterator[Progress]:
    """A progress bar on stderr (when it is a terminal) fed by ``(what, done, total)`` calls."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda what, done, total: None
        return
    with Bar("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
             TimeRemainingColumn(), console=console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(f"{label} {what}", total=total)
            bar.update(tasks[what], completed=done, total=max(total, done))

        yield update
