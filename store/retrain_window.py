"""How long a retrain job waits for labelled traffic after a drift, and where its window ends.

A drift is detected within a few dozen labelled predictions of its start, so a
window that ends at the detection holds almost nothing of the new behaviour:
training on it, and gating on a holdout of it, would judge the candidate on the
*old* concept. :func:`await_labelled_rows` therefore lets the job wait, up to a
bound, until the model's labelled traffic since the window's start reaches what
the job needs (``min_labelled_rows``, and enough for the holdout), and returns
the end the window then takes: the request's end, or the moment the rows were
there when that is later. The window actually used is recorded with the job
(its run parameters and the window dataset), so replaying the log shows what
was trained on; a job re-run after a crash may see a later end, but the
registry still answers its one registration (the command id comes from the
request).

Counting goes through a ``query(sql, params) -> pyarrow.Table`` function (the
projection's :meth:`~modelog.store.reader.Reader.query`). Imports
:mod:`modelog.store` only; no Kafka client.

Examples
--------
>>> import datetime as dt, duckdb
>>> from modelog.store.schema import create_schema
>>> from modelog.store.training_data import duckdb_query
>>> con = duckdb.connect()
>>> create_schema(con)
>>> _ = con.execute(\"\"\"
...     INSERT INTO predictions SELECT 'e' || i, 'p' || i, 'churn', 1, NULL,
...         TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_minutes(i),
...         json_object('age', i), '1', 'app', NULL FROM range(10) t(i);
...     INSERT INTO labels SELECT 'l' || i, 'p' || i, 'churn',
...         TIMESTAMPTZ '2026-01-01 01:00:00+00', CAST(1 AS JSON) FROM range(6) t(i)\"\"\")
>>> start = dt.datetime(2026, 1, 1, 0, 2, tzinfo=dt.UTC)
>>> labelled_rows_since(duckdb_query(con), "churn", start)
4
>>> wait = await_labelled_rows(duckdb_query(con), "churn", start=start, end=start,
...                            needed=3, max_wait=0.0)
>>> wait.rows, wait.enough, wait.end > start  # [start, start] held none: the end moved on
(4, True, True)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from collections.abc import Callable

import pyarrow as pa

__all__ = ["WindowWait", "await_labelled_rows", "labelled_rows_since", "rows_needed"]

Query = Callable[[str, list[object]], pa.Table]


def rows_needed(min_labelled_rows: int, min_holdout_rows: int, holdout_share: float) -> int:
    """Labelled rows a job needs: its minimum, and enough for the gate's holdout.

    >>> rows_needed(200, 50, 0.2)
    250
    """
    return max(min_labelled_rows, math.ceil(min_holdout_rows / holdout_share))


def labelled_rows_since(query: Query, model: str, start: dt.datetime | None,
                        end: dt.datetime | None = None) -> int:
    """How many predictions of ``model`` in ``[start, end]`` have a label (``None``: open)."""
    where = ""
    params: list[object] = [model]
    if start is not None:
        where, params = where + " AND p.time >= ?", [*params, start]
    if end is not None:
        where, params = where + " AND p.time <= ?", [*params, end]
    sql = f"""
SELECT count(*) AS n FROM predictions p
WHERE p.model = ?{where}
  AND EXISTS (SELECT 1 FROM labels l WHERE l.prediction_id = p.prediction_id)"""
    table = query(sql, params)
    return int(table.column("n")[0].as_py() or 0)


@dataclasses.dataclass(frozen=True)
class WindowWait:
    """The outcome of :func:`await_labelled_rows`.

    ``end`` is the window's end to use, ``rows`` the labelled rows counted
    last, ``waited`` the seconds spent waiting, ``enough`` whether ``rows``
    reached what was needed.
    """

    end: dt.datetime | None
    rows: int
    waited: float
    enough: bool


def await_labelled_rows(
    query: Query, model: str, *, start: dt.datetime | None, end: dt.datetime | None,
    needed: int, max_wait: float, poll: float = 2.0,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    sleep: Callable[[float], None] = time.sleep,
    on_wait: Callable[[int, float], None] | None = None,
) -> WindowWait:
    """Wait up to ``max_wait`` seconds for ``needed`` labelled predictions since ``start``.

    Returns at once when ``[start, end]`` already holds them. Otherwise counts
    from ``start`` on, with no end, polling every
    ``poll`` seconds; the window's end becomes the moment of the last count
    (never earlier than ``end``). ``on_wait(rows, waited)`` reports progress.
    """
    began = time.monotonic()
    if end is not None:
        rows = labelled_rows_since(query, model, start, end)
        if rows >= needed:
            return WindowWait(end=end, rows=rows, waited=0.0, enough=True)
    rows = labelled_rows_since(query, model, start)
    counted_at = now()
    while rows < needed and time.monotonic() - began < max_wait:
        if on_wait is not None:
            on_wait(rows, time.monotonic() - began)
        sleep(min(poll, max(0.0, max_wait - (time.monotonic() - began))))
        counted_at = now()
        rows = labelled_rows_since(query, model, start)
    final = counted_at if end is None or counted_at > end else end
    return WindowWait(end=final, rows=rows, waited=round(time.monotonic() - began, 3),
                      enough=rows >= needed)
