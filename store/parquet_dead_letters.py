"""The dead letters in the open archive: the ``dead_letters`` table as Parquet.

Owns :class:`DeadLetterArchive`, the archive of the ``dead_letters`` table (every
record seen on the dead-letter topic, see :mod:`modelog.store.schema`) under the
events archive's root (:mod:`modelog.store.parquet_archive`), so a deployment
restored from Parquet keeps its dead letters. The events archive's export, follow,
compaction, restore and ``query`` call it
(:meth:`~modelog.store.parquet_archive.ParquetArchive.dead_letter_archive`). Imports
``pyarrow`` and :mod:`modelog.store`.

Layout (Hive partitioning, zstd; ``date`` is the UTC day of the record's broker
timestamp, ``unknown`` without one)::

    <root>/_dead_letters/topic=<dead-letter topic>/date=<YYYY-MM-DD>/part-<first>-<last>.parquet
    <root>/_dead_letters/_modelog/state.json     the export position (ignored by readers)

The leading ``_`` keeps the folder out of the events archive for modelog's
readers and for plain engines reading the root (pyarrow, pandas and Spark skip
``_``-prefixed paths). A file holds ``partition, offset, time, reason,
source_topic, source_partition, source_offset, consumer, key, value`` (``key`` and
``value`` binary, as in the table); ``topic`` comes from the path.

**Incremental and idempotent.** The table has no projection time: its key is the
record's ``(topic, partition, offset)`` on the dead-letter topic, and the projector
reads each partition in offset order. So the position is, per (topic, partition),
the next offset to export and how many rows were exported below it. Each step
exports the next (at most ``batch_rows``) rows at or after those offsets in
``(topic, partition, offset)`` order as ``part-<seq>-<seq>.parquet``, then records
the new position. A step redone after a crash first deletes the files of the steps
never recorded, so a re-run never duplicates a row. Rows that appear *below* a
partition's position (a fresh broker refilled by ``modelog archive restore`` starts
its offsets again) are noticed by the count and exported once, by comparing with
the offsets already archived.

Examples
--------
>>> where, params = below_positions({("acme.dead-letter", 0): 7})
>>> where, params
('(topic = ? AND partition = ? AND "offset" < ?)', ['acme.dead-letter', 0, 7])
>>> below_positions({})
('false', [])
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from modelog.store.errors import ArchiveError
from modelog.store.parquet_archive import ParquetArchive
from modelog.store.queries import QuerySource

__all__ = ["DIRECTORY", "DeadLetterArchive", "below_positions"]

DIRECTORY = "_dead_letters"
"""The dead letters' folder under the archive's root."""
SCHEMA = pa.schema([
    ("partition", pa.int32()), ("offset", pa.int64()), ("time", pa.timestamp("us", tz="UTC")),
    ("reason", pa.string()), ("source_topic", pa.string()), ("source_partition", pa.int32()),
    ("source_offset", pa.int64()), ("consumer", pa.string()), ("key", pa.binary()),
    ("value", pa.binary()),
])
"""The columns of a dead-letter part file (the table's but ``topic``)."""
_SELECT = ("SELECT topic, " + ", ".join(f'"{name}"' for name in SCHEMA.names)
           + " FROM dead_letters")
_ORDER = ' ORDER BY topic, partition, "offset"'

Slot = tuple[str, int]
"""A partition of the dead-letter topic: ``(topic, partition)``."""


def below_positions(positions: Mapping[Slot, int]) -> tuple[str, list[Any]]:
    """SQL condition (and its parameters) for the rows below ``positions`` (next offsets)."""
    if not positions:
        return "false", []
    terms, params = [], []
    for (topic, partition), offset in sorted(positions.items()):
        terms.append('(topic = ? AND partition = ? AND "offset" < ?)')
        params += [topic, partition, offset]
    return " OR ".join(terms), params


def _dead_table(table: pa.Table) -> pa.Table:
    """The file columns of ``table`` (rows of ``dead_letters``), typed as :data:`SCHEMA`."""
    return pa.table([table.column(f.name).cast(f.type) for f in SCHEMA], schema=SCHEMA)


class DeadLetterArchive(ParquetArchive):
    """The archive of the ``dead_letters`` table at ``base`` (see the module doc).

    Files, healing, compaction and loading are the events archive's
    (:class:`~modelog.store.parquet_archive.ParquetArchive`); the export step and the
    columns differ. Build it with
    :meth:`~modelog.store.parquet_archive.ParquetArchive.dead_letter_archive`.
    """

    TABLE = "dead_letters"
    SORT_KEYS = (("partition", "ascending"), ("offset", "ascending"))

    def dead_letter_archive(self) -> ParquetArchive | None:
        """``None``: this is the dead letters' archive."""
        return None

    def _columns(self, table: pa.Table) -> pa.Table:
        return _dead_table(table)

    def positions(self) -> dict[Slot, tuple[int, int]]:
        """Per (topic, partition): the next offset to export, and the rows exported below."""
        return {(str(t), int(p)): (int(o), int(n))
                for t, p, o, n in self.state().get("positions", [])}

    def export_step(self, source: QuerySource, batch_rows: int = 100_000) -> tuple[int, int]:
        """Export the next (at most) ``batch_rows`` dead letters; ``(rows, files)`` written."""
        state = self.state()
        seq = int(state["seq"]) + 1
        self._drop_unrecorded(seq - 1)
        positions = self.positions()
        missed = self._missed(source, positions, batch_rows)
        where, params = below_positions({s: o for s, (o, _) in positions.items()})
        rows = source.query(f"{_SELECT} WHERE NOT ({where}){_ORDER} LIMIT ?",
                            [*params, max(batch_rows - missed.num_rows, 0)])
        if missed.num_rows:
            rows = pa.concat_tables([missed.cast(rows.schema), rows])
        if rows.num_rows == 0:
            return 0, 0
        table = _dead_table(rows)
        files = self._write_step(seq, table, rows.column("topic"))
        keys = pa.table({"topic": rows.column("topic").cast(pa.string()),
                         "partition": table.column("partition"),
                         "offset": table.column("offset")})
        stats = keys.group_by(["topic", "partition"]).aggregate(
            [("offset", "max"), ("offset", "count")])
        for t, p, last, n in zip(*(stats.column(c).to_pylist() for c in (
                "topic", "partition", "offset_max", "offset_count")), strict=True):
            offset, done = positions.get((t, p), (0, 0))
            positions[(t, p)] = (max(offset, last + 1), done + n)
        self._save_state({"seq": seq, "rows": int(state.get("rows", 0)) + rows.num_rows,
                          "positions": [[t, p, o, n] for (t, p), (o, n)
                                        in sorted(positions.items())]})
        return rows.num_rows, files

    def _drop_unrecorded(self, recorded: int) -> None:
        """Delete the files of steps after ``recorded`` (a crash before their position was
        saved): the step is redone now, and may pick other rows than the first time."""
        for f in self.all_files():
            if f.last > recorded:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.delete_file(f.path)

    def _missed(self, source: QuerySource, positions: Mapping[Slot, tuple[int, int]],
                limit: int) -> pa.Table:
        """Rows below a partition's position that are not archived (none, normally)."""
        if not positions:
            return pa.table({})
        where, params = below_positions({s: o for s, (o, _) in positions.items()})
        counts = source.query("SELECT topic, partition, count(*) AS n FROM dead_letters "
                              f"WHERE {where} GROUP BY topic, partition", params).to_pylist()
        slots = [(str(r["topic"]), int(r["partition"])) for r in counts
                 if int(r["n"]) > positions[(str(r["topic"]), int(r["partition"]))][1]]
        found: list[pa.Table] = []
        for topic, partition in sorted(slots):
            rows = source.query(f"{_SELECT} WHERE topic = ? AND partition = ? "
                                f'AND "offset" < ?{_ORDER}',
                                [topic, partition, positions[(topic, partition)][0]])
            have = pa.array(sorted(self._archived(topic, partition)), pa.int64())
            keep = pc.invert(pc.is_in(rows.column("offset").cast(pa.int64()), value_set=have))
            found.append(rows.filter(keep))
        if not found:
            return pa.table({})
        return pa.concat_tables(found).slice(0, limit)

    def _archived(self, topic: str, partition: int) -> set[int]:
        """The offsets of ``(topic, partition)`` the archive holds."""
        out: set[int] = set()
        for f in self.files():
            if f.topic != topic:
                continue
            try:
                table = pq.read_table(f.path, filesystem=self.fs,
                                      columns=["partition", "offset"])
            except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
                raise ArchiveError(
                    f"the dead-letter archive file {f.path} is unreadable ({exc}); restore it "
                    "from a backup or delete it (its dead letters are then exported again)"
                ) from None
            mask = pc.equal(table.column("partition"), partition)
            out.update(table.filter(mask).column("offset").to_pylist())
        return out
