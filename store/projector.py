"""The projector: follows every topic and projects it, exactly once, into DuckDB.

One process owns the DuckDB file. It reads every event topic plus the
dead-letter topic with a plain assigned consumer (no group join), and per
batch, in ONE DuckDB transaction, it

1. appends the decoded events to the ``events`` ledger (deduplicated by id),
2. derives ``predictions``, ``labels``, ``alerts`` and ``monitor_stats`` from
   them with the SQL of :mod:`modelog.store.schema`,
3. records dead-letter-topic records in ``dead_letters``, and
4. stores the next offset per partition in ``consumer_positions``.

Positions live with the rows, so a crash anywhere resumes exactly where the
last committed batch ended (offsets are also committed to Kafka under the
group ``<prefix>projector``, for lag monitoring only). Records that do not
decode are copied unchanged to the dead-letter topic -- flushed before the
batch commits -- and projection carries on.

The embedded broker forgets everything on restart while DuckDB remembers. The
projector stores the cluster id with each position; a different cluster id,
or a position beyond the partition's end, restarts that partition from the
beginning (event ids make the replay harmless) with a warning.

The same process serves reads (:mod:`modelog.store.query_server`) and
advertises them in ``<data_dir>/projector.json``.

The decision part -- turning consumed records into Arrow tables, dead-letter
copies and positions -- is the pure function :func:`build_batch`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from modelog.config import Settings
from modelog.store.errors import ProjectorError
from modelog.store.query_server import QueryServer
from modelog.store.schema import (
    SCHEMA_VERSION,
    create_schema,
    derive,
    rebuild_projections,
    stored_schema_version,
)
from modelog.streams.codec import decode, encode
from modelog.streams.deadletter import DeadLetter, dead_letter_headers
from modelog.streams.errors import EventDecodeError
from modelog.streams.topics import Topics, ensure_topics

__all__ = [
    "PROJECTOR_RUNTIME_FILE",
    "Batch",
    "InvalidRecord",
    "Projector",
    "ProjectorProgress",
    "Record",
    "build_batch",
]

log = logging.getLogger(__name__)

PROJECTOR_RUNTIME_FILE = "projector.json"
CONSUMER_NAME = "projector"

LEDGER_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("type", pa.string()),
    ("schema_version", pa.int32()),
    ("aggregate", pa.string()),
    ("producer", pa.string()),
    ("topic", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("payload", pa.binary()),
])
"""Ledger rows of a batch; ``time`` is parsed from the payload by DuckDB (much faster
than converting aware datetimes in Python), ``payload`` is cast to UTF-8 text."""
DEAD_LETTER_SCHEMA = pa.schema([
    ("topic", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("time", pa.timestamp("ms", tz="UTC")),
    ("reason", pa.string()),
    ("source_topic", pa.string()),
    ("source_partition", pa.int32()),
    ("source_offset", pa.int64()),
    ("consumer", pa.string()),
    ("key", pa.binary()),
    ("value", pa.binary()),
])


_BATCH = (
    "(SELECT *, CAST(payload->>'$.time' AS TIMESTAMPTZ) AS time FROM modelog_batch) AS batch"
)
"""The registered batch, shaped like ``events`` (what :func:`schema.derive` reads)."""


class Record(Protocol):
    """What the projector reads of a consumed record (a ``confluent_kafka.Message``)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes]] | None: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclasses.dataclass(frozen=True)
class InvalidRecord:
    """A record that is not a valid event: it goes, unchanged, to the dead-letter topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str


@dataclasses.dataclass(frozen=True)
class Batch:
    """What one consumed batch turns into.

    Attributes
    ----------
    events
        Ledger rows (schema :data:`LEDGER_SCHEMA`), one per distinct event id.
    dead_letters
        Rows for ``dead_letters`` (records read from the dead-letter topic).
    invalid
        Records to copy to the dead-letter topic.
    positions
        Next offset to read per ``(topic, partition)``.
    records
        Records consumed.
    """

    events: pa.Table
    dead_letters: pa.Table
    invalid: list[InvalidRecord]
    positions: dict[tuple[str, int], int]
    records: int


def build_batch(records: Iterable[Record], dead_letter_topic: str) -> Batch:
    """Decode ``records`` into the tables, dead-letter copies and positions of one batch.

    Pure: no broker, no database. Duplicated event ids keep their first record.

    Examples
    --------
    >>> import datetime as dt
    >>> from modelog.streams.events import LabelObserved
    >>> class Rec:
    ...     def __init__(self, offset, value):
    ...         self._o, self._v = offset, value
    ...     def topic(self): return "m.serving"
    ...     def partition(self): return 0
    ...     def offset(self): return self._o
    ...     def key(self): return b"churn"
    ...     def value(self): return self._v
    ...     def headers(self): return None
    ...     def timestamp(self): return (1, 0)
    >>> ev = LabelObserved(id="0190d7a6-0000-7000-8000-000000000000", aggregate="churn",
    ...                    time=dt.datetime(2026, 3, 3, tzinfo=dt.timezone.utc),
    ...                    prediction_id="p-1", model="churn", label=1)
    >>> b = build_batch([Rec(7, encode(ev)), Rec(8, encode(ev)), Rec(9, b"{oops")],
    ...                 "m.dead-letter")
    >>> b.events.num_rows, [r.offset for r in b.invalid], b.positions
    (1, [9], {('m.serving', 0): 10})
    """
    cols: dict[str, list[Any]] = {name: [] for name in LEDGER_SCHEMA.names}
    dead: dict[str, list[Any]] = {name: [] for name in DEAD_LETTER_SCHEMA.names}
    invalid: list[InvalidRecord] = []
    positions: dict[tuple[str, int], int] = {}
    seen: set[str] = set()
    count = 0
    for rec in records:
        topic, partition, offset = rec.topic() or "", rec.partition() or 0, rec.offset() or 0
        count += 1
        positions[(topic, partition)] = max(positions.get((topic, partition), 0), offset + 1)
        value = rec.value()
        if topic == dead_letter_topic:
            info = DeadLetter.from_headers(rec.headers())
            ts_type, ts = rec.timestamp()
            for name, v in (
                ("topic", topic), ("partition", partition), ("offset", offset),
                ("time", ts if ts_type and ts >= 0 else None), ("reason", info.reason),
                ("source_topic", info.source_topic),
                ("source_partition", info.source_partition),
                ("source_offset", info.source_offset), ("consumer", info.consumer),
                ("key", rec.key()), ("value", value),
            ):
                dead[name].append(v)
            continue
        try:
            if value is None:
                raise EventDecodeError("empty record (no value): not a modelog event")
            event = decode(value)
        except EventDecodeError as exc:
            invalid.append(InvalidRecord(topic, partition, offset, rec.key(), value, exc.reason))
            continue
        if event.id in seen:
            continue
        seen.add(event.id)
        cols["id"].append(event.id)
        cols["type"].append(event.type_name())
        cols["schema_version"].append(event.schema_version)
        cols["aggregate"].append(event.aggregate)
        cols["producer"].append(event.producer)
        cols["topic"].append(topic)
        cols["partition"].append(partition)
        cols["offset"].append(offset)
        cols["payload"].append(encode(event))
    events = pa.table(cols, schema=LEDGER_SCHEMA)
    events = events.set_column(
        events.schema.get_field_index("payload"), "payload",
        events.column("payload").cast(pa.string()),
    )
    return Batch(
        events=events,
        dead_letters=pa.table(dead, schema=DEAD_LETTER_SCHEMA),
        invalid=invalid,
        positions=positions,
        records=count,
    )


@dataclasses.dataclass(frozen=True)
class ProjectorProgress:
    """Counts reported to the progress callback after each batch (or rebuild step).

    Attributes
    ----------
    phase
        ``"project"`` or ``"rebuild"``.
    records
        Records consumed so far (``project``) or events re-derived (``rebuild``).
    events
        Distinct events appended to the ledger so far (duplicates not counted).
    dead_lettered
        Records this projector copied to the dead-letter topic so far.
    batches
        Batches committed so far.
    last_batch
        Records in the latest batch.
    """

    phase: str
    records: int
    events: int
    dead_lettered: int
    batches: int
    last_batch: int


ProgressCallback = Callable[[ProjectorProgress], None]


@dataclasses.dataclass(frozen=True)
class _Position:
    next_offset: int
    cluster_id: str | None


class Projector:
    """Project every modelog topic into the DuckDB file of ``settings``, exactly once.

    Parameters
    ----------
    settings
        Broker, topic prefix and data directory (the file is ``settings.duckdb_path``).
    batch_size
        Most records per DuckDB transaction.
    batch_timeout
        Seconds to wait for a batch to fill.
    discovery_interval
        Seconds between checks for new topics and partitions (and a new cluster).
    serve
        Start the read-only query server and write ``projector.json``.
    progress
        Called with a :class:`ProjectorProgress` after every batch.
    max_query_rows, query_timeout
        Limits of the query server.

    Nothing is opened by the constructor: :meth:`start` (called by :meth:`run`
    and :meth:`project_once`) connects; :meth:`rebuild` needs only the file.

    Examples
    --------
    >>> from pathlib import Path
    >>> from modelog.config import Settings
    >>> p = Projector(Settings(data_dir=Path("/tmp/modelog-doc")), batch_size=5_000)
    >>> p.batch_size
    5000
    """

    def __init__(
        self,
        settings: Settings,
        *,
        batch_size: int = 10_000,
        batch_timeout: float = 0.2,
        discovery_interval: float = 5.0,
        serve: bool = True,
        progress: ProgressCallback | None = None,
        max_query_rows: int = 1_000_000,
        query_timeout: float = 60.0,
    ) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.discovery_interval = discovery_interval
        self.serve = serve
        self.progress = progress
        self.max_query_rows = max_query_rows
        self.query_timeout = query_timeout
        self._con: duckdb.DuckDBPyConnection | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self._server: QueryServer | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._cluster_id: str | None = None
        self._next_discovery = 0.0
        self._records = 0
        self._events = 0
        self._dead_lettered = 0
        self._batches = 0

    # -- lifecycle ---------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.settings.duckdb_path

    @property
    def runtime_file(self) -> Path:
        return self.settings.data_dir / PROJECTOR_RUNTIME_FILE

    @property
    def query_url(self) -> str | None:
        """URL of the query server, while it runs."""
        return self._server.url if self._server is not None else None

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The writer connection (opens the file on first use)."""
        if self._con is None:
            self._con = self._open_db()
        return self._con

    def _open_db(self) -> duckdb.DuckDBPyConnection:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(self.db_path))
        except duckdb.IOException as exc:
            raise ProjectorError(
                f"cannot open {self.db_path} for writing: {exc}. Another projector probably "
                "runs on this data directory; stop it, or use another MODELOG_DATA_DIR."
            ) from None
        # Checkpoints rewrite the primary-key indexes; fewer, larger ones keep the
        # write path fast (the WAL keeps every committed batch durable meanwhile).
        con.execute("SET checkpoint_threshold = '256MB'")
        create_schema(con)
        stored = stored_schema_version(con)
        if stored != SCHEMA_VERSION:
            log.warning(
                "projection schema version %s in %s differs from %s: rebuilding the views "
                "from the event ledger", stored, self.db_path, SCHEMA_VERSION,
            )
            rebuild_projections(con)
        return con

    def start(self) -> Projector:
        """Open DuckDB, create topics, assign partitions and start the query server."""
        if self._consumer is not None:
            return self
        from confluent_kafka import Consumer, Producer

        con = self.connection
        ensure_topics(self.settings)
        kafka = self.settings.kafka_config()
        self._consumer = Consumer({
            **kafka,
            "group.id": f"{self.settings.topic_prefix}projector",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            "queued.min.messages": 200_000,
            "client.id": "modelog-projector",
        })
        self._producer = Producer({
            **kafka, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "client.id": "modelog-projector-dlq",
        })
        self._sync_assignment()
        if self.serve:
            self._server = QueryServer(
                con, self.settings.query_bind, max_rows=self.max_query_rows,
                timeout=self.query_timeout,
                info={"pid": os.getpid(), "db": str(self.db_path)},
            ).start()
            self.runtime_file.write_text(json.dumps({
                "pid": os.getpid(), "port": self._server.port, "db": str(self.db_path),
                "url": self._server.url,
            }))
        return self

    def close(self) -> None:
        """Stop serving, remove ``projector.json``, close the consumer and the file."""
        if self._server is not None:
            self._server.stop()
            self._server = None
            with contextlib.suppress(OSError, ValueError):
                if json.loads(self.runtime_file.read_text()).get("pid") == os.getpid():
                    self.runtime_file.unlink()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None
        self._assigned = set()
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> Projector:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- partitions --------------------------------------------------------
    def _stored_positions(self) -> dict[tuple[str, int], _Position]:
        rows = self.connection.execute(
            "SELECT topic, partition, next_offset, cluster_id FROM consumer_positions"
        ).fetchall()
        return {(t, int(p)): _Position(int(o), c) for t, p, o, c in rows}

    def _sync_assignment(self) -> None:
        """Assign partitions not yet followed; start over when the cluster changed."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        try:
            metadata = self._consumer.list_topics(timeout=10)
        except KafkaException as exc:
            log.warning("projector: cannot read broker metadata (%s); retrying later", exc)
            return
        cluster_id = metadata.cluster_id
        if self._cluster_id is not None and cluster_id != self._cluster_id and self._assigned:
            log.warning(
                "projector: the broker's cluster id changed (%s -> %s); its log was replaced, "
                "re-reading every partition from the beginning (event ids deduplicate)",
                self._cluster_id, cluster_id,
            )
            self._consumer.unassign()
            self._assigned = set()
        self._cluster_id = cluster_id
        stored = self._stored_positions()
        new: list[Any] = []
        restarted: list[tuple[str, int]] = []
        for topic in self.topics.all():
            tmeta = metadata.topics.get(topic)
            if tmeta is None or tmeta.error is not None:
                continue
            for partition in sorted(tmeta.partitions):
                tp = (topic, partition)
                if tp in self._assigned:
                    continue
                start = self._start_offset(tp, stored.get(tp), cluster_id)
                if start is None:
                    restarted.append(tp)
                    new.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
                else:
                    new.append(TopicPartition(topic, partition, start))
                self._assigned.add(tp)
        if restarted:
            self._write_restarts(restarted, cluster_id)
        if new:
            self._consumer.incremental_assign(new)
            log.info("projector: following %d new partitions", len(new))

    def _start_offset(
        self, tp: tuple[str, int], stored: _Position | None, cluster_id: str | None
    ) -> int | None:
        """Where to resume ``tp``; ``None`` means from the beginning."""
        from confluent_kafka import TopicPartition

        if stored is None:
            return None
        if stored.cluster_id != cluster_id:
            log.warning(
                "projector: %s[%d] was projected from cluster %s, the broker is now %s; "
                "reading it again from the beginning", tp[0], tp[1], stored.cluster_id,
                cluster_id,
            )
            return None
        _low, high = self._consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10)
        if stored.next_offset > high:
            log.warning(
                "projector: %s[%d] stored position %d is beyond the partition's end %d (the "
                "broker lost its log?); reading it again from the beginning",
                tp[0], tp[1], stored.next_offset, high,
            )
            return None
        return stored.next_offset

    def _write_restarts(self, tps: Sequence[tuple[str, int]], cluster_id: str | None) -> None:
        table = pa.table({
            "topic": [t for t, _ in tps],
            "partition": pa.array([p for _, p in tps], pa.int32()),
            "next_offset": pa.array([0] * len(tps), pa.int64()),
            "cluster_id": [cluster_id] * len(tps),
        })
        con = self.connection
        con.register("modelog_restarts", table)
        try:
            con.execute("INSERT OR REPLACE INTO consumer_positions SELECT * FROM modelog_restarts")
        finally:
            con.unregister("modelog_restarts")

    # -- projecting --------------------------------------------------------
    def project_once(self, max_records: int | None = None, timeout: float | None = None) -> int:
        """Consume one batch and commit it; return the number of records consumed.

        Parameters
        ----------
        max_records
            Most records to consume (default ``batch_size``).
        timeout
            Seconds to wait for records (default ``batch_timeout``).
        """
        from confluent_kafka import KafkaError, KafkaException

        self.start()
        now = time.monotonic()
        if now >= self._next_discovery:
            self._sync_assignment()
            self._next_discovery = now + self.discovery_interval
        try:
            messages = self._consumer.consume(
                num_messages=max_records or self.batch_size,
                timeout=self.batch_timeout if timeout is None else timeout,
            )
        except KafkaException as exc:
            raise ProjectorError(f"consuming from {self.settings.bootstrap_servers} failed: "
                                 f"{exc}") from None
        good = []
        for msg in messages:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.fatal():
                raise ProjectorError(f"the Kafka consumer failed: {err}; restart the projector")
            else:
                log.warning("projector: consumer error %s", err)
        if not good:
            return 0
        batch = build_batch(good, self.topics.dead_letter)
        self._dead_letter(batch.invalid)
        added = self._commit(batch)
        self._records += batch.records
        self._events += added
        self._dead_lettered += len(batch.invalid)
        self._batches += 1
        if self.progress is not None:
            self.progress(ProjectorProgress(
                "project", self._records, self._events, self._dead_lettered, self._batches,
                batch.records,
            ))
        return batch.records

    def _dead_letter(self, invalid: Sequence[InvalidRecord]) -> None:
        if not invalid:
            return
        failures: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for bad in invalid:
            log.warning("projector: %s[%d]@%d -> dead letter: %s", bad.topic, bad.partition,
                        bad.offset, bad.reason)
            self._producer.produce(
                self.topics.dead_letter, key=bad.key, value=bad.value,
                headers=dead_letter_headers(bad.reason, bad.topic, bad.partition, bad.offset,
                                            CONSUMER_NAME),
                on_delivery=on_delivery,
            )
        remaining = self._producer.flush(30)
        if remaining or failures:
            raise ProjectorError(
                f"could not write {len(invalid)} record(s) to {self.topics.dead_letter} "
                f"({failures[:1] or 'flush timed out'}); the batch was not committed and "
                "will be retried when the projector restarts"
            )

    def _commit(self, batch: Batch) -> int:
        """Write one batch and its positions in a single transaction; return new events."""
        from confluent_kafka import KafkaException, TopicPartition

        con = self.connection
        positions = pa.table({
            "topic": [t for t, _ in batch.positions],
            "partition": pa.array([p for _, p in batch.positions], pa.int32()),
            "next_offset": pa.array(list(batch.positions.values()), pa.int64()),
            "cluster_id": [self._cluster_id] * len(batch.positions),
        })
        con.register("modelog_batch", batch.events)
        con.register("modelog_dead", batch.dead_letters)
        con.register("modelog_positions", positions)
        try:
            con.execute("BEGIN TRANSACTION")
            before = int(con.execute("SELECT count(*) FROM events").fetchall()[0][0])
            con.execute(
                'INSERT INTO events SELECT id, type, schema_version, time, aggregate, producer, '
                f'topic, partition, "offset", now(), payload FROM {_BATCH} '
                "ON CONFLICT DO NOTHING"
            )
            added = int(con.execute("SELECT count(*) FROM events").fetchall()[0][0]) - before
            derive(con, _BATCH)
            if batch.dead_letters.num_rows:
                con.execute("INSERT INTO dead_letters SELECT * FROM modelog_dead "
                            "ON CONFLICT DO NOTHING")
            con.execute("INSERT OR REPLACE INTO consumer_positions SELECT * FROM modelog_positions")
            con.execute("COMMIT")
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise ProjectorError(
                f"writing a batch to {self.db_path} failed: {exc}; nothing of it was kept, "
                "restart the projector to retry"
            ) from None
        finally:
            for name in ("modelog_batch", "modelog_dead", "modelog_positions"):
                con.unregister(name)
        with contextlib.suppress(KafkaException):
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in batch.positions.items()],
                asynchronous=True,
            )
        return added

    def run(self, stop: threading.Event | None = None) -> None:
        """Project until ``stop`` is set (or SIGTERM/Ctrl-C in the main thread), then close."""
        stop = stop or threading.Event()
        restore: Any = None
        if threading.current_thread() is threading.main_thread():

            def on_term(_sig: int, _frame: FrameType | None) -> None:
                stop.set()

            restore = signal.signal(signal.SIGTERM, on_term)
        try:
            self.start()
            log.info("projector: projecting into %s, queries on %s", self.db_path,
                     self.query_url)
            while not stop.is_set():
                self.project_once()
        except KeyboardInterrupt:
            log.info("projector: interrupted, stopping")
        finally:
            if restore is not None:
                signal.signal(signal.SIGTERM, restore)
            self.close()

    def rebuild(self) -> int:
        """Drop the derived tables and views and re-derive them from the ``events`` ledger.

        Needs no broker. Returns the number of events in the ledger.
        """
        n = rebuild_projections(self.connection)
        if self.progress is not None:
            self.progress(ProjectorProgress("rebuild", n, n, 0, 1, n))
        return n

    def stats(self) -> dict[str, int]:
        """Counters since this projector started."""
        return {"records": self._records, "events": self._events,
                "dead_lettered": self._dead_lettered, "batches": self._batches}

