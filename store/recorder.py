"""The DuckDB recorder: writes ledger batches and their positions, exactly once.

One :class:`Recorder` owns the DuckDB file. :meth:`Recorder.write` takes a
:class:`~modelog.store.ledger.Batch` and, in ONE transaction,

1. appends its events to the ``events`` ledger (deduplicated by id),
2. derives ``predictions``, ``labels``, ``alerts``, ``monitor_stats`` and the
   lifecycle tables from the new events (:func:`modelog.store.schema.derive`),
3. records the dead-letter topic's records in ``dead_letters``, and
4. stores the next offset per partition, with the broker's cluster id, in
   ``consumer_positions``.

Positions live with the rows, so a crash anywhere resumes exactly where the
last committed batch ended. The same object serves reads
(:mod:`modelog.store.query_server`) and advertises them in
``<data_dir>/projector.json``. No broker here: :mod:`modelog.streams.projector`
consumes the records and hands batches over.

Each batch is appended as is (the ledger's primary key rejects a batch holding
a known id, which is then written again with an anti-join), and only newly
added events are derived. Most of the write cost is DuckDB's commit (its WAL,
and checkpoints every 256 MB of it).

May import ``modelog.config``, ``modelog.models`` and ``modelog.store``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from modelog.store.errors import ProjectorError
from modelog.store.ledger import Batch
from modelog.store.positions import StoredPosition
from modelog.store.query_server import QueryServer
from modelog.store.schema import (
    SCHEMA_VERSION,
    create_schema,
    derive,
    rebuild_projections,
    stored_schema_version,
)

__all__ = ["Recorder"]

log = logging.getLogger("modelog.projector")

_BATCH = "modelog_batch"
"""The registered batch (:data:`~modelog.store.ledger.LEDGER_SCHEMA`, what ``derive`` reads)."""
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


class Recorder:
    """The writer of one DuckDB file: ledger batches, positions, and the query server.

    Parameters
    ----------
    db_path
        The DuckDB file (created with its schema if missing).
    db_threads
        DuckDB worker threads (``None``: DuckDB's default, one per core).
    lock_wait
        Seconds to wait for another process's hold on the file to end (a reader
        opening it while no query server answers) before giving up.

    Examples
    --------
    >>> import tempfile
    >>> from modelog.store.ledger import build_batch
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     rec = Recorder(Path(tmp) / "modelog.duckdb")
    ...     added = rec.write(build_batch([], "m.dead-letter"), cluster_id="c1")
    ...     n = rec.connection.execute("select count(*) from events").fetchone()
    ...     rec.close()
    >>> added, n
    (0, (0,))
    """

    def __init__(self, db_path: Path, *, db_threads: int | None = None,
                 lock_wait: float = 10.0) -> None:
        self.db_path = db_path
        self.db_threads = db_threads
        self.lock_wait = lock_wait
        self._con: duckdb.DuckDBPyConnection | None = None
        self._server: QueryServer | None = None
        self._runtime_file: Path | None = None
        self._replaying = False  # the last batch had ids already in the ledger

    # -- the file ----------------------------------------------------------------------
    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The writer connection (opens the file on first use)."""
        if self._con is None:
            self._con = self._open()
        return self._con

    def _open(self) -> duckdb.DuckDBPyConnection:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        # A reader may hold the file for a moment (it opens it itself while no query
        # server answers, e.g. while this projector restarts): wait a little for it.
        deadline = time.monotonic() + self.lock_wait
        while True:
            try:
                con = duckdb.connect(str(self.db_path))
                break
            except duckdb.IOException as exc:
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise ProjectorError(
                    f"cannot open {self.db_path} for writing: {exc}. Another projector "
                    "probably runs on this data directory; stop it, or use another "
                    "MODELOG_DATA_DIR."
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

    def close(self) -> None:
        """Stop serving (removing the runtime file) and close the file (idempotent)."""
        self.stop_serving()
        if self._con is not None:
            self._con.close()
            self._con = None

    def rebuild(self) -> int:
        """Drop the derived tables and views and re-derive them from the ledger.

        Returns the number of events in the ledger.
        """
        return rebuild_projections(self.connection)

    # -- positions ---------------------------------------------------------------------
    def stored_positions(self) -> dict[tuple[str, int], StoredPosition]:
        """Every stored position, by ``(topic, partition)``."""
        rows = self.connection.execute(
            "SELECT topic, partition, next_offset, cluster_id FROM consumer_positions"
        ).fetchall()
        return {(t, int(p)): StoredPosition(int(o), c) for t, p, o, c in rows}

    def restart(self, tps: Sequence[tuple[str, int]], cluster_id: str | None) -> None:
        """Record that ``tps`` are read again from the beginning of ``cluster_id``'s log."""
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

    # -- writing -----------------------------------------------------------------------
    def write(self, batch: Batch, cluster_id: str | None) -> int:
        """Write ``batch`` and its positions in a single transaction; return events added.

        Raises
        ------
        ProjectorError
            When DuckDB refused the transaction: nothing of the batch was kept.
        """
        con = self.connection
        positions = pa.table({
            "topic": [t for t, _ in batch.positions],
            "partition": pa.array([p for _, p in batch.positions], pa.int32()),
            "next_offset": pa.array(list(batch.positions.values()), pa.int64()),
            "cluster_id": [cluster_id] * len(batch.positions),
        })
        con.register("modelog_batch", batch.events)
        con.register("modelog_dead", batch.dead_letters)
        con.register("modelog_positions", positions)
        try:
            try:
                return self._transaction(con, batch, assume_new=not self._replaying)
            except duckdb.ConstraintException:
                # Some ids are in the ledger already: a replay, or a producer's retry.
                # Nothing of the batch was kept; write it again, deduplicating.
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                return self._transaction(con, batch, assume_new=False)
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

    def _transaction(self, con: duckdb.DuckDBPyConnection, batch: Batch, *,
                     assume_new: bool) -> int:
        """One transaction: new events, what derives from them, dead letters, positions.

        With ``assume_new`` the batch is appended as is, and the ledger's
        primary key raises :class:`duckdb.ConstraintException` if an id is
        there already (an index probe per event); without it, ids already in
        the ledger are filtered out (a join with the ledger's ids, for replays).
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

    # -- serving reads -----------------------------------------------------------------
    @property
    def query_url(self) -> str | None:
        """URL of the query server, while it runs."""
        return self._server.url if self._server is not None else None

    def serve(self, bind: str, runtime_file: Path, *, max_rows: int, timeout: float,
              token: str | None = None, **info: Any) -> str:
        """Start the read-only query server and advertise it in ``runtime_file``; its URL.

        ``token`` (``MODELOG_QUERY_TOKEN``) is required of every request when set,
        and needed to bind beyond loopback; it is not written to ``runtime_file``.
        """
        server = QueryServer(self.connection, bind, token=token, max_rows=max_rows,
                             timeout=timeout,
                             info={"pid": os.getpid(), "db": str(self.db_path), **info}).start()
        self._server, self._runtime_file = server, runtime_file
        runtime_file.write_text(json.dumps({
            "pid": os.getpid(), "port": server.port, "db": str(self.db_path), "url": server.url,
        }))
        return server.url

    def stop_serving(self) -> None:
        """Stop the query server and remove the runtime file this process wrote."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        runtime, self._runtime_file = self._runtime_file, None
        if runtime is not None:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(runtime.read_text()).get("pid") == os.getpid():
                    runtime.unlink()
