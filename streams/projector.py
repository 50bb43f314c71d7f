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
or a position beyond the partition's end (checked by reading the record before
it: Tansu under-reports the end of a multi-record batch), restarts that
partition from the beginning (event ids make the replay harmless) with a warning.

The same process serves reads (:mod:`modelog.store.query_server`) and
advertises them in ``<data_dir>/projector.json``.

The decision part -- turning consumed records into Arrow tables, dead-letter
copies and positions -- is the pure function :func:`build_batch`.

Throughput: :meth:`Projector.project` (what :meth:`Projector.run` uses) reads
and decodes in a child process while this one writes the previous batch:
decoding is GIL-bound Python and DuckDB's Python binding needs the GIL between
its tasks, so threads would serialize. Each batch is appended to the ledger as
is (its primary key rejects a batch holding a known id, which is then written
again with an anti-join), and only newly added events are derived: the
derived tables need no key. :meth:`Projector.project_once` does the same
synchronously in this process.

Where the time goes (``modelog bench``, CPU per event, 2 cores shared with the
broker): the reader process ~6.5 µs -- consuming ~1.5, decoding and validating
~1.8, the canonical re-encode ~0.7, the rest building Arrow columns and
shipping them -- and the writer ~7 µs: appending to the ledger (its primary
key included) ~0.8, deriving ``predictions`` ~1.3, and the commit ~4.4 (the
WAL, and DuckDB's checkpoints every 256 MB of it). What made it fast: event
times go to Arrow as integers (converting tz-aware datetimes cost ~3 µs each),
batches travel as Arrow IPC rather than pickles, the payload is typed as Arrow
JSON (DuckDB stored it as ``JSON`` by parsing it once more), JSON columns are
zstd-compressed (cheaper checkpoints), the reader warms up (pyarrow's lazy
pandas import) before it reports ready and keeps the garbage collector away
from its short-lived objects. Building the ``predictions`` rows in the reader
instead was tried: it cost the reader more than it saved the writer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Protocol, Union

import duckdb
import msgspec
import pyarrow as pa

from modelog.config import Settings
from modelog.models.codec import decode
from modelog.models.errors import EventDecodeError
from modelog.models.events import CATALOGUE, Event
from modelog.store.errors import ProjectorError
from modelog.store.query_server import PROJECTOR_RUNTIME_FILE, QueryServer
from modelog.store.schema import (
    SCHEMA_VERSION,
    create_schema,
    derive,
    rebuild_projections,
    stored_schema_version,
)
from modelog.streams.kafka import DeadLetter, dead_letter_headers, offset_in_log
from modelog.streams.topics import Topics, ensure_topics

__all__ = [
    "Batch",
    "InvalidRecord",
    "Projector",
    "ProjectorProgress",
    "Record",
    "build_batch",
    "dead_letter",
]

log = logging.getLogger(__name__)

CONSUMER_NAME = "projector"

LEDGER_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("type", pa.string()),
    ("schema_version", pa.int32()),
    ("time", pa.timestamp("us", tz="UTC")),
    ("aggregate", pa.string()),
    ("producer", pa.string()),
    ("topic", pa.string()),
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("payload", pa.json_(pa.string())),
])
"""Ledger rows of a batch: the columns of ``events`` but ``projected_at``. The
envelope comes from the decoded event (so DuckDB parses a payload only where a
derivation needs its body); ``payload`` is the canonical JSON encoding, typed as
Arrow's JSON extension so that DuckDB stores it as ``JSON`` without parsing it
again (msgspec wrote it: it is valid)."""
_TIME = LEDGER_SCHEMA.field("time").type
_JSON = LEDGER_SCHEMA.field("payload").type
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


_BATCH = "modelog_batch"
"""The registered batch (:data:`LEDGER_SCHEMA`, what :func:`schema.derive` reads)."""
_NEW_IN_BATCH = "(SELECT * FROM modelog_batch WHERE id IN (SELECT id FROM modelog_new)) AS batch"
"""The events of the batch that were not in the ledger before (``modelog_new``)."""
_LEDGER_SELECT = (
    'SELECT id, type, schema_version, time, aggregate, producer, topic, partition, "offset", '
    "now(), payload FROM modelog_batch"
)
_UPSERT_POSITIONS = """
INSERT INTO consumer_positions SELECT * FROM modelog_positions
ON CONFLICT (topic, partition) DO UPDATE SET
    next_offset = CASE WHEN cluster_id IS NOT DISTINCT FROM excluded.cluster_id
                       THEN greatest(next_offset, excluded.next_offset)
                       ELSE excluded.next_offset END,
    cluster_id = excluded.cluster_id"""
"""Positions only move forward (unless the cluster changed: then they start over)."""


_fast_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(
    Union[tuple(CATALOGUE.values())]  # noqa: UP007
)
"""Decodes any event in one step, dispatching on its ``type`` tag."""
_encoder = msgspec.json.Encoder()
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_CURRENT: dict[type[Event], tuple[str, int]] = {
    cls: (name, cls.current_version()) for name, cls in CATALOGUE.items()
}
"""Event class -> (type tag, current schema version)."""


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
    types
        Event types in ``events`` (derivations of other types are skipped).
    """

    events: pa.Table
    dead_letters: pa.Table
    invalid: list[InvalidRecord]
    positions: dict[tuple[str, int], int]
    records: int
    types: frozenset[str] = frozenset()


def build_batch(records: Iterable[Record], dead_letter_topic: str) -> Batch:
    """Decode ``records`` into the tables, dead-letter copies and positions of one batch.

    Pure: no broker, no database. Duplicated event ids keep their first record.
    Every event is validated exactly as :func:`modelog.models.codec.decode`
    does, and its ledger ``payload`` is its canonical encoding
    (``encode(decode(value))``).

    Examples
    --------
    >>> import datetime as dt
    >>> from modelog.models.codec import encode
    >>> from modelog.models.events import LabelObserved
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
    >>> b.events.num_rows, [r.offset for r in b.invalid], b.positions, b.types
    (1, [9], {('m.serving', 0): 10}, frozenset({'LabelObserved'}))
    """
    # The per-record loop is the projector's Python hot path: it does only what
    # needs the decoded event (validation, dedupe, envelope columns); DuckDB
    # parses the payload for everything else.
    ids: list[str] = []
    types: list[str] = []
    versions: list[int] = []
    times: list[int] = []  # microseconds since the epoch (tz-aware datetimes convert slowly)
    aggregates: list[str] = []
    producers: list[str] = []
    topics: list[str] = []
    partitions: list[int] = []
    offsets: list[int] = []
    payloads: list[bytes] = []
    dead: dict[str, list[Any]] = {name: [] for name in DEAD_LETTER_SCHEMA.names}
    invalid: list[InvalidRecord] = []
    positions: dict[tuple[str, int], int] = {}
    seen: set[str] = set()
    count = 0
    fast_decode, canonical, current = _fast_decoder.decode, _encoder.encode, _CURRENT
    fast_errors = (msgspec.ValidationError, msgspec.DecodeError)
    for rec in records:
        topic, partition, offset = rec.topic() or "", rec.partition() or 0, rec.offset() or 0
        count += 1
        tp = (topic, partition)
        if offset >= positions.get(tp, 0):
            positions[tp] = offset + 1
        value = rec.value()
        if topic == dead_letter_topic:
            _add_dead_letter(dead, rec, topic, partition, offset, value)
            continue
        # Fast path: a record in its canonical form (what modelog producers write)
        # decodes in one step, and re-encoding it gives back the same bytes, which
        # proves it states the current schema_version explicitly, as decode() needs.
        event: Event | None = None
        payload = value
        if value is not None:
            try:
                event = fast_decode(value)
            except fast_errors:
                event = None
            if event is not None and (
                current[type(event)][1] != event.schema_version or canonical(event) != value
            ):
                event = None
        if event is None:
            try:
                if value is None:
                    raise EventDecodeError("empty record (no value): not a modelog event")
                event = decode(value)
            except EventDecodeError as exc:
                invalid.append(
                    InvalidRecord(topic, partition, offset, rec.key(), value, exc.reason)
                )
                continue
            payload = canonical(event)
        event_id = event.id
        if event_id in seen:
            continue
        seen.add(event_id)
        ids.append(event_id)
        types.append(current[type(event)][0])
        versions.append(event.schema_version)
        times.append((event.time - _EPOCH) // _MICROSECOND)
        aggregates.append(event.aggregate)
        producers.append(event.producer)
        topics.append(topic)
        partitions.append(partition)
        offsets.append(offset)
        payloads.append(payload)  # type: ignore[arg-type]  # not None: it decoded
    events = pa.table([
        pa.array(ids, pa.string()), pa.array(types, pa.string()),
        pa.array(versions, pa.int32()), pa.array(times, pa.int64()).view(_TIME),
        pa.array(aggregates, pa.string()),
        pa.array(producers, pa.string()), pa.array(topics, pa.string()),
        pa.array(partitions, pa.int32()), pa.array(offsets, pa.int64()),
        # JSON from msgspec is valid UTF-8: reinterpret the bytes, no copy
        pa.ExtensionArray.from_storage(
            _JSON, pa.array(payloads, pa.binary()).view(pa.string())),
    ], schema=LEDGER_SCHEMA)
    return Batch(
        events=events,
        dead_letters=pa.table(dead, schema=DEAD_LETTER_SCHEMA),
        invalid=invalid,
        positions=positions,
        records=count,
        types=frozenset(types),
    )


def _add_dead_letter(
    dead: dict[str, list[Any]], rec: Record, topic: str, partition: int, offset: int,
    value: bytes | None,
) -> None:
    """Append a record read from the dead-letter topic to the ``dead_letters`` columns."""
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


# -- consuming (shared by the projector and its reader process) -------------------------
def _consumer_config(settings: Settings) -> dict[str, Any]:
    """The projector's consumer: assigned partitions, offsets kept in DuckDB."""
    return {
        **settings.kafka_config(),
        "group.id": f"{settings.topic_prefix}projector",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
        "queued.min.messages": 200_000,
        "client.id": "modelog-projector",
    }


def _dead_letter_producer_config(settings: Settings) -> dict[str, Any]:
    return {
        **settings.kafka_config(), "enable.idempotence": True, "acks": "all", "linger.ms": 5,
        "client.id": "modelog-projector-dlq",
    }


def _valid_messages(messages: Sequence[Any]) -> list[Any]:
    """The records among consumed ``messages`` (partition-end markers skipped)."""
    from confluent_kafka import KafkaError

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
    return good


def dead_letter(producer: Any, dead_letter_topic: str, invalid: Sequence[InvalidRecord]) -> None:
    """Copy ``invalid`` records unchanged to the dead-letter topic and wait for delivery.

    Raises
    ------
    ProjectorError
        When a copy was not delivered: the batch must then not be committed.
    """
    if not invalid:
        return
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for bad in invalid:
        log.warning("projector: %s[%d]@%d -> dead letter: %s", bad.topic, bad.partition,
                    bad.offset, bad.reason)
        producer.produce(
            dead_letter_topic, key=bad.key, value=bad.value,
            headers=dead_letter_headers(bad.reason, bad.topic, bad.partition, bad.offset,
                                        CONSUMER_NAME),
            on_delivery=on_delivery,
        )
    remaining = producer.flush(30)
    if remaining or failures:
        raise ProjectorError(
            f"could not write {len(invalid)} record(s) to {dead_letter_topic} "
            f"({failures[:1] or 'flush timed out'}); the batch was not committed and "
            "will be retried when the projector restarts"
        )


class _ReaderProcess:
    """A child process that consumes, decodes and dead-letters for :meth:`Projector.project`.

    Decoding is CPU-bound Python: in its own process it holds no GIL that
    DuckDB's writes need. Commands go down the pipe (``assign``, ``reset``,
    ``stop``), batches come up: each a pickled :class:`Batch` without its
    events, then the events as an Arrow IPC stream. The pipe's buffers hold a
    batch or two, so the child is at most that far ahead of the writer. A ``reset``
    (the cluster changed) starts a new epoch: batches consumed before it are
    dropped unwritten. The child exits when the parent goes away.
    """

    def __init__(self, settings: Settings, dead_letter_topic: str, batch_size: int,
                 batch_timeout: float, start_timeout: float = 60.0) -> None:
        # A fresh interpreter (never fork librdkafka's or DuckDB's threads), started
        # without multiprocessing's re-import of the caller's __main__ module.
        ours, theirs = socket.socketpair()
        for sock in (ours, theirs):  # a batch is megabytes: move it in few system calls
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _PIPE_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _PIPE_BUFFER)
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _READER_ENTRY, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            )
        self._conn = Connection(ours.detach())
        self._epoch = 0
        self._conn.send((settings, dead_letter_topic, batch_size, batch_timeout))
        if not self._conn.poll(start_timeout):
            self.close()
            raise ProjectorError(f"the projector's reader process did not start within "
                                 f"{start_timeout:.0f} s; is the machine overloaded?")
        self._expect("ready")

    def _expect(self, kind: str) -> Any:
        try:
            msg = self._conn.recv()
        except (EOFError, OSError):
            raise ProjectorError(
                f"the projector's reader process exited (code {self._process.poll()}); "
                "see its log above, then restart the projector"
            ) from None
        if msg[0] == "error":
            raise ProjectorError(f"the projector's reader process failed: {msg[1]}")
        if msg[0] != kind:  # pragma: no cover - protocol bug
            raise ProjectorError(f"the reader process sent {msg[0]!r}, expected {kind!r}")
        return msg

    def assign(self, partitions: list[tuple[str, int, int]]) -> None:
        """Start consuming ``(topic, partition, offset)`` (``OFFSET_BEGINNING`` allowed)."""
        self._conn.send(("assign", partitions))

    def reset(self) -> None:
        """Stop consuming everything; batches already consumed are dropped."""
        self._epoch += 1
        self._conn.send(("reset", self._epoch))

    def receive(self, timeout: float) -> Batch | None:
        """The next batch of the current epoch, or ``None`` after ``timeout`` seconds."""
        if not self._conn.poll(timeout):
            return None
        _kind, epoch, batch = self._expect("batch")
        events = _read_table(self._conn.recv_bytes())
        return dataclasses.replace(batch, events=events) if epoch == self._epoch else None

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child (it finishes the batch it is on) and wait for it."""
        with contextlib.suppress(OSError):
            self._conn.send(("stop",))
        deadline = time.monotonic() + timeout
        while self._process.poll() is None and time.monotonic() < deadline:
            try:  # unblock a child that is sending
                if self._conn.poll(0.05):
                    self._conn.recv_bytes()
            except (EOFError, OSError):
                break
        try:
            self._process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._conn.close()


_PIPE_BUFFER = 8 * 1024 * 1024
_EMPTY_LEDGER = LEDGER_SCHEMA.empty_table()


def _table_bytes(table: pa.Table) -> pa.Buffer:
    """``table`` as an Arrow IPC stream (what :func:`_read_table` reads back, zero-copy)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _read_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


_READER_ENTRY = "from modelog.streams.projector import _reader_entry; _reader_entry()"


def _reader_entry() -> None:
    """Entry point of the reader process: its socket's fd is ``sys.argv[1]``."""
    conn = Connection(int(sys.argv[1]))
    try:
        args = conn.recv()
    except EOFError:
        return
    _reader_main(conn, *args)


def _reader_main(conn: Any, settings: Settings, dead_letter_topic: str, batch_size: int,
                 batch_timeout: float) -> None:
    """Body of the reader process (see :class:`_ReaderProcess`)."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

    # Ctrl-C and SIGTERM (to the process group) are the parent's to handle: it stops us
    # in order, after its last write; if it dies instead, our pipe closes and we exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    consumer = Consumer(_consumer_config(settings))
    producer = Producer(_dead_letter_producer_config(settings))
    # Warm up before reporting ready: pyarrow imports pandas on its first conversion
    # (~0.3-1 s), which would otherwise delay the first batch.
    build_batch([], dead_letter_topic)
    # A batch is ~10^5 short-lived objects without cycles: the default thresholds
    # would scan them (and every module object) again and again, ~10% of the
    # reader's time. Modules go to the permanent generation; collect rarely.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    epoch, assigned = 0, False
    try:
        conn.send(("ready",))
        while True:
            while conn.poll(0 if assigned else 0.1):
                command = conn.recv()
                if command[0] == "stop":
                    return
                if command[0] == "assign":
                    consumer.incremental_assign(
                        [TopicPartition(t, p, o) for t, p, o in command[1]])
                    assigned = True
                elif command[0] == "reset":
                    consumer.unassign()
                    epoch, assigned = command[1], False
            if not assigned:
                continue
            try:
                messages = consumer.consume(num_messages=batch_size, timeout=batch_timeout)
            except KafkaException as exc:
                raise ProjectorError(f"consuming from {settings.bootstrap_servers} failed: "
                                     f"{exc}") from None
            good = _valid_messages(messages)
            if good:
                batch = build_batch(good, dead_letter_topic)
                dead_letter(producer, dead_letter_topic, batch.invalid)
                # the events follow as Arrow IPC: pickling a table costs ~5x more
                events = _table_bytes(batch.events)
                conn.send(("batch", epoch, dataclasses.replace(batch, events=_EMPTY_LEDGER)))
                conn.send_bytes(events)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the projector went away
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", str(exc)))
    finally:
        with contextlib.suppress(Exception):
            consumer.close()
        producer.flush(5)
        gc.unfreeze()  # let the interpreter free the modules' objects at exit


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
    db_threads
        DuckDB worker threads (``None``: DuckDB's default, one per core). One
        leaves the other cores to the reader process of :meth:`project`; the
        query server's queries share them.

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
        db_threads: int | None = 1,
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
        self.db_threads = db_threads
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
        self._replaying = False  # the last batch had ids already in the ledger
        self._kafka_offsets: dict[tuple[str, int], int] = {}  # written, not yet committed
        self._reader: _ReaderProcess | None = None

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
        if self.db_threads is not None:
            con.execute(f"SET threads = {int(self.db_threads)}")
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
        self._consumer = Consumer(_consumer_config(self.settings))
        self._producer = Producer(_dead_letter_producer_config(self.settings))
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
        """Stop serving and the reader process, remove ``projector.json``, close the
        consumer and the file."""
        self._stop_reader()
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
        from confluent_kafka import KafkaException, TopicPartition

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
            if self._reader is not None:
                self._reader.reset()
            else:
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
                    new.append(TopicPartition(topic, partition, self._low_watermark(tp)))
                else:
                    new.append(TopicPartition(topic, partition, start))
                self._assigned.add(tp)
        if restarted:
            self._write_restarts(restarted, cluster_id)
        if new and self._reader is not None:
            self._reader.assign([(tp.topic, tp.partition, tp.offset) for tp in new])
        elif new:
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
        if stored.next_offset > high and not offset_in_log(
            self.settings, tp[0], tp[1], stored.next_offset - 1
        ):  # (a broker may under-report the end: Tansu does for multi-record batches)
            log.warning(
                "projector: %s[%d] stored position %d is beyond the partition's end %d (the "
                "broker lost its log?); reading it again from the beginning",
                tp[0], tp[1], stored.next_offset, high,
            )
            return None
        return stored.next_offset

    def _low_watermark(self, tp: tuple[str, int]) -> int:
        """The first offset of ``tp``, to start reading it from the beginning.

        An actual offset starts fetching at once; librdkafka resolves the logical
        ``OFFSET_BEGINNING`` on a ~0.5 s timer first.
        """
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        try:
            low, _high = self._consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10)
        except KafkaException:
            return int(OFFSET_BEGINNING)
        return int(low)

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

        Synchronous and in this process: when it returns, the batch is in
        DuckDB. :meth:`project` is the fast, pipelined loop.

        Parameters
        ----------
        max_records
            Most records to consume (default ``batch_size``).
        timeout
            Seconds to wait for records (default ``batch_timeout``).
        """
        from confluent_kafka import KafkaException

        self.start()
        if self._reader is not None:
            self._stop_reader()
        self._maybe_sync_assignment()
        try:
            messages = self._consumer.consume(
                num_messages=max_records or self.batch_size,
                timeout=self.batch_timeout if timeout is None else timeout,
            )
        except KafkaException as exc:
            raise ProjectorError(f"consuming from {self.settings.bootstrap_servers} failed: "
                                 f"{exc}") from None
        good = _valid_messages(messages)
        if not good:
            return 0
        batch = build_batch(good, self.topics.dead_letter)
        dead_letter(self._producer, self.topics.dead_letter, batch.invalid)
        self._write(batch)
        self._commit_kafka_offsets()
        return batch.records

    def start_reader(self) -> Projector:
        """Start the reader process :meth:`project` uses (it needs ~1 s to import).

        :meth:`project` starts it when needed; call this first to start it ahead.
        """
        self._ensure_reader()
        return self

    def _ensure_reader(self) -> _ReaderProcess:
        self.start()
        if self._reader is None:
            reader = _ReaderProcess(self.settings, self.topics.dead_letter, self.batch_size,
                                    self.batch_timeout)
            self._consumer.unassign()  # from now on the reader process fetches ...
            handover = self._handover()
            if handover:  # ... from where the last written batch ended
                reader.assign(handover)
            self._reader = reader
        return self._reader

    def _handover(self) -> list[tuple[str, int, int]]:
        """The followed partitions with their stored positions (where to go on reading)."""
        from confluent_kafka import OFFSET_BEGINNING

        stored = self._stored_positions()
        return [(t, p, stored[(t, p)].next_offset if (t, p) in stored else OFFSET_BEGINNING)
                for t, p in sorted(self._assigned)]

    def project(self, stop: threading.Event) -> None:
        """Project until ``stop`` is set, decoding the next batch while this one is written.

        A reader process (:meth:`start_reader`) consumes, validates, decodes and
        dead-letters, off this process's GIL, and hands over whole batches
        (Arrow tables plus their positions) through a pipe that holds a batch
        or two, so it runs at most that far ahead (backpressure). This
        process writes them in order, each in one transaction with its
        positions: the guarantees of :meth:`project_once` hold, and on return
        every batch received is written. The projector stays open
        (:meth:`run` closes it); the reader process stops.

        Raises
        ------
        ProjectorError
            When consuming, dead-lettering or writing failed; nothing after the
            last written batch counts as projected, a restart resumes there.
        """
        reader = self._ensure_reader()
        try:
            while not stop.is_set():
                self._maybe_sync_assignment()
                batch = reader.receive(self.batch_timeout)
                if batch is None:
                    continue
                self._dead_lettered += len(batch.invalid)  # already on the dead-letter topic
                self._write(batch)
                self._commit_kafka_offsets()
        finally:
            self._stop_reader()

    def _stop_reader(self) -> None:
        from confluent_kafka import TopicPartition

        if self._reader is not None:
            self._reader.close()
            self._reader = None
            if self._consumer is not None:  # this process reads on, from the stored positions
                handover = self._handover()
                if handover:
                    self._consumer.assign([TopicPartition(*tp) for tp in handover])

    def _maybe_sync_assignment(self) -> None:
        now = time.monotonic()
        if now >= self._next_discovery:
            self._sync_assignment()
            self._next_discovery = now + self.discovery_interval

    def _write(self, batch: Batch) -> None:
        """Write one batch and its positions in a single transaction, then report progress."""
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
            try:
                added = self._transaction(con, batch, assume_new=not self._replaying)
            except duckdb.ConstraintException:
                # Some ids are in the ledger already: a replay, or a producer's retry.
                # Nothing of the batch was kept; write it again, deduplicating.
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                added = self._transaction(con, batch, assume_new=False)
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise ProjectorError(
                f"writing a batch to {self.db_path} failed: {exc}; nothing of it was kept, "
                "restart the projector to retry"
            ) from None
        finally:
            for name in ("modelog_batch", "modelog_dead", "modelog_positions", "modelog_new"):
                with contextlib.suppress(duckdb.Error):
                    con.unregister(name)
        for tp, offset in batch.positions.items():
            self._kafka_offsets[tp] = max(offset, self._kafka_offsets.get(tp, 0))
        self._records += batch.records
        self._events += added
        self._batches += 1
        if self.progress is not None:
            self.progress(ProjectorProgress(
                "project", self._records, self._events, self._dead_lettered, self._batches,
                batch.records,
            ))

    def _transaction(self, con: duckdb.DuckDBPyConnection, batch: Batch, *,
                     assume_new: bool) -> int:
        """One transaction: new events, what derives from them, dead letters, positions.

        With ``assume_new`` the batch is appended as is, and the ledger's
        primary key raises :class:`duckdb.ConstraintException` if an id is
        there already (an index probe per event); without it, ids already in
        the ledger are filtered out (a join with the ledger's ids, for replays).
        Returns the number of events added.
        """
        con.execute("BEGIN TRANSACTION")
        rows: int = batch.events.num_rows
        added, src = rows, _BATCH
        if rows and assume_new:
            con.execute(f"INSERT INTO events {_LEDGER_SELECT}")
        elif rows:
            new = con.execute(
                f"INSERT INTO events {_LEDGER_SELECT} ON CONFLICT DO NOTHING RETURNING id"
            ).fetchall()
            added = len(new)
            self._replaying = added < rows
            if self._replaying:
                con.register("modelog_new", pa.table({"id": [r[0] for r in new]}))
                src = _NEW_IN_BATCH
        if added:
            derive(con, src, batch.types)
        if batch.dead_letters.num_rows:
            con.execute("INSERT INTO dead_letters SELECT * FROM modelog_dead "
                        "ON CONFLICT DO NOTHING")
        con.execute(_UPSERT_POSITIONS)
        con.execute("COMMIT")
        return added

    def _commit_kafka_offsets(self) -> None:
        """Commit the written positions to Kafka too (for lag monitoring only)."""
        from confluent_kafka import KafkaException, TopicPartition

        offsets, self._kafka_offsets = self._kafka_offsets, {}
        if offsets and self._consumer is not None:
            with contextlib.suppress(KafkaException):
                self._consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    asynchronous=True,
                )

    def run(self, stop: threading.Event | None = None) -> None:
        """Project with :meth:`project` until ``stop`` is set (or SIGTERM/Ctrl-C in the
        main thread), then close."""
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
            self.project(stop)
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

