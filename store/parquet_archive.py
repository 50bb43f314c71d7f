"""The open archive: the ``events`` ledger as Parquet files any engine can read.

Owns writing the ledger to Parquet (:meth:`ParquetArchive.export`, incremental and
idempotent), compacting it (:meth:`ParquetArchive.compact`), reading it back
(:meth:`ParquetArchive.load`, :meth:`ParquetArchive.query`) and rebuilding a fresh
deployment's DuckDB ledger from it (:func:`restore_ledger`). Imports ``duckdb``,
``pyarrow``, ``modelog.config`` and :mod:`modelog.store`.

Layout (Hive partitioning, zstd; the root is ``<artifact store>/archive`` -- a
directory, ``s3://...`` or any filesystem the artifact store opens)::

    <root>/topic=<topic>/date=<YYYY-MM-DD>/part-<first>-<last>.parquet
    <root>/_modelog/state.json          the export position (ignored by readers)
    <root>/_dead_letters/...            the ``dead_letters`` table (parquet_dead_letters)

A file holds the ledger's columns but the partition keys: ``id, type,
schema_version, time, aggregate, producer, partition, offset, projected_at,
payload`` (``payload`` is the event's JSON text); ``topic`` and ``date`` (the UTC
day of the event's ``time``) come from the path, as Hive readers expect.

**Incremental and idempotent.** The ledger's position is ``(projected_at, id)``:
the projector is its single writer and stamps each batch with its transaction's
start, so later batches sort later. Each export step takes the next rows after
the position in ``state.json`` (at most ``batch_rows``), writes them as
``part-<seq>-<seq>.parquet`` into each partition-day they touch (``seq`` = the
step's number), then records the new position. A crash before the record makes
the next run redo step ``seq`` -- the same rows, or more -- under the *same* file
names, replacing what was written: a re-run never duplicates a row.

**Compaction** merges the parts of a partition-day into one file named by the
range of steps it covers (``part-<first>-<last>``), published by a move, then
deletes the parts. A file whose range lies inside another file's range is
*shadowed*: modelog's readers skip it and the next export or compaction deletes
it, so a crash in between never shows a row twice to them (a plain engine
listing the directory may, until then -- for the milliseconds between the move
and the deletes).

Examples
--------
>>> parse_part("part-0000000003-0000000007.parquet")
(3, 7)
>>> parse_part("_tmp.parquet") is None
True
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import re
import threading
import time
import urllib.parse
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from modelog.config import Settings
from modelog.store.artifacts import ArtifactStore, RemoteArtifactStore, open_store
from modelog.store.as_of import parse_as_of, snapshot
from modelog.store.derivations import DERIVED_TABLES
from modelog.store.errors import ArchiveError
from modelog.store.queries import QuerySource
from modelog.store.readonly_sql import lock_down, read_statement, run_read_query
from modelog.store.schema import create_schema, derive, rebuild_projections
from modelog.store.views import VIEWS

__all__ = ["ArchiveFile", "ExportReport", "LoadReport", "ParquetArchive", "bad_files_message",
           "parse_part", "restore_ledger"]

STATE_FILE = "_modelog/state.json"
_PART = re.compile(r"^part-(\d{10})-(\d{10})\.parquet$")
_COLUMNS = ("id", "type", "schema_version", "time", "aggregate", "producer", "partition",
            "offset", "projected_at", "payload")
_SELECT = f'SELECT {", ".join(chr(34) + c + chr(34) for c in _COLUMNS)}, topic FROM events'
_FIRST_ROWS = (f"{_SELECT} WHERE (projected_at IS NULL AND id > ?) OR projected_at IS NOT NULL "
               "ORDER BY projected_at NULLS FIRST, id LIMIT ?")
"""From the start (or inside the rows without a projection time, which sort first)."""
_NEXT_ROWS = (f"{_SELECT} WHERE projected_at >= CAST(? AS TIMESTAMPTZ) "
              "AND (projected_at > CAST(? AS TIMESTAMPTZ) OR id > ?) "
              "ORDER BY projected_at, id LIMIT ?")
"""After the position ``(projected_at, id)``; the first condition prunes by zone maps."""


def parse_part(name: str) -> tuple[int, int] | None:
    """``(first, last)`` export steps of a part file's name; ``None`` if not a part file."""
    m = _PART.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclasses.dataclass(frozen=True)
class ArchiveFile:
    """One part file: its partition (``topic``, ``date``), step range and path."""

    topic: str
    date: str
    first: int
    last: int
    path: str

    @property
    def directory(self) -> str:
        """The partition-day's directory."""
        return self.path.rsplit("/", 1)[0]


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What :meth:`ParquetArchive.export` wrote: rows, files, steps, and the seconds it took."""

    rows: int = 0
    files: int = 0
    steps: int = 0
    seconds: float = 0.0
    dead_letters: int = 0
    """Rows of the ``dead_letters`` table written (:mod:`modelog.store.parquet_dead_letters`)."""


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What a load or restore did: ``rows`` added to the ledger, ``files`` read, ``bad``
    files (path -> reason) skipped because they are corrupt or truncated; ``dead_letters``
    rows added to that table by a restore or query that read them."""

    rows: int = 0
    files: int = 0
    bad: dict[str, str] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    dead_letters: int = 0


def _events_table(table: pa.Table) -> pa.Table:
    """The ledger columns (as exported), ``time``/``projected_at`` in UTC."""
    cols = []
    for name in _COLUMNS:
        col = table.column(name)
        if name in ("time", "projected_at"):
            col = col.cast(pa.timestamp("us", tz="UTC"))
        elif name == "payload":
            col = col.cast(pa.string())
        cols.append(col)
    return pa.table(cols, names=list(_COLUMNS))


class ParquetArchive:
    """The Parquet archive at ``base`` on the filesystem ``fs`` (see the module doc).

    Parameters
    ----------
    fs
        A pyarrow filesystem (local, S3, or an fsspec one wrapped by pyarrow).
    base
        The archive's root path on ``fs``.
    uri
        How to name the root in messages (``s3://bucket/modelog/archive``).
    """

    TABLE = "events"
    """The ledger table the files hold (:meth:`load` inserts into it)."""
    SORT_KEYS: tuple[tuple[str, str], ...] = (("time", "ascending"), ("id", "ascending"))
    """The order of a compacted file's rows."""

    def __init__(self, fs: pafs.FileSystem, base: str, uri: str | None = None) -> None:
        self.fs = fs
        self.base = base.rstrip("/")
        self.uri = uri or self.base

    @classmethod
    def from_uri(cls, uri: str | Path) -> ParquetArchive:
        """The archive rooted at ``uri``: a directory, ``file://``, ``s3://``, or any
        filesystem URI the artifact store opens (:func:`~modelog.store.artifacts.open_store`)."""
        return cls._of_store(open_store(uri), "")

    @classmethod
    def from_settings(cls, settings: Settings) -> ParquetArchive:
        """The deployment's archive: ``archive/`` under its artifact store
        (``MODELOG_ARTIFACT_URI``, default ``<data dir>/artifacts``)."""
        return cls._of_store(ArtifactStore.from_settings(settings), "/archive")

    @classmethod
    def _of_store(cls, store: ArtifactStore, sub: str) -> ParquetArchive:
        if isinstance(store, RemoteArtifactStore):
            base = store.base + sub
            return cls(store.fs, base, f"{store.scheme}://{base}")
        root = str(store.root) + sub
        return cls(pafs.LocalFileSystem(), root, root)

    # -- files -------------------------------------------------------------------------
    def _write_atomic(self, path: str, write: Callable[[Any], None]) -> None:
        """Write ``path`` through a temporary name in its directory, then move it in place."""
        folder = path.rsplit("/", 1)[0]
        self.fs.create_dir(folder, recursive=True)
        tmp = f"{folder}/_tmp-{uuid.uuid4().hex}.tmp"
        try:
            with self.fs.open_output_stream(tmp) as out:
                write(out)
            self.fs.move(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
            raise

    def state(self) -> dict[str, Any]:
        """The export position: ``{"seq", "projected_at", "id", "rows"}`` (zeros when new)."""
        try:
            with self.fs.open_input_stream(f"{self.base}/{STATE_FILE}") as f:
                state = json.loads(f.read())
        except FileNotFoundError:
            return {"seq": 0, "projected_at": None, "id": "", "rows": 0}
        except (OSError, ValueError) as exc:
            raise ArchiveError(f"the archive's position {self.uri}/{STATE_FILE} is unreadable "
                               f"({exc}); restore it from a backup, or move the whole archive "
                               "aside and export everything again") from None
        if not isinstance(state, dict) or not isinstance(state.get("seq"), int):
            raise ArchiveError(f"{self.uri}/{STATE_FILE} is not an archive position: {state!r}")
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        body = json.dumps(state).encode()
        self._write_atomic(f"{self.base}/{STATE_FILE}", lambda out: out.write(body))

    def all_files(self) -> list[ArchiveFile]:
        """Every part file under the root (shadowed ones included), by path."""
        selector = pafs.FileSelector(self.base, recursive=True, allow_not_found=True)
        out = []
        for info in self.fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            rel = info.path[len(self.base):].lstrip("/").split("/")
            steps = parse_part(rel[-1])
            if (steps is None or len(rel) != 3 or not rel[0].startswith("topic=")
                    or not rel[1].startswith("date=")):
                continue
            out.append(ArchiveFile(urllib.parse.unquote(rel[0][6:]), rel[1][5:], *steps,
                                   path=info.path))
        return sorted(out, key=lambda f: f.path)

    @staticmethod
    def _shadowed(files: Sequence[ArchiveFile]) -> set[str]:
        """Paths whose step range lies inside another file's range of the same directory."""
        by_dir: dict[str, list[ArchiveFile]] = defaultdict(list)
        for f in files:
            by_dir[f.directory].append(f)
        out = set()
        for group in by_dir.values():
            for f in group:
                if any(g is not f and g.first <= f.first and f.last <= g.last
                       and (g.first, g.last) != (f.first, f.last) for g in group):
                    out.add(f.path)
        return out

    def files(self) -> list[ArchiveFile]:
        """The part files a reader should read (none shadowed by a compacted file)."""
        files = self.all_files()
        hidden = self._shadowed(files)
        return [f for f in files if f.path not in hidden]

    def heal(self) -> int:
        """Delete shadowed part files (left by a compaction that crashed); how many."""
        hidden = self._shadowed(self.all_files())
        for path in hidden:
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(path)
        return len(hidden)

    # -- writing -----------------------------------------------------------------------
    def _write_part(self, topic: str, date: str, seq_range: tuple[int, int],
                    table: pa.Table) -> str:
        folder = f"{self.base}/topic={urllib.parse.quote(topic, safe='._-')}/date={date}"
        path = f"{folder}/part-{seq_range[0]:010d}-{seq_range[1]:010d}.parquet"
        self._write_atomic(path, lambda out: pq.write_table(table, out, compression="zstd"))
        return path

    def export_step(self, source: QuerySource, batch_rows: int = 100_000) -> tuple[int, int]:
        """Export the next (at most) ``batch_rows`` ledger rows; ``(rows, files)`` written."""
        state = self.state()
        stamp = state["projected_at"]
        rows = (source.query(_FIRST_ROWS, [state["id"], batch_rows]) if stamp is None
                else source.query(_NEXT_ROWS, [stamp, stamp, state["id"], batch_rows]))
        if rows.num_rows == 0:
            return 0, 0
        seq = int(state["seq"]) + 1
        events = _events_table(rows)
        files = self._write_step(seq, events, rows.column("topic"))
        last = events.slice(events.num_rows - 1).to_pylist()[0]
        stamp = last["projected_at"]
        self._save_state({"seq": seq, "projected_at": stamp and stamp.isoformat(),
                          "id": last["id"], "rows": int(state.get("rows", 0)) + rows.num_rows})
        return rows.num_rows, files

    def _write_step(self, seq: int, table: pa.Table, topic: pa.ChunkedArray) -> int:
        """Write step ``seq``'s rows, one part per (topic, day of ``time``); files written."""
        topics = pc.fill_null(topic.cast(pa.string()), "unknown")
        dates = pc.fill_null(pc.strftime(table.column("time"), format="%Y-%m-%d"), "unknown")
        keys = pa.table({"topic": topics, "date": dates, "i": pa.array(range(table.num_rows))})
        groups = keys.group_by(["topic", "date"]).aggregate([("i", "list")])
        for name, date, idx in zip(groups.column("topic").to_pylist(),
                                   groups.column("date").to_pylist(),
                                   groups.column("i_list").to_pylist(), strict=True):
            self._write_part(name, date, (seq, seq), table.take(idx))
        return int(groups.num_rows)

    def dead_letter_archive(self) -> ParquetArchive | None:
        """The ``dead_letters`` table's archive under this root (``_dead_letters/``, see
        :mod:`modelog.store.parquet_dead_letters`); ``None`` for that archive itself."""
        from modelog.store.parquet_dead_letters import DeadLetterArchive

        return DeadLetterArchive(self.fs, f"{self.base}/_dead_letters",
                                 f"{self.uri}/_dead_letters")

    def export(self, source: QuerySource, *, batch_rows: int = 100_000,
               max_steps: int | None = None) -> ExportReport:
        """Export everything the ledger holds beyond the archive's position.

        Parameters
        ----------
        source
            The ledger: a :class:`~modelog.store.reader.Reader` (through the projector's
            query server while it runs) or anything with its ``query`` method.
        batch_rows
            Rows per step (one part file per partition-day a step touches).
        max_steps
            Stop after this many steps (``None``: until caught up).
        """
        started = time.monotonic()
        rows = files = steps = 0
        self.heal()
        while max_steps is None or steps < max_steps:
            n, k = self.export_step(source, batch_rows)
            if n == 0:
                break
            rows, files, steps = rows + n, files + k, steps + 1
        dead = self.dead_letter_archive()
        extra = (dead.export(source, batch_rows=batch_rows, max_steps=max_steps) if dead
                 else ExportReport())
        return ExportReport(rows, files + extra.files, steps, time.monotonic() - started,
                            extra.rows)

    def compact(self, *, min_files: int = 8, today: dt.date | None = None) -> int:
        """Merge the parts of each partition-day into one file; the partition-days merged.

        A past day is merged when it has two files or more, today's when it has
        ``min_files`` or more (it is still growing). Each merge is published with one
        move, then its inputs are deleted (see the module doc).
        """
        today = today or dt.datetime.now(dt.UTC).date()
        self.heal()
        committed = int(self.state()["seq"])  # a step not recorded yet may be redone: skip it
        by_dir: dict[str, list[ArchiveFile]] = defaultdict(list)
        for f in self.files():
            if f.last <= committed:
                by_dir[f.directory].append(f)
        merged = 0
        for group in by_dir.values():
            past = group[0].date < today.isoformat()
            if len(group) < (2 if past else max(2, min_files)):
                continue
            try:
                tables = [self._read(f.path) for f in group]
            except (OSError, ValueError, pa.ArrowException):
                continue  # a corrupt part: leave the day as it is (a load names the file)
            table = pa.concat_tables(tables).sort_by(list(self.SORT_KEYS))
            first, last = min(f.first for f in group), max(f.last for f in group)
            self._write_part(group[0].topic, group[0].date, (first, last), table)
            for f in group:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.delete_file(f.path)
            merged += 1
        dead = self.dead_letter_archive()
        return merged + (dead.compact(min_files=min_files, today=today) if dead else 0)

    def follow(self, source: QuerySource, stop: threading.Event, *, interval: float = 2.0,
               compact_every: float = 300.0, batch_rows: int = 100_000,
               on_error: Callable[[Exception], None] | None = None) -> None:
        """Export as the ledger grows (every ``interval`` s) and compact every
        ``compact_every`` s, until ``stop`` is set. A failing round (the projector not up
        yet, the store unreachable) is reported to ``on_error`` and retried."""
        next_compaction = time.monotonic() + compact_every
        while not stop.wait(interval):  # a first pause: the projector opens its file first
            try:
                self.export(source, batch_rows=batch_rows)
                if time.monotonic() >= next_compaction:
                    self.compact()
                    next_compaction = time.monotonic() + compact_every
            except Exception as exc:  # retried: the service must outlive a bad moment
                if on_error is None:
                    raise
                on_error(exc)

    # -- reading -----------------------------------------------------------------------
    def _read(self, path: str) -> pa.Table:
        return pq.read_table(path, filesystem=self.fs)  # columns decoded in parallel

    def _columns(self, table: pa.Table) -> pa.Table:
        """A file's columns as :attr:`TABLE` takes them (``topic`` is added from the path)."""
        return _events_table(table)

    def _events_part(self, f: ArchiveFile) -> pa.Table | str:
        """The ledger rows of one part file, or why it cannot be read."""
        try:
            table = self._columns(self._read(f.path))
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            return f"{type(exc).__name__}: {exc}"
        return table.append_column("topic", pa.array([f.topic] * table.num_rows, pa.string()))

    def _tables(self, files: Iterable[ArchiveFile], bad: dict[str, str]
                ) -> Iterable[tuple[ArchiveFile, pa.Table]]:
        """Each readable part file's rows, in order; the next file is read while the
        caller handles this one (Arrow and DuckDB release the GIL)."""
        with concurrent.futures.ThreadPoolExecutor(1, "modelog-archive-read") as pool:
            ahead: collections.deque[tuple[ArchiveFile, concurrent.futures.Future[Any]]] = (
                collections.deque())
            for f in files:
                ahead.append((f, pool.submit(self._events_part, f)))
                if len(ahead) < 2:
                    continue
                yield from self._ready(ahead.popleft(), bad)
            while ahead:
                yield from self._ready(ahead.popleft(), bad)

    @staticmethod
    def _ready(item: tuple[ArchiveFile, concurrent.futures.Future[Any]], bad: dict[str, str]
               ) -> Iterator[tuple[ArchiveFile, pa.Table]]:
        f, future = item
        result = future.result()
        if isinstance(result, str):
            bad[f.path] = result
        else:
            yield f, result

    def load(self, con: duckdb.DuckDBPyConnection, *, as_of: str | dt.datetime | None = None,
             skip_existing: bool = False) -> LoadReport:
        """Insert the archived events into ``con``'s ``events`` table (which must exist).

        ``as_of`` keeps only events up to that time (event time). A corrupt or truncated
        file is skipped and named in :attr:`LoadReport.bad`; the rest is loaded.
        ``skip_existing`` drops events whose id is already there.
        """
        started = time.monotonic()
        when = None if as_of is None or as_of == "" else parse_as_of(as_of)
        bad: dict[str, str] = {}
        files = 0
        conflict = " ON CONFLICT DO NOTHING" if skip_existing else ""
        before = int(con.execute(f"SELECT count(*) FROM {self.TABLE}").fetchall()[0][0])
        parts = iter(self._tables(self.files(), bad))
        first = next(parts, None)
        if first is not None:  # one INSERT streaming every part (per part: ~4x slower)
            loaded = [0]

            def batches() -> Iterator[pa.RecordBatch]:
                for _, table in itertools.chain([first], parts):
                    if when is not None:
                        table = table.filter(pc.less_equal(
                            table.column("time"), pa.scalar(when, pa.timestamp("us", "UTC"))))
                    loaded[0] += 1
                    yield from table.to_batches()

            stream = pa.RecordBatchReader.from_batches(first[1].schema, batches())
            con.register("modelog_archive_parts", stream)
            try:
                con.execute(f"INSERT INTO {self.TABLE} BY NAME SELECT * FROM modelog_archive_parts"
                            f"{conflict}")
            finally:
                con.unregister("modelog_archive_parts")
            files = loaded[0]
        rows = int(con.execute(f"SELECT count(*) FROM {self.TABLE}").fetchall()[0][0]) - before
        return LoadReport(rows, files, bad, time.monotonic() - started)

    def query(self, sql: str, params: Any = None, *, as_of: str | dt.datetime | None = None
              ) -> pa.Table:
        """Run one read statement over the archive: ``events`` is the archived ledger, and
        the projection's tables and views are derived from it when the SQL names one
        (``as_of``: all of them as they stood then, see :mod:`modelog.store.as_of`).

        Raises
        ------
        ArchiveError
            A part file is corrupt or truncated (named), or the archive is empty.
        modelog.store.errors.AsOfError
            ``as_of`` is in the future or before the first archived event.
        modelog.store.errors.QueryError
            As for the live views (one read statement, same rules).
        """
        read_statement(sql)
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            create_schema(con)
            report = self.load(con)
            words = set(re.findall(r"[a-z_]+", sql.lower()))
            dead = self.dead_letter_archive() if words & _DEAD_LETTER_WORDS else None
            bad = {**report.bad, **(dead.load(con).bad if dead is not None else {})}
            if bad:
                raise ArchiveError(_bad_files(bad))
            if not report.files:
                raise ArchiveError(f"the archive at {self.uri} holds no part files yet; run "
                                   "`modelog archive export` (or `modelog up`)")
            if as_of is not None and as_of != "":  # the same checks and views as live
                then = snapshot(con, as_of)
                try:
                    return run_read_query(then, sql, params)
                finally:
                    then.close()
            if words & (set(DERIVED_TABLES) | set(VIEWS)):
                derive(con, "events")
            lock_down(con)
            return run_read_query(con, sql, params)
        finally:
            con.close()


_DEAD_LETTER_WORDS = frozenset({"dead_letters", "dead_letter_count"})
"""Names in a query's SQL that make :meth:`ParquetArchive.query` load the dead letters."""


def _bad_files(bad: dict[str, str]) -> str:
    listing = "; ".join(f"{path} ({why})" for path, why in sorted(bad.items()))
    return (f"{len(bad)} archive file(s) are corrupt or truncated: {listing}. The rest was "
            "read; restore those partitions from a backup or delete the files (their events "
            "are then missing).")


def _unkeyed_events_ddl() -> str:
    """The ``events`` table's DDL (:mod:`modelog.store.schema`'s, as DuckDB reports it)
    without its primary key, for a bulk load that adds the key afterwards."""
    scratch = duckdb.connect()
    try:
        create_schema(scratch)
        sql = str(scratch.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'events'"
                                  ).fetchall()[0][0])
    finally:
        scratch.close()
    return sql.replace("id VARCHAR PRIMARY KEY", "id VARCHAR", 1)


def restore_ledger(archive: ParquetArchive, db_path: Path, *, force: bool = False
                   ) -> LoadReport:
    """Rebuild a deployment's DuckDB ledger at ``db_path`` from the archive, and its views.

    Run it before the projector starts (it needs the file for itself). The events
    keep their ids, times, topics, partitions, offsets and ``projected_at``; the
    derived tables and views are then rebuilt from them
    (:func:`~modelog.store.schema.rebuild_projections`), so they equal the ones of
    the deployment the archive came from; the dead letters are loaded back into
    ``dead_letters``. Corrupt files are skipped and reported in
    :attr:`LoadReport.bad`; the rest is restored.

    Raises
    ------
    ArchiveError
        ``db_path`` already holds events and ``force`` is false (with ``force``,
        events already there are kept and only missing ones added).
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(db_path))
    except duckdb.IOException as exc:
        raise ArchiveError(f"cannot open {db_path} for the restore ({exc}); stop the "
                           "projector (or `modelog up`) of this data directory first") from None
    try:
        create_schema(con)
        held = int(con.execute("SELECT count(*) FROM events").fetchall()[0][0])
        if held and not force:
            raise ArchiveError(f"{db_path} already holds {held:,} events: a restore goes into "
                               "a fresh deployment. Use another MODELOG_DATA_DIR, or pass "
                               "--force to add the archive's missing events to it")
        con.execute("BEGIN TRANSACTION")
        try:
            if not held:  # bulk: load without the key, then build it once (~2x faster)
                con.execute("DROP TABLE events")
                con.execute(_unkeyed_events_ddl())
            report = archive.load(con, skip_existing=bool(held))
            if not held:
                con.execute("ALTER TABLE events ADD PRIMARY KEY (id)")
            dead = archive.dead_letter_archive()
            if dead is not None:  # keyed by (topic, partition, offset): none twice
                more = dead.load(con, skip_existing=True)
                report = dataclasses.replace(report, bad={**report.bad, **more.bad},
                                             dead_letters=more.rows)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        rebuild_projections(con)
        return report
    except duckdb.Error as exc:
        raise ArchiveError(f"restoring {db_path} from {archive.uri} failed: {exc}") from None
    finally:
        con.close()


def bad_files_message(report: LoadReport) -> str:
    """The operator's message for the corrupt files of ``report`` ('' when none)."""
    return _bad_files(report.bad) if report.bad else ""

