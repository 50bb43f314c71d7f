"""Lifecycle queries: runs and datasets, the shared plumbing of the store's queries.

What MLflow's tracking server answers, read from the projection
(:mod:`modelog.store.schema`) through a :class:`~modelog.store.reader.Reader`
-- or anything with the same ``query(sql, params) -> pyarrow.Table`` method. Every
query is parameterised SQL; the decisions (pivoting params and metrics into
columns, resolving references) are pure functions of the rows, tested without a
database. The registry's queries are in :mod:`modelog.store.registry`, the
lineage graph's in :mod:`modelog.store.lineage`.

Time travel needs nothing here: every query takes its source, and a ``Reader``
built with ``as_of=T`` answers from the views as they stood at ``T``
(:mod:`modelog.store.as_of`), so ``list_runs(Reader(s, as_of=T))`` lists the runs
of then, with the statuses and metrics of then.

An unknown run, dataset or version raises :class:`~modelog.store.errors.NotFoundError`
naming what exists ("dataset churn-train has versions 1, 2, 3").

Imports :mod:`modelog.models` and :mod:`modelog.store` only.

Examples
--------
>>> rows = [{"version": 1, "digest": "ab12" * 8}, {"version": 2, "digest": "cd34" * 8}]
>>> pick_version("churn-train", rows, "2")["digest"][:4], pick_version("churn-train", rows,
...     "ab1")["version"]
('cd34', 1)
>>> pick_version("churn-train", rows, "7")
Traceback (most recent call last):
...
modelog.store.errors.NotFoundError: dataset churn-train has no version 7: it has versions 1, 2
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa

from modelog.models.errors import ProfileError
from modelog.models.profile import ProfileDiff, diff_profiles
from modelog.store.errors import NotFoundError, QueryError
from modelog.store.filters import select_runs

__all__ = [
    "QuerySource",
    "as_utc",
    "compare_runs",
    "dataset_diff",
    "list_datasets",
    "list_runs",
    "parse_time",
    "pick_version",
    "pivot_runs",
    "show_run",
]

RUN_COLUMNS = ("run_id", "experiment", "name", "status", "started", "ended")
"""The attribute columns :func:`list_runs` returns before ``params.*`` and ``metrics.*``."""
_VERSION_REF = re.compile(r"v?(\d{1,6})")


class QuerySource(Protocol):
    """What the queries need: read-only SQL with ``?`` parameters (a ``Reader`` is one)."""

    def query(self, sql: str, params: Any = None) -> pa.Table:
        """Run ``sql`` with ``params`` and return the result."""
        ...


def fetch_rows(source: QuerySource, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """The rows of ``sql`` (``?`` placeholders bound to ``params``) as dicts."""
    return source.query(sql, list(params)).to_pylist()  # type: ignore[no-any-return]


def fetch_frame(source: QuerySource, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
    """The rows of ``sql`` (``?`` placeholders bound to ``params``) as a DataFrame."""
    df: pd.DataFrame = source.query(sql, list(params)).to_pandas()
    return df


def listing(values: Iterable[Any], most: int = 20) -> str:
    """``values`` for an error message: comma-separated, at most ``most`` of them."""
    shown = [str(v) for v in values]
    more = f" and {len(shown) - most} more" if len(shown) > most else ""
    return ", ".join(shown[:most]) + more if shown else "none"


def _json(value: Any) -> Any:
    """A JSON column's value (text through the query server, or already parsed)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# -- runs --------------------------------------------------------------------------------
def pivot_runs(runs: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """Add one ``params.<k>``/``metrics.<k>`` column per key to ``runs``, in ``runs``' order.

    Parameters
    ----------
    runs
        One row per run with a ``run_id`` column.
    values
        ``run_id``, ``column`` (``params.lr``...), ``value`` rows.

    Examples
    --------
    >>> runs = pd.DataFrame({"run_id": ["a", "b"]})
    >>> vals = pd.DataFrame({"run_id": ["b", "a", "a"], "column": ["metrics.f1", "params.lr",
    ...                      "metrics.f1"], "value": [0.9, "0.1", 0.8]})
    >>> pivot_runs(runs, vals).values.tolist()
    [['a', '0.1', 0.8], ['b', None, 0.9]]
    """
    out = runs.reset_index(drop=True).copy()
    columns = sorted(set(values["column"]) if len(values) else set(),
                     key=lambda c: (not c.startswith("params."), c))
    for col in columns:
        part = values[values["column"] == col]
        mapping = dict(zip(part["run_id"], part["value"], strict=True))
        series = [mapping.get(r) for r in out["run_id"]]
        out[col] = pd.Series(series, dtype=float if col.startswith("metrics.") else object)
        if not col.startswith("metrics."):
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


def _run_values(source: QuerySource, run_ids: Sequence[str]) -> pd.DataFrame:
    """``run_id``, ``column``, ``value`` of the params and latest metrics of ``run_ids``."""
    ids = list(run_ids)
    params = fetch_rows(source, "SELECT run_id, 'params.' || key AS column, value FROM run_params "
                           "WHERE list_contains(?, run_id)", [ids])
    metrics = fetch_rows(source, "SELECT run_id, 'metrics.' || key AS column, value "
                            "FROM run_latest_metrics WHERE list_contains(?, run_id)", [ids])
    return pd.DataFrame(params + metrics, columns=["run_id", "column", "value"])


def list_runs(
    reader: QuerySource,
    filter: str = "",
    order_by: str | Sequence[str] = (),
    experiment: str | None = None,
    limit: int = 100,
) -> pd.DataFrame:
    """Runs matching an MLflow-style filter, with their params and latest metrics as columns.

    Parameters
    ----------
    filter
        ``"metrics.f1 > 0.8 and params.model = 'rf'"`` (see :mod:`modelog.store.filters`).
    order_by
        ``"metrics.f1 DESC"`` or several; default: newest first.
    experiment
        Only this experiment's runs.
    limit
        At most this many runs.

    Returns
    -------
    pandas.DataFrame
        ``run_id, experiment, name, status, started, ended``, then ``params.<k>``
        (text) and ``metrics.<k>`` (float) columns, sorted by key.
    """
    sql, params = select_runs(filter, order_by, limit=limit)
    if experiment is not None:
        # Shadow ``runs`` with the experiment's runs, so the compiled query is used untouched.
        sql = "WITH runs AS (SELECT * FROM main.runs WHERE experiment = ?) " + sql
        params = [experiment, *params]
    runs: pd.DataFrame = reader.query(sql, params).select(list(RUN_COLUMNS)).to_pandas()
    if runs.empty:
        return runs
    return pivot_runs(runs, _run_values(reader, list(runs["run_id"])))


def resolve_run(source: QuerySource, ref: str) -> dict[str, Any]:
    """The ``runs`` row of run ``ref`` (an id or a unique prefix of one)."""
    rows = fetch_rows(source, "SELECT * FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id "
                         "LIMIT 11", [ref])
    exact = [r for r in rows if r["run_id"] == ref]
    if exact:
        return exact[0]
    if len(rows) == 1:
        return rows[0]
    if rows:
        raise NotFoundError(f"run id prefix {ref!r} is ambiguous: it matches "
                            f"{listing((r['run_id'] for r in rows), 10)}; give more of the id")
    info = fetch_rows(source, "SELECT count(*) AS n, list(run_id ORDER BY started DESC NULLS LAST)"
                         "[1:5] AS newest FROM runs")[0]
    raise NotFoundError(
        f"no run {ref!r}: there are {info['n']} runs"
        + (f" (newest: {listing(info['newest'])}); `modelog runs list` shows them"
           if info["n"] else " (nothing was logged yet)"))


def show_run(reader: QuerySource, run_id: str) -> dict[str, Any]:
    """Everything about one run.

    Returns
    -------
    dict
        The ``runs`` attributes (``run_id``, ``experiment``, ``name``, ``status``,
        ``started``, ``ended``, ``parent_run_id``, ``producer``), and ``tags``,
        ``code`` (the code version), ``failure`` (``{"error", "traceback"}`` or
        ``None``), ``params`` (key -> text), ``metrics`` (key -> latest value),
        ``metric_history`` (key -> ``{"points", "first_step", "last_step"}``),
        ``datasets``, ``artifacts``, ``children`` and ``models`` (lists of dicts).

    Raises
    ------
    NotFoundError
        No run has that id (or prefix), or the prefix is ambiguous.
    """
    run = resolve_run(reader, run_id)
    rid = run["run_id"]
    out: dict[str, Any] = {k: run.get(k) for k in (*RUN_COLUMNS, "parent_run_id", "producer")}
    out["tags"] = _json(run.get("tags")) or {}
    code = _json(run.get("code")) or {}
    out["code"] = {k: v for k, v in code.items() if v not in (None, {}, "")} if isinstance(
        code, dict) else code
    out["failure"] = ({"error": run.get("error"), "traceback": run.get("traceback") or ""}
                      if run.get("status") == "failed" else None)
    out["params"] = {r["key"]: r["value"] for r in fetch_rows(
        reader, "SELECT key, value FROM run_params WHERE run_id = ? ORDER BY key", [rid])}
    out["metrics"] = {r["key"]: r["value"] for r in fetch_rows(
        reader, "SELECT key, value FROM run_latest_metrics WHERE run_id = ? ORDER BY key", [rid])}
    out["metric_history"] = {r.pop("key"): r for r in fetch_rows(
        reader, "SELECT key, count(*) AS points, min(step) AS first_step, max(step) AS last_step "
                "FROM run_metrics WHERE run_id = ? GROUP BY key ORDER BY key", [rid])}
    out["datasets"] = fetch_rows(reader, "SELECT dataset, digest, context, time FROM run_datasets "
                                    "WHERE run_id = ? ORDER BY time, dataset", [rid])
    out["artifacts"] = fetch_rows(reader, "SELECT path, uri, digest, size, time FROM run_artifacts "
                                     "WHERE run_id = ? ORDER BY path", [rid])
    out["children"] = fetch_rows(reader, "SELECT run_id, name, status, started FROM runs "
                                    "WHERE parent_run_id = ? ORDER BY started, run_id", [rid])
    out["models"] = fetch_rows(reader, "SELECT model, model_version, time FROM model_versions "
                                  "WHERE run_id = ? ORDER BY model, model_version", [rid])
    return out


def compare_table(values: pd.DataFrame, run_ids: Sequence[str]) -> pd.DataFrame:
    """Params and metrics side by side: one row per ``params.<k>``/``metrics.<k>``, one
    column per run, and ``differs`` (a missing value differs from any value).

    Examples
    --------
    >>> vals = pd.DataFrame({"run_id": ["a", "b", "a"], "column": ["params.lr", "params.lr",
    ...                      "metrics.f1"], "value": ["0.1", "0.1", 0.8]})
    >>> compare_table(vals, ["a", "b"]).values.tolist()
    [['params.lr', '0.1', '0.1', False], ['metrics.f1', 0.8, None, True]]
    """
    ids = [str(r) for r in run_ids]
    cells: dict[str, dict[str, Any]] = defaultdict(dict)
    for rid, col, value in zip(values["run_id"], values["column"], values["value"], strict=True):
        cells[col][rid] = None if value is None or value != value else value
    rows = []
    for col in sorted(cells, key=lambda c: (not c.startswith("params."), c)):
        row = {"key": col, **{rid: cells[col].get(rid) for rid in ids}}
        row["differs"] = len({repr(cells[col].get(rid)) for rid in ids}) > 1
        rows.append(row)
    out = pd.DataFrame(rows, columns=["key", *ids, "differs"], dtype=object)
    out["differs"] = out["differs"].astype(bool)
    return out


def compare_runs(reader: QuerySource, run_ids: Sequence[str]) -> pd.DataFrame:
    """Compare runs' params and latest metrics (see :func:`compare_table`).

    Run ids may be unique prefixes; the columns are the full ids.
    """
    if not run_ids:
        raise QueryError("give at least one run id to compare")
    ids = [resolve_run(reader, r)["run_id"] for r in run_ids]
    return compare_table(_run_values(reader, ids), ids)


# -- datasets ----------------------------------------------------------------------------
def list_datasets(reader: QuerySource, name: str | None = None) -> pd.DataFrame:
    """Datasets (one row per name), or the versions of dataset ``name``.

    Without ``name``: ``name, versions, latest_version, latest_digest, num_rows,
    updated``. With it: ``version, digest, num_rows, parents, uri, description,
    time, producer, has_profile``, oldest first.
    """
    if name is None:
        return fetch_frame(reader, """
SELECT name, count(*) AS versions, max(version) AS latest_version,
       arg_max(digest, version) AS latest_digest, arg_max(num_rows, version) AS num_rows,
       max(time) AS updated
FROM datasets GROUP BY name ORDER BY name""")
    df = fetch_frame(reader, """
SELECT version, digest, num_rows, parents, uri, description, time, producer,
       profile IS NOT NULL AND json_type(profile) <> 'NULL' AS has_profile
FROM datasets WHERE name = ? ORDER BY version""", [name])
    if df.empty:
        _unknown_dataset(reader, name)
    return df


def _unknown_dataset(source: QuerySource, name: str) -> None:
    names = [r["name"] for r in fetch_rows(source, "SELECT DISTINCT name FROM datasets ORDER BY 1")]
    raise NotFoundError(f"no dataset {name!r}; datasets: {listing(names)}")


def pick_version(name: str, rows: Sequence[Mapping[str, Any]], ref: str | int) -> Mapping[str, Any]:
    """The version row of dataset ``name`` that ``ref`` designates.

    ``ref`` is a version number (``2``, ``"2"``, ``"v2"``) or a digest prefix
    (``"9f3a"``); ``rows`` are the dataset's versions (``version``, ``digest``...).

    Raises
    ------
    NotFoundError
        No such version (the message lists the versions), or an ambiguous prefix.
    """
    text = str(ref).strip().lower()
    versions = ", ".join(str(r["version"]) for r in rows)
    match = _VERSION_REF.fullmatch(text)
    if match:
        found = [r for r in rows if int(r["version"]) == int(match.group(1))]
        what = f"version {int(match.group(1))}"
    else:
        found = [r for r in rows if text and str(r["digest"]).startswith(text)]
        what = f"version with a digest starting {text!r}"
    if len(found) > 1:
        raise NotFoundError(f"digest prefix {text!r} of dataset {name} matches versions "
                            f"{', '.join(str(r['version']) for r in found)}; give more digits")
    if not found:
        raise NotFoundError(f"dataset {name} has no {what}: it has versions {versions}")
    return found[0]


def _dataset_version(source: QuerySource, name: str, ref: str | int) -> Mapping[str, Any]:
    rows = fetch_rows(source, "SELECT name, version, digest, num_rows, profile, time FROM datasets "
                         "WHERE name = ? ORDER BY version", [name])
    if not rows:
        _unknown_dataset(source, name)
    return pick_version(name, rows, ref)


def dataset_diff(reader: QuerySource, name: str, v1: str | int, v2: str | int) -> ProfileDiff:
    """What changed from version ``v1`` to ``v2`` of dataset ``name`` (profiles' diff).

    ``v1``/``v2`` are version numbers or digest prefixes; render the result with
    ``.render()``.

    Raises
    ------
    NotFoundError
        Unknown dataset or version.
    ProfileError
        A version was logged without a profile.
    """
    old, new = _dataset_version(reader, name, v1), _dataset_version(reader, name, v2)
    profiles = []
    for row in (old, new):
        profile = _json(row["profile"])
        if not isinstance(profile, dict):
            raise ProfileError(
                f"dataset {name} version {row['version']} (digest {str(row['digest'])[:12]}) "
                "has no profile, so there is nothing to compare; log that version again "
                "with a profile (modelog.models.profile.profile_table) to diff it")
        profiles.append(profile)
    return diff_profiles(profiles[0], profiles[1], old_rows=old["num_rows"],
                         new_rows=new["num_rows"])


# -- times ---------------------------------------------------------------------------------
def as_utc(t: dt.datetime) -> dt.datetime:
    """``t`` with UTC as its time zone when it has none (naive times are UTC)."""
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t


def parse_time(text: str) -> dt.datetime:
    """An ISO date or time as an aware datetime (naive means UTC; a date means midnight).

    Examples
    --------
    >>> parse_time("2026-03-03 14:00").isoformat()
    '2026-03-03T14:00:00+00:00'
    >>> parse_time("2026-03-03").isoformat(), parse_time("2026-03-03T14:00+01:00").hour
    ('2026-03-03T00:00:00+00:00', 14)
    """
    try:
        return as_utc(dt.datetime.fromisoformat(text.strip()))
    except ValueError:
        raise QueryError(f"{text!r} is not an ISO date or time; write e.g. 2026-03-03, "
                         "2026-03-03T14:00 (UTC) or 2026-03-03T14:00+01:00") from None
