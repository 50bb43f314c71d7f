"""A service's local SQLite ledger: transactions, consumer positions and an outbox.

:class:`SqliteLedger` is what a Kafka-facing service keeps next to its effects
so that they happen exactly once in effect: one connection (WAL, full sync)
behind a lock, every write one transaction (:meth:`SqliteLedger._tx`), the
consumer positions stored with the effects they pass, and a transactional
outbox of events to produce (re-sent at start, dropped once acknowledged).
Subclasses add their own tables (``ddl``) and records; the retrain runner's
job table (:mod:`modelog.store.retrain_jobs`) is one.

Imports the standard library, :mod:`modelog.models` and :mod:`modelog.store`.

Examples
--------
>>> import tempfile, pathlib
>>> with SqliteLedger(pathlib.Path(tempfile.mkdtemp()) / "l.sqlite", "", "a ledger") as led:
...     led.save_positions({("m.monitoring", 0): 5}, "c1")
...     led.save_positions({("m.monitoring", 0): 3}, "c1")   # never backwards
...     led.positions()
{('m.monitoring', 0): StoredPosition(next_offset=5, cluster_id='c1')}
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from modelog.models import codec
from modelog.models.events import Event
from modelog.store.errors import StoreError
from modelog.store.positions import StoredPosition

__all__ = ["LEDGER_DDL", "SqliteLedger"]

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS positions (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    cluster_id TEXT, PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY, topic TEXT NOT NULL, key BLOB, value BLOB NOT NULL);
"""
"""The tables every ledger has: consumer positions and the outbox."""

_UPSERT_POSITION = """
INSERT INTO positions VALUES (?, ?, ?, ?) ON CONFLICT (topic, partition) DO UPDATE SET
    next_offset = CASE WHEN cluster_id IS excluded.cluster_id
                       THEN max(next_offset, excluded.next_offset)
                       ELSE excluded.next_offset END,
    cluster_id = excluded.cluster_id"""

Statement = tuple[str, Sequence[Any]]


class SqliteLedger:
    """A SQLite file with positions, an outbox and the subclass's tables.

    Parameters
    ----------
    path
        The file (its folder is created).
    ddl
        The subclass's ``CREATE TABLE IF NOT EXISTS`` statements.
    what
        Names the ledger in error messages ("the retrain job table").
    restart
        What the operator restarts when a write fails.
    error
        The :class:`StoreError` subclass raised (the service's own).
    pragmas
        Extra ``PRAGMA`` statements run when the file opens (e.g. ``secure_delete=ON``).

    Raises
    ------
    StoreError
        The file cannot be opened, or a write fails (nothing of it is kept).
    """

    def __init__(self, path: Path, ddl: str, what: str, *, restart: str = "the service",
                 error: type[StoreError] = StoreError, pragmas: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.what = what
        self.restart = restart
        self.error = error
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._con = sqlite3.connect(self.path, check_same_thread=False,
                                        isolation_level=None, timeout=30)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=FULL")
            for pragma in pragmas:
                self._con.execute(f"PRAGMA {pragma}")
            self._con.executescript(LEDGER_DDL + ddl)
        except sqlite3.Error as exc:
            raise error(f"cannot open {what} {self.path}: {exc}; check the data directory "
                             "(MODELOG_DATA_DIR) is writable and not used by another "
                             "process of the same kind") from None

    def _tx(self, statements: Iterable[Statement]) -> None:
        """Run ``statements`` in one transaction."""
        with self._lock:
            try:
                self._con.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    self._con.execute(sql, params)
                self._con.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._con.execute("ROLLBACK")
                raise self.error(f"writing {self.what} {self.path} failed: {exc}; nothing of "
                                 f"it was kept, restart {self.restart}") from None

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._con.execute(sql, params).fetchall()

    # -- positions ------------------------------------------------------------------------
    @staticmethod
    def position_statements(positions: dict[tuple[str, int], int],
                            cluster_id: str | None) -> list[Statement]:
        """Statements moving positions forward (to add to a transaction)."""
        return [(_UPSERT_POSITION, (t, p, o, cluster_id)) for (t, p), o in positions.items()]

    def positions(self) -> dict[tuple[str, int], StoredPosition]:
        """Stored consumer positions, by ``(topic, partition)``."""
        rows = self._rows("SELECT topic, partition, next_offset, cluster_id FROM positions")
        return {(t, int(p)): StoredPosition(int(o), c) for t, p, o, c in rows}

    def save_positions(self, positions: dict[tuple[str, int], int], cluster_id: str | None,
                       *, reset: bool = False) -> None:
        """Move positions forward (``reset``: set them as given)."""
        if reset:
            self._tx([("INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?)",
                       (t, p, o, cluster_id)) for (t, p), o in positions.items()])
        else:
            self._tx(self.position_statements(positions, cluster_id))

    # -- outbox ---------------------------------------------------------------------------
    @staticmethod
    def outbox_statement(event: Event, topic: str) -> Statement:
        """The statement putting ``event`` in the outbox (to add to a transaction)."""
        return ("INSERT OR IGNORE INTO outbox VALUES (?, ?, ?, ?)",
                (event.id, topic, event.aggregate.encode(), codec.encode(event)))

    def outbox(self) -> list[tuple[str, str, bytes, bytes]]:
        """Events not yet acknowledged by the broker: ``(id, topic, key, value)``."""
        return [(i, t, bytes(k), bytes(v)) for i, t, k, v in
                self._rows("SELECT id, topic, key, value FROM outbox ORDER BY rowid")]

    def sent(self, event_id: str) -> None:
        """The broker acknowledged an event: drop it from the outbox."""
        self._tx([("DELETE FROM outbox WHERE id = ?", (event_id,))])

    # -- life cycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
