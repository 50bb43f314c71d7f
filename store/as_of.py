"""Time travel: the projection as it stood at a time ``T``, evaluated from the ledger.

Every table and view of the projection is SQL over the ``events`` ledger
(:data:`~modelog.store.derivations.DERIVATIONS`, :data:`~modelog.store.views.VIEWS`).
"As of ``T``" evaluates *the same definitions* over ``events WHERE time <= T``:
:func:`snapshot` opens a private in-memory DuckDB, creates the schema
(:func:`~modelog.store.schema.create_schema`), copies in the ledger's events
(and dead letters) up to ``T`` and derives every table from them
(:func:`~modelog.store.schema.derive`, what ``modelog project --rebuild`` runs).
Nothing is stored twice: the snapshot is thrown away after use (a small cache,
:class:`SnapshotCache`, keeps the last two while the ledger up to ``T`` does not
change, so a dashboard refresh does not rebuild it). Why a separate in-memory
database and not a temporary schema or table macros: the derived tables are
upserts (``run_state`` merges run events), the registry derivations read the
whole ``events`` table by name, and the query path locks settings (no
``search_path``) -- a fresh database whose ``events`` *is* the filtered ledger
runs every statement unchanged. The snapshot is then locked down like the live
database (:func:`~modelog.store.readonly_sql.lock_down`) and user SQL runs on it
through :func:`~modelog.store.readonly_sql.run_read_query`: one read statement,
same rules. The query server takes ``{"sql": ..., "as_of": "<ISO time>"}``
(:mod:`modelog.store.query_server`); :class:`~modelog.store.reader.Reader` has
``as_of=``.

**Event time, not projection time.** ``T`` is compared with each event's own
``time`` (when it happened, set by its producer), never with ``projected_at``.
A *late* event -- one with ``time <= T`` that reached the ledger after ``T`` --
is part of the answer once it is projected: "as of ``T``" is what the log says
had happened by ``T``, not what a screen showed at ``T``. So an answer about a
past ``T`` can still gain such late events.

A ``T`` before the ledger's first event, or in the future, is refused
(:class:`~modelog.store.errors.AsOfError`).

Imports ``duckdb``, :mod:`modelog.store`.

Examples
--------
>>> import datetime as dt
>>> check_as_of(dt.datetime(2026, 3, 3, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
...             now=dt.datetime(2026, 3, 4, tzinfo=dt.UTC)).isoformat()
'2026-03-03T00:00:00+00:00'
>>> check_as_of(dt.datetime(2026, 2, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
...             now=dt.datetime(2026, 3, 4, tzinfo=dt.UTC))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelog.store.errors.AsOfError: --as-of 2026-02-01T00:00:00+00:00 is before the first event ...
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections import OrderedDict
from typing import Any

import duckdb

from modelog.store.errors import AsOfError
from modelog.store.readonly_sql import lock_down
from modelog.store.schema import create_schema, derive

__all__ = ["SNAPSHOTS", "SnapshotCache", "check_as_of", "parse_as_of", "snapshot"]

_BATCH_ROWS = 100_000
_FUTURE_SLACK = dt.timedelta(seconds=1)


def parse_as_of(value: str | dt.datetime) -> dt.datetime:
    """``value`` (an ISO date or time, naive = UTC, or a datetime) as an aware UTC datetime.

    Examples
    --------
    >>> parse_as_of("2026-03-03 14:00").isoformat()
    '2026-03-03T14:00:00+00:00'
    >>> parse_as_of("yesterday")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    modelog.store.errors.AsOfError: --as-of 'yesterday' is not an ISO date or time; ...
    """
    if isinstance(value, dt.datetime):
        when = value
    else:
        try:
            when = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise AsOfError(f"--as-of {value!r} is not an ISO date or time; write e.g. "
                            "2026-03-03, 2026-03-03T14:00 (UTC) or 2026-03-03T14:00+01:00"
                            ) from None
    when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when
    return when.astimezone(dt.UTC)


def check_as_of(as_of: dt.datetime, first: dt.datetime | None,
                now: dt.datetime | None = None) -> dt.datetime:
    """``as_of`` if the ledger (first event at ``first``) can answer for it; else an error.

    Raises
    ------
    AsOfError
        ``as_of`` is in the future, the ledger is empty, or ``as_of`` is before ``first``.
    """
    as_of = parse_as_of(as_of)
    now = now or dt.datetime.now(dt.UTC)
    if as_of > now + _FUTURE_SLACK:
        raise AsOfError(f"--as-of {as_of.isoformat()} is in the future (now is "
                        f"{now.isoformat(timespec='seconds')}); leave --as-of out for the "
                        "live state")
    if first is None:
        raise AsOfError(f"--as-of {as_of.isoformat()}: the ledger holds no events yet, so "
                        "there is no past to look at; run `modelog project` (or `modelog up`)")
    first = parse_as_of(first)
    if as_of < first:
        raise AsOfError(f"--as-of {as_of.isoformat()} is before the first event of the ledger "
                        f"({first.isoformat()}); nothing existed yet -- pick a time at or "
                        "after it")
    return as_of


def _fingerprint(cur: duckdb.DuckDBPyConnection, as_of: dt.datetime) -> tuple[Any, ...]:
    """What identifies the ledger up to ``as_of``: counts and the latest projection time."""
    row = cur.execute(
        "SELECT (SELECT count(*) FROM events WHERE time <= $1), "
        "(SELECT max(projected_at) FROM events WHERE time <= $1), "
        "(SELECT count(*) FROM dead_letters WHERE time <= $1), "
        "(SELECT min(time) FROM events)", [as_of]).fetchall()
    return tuple(row[0])


def _copy(cur: duckdb.DuckDBPyConnection, snap: duckdb.DuckDBPyConnection, table: str,
          as_of: dt.datetime) -> None:
    """Stream ``table``'s rows with ``time <= as_of`` from ``cur`` into ``snap``."""
    rel = cur.sql(f"SELECT * FROM {table} WHERE time <= ?", params=[as_of])
    assert rel is not None
    batches = rel.to_arrow_reader(_BATCH_ROWS)
    name = f"modelog_as_of_{table}"
    snap.register(name, batches)
    try:
        snap.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")
    finally:
        snap.unregister(name)


def _build(cur: duckdb.DuckDBPyConnection, as_of: dt.datetime) -> duckdb.DuckDBPyConnection:
    snap = duckdb.connect()
    try:
        snap.execute("SET TimeZone = 'UTC'")
        create_schema(snap)
        snap.execute("BEGIN TRANSACTION")
        for table in ("events", "dead_letters"):
            _copy(cur, snap, table, as_of)
        derive(snap, "events")
        snap.execute("COMMIT")
        lock_down(snap)
    except BaseException:
        snap.close()
        raise
    return snap


class SnapshotCache:
    """The last few snapshots, by source, time and ledger fingerprint (thread-safe).

    A snapshot is reused only while the ledger up to its time is unchanged (same
    number of events and dead letters, same latest projection time), so a late
    event makes the next query rebuild it.

    Parameters
    ----------
    size
        Snapshots kept (each is an in-memory database of the ledger up to its time).
    idle
        Seconds after which an unused snapshot is dropped (its memory given back).
    """

    def __init__(self, size: int = 2, idle: float = 300.0) -> None:
        self.size = size
        self.idle = idle
        self._items: OrderedDict[tuple[Any, ...], tuple[duckdb.DuckDBPyConnection, float]] = (
            OrderedDict())
        self._lock = threading.Lock()

    def _evict(self, now: float) -> None:
        """Forget the snapshots beyond :attr:`size` or unused for :attr:`idle` s (lock held).

        Not closed: a query may still run on one; the last reference going frees it."""
        for key, (_, used) in list(self._items.items()):
            if len(self._items) > self.size or now - used > self.idle:
                del self._items[key]

    def get(self, con: duckdb.DuckDBPyConnection, as_of: dt.datetime | str, *,
            source: str = "", now: dt.datetime | None = None) -> duckdb.DuckDBPyConnection:
        """The snapshot of ``con``'s ledger as of ``as_of`` (built, or reused).

        ``source`` names the database (e.g. its path) so two databases never share
        a snapshot. Do not close the returned connection: the cache owns it.
        """
        when = parse_as_of(as_of)
        cur = con.cursor()
        try:
            cur.execute("BEGIN TRANSACTION READ ONLY")  # one consistent view of the ledger
            fingerprint = _fingerprint(cur, when)
            check_as_of(when, fingerprint[-1], now)
            key = (source or str(id(con)), when, *fingerprint)
            with self._lock:
                found = self._items.pop(key, None)
                snap = found[0] if found is not None else _build(cur, when)
                self._items[key] = (snap, time.monotonic())
                self._evict(time.monotonic())
                return snap
        finally:
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")
            cur.close()

    def clear(self) -> None:
        """Forget every snapshot."""
        with self._lock:
            self._items.clear()


SNAPSHOTS = SnapshotCache()
"""The process's snapshot cache (the query server and file readers share it)."""


def snapshot(con: duckdb.DuckDBPyConnection, as_of: dt.datetime | str, *,
             now: dt.datetime | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh, locked-down in-memory projection of ``con``'s ledger as of ``as_of``.

    The caller owns (and closes) the result. Events with ``time <= as_of`` only
    (event time; see the module doc), every derived table and view re-derived
    from them with the projector's own statements.

    Raises
    ------
    AsOfError
        ``as_of`` is in the future or before the first event (or the ledger is empty).

    Examples
    --------
    >>> import duckdb
    >>> from modelog.store.schema import create_schema
    >>> live = duckdb.connect(); create_schema(live)
    >>> live.execute("insert into events (id, type, time, payload) values "
    ...     "('a', 'LabelObserved', '2026-03-01T00:00:00Z', '{\\"prediction_id\\": \\"p\\", "
    ...     "\\"model\\": \\"m\\", \\"label\\": 1}'), ('b', 'LabelObserved', "
    ...     "'2026-03-05T00:00:00Z', '{\\"prediction_id\\": \\"q\\", \\"model\\": \\"m\\", "
    ...     "\\"label\\": 0}')")  # doctest: +ELLIPSIS
    <...>
    >>> then = snapshot(live, "2026-03-02")
    >>> then.execute("select prediction_id from labels").fetchall()
    [('p',)]
    """
    when = parse_as_of(as_of)
    cur = con.cursor()
    try:
        cur.execute("BEGIN TRANSACTION READ ONLY")
        check_as_of(when, _fingerprint(cur, when)[-1], now)
        return _build(cur, when)
    finally:
        with contextlib.suppress(duckdb.Error):
            cur.execute("ROLLBACK")
        cur.close()
