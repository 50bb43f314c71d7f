"""The durable archive of the log, and refilling a fresh broker from it.

Owns :func:`restore_to_broker` (``modelog archive restore``, and the first step
of ``modelog up`` with the embedded broker). Imports ``modelog.config``,
``modelog.models``, ``modelog.store`` and :mod:`modelog.streams.kafka`.

The embedded broker keeps everything in memory: when it restarts, the log is
gone, but every event it carried that the projector had recorded is still in
the DuckDB ledger (``events``, and ``dead_letters``). :func:`restore_to_broker`
writes them back into the empty topics of a fresh broker, before any service
starts, so the log as consumers see it is complete again:

* **Everything, within the retention.** Every stream family is refilled,
  serving traffic included. ``MODELOG_RESTORE_RETENTION`` (days, default 7;
  ``0`` = everything) bounds the traffic: predictions, labels and the
  monitoring outputs derived from them (alerts, stats, comparisons) projected
  longer ago are left in the ledger (views, ``modelog replay``) but not put back
  on the broker. Everything else -- datasets, runs, the registry and its
  commands, monitor/retrain/promotion configuration, subscriptions -- is
  refilled whatever its age: it is state, not traffic.
* **Original per-partition order.** Each event goes back to the partition it
  was read from, in the order the projector recorded it: ``(projected_at,
  offset, id)``. ``projected_at`` orders the generations (a refilled event is
  never recorded again, so what a later broker carried was projected later),
  ``offset`` the records within one. Payloads are the ledger's canonical bytes
  (re-encoded through the codec only when the schema moved on), keys are the
  aggregates, event ids and times are unchanged. The producer batches (lz4,
  large queues): 200,000 serving events refill in ~3 s on a 2-core machine.
* **Offsets are not reproduced, they are translated.** A fresh topic numbers
  from 0, and the refill leaves out what is not an event (records that were
  dead-lettered), what the ledger holds once (a record published twice keeps
  the first offset) and traffic beyond the retention -- so an event's offset in
  the refilled broker may be smaller than the one in the ledger (the ledger
  keeps the offset of the broker that first carried it). Who depends on
  offsets:

  - *the monitoring worker*: its per-partition state snapshots
    (:class:`~modelog.store.partition_state.PartitionSnapshots`) record the
    positions they end at, and the consumer group's committed positions lived
    in the lost broker. Each snapshot also records the id of the last event it
    processed per topic (:class:`~modelog.streams.worker.RecordRouter`); the
    refill finds that event in the refilled partition and re-signs the
    snapshot with the position just after it, and commits the same positions
    for the worker's group. The worker then restores the snapshot and carries
    on from there: no warm-up again, no detection again. What it processed
    after its last snapshot (at most a few seconds) is processed again and
    published with the same deterministic ids, which every consumer drops.
    A snapshot whose last event is not in the ledger (processed, not yet
    projected, lost with the broker) continues after everything refilled.
  - *the projector, alert delivery, the retrainer*: they keep their positions
    with the broker's cluster id; a fresh broker has a new one, so they read
    the refilled topics from the beginning and drop every event by id (the
    ledger's primary key: a refilled event is never recorded twice).
  - *dead letters* are refilled whole (no retention) in offset order, so the
    dead-letter topic's offsets, which key the ``dead_letters`` table, come
    out the same.
  - *online learners* remember how far they learned by serving offset; where a
    serving partition's numbering shrank (retention, dropped duplicates) a
    restored learner skips that many new records. Keep the retention at 0
    when online learners matter.

* **What is lost.** Events that were on the broker but not yet projected when
  it died (stopped or crashed) exist nowhere else: the exposure is the
  projector's lag (normally under a second). ``modelog up`` refills before it
  starts any service, and its children are stopped together, so nothing is
  written to a broker no projector reads.

Topics that already hold records are left alone (the broker kept its log, or
was refilled before), so calling this on every start is safe.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from modelog.config import Settings
from modelog.models import codec
from modelog.models.deadletter import dead_letter_headers
from modelog.models.events import CATALOGUE
from modelog.store.errors import DatabaseBusyError, NoDataError, StoreError
from modelog.store.partition_state import PartitionSnapshots
from modelog.store.reader import Reader
from modelog.store.worker_key import worker_key
from modelog.streams.kafka import new_consumer, new_producer
from modelog.streams.topics import STREAMS, Topics

__all__ = ["DEFAULT_STREAMS", "RETAINED_TYPES", "RestoreReport", "restore_to_broker",
           "wait_until_projected"]

log = logging.getLogger("modelog.archive")

DEFAULT_STREAMS: tuple[str, ...] = STREAMS
"""Stream families restored by default: all of them. The registry commands come along:
a registry answer counts only with its command (:mod:`modelog.models.registry_fold`),
and the registry worker, re-reading them, finds each one answered already."""

RETAINED_TYPES: frozenset[str] = frozenset(
    [name for name, cls in CATALOGUE.items() if cls.stream == "serving"]
    + ["DriftDetected", "DriftResolved", "AnomalyDetected", "SkewDetected",
       "MonitorStatsReported", "ComparisonReported"])
"""Traffic: the event types the restore retention applies to (everything else is kept)."""

_CHUNK = 50_000


@dataclasses.dataclass(frozen=True)
class RestoreReport:
    """What :func:`restore_to_broker` did.

    ``restored``: events (records, for the dead-letter topic) per topic;
    ``skipped``: topics left alone, with the reason; ``snapshots``: worker
    partition snapshots carried over to the refilled offsets; ``seconds``: the
    refill's duration.
    """

    restored: dict[str, int]
    skipped: dict[str, str]
    snapshots: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.restored.values())


@dataclasses.dataclass
class _Anchor:
    """One worker snapshot: where it ends, in the old offsets and by the last event's id."""

    snaps: PartitionSnapshots
    group: str
    partition: int
    positions: dict[str, int]
    state: bytes
    last_ids: dict[str, str]
    found: dict[str, int] = dataclasses.field(default_factory=dict)


def _high_watermarks(settings: Settings, topics: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``(records, partitions)`` per topic."""
    from confluent_kafka import TopicPartition

    consumer = new_consumer(settings, client_id="modelog-restore-probe")
    try:
        md = consumer.list_topics(timeout=10).topics
        out: dict[str, tuple[int, int]] = {}
        for name in topics:
            parts = md[name].partitions if name in md else {}
            out[name] = (sum(
                consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                for p in parts), len(parts))
        return out
    finally:
        consumer.close()


def _anchors(settings: Settings) -> list[_Anchor]:
    """The worker snapshots of this data directory that record their last events."""
    root = settings.data_dir / "worker-state"
    if not root.is_dir():
        return []
    key = worker_key(settings.data_dir)
    out: list[_Anchor] = []
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        snaps = PartitionSnapshots(directory, key=key)
        for path in sorted(directory.glob("partition-*.state")):
            try:
                partition = int(path.stem.split("-", 1)[1])
            except ValueError:
                continue
            loaded = snaps.load(partition)
            if loaded is None:
                continue
            positions, state = loaded
            try:  # verified local state (its signature is the worker key's)
                last_ids = pickle.loads(state).get("last_ids")
            except Exception:
                continue
            if isinstance(last_ids, dict):
                out.append(_Anchor(snaps, directory.name, partition, positions, state,
                                   {str(t): str(i) for t, i in last_ids.items()}))
    return out


def _retention_cutoff(settings: Settings, retention_days: float | None) -> dt.datetime | None:
    days = settings.restore_retention if retention_days is None else retention_days
    if days <= 0:
        return None
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=days)


def _selection(types: Sequence[str], cutoff: dt.datetime | None) -> tuple[str, list[Any]]:
    """The ``where`` clause (and its parameters) of the events of ``types`` to refill."""
    params: list[Any] = list(types)
    where = f"type in ({', '.join('?' for _ in types)})"
    retained = [t for t in types if t in RETAINED_TYPES]
    if cutoff is not None and retained:
        where += (f" and (type not in ({', '.join('?' for _ in retained)}) "
                  "or projected_at >= ?::TIMESTAMPTZ)")
        params += [*retained, cutoff.isoformat()]
    return where, params


def _event_rows(reader: Reader, where: str, params: list[Any],
                ) -> Iterator[tuple[list[Any], ...]]:
    """Chunks of ``(partition, id, aggregate, type, schema_version, payload, projected ms)``
    in refill order (the last: when the projector stored the event, Unix ms, 0 if unknown).

    One streaming query on the DuckDB file when no projector holds it (a restore);
    else pages through the projector's query server (a broker refilled under running
    services).
    """
    sql = ("select partition, id, aggregate, type, schema_version, payload::BLOB, "
           "coalesce(epoch_ms(projected_at), 0) from events "
           f"where {where} order by partition, projected_at, \"offset\", id")
    try:
        for batch in reader.scan(sql, params, batch_rows=_CHUNK):
            yield tuple(batch.column(i).to_pylist() for i in range(7))
        return
    except DatabaseBusyError:
        pass
    done = 0
    while True:
        table = reader.query(f"{sql} limit {_CHUNK} offset {done}", params)
        if table.num_rows == 0:
            return
        yield tuple(table.column(i).to_pylist() for i in range(7))
        done += table.num_rows


def _count(reader: Reader, sql: str, params: list[Any]) -> int:
    return int(reader.query(sql, params).column(0).to_pylist()[0])


def restore_to_broker(
    settings: Settings,
    *,
    streams: Sequence[str] = DEFAULT_STREAMS,
    retention_days: float | None = None,
    dead_letters: bool = True,
    carry_snapshots: bool = True,
    progress: Callable[[str, int, int], Any] | None = None,
) -> RestoreReport:
    """Refill the broker's *empty* topics from the DuckDB ledger (see the module docs).

    Parameters
    ----------
    settings
        Broker and data directory (the DuckDB ledger and the worker snapshots are there).
    streams
        Stream families to restore (default: all, :data:`DEFAULT_STREAMS`).
    retention_days
        Traffic (:data:`RETAINED_TYPES`) projected longer ago is not refilled;
        default ``settings.restore_retention``; ``0``: everything.
    dead_letters
        Refill the dead-letter topic too (from ``dead_letters``).
    carry_snapshots
        Move the worker's state snapshots to the refilled offsets (and commit them for
        its group). Only while no worker runs: ``modelog up`` refilling a broker that
        died under running services passes ``False``, and the workers, finding nothing
        committed, rebuild their state from the refilled log.
    progress
        Called with ``(topic, records so far, records to refill)`` every chunk.

    Raises
    ------
    StoreError
        When the broker does not acknowledge every refilled record.
    """
    from confluent_kafka import TopicPartition

    started = time.monotonic()
    topics = Topics.from_settings(settings)
    wanted = {topics.name(s): s for s in streams}
    types_by_stream: dict[str, list[str]] = {}
    for name, cls in CATALOGUE.items():
        types_by_stream.setdefault(cls.stream, []).append(name)
    try:
        reader = Reader(settings)
        reader.query("select 1 from events limit 0")
    except NoDataError:
        return RestoreReport({}, {t: "no archive yet" for t in wanted})
    names = [*wanted, topics.dead_letter] if dead_letters else list(wanted)
    marks = _high_watermarks(settings, names)
    cutoff = _retention_cutoff(settings, retention_days)
    anchors = _anchors(settings) if carry_snapshots else []
    by_id: dict[tuple[str, int, str], list[_Anchor]] = {}
    for anchor in anchors:
        for topic, event_id in anchor.last_ids.items():
            by_id.setdefault((topic, anchor.partition, event_id), []).append(anchor)
    restored: dict[str, int] = {}
    skipped: dict[str, str] = {}
    refilled: dict[tuple[str, int], int] = {}
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:  # reported for failures only
        if err is not None:
            failures.append(str(err))

    producer = new_producer(settings, client_id="modelog-restore", linger_ms=50, bulk=True,
                            extra={"delivery.report.only.error": True,
                                   "on_delivery": on_delivery})

    def produce(topic: str, value: bytes, key: bytes | None, partition: int | None,
                headers: Any = None) -> None:
        _send(producer, topic, value, key, -1 if partition is None else partition, headers)

    current = {name: cls.current_version() for name, cls in CATALOGUE.items()}
    for topic, stream in wanted.items():
        records, n_parts = marks.get(topic, (0, 0))
        if records > 0:
            skipped[topic] = f"already holds {records} records"
            continue
        types = types_by_stream.get(stream, [])
        if not types:
            continue
        where, params = _selection(types, cutoff)
        total = _count(reader, f"select count(*) from events where {where}", params)
        count = 0
        anchored: dict[str, list[_Anchor]] = {}
        for (anchor_topic, _, event_id), found in by_id.items():
            if anchor_topic == topic:
                anchored.setdefault(event_id, []).extend(found)
        for rows in _event_rows(reader, where, params):
            count += _refill_chunk(producer, topic, n_parts, rows, current, refilled, anchored)
            if progress is not None:
                progress(topic, count, max(total, count))
        restored[topic] = count
    if dead_letters:
        _refill_dead_letters(reader, topics.dead_letter, marks, produce, restored, skipped,
                             progress)
    remaining = producer.flush(120)
    if remaining or failures:
        raise StoreError(
            f"restoring the archive into {settings.bootstrap_servers} failed "
            f"({remaining} unacknowledged, {len(failures)} errors, first: "
            f"{failures[0] if failures else 'timeout'}); run `modelog archive restore` again "
            "once the broker is healthy."
        )
    carried = _carry_snapshots(settings, topics, anchors, restored, refilled, reader,
                               TopicPartition)
    return RestoreReport(restored, skipped, carried, time.monotonic() - started)


def _send(producer: Any, topic: str, value: bytes, key: bytes | None, partition: int,
          headers: Any = None, timestamp: int = 0) -> None:
    """Produce one record (``partition`` < 0: by key; ``timestamp`` Unix ms, 0: now);
    a full local queue is drained first."""
    while True:
        try:
            if partition < 0 and not headers:
                producer.produce(topic, value, key, timestamp=timestamp)
            elif partition < 0:
                producer.produce(topic, value, key, headers=headers, timestamp=timestamp)
            else:
                producer.produce(topic, value, key, partition=partition, headers=headers or None,
                                 timestamp=timestamp)
            return
        except BufferError:  # local queue full: let librdkafka send, then retry
            producer.poll(0.05)


def _refill_chunk(producer: Any, topic: str, n_parts: int, rows: tuple[list[Any], ...],
                  current: dict[str, int], refilled: dict[tuple[str, int], int],
                  anchored: dict[str, list[_Anchor]]) -> int:
    """Produce one chunk of ledger rows to ``topic`` (the restore's hot loop: ~1 µs a row).

    Upcasts rows of an older schema, keeps each row's partition when the topic has it,
    stamps each record with when the projector first stored it (close to when it was
    first written: alert delivery tells alerts raised before a subscription by it),
    counts the records per partition in ``refilled`` and tells each anchor whose
    last event id it meets the count at that point.
    """
    parts, ids, aggregates, kinds, versions, payloads, stamps = rows
    for i, payload in enumerate(payloads):
        raw = payload if isinstance(payload, bytes) else str(payload).encode()
        if versions[i] != current.get(kinds[i]):  # an older schema: upcast on the way
            raw = codec.encode(codec.decode(raw))
        p = parts[i]
        part = p if p is not None and 0 <= p < n_parts else -1
        _send(producer, topic, raw, str(aggregates[i]).encode(), part, timestamp=stamps[i])
        slot = (topic, part)
        refilled[slot] = refilled.get(slot, 0) + 1
        if anchored:
            for anchor in anchored.get(ids[i], ()):
                if anchor.partition == part:
                    anchor.found[topic] = refilled[slot]
    producer.poll(0)
    return len(payloads)


def _refill_dead_letters(reader: Reader, topic: str, marks: dict[str, tuple[int, int]],
                         produce: Callable[..., None], restored: dict[str, int],
                         skipped: dict[str, str],
                         progress: Callable[[str, int, int], Any] | None) -> None:
    """The dead-letter topic, whole and in offset order (its offsets key ``dead_letters``)."""
    records, n_parts = marks.get(topic, (0, 0))
    if records > 0:
        skipped[topic] = f"already holds {records} records"
        return
    count = 0
    while True:
        rows = reader.query(
            "select partition, reason, source_topic, source_partition, source_offset, "
            "consumer, key, value from dead_letters where topic = ? "
            f"order by partition, \"offset\" limit {_CHUNK} offset {count}", [topic],
        ).to_pylist()
        if not rows:
            break
        for row in rows:
            headers = dead_letter_headers(
                str(row["reason"] or ""), str(row["source_topic"] or ""),
                int(row["source_partition"] or 0), int(row["source_offset"] or 0),
                str(row["consumer"] or ""))
            p = row["partition"]
            part = int(p) if p is not None and 0 <= int(p) < max(n_parts, 1) else None
            produce(topic, bytes(row["value"] or b""),
                    None if row["key"] is None else bytes(row["key"]), part, headers)
        count += len(rows)
        if progress is not None:
            progress(topic, count, count)
    restored[topic] = count


def _carry_snapshots(settings: Settings, topics: Topics, anchors: list[_Anchor],
                     restored: dict[str, int], refilled: dict[tuple[str, int], int],
                     reader: Reader, topic_partition: Any) -> int:
    """Re-sign each worker snapshot at the refilled offsets; commit them for its group.

    Only when both topics the worker reads (serving, monitoring) were refilled now.
    """
    names = (topics.serving, topics.monitoring)
    if not anchors or not all(n in restored for n in names):
        return 0
    commits: dict[str, list[Any]] = {}
    carried = 0
    for anchor in anchors:
        positions: dict[str, int] = {}
        for topic in names:
            if topic in anchor.found:
                positions[topic] = anchor.found[topic]
            elif topic in anchor.last_ids and _in_ledger(reader, anchor.last_ids[topic]):
                positions[topic] = 0  # beyond the retention: everything refilled is newer
            elif topic in anchor.last_ids:  # processed, never projected: lost with the broker
                positions[topic] = refilled.get((topic, anchor.partition), 0)
            else:
                positions[topic] = 0  # no event of this topic processed yet
        anchor.snaps.save(anchor.partition, positions, anchor.state)
        commits.setdefault(anchor.group, []).extend(
            topic_partition(t, anchor.partition, o) for t, o in positions.items())
        carried += 1
    for group, offsets in commits.items():
        consumer = new_consumer(settings, client_id="modelog-restore", group=group)
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        finally:
            consumer.close()
    return carried


def _in_ledger(reader: Reader, event_id: str) -> bool:
    return _count(reader, "select count(*) from events where id = ?", [event_id]) > 0


def wait_until_projected(settings: Settings, timeout: float = 10.0) -> bool:
    """Wait until the projector recorded everything the broker holds; whether it did.

    ``modelog up`` calls it on Ctrl-C after the producing services stopped and before
    the projector and the broker stop: the broker's memory is the only copy of what is
    not projected yet.
    """
    from confluent_kafka import KafkaException

    topics = Topics.from_settings(settings)
    names = [*topics.event_topics(), topics.dead_letter]
    deadline = time.monotonic() + timeout
    while True:
        try:
            ends = _partition_ends(settings, names)
            table = Reader(settings, timeout=5).query(
                "select topic, partition, next_offset from consumer_positions")
            held = {(str(t), int(p)): int(o) for t, p, o in zip(
                *(table.column(i).to_pylist() for i in range(3)), strict=True)}
            if all(held.get(tp, 0) >= end for tp, end in ends.items() if end > 0):
                return True
        except (StoreError, OSError, KafkaException) as exc:  # broker or projector gone
            log.warning("could not check the projector's lag: %s", exc)
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _partition_ends(settings: Settings, names: Sequence[str]) -> dict[tuple[str, int], int]:
    from confluent_kafka import TopicPartition

    consumer = new_consumer(settings, client_id="modelog-drain-probe")
    try:
        md = consumer.list_topics(timeout=5).topics
        return {(name, p): consumer.get_watermark_offsets(TopicPartition(name, p), timeout=5)[1]
                for name in names if name in md for p in md[name].partitions}
    finally:
        consumer.close()
