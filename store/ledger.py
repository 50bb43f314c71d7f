"""Ledger batches: consumed records turned into the Arrow tables the ledger appends.

:func:`build_batch` is the decision part of projection, pure (no broker, no
database): it validates and decodes each record exactly as
:func:`modelog.models.codec.decode` does, keeps the first record of each event
id, builds the ``events`` ledger rows (:data:`LEDGER_SCHEMA`) and the
``dead_letters`` rows (:data:`DEAD_LETTER_SCHEMA`), and lists the records to
copy to the dead-letter topic and the next position per partition.
:class:`~modelog.store.recorder.Recorder` writes a :class:`Batch`;
:mod:`modelog.streams.projector` consumes the records.

The per-record loop is the projector's Python hot path. Event times go to
Arrow as integer microseconds (converting tz-aware datetimes cost ~3 µs each),
and the payload is typed as Arrow JSON, so DuckDB stores it without parsing it
again. Batches cross processes as Arrow IPC (:func:`table_bytes`).

May import ``modelog.models`` and ``modelog.store``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any, Protocol, Union

import msgspec
import pyarrow as pa

from modelog.models.codec import decode, name_violation
from modelog.models.deadletter import DeadLetter
from modelog.models.errors import EventDecodeError
from modelog.models.events import CATALOGUE, Event

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "LEDGER_SCHEMA",
    "Batch",
    "InvalidRecord",
    "Record",
    "build_batch",
    "read_table",
    "table_bytes",
]

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
    fast_errors = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)
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
        # proves it states the current schema_version explicitly, as decode() needs;
        # its served names are checked as decode() checks them.
        event: Event | None = None
        payload = value
        if value is not None:
            try:
                event = fast_decode(value)
            except fast_errors:
                event = None
            if event is not None and (
                current[type(event)][1] != event.schema_version or canonical(event) != value
                or name_violation(event) is not None
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


def table_bytes(table: pa.Table) -> pa.Buffer:
    """``table`` as an Arrow IPC stream (what :func:`read_table` reads back, zero-copy)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def read_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()
