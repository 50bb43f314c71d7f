"""Queries of the lifecycle pages (runs, datasets, registry, lineage), as typed functions.

Like :mod:`modelog.dashboard.data`: each function takes a
:class:`~modelog.dashboard.data.QuerySource` (a :class:`~modelog.store.reader.Reader`
in the app), runs one bounded query against the lifecycle tables of the
projection and returns a DataFrame; a few pure helpers reshape those frames
(parameter comparison, alias periods); the aliases in force at a time come
from the registry's fold (:mod:`modelog.store.registry`). Nothing here
imports Streamlit.

Examples
--------
>>> import pandas as pd
>>> params = pd.DataFrame({"run_id": ["r1", "r1", "r2", "r2"], "key": ["lr", "depth"] * 2,
...                        "value": ["0.1", "3", "0.1", "5"]})
>>> compare_params(params, ["r1", "r2"]).values.tolist()
[['depth', '3', '5', True], ['lr', '0.1', '0.1', False]]
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

from modelog.dashboard.data import QuerySource, bounded
from modelog.dashboard.errors import DashboardQueryError
from modelog.store.filters import select_runs
from modelog.store.queries import as_utc
from modelog.store.registry import fold_model, read_registry_events

__all__ = [
    "NODE_KINDS",
    "alias_history",
    "alias_periods",
    "aliases_as_of",
    "compare_params",
    "dataset_names",
    "dataset_versions",
    "experiments",
    "lineage_around",
    "lineage_nodes",
    "metric_history",
    "model_names",
    "model_versions",
    "node_kind",
    "parse_json",
    "run_artifacts",
    "run_datasets",
    "run_labels",
    "run_latest_metrics",
    "run_params",
    "runs",
]

NODE_KINDS: tuple[str, ...] = ("model", "dataset", "run", "git", "alias", "alert", "retrain")
"""Kinds of lineage nodes, in the order the lineage page lists them."""


def _df(source: QuerySource, sql: str, params: Any = None) -> pd.DataFrame:
    df: pd.DataFrame = source.query_df(sql, params)
    return df


def _ids(name: str, values: Sequence[str]) -> list[str]:
    chosen = [str(v) for v in values]
    if not chosen:
        raise DashboardQueryError(f"{name} must name at least one run id.")
    bounded(f"len({name})", len(chosen), high=100)
    return chosen


def parse_json(value: Any) -> Any:
    """A JSON column's value as Python (``None`` for SQL null or empty text).

    Examples
    --------
    >>> parse_json('{"a": 1}'), parse_json(None), parse_json({"b": 2})
    ({'a': 1}, None, {'b': 2})
    """
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, str | bytes):
        return json.loads(value) if value else None
    return value


# -- runs ---------------------------------------------------------------------
def experiments(source: QuerySource) -> pd.DataFrame:
    """Experiments with their run counts, the most recently active first.

    Columns: ``experiment``, ``runs``, ``failed``, ``last_started``.
    """
    return _df(source, """
SELECT experiment, count(*) AS runs, count(*) FILTER (WHERE status = 'failed') AS failed,
       max(started) AS last_started
FROM runs WHERE experiment IS NOT NULL
GROUP BY experiment ORDER BY last_started DESC NULLS LAST, experiment LIMIT 1000""")


def runs(source: QuerySource, filter_string: str = "", order_by: str | Sequence[str] = (), *,
         experiment: str | None = None, limit: int = 200) -> pd.DataFrame:
    """Runs matching an MLflow-style filter, compiled by :func:`modelog.store.filters.select_runs`.

    Parameters
    ----------
    filter_string, order_by
        As for ``select_runs`` (``"metrics.f1 > 0.8"``, ``"metrics.f1 DESC"``);
        a syntax error raises :class:`~modelog.store.errors.FilterSyntaxError`.
    experiment
        Only runs of this experiment (``None``: all).
    limit
        At most this many runs (newest first unless ``order_by`` says otherwise).

    Returns
    -------
    pandas.DataFrame
        The columns of the ``runs`` table.
    """
    sql, params = select_runs(filter_string, order_by, limit=bounded("limit", limit))
    # Shadow ``runs`` with the experiment's runs, so the compiled query is used untouched.
    scoped = ("WITH runs AS (SELECT * FROM main.runs "
              "WHERE CAST(? AS VARCHAR) IS NULL OR experiment = ?) ")
    return _df(source, scoped + sql, [experiment, experiment, *params])


def run_params(source: QuerySource, run_ids: Sequence[str]) -> pd.DataFrame:
    """The parameters of runs (the latest value of each key). Columns: ``run_id, key, value``."""
    return _df(source, """
SELECT run_id, key, value FROM run_params WHERE list_contains(?, run_id)
QUALIFY row_number() OVER (PARTITION BY run_id, key ORDER BY time DESC, event_id DESC) = 1
ORDER BY run_id, key LIMIT 10000""", [_ids("run_ids", run_ids)])


def run_latest_metrics(source: QuerySource, run_ids: Sequence[str]) -> pd.DataFrame:
    """The latest value of each metric of runs. Columns: ``run_id, key, value``."""
    return _df(source, """
SELECT run_id, key, value FROM run_latest_metrics WHERE list_contains(?, run_id)
ORDER BY run_id, key LIMIT 10000""", [_ids("run_ids", run_ids)])


def metric_history(source: QuerySource, run_ids: Sequence[str], *,
                   limit: int = 10_000) -> pd.DataFrame:
    """Every logged point of the runs' metrics, by step.

    Columns: ``run_id``, ``run`` (name, or the id when unnamed), ``key``,
    ``step``, ``value``, ``time``; ordered by run, key, step.
    """
    return _df(source, """
SELECT m.run_id, coalesce(nullif(r.name, ''), m.run_id) AS run, m.key, m.step, m.value, m.time
FROM run_metrics m LEFT JOIN runs r USING (run_id)
WHERE list_contains(?, m.run_id)
ORDER BY m.run_id, m.key, m.step, m.time LIMIT ?""",
               [_ids("run_ids", run_ids), bounded("limit", limit)])


def run_labels(source: QuerySource, nodes: Sequence[str]) -> dict[str, str]:
    """Lineage node id -> ``run:<name>`` for the run nodes among ``nodes`` that have a name.

    Examples
    --------
    >>> import duckdb
    >>> from modelog.dashboard.data import ConnectionSource
    >>> con = duckdb.connect()
    >>> _ = con.execute("create table runs as select 'r1' as run_id, 'baseline' as name")
    >>> run_labels(ConnectionSource(con), ["run:r1", "git:abc"])
    {'run:r1': 'run:baseline (r1)'}
    """
    ids = [n.split(":", 1)[1] for n in nodes if node_kind(n) == "run"]
    if not ids:
        return {}
    found = _df(source, """
SELECT run_id, name FROM runs WHERE list_contains(?, run_id) AND coalesce(name, '') <> ''
LIMIT 1000""", [ids[:1000]])
    return {f"run:{r}": f"run:{n} ({r[:8]})" for r, n in zip(found["run_id"], found["name"],
                                                            strict=True)}


def run_datasets(source: QuerySource, run_id: str) -> pd.DataFrame:
    """Dataset versions a run used. Columns: ``dataset, digest, context, time``."""
    return _df(source, """
SELECT dataset, digest, context, time FROM run_datasets WHERE run_id = ?
ORDER BY time, dataset LIMIT 1000""", [run_id])


def run_artifacts(source: QuerySource, run_id: str) -> pd.DataFrame:
    """Artifacts a run logged. Columns: ``path, uri, digest, size, time``."""
    return _df(source, """
SELECT path, uri, digest, size, time FROM run_artifacts WHERE run_id = ?
ORDER BY path LIMIT 1000""", [run_id])


def compare_params(params: pd.DataFrame, run_ids: Sequence[str]) -> pd.DataFrame:
    """Parameters side by side: one row per key, one column per run, and ``differs``.

    ``differs`` is true when the runs do not all have the same value (a
    missing parameter counts as a different value). Rows are sorted by key.
    """
    columns = [str(r) for r in run_ids]
    if params.empty:
        return pd.DataFrame(columns=["key", *columns, "differs"])
    wide = params.pivot_table(index="key", columns="run_id", values="value",
                              aggfunc="first").reindex(columns=columns)
    wide = wide.astype(object).where(wide.notna(), None)
    differs = [len({row[c] for c in columns}) > 1 for _, row in wide.iterrows()]
    out = wide.reset_index()
    out.columns = ["key", *columns]
    out["differs"] = differs
    return out.sort_values("key", ignore_index=True)


# -- datasets -----------------------------------------------------------------
def dataset_names(source: QuerySource) -> pd.DataFrame:
    """Datasets with their version count. Columns: ``name, versions, rows, last_time``."""
    return _df(source, """
SELECT name, count(*) AS versions, arg_max(num_rows, version) AS rows, max(time) AS last_time
FROM datasets GROUP BY name ORDER BY last_time DESC NULLS LAST, name LIMIT 1000""")


def dataset_versions(source: QuerySource, name: str) -> pd.DataFrame:
    """The versions of one dataset, newest first, with their profile.

    Columns: ``version``, ``digest``, ``num_rows``, ``parents`` (list),
    ``time``, ``uri``, ``description``, ``producer``, ``columns`` and
    ``profile`` (JSON text, parse with :func:`parse_json`), ``event_id``.
    """
    return _df(source, """
SELECT version, digest, num_rows, parents, time, uri, description, producer,
       CAST(columns AS VARCHAR) AS columns, CAST(profile AS VARCHAR) AS profile, event_id
FROM datasets WHERE name = ? ORDER BY version DESC LIMIT 500""", [name])


# -- registry -----------------------------------------------------------------
def model_names(source: QuerySource) -> pd.DataFrame:
    """Registered models. Columns: ``model, versions, latest_version, last_time``."""
    return _df(source, """
SELECT model, count(*) AS versions, max(model_version) AS latest_version, max(time) AS last_time
FROM model_versions GROUP BY model ORDER BY model LIMIT 1000""")


def model_versions(source: QuerySource, model: str) -> pd.DataFrame:
    """Versions of a model, newest first.

    Columns: ``model_version``, ``flavor``, ``run_id``, ``run`` (its name),
    ``artifact_digest``, ``artifact_uri``, ``signature`` (JSON text),
    ``description``, ``online``, ``time``, ``producer``.
    """
    return _df(source, """
SELECT v.model_version, v.flavor, v.run_id, r.name AS run, v.artifact_digest, v.artifact_uri,
       CAST(v.signature AS VARCHAR) AS signature, v.description, v.online, v.time, v.producer
FROM model_versions v LEFT JOIN runs r USING (run_id)
WHERE v.model = ? ORDER BY v.model_version DESC LIMIT 1000""", [model])


def alias_history(source: QuerySource, model: str, *, limit: int = 5000) -> pd.DataFrame:
    """Alias changes of a model, oldest first (the timeline's rows; the aliases in force at
    a time are :func:`aliases_as_of`'s).

    Columns: ``time``, ``alias``, ``action`` (``set``/``removed``),
    ``model_version``, ``previous_version``, ``actor``, ``reason``, ``event_id``.
    """
    return _df(source, """
SELECT time, alias, action, model_version, previous_version, actor, reason, event_id
FROM alias_history WHERE model = ?
ORDER BY time, event_id LIMIT ?""", [model, bounded("limit", limit)])


class _ArrowSource:
    """A dashboard :class:`QuerySource` as the store's (``query`` -> ``pyarrow.Table``)."""

    def __init__(self, source: QuerySource) -> None:
        self._source = source

    def query(self, sql: str, params: Any = None) -> pa.Table:
        return pa.Table.from_pandas(self._source.query_df(sql, params), preserve_index=False)


def aliases_as_of(source: QuerySource, model: str, at: dt.datetime | None = None) -> pd.DataFrame:
    """The aliases of ``model`` in force at ``at`` (default: now; naive = UTC), and why.

    The registry folded from the ledger by :mod:`modelog.store.registry`, as
    ``modelog.registry_as_of`` and ``modelog registry show --as-of`` answer it:
    the last change of each alias at or before ``at`` decides; an alias whose
    last change removed it is left out.

    Returns
    -------
    pandas.DataFrame
        ``alias``, ``model_version``, ``since``, ``actor``, ``reason``,
        ``previous_version``, sorted by alias.

    Examples
    --------
    >>> import duckdb
    >>> from modelog.dashboard.data import ConnectionSource
    >>> from modelog.models.codec import encode
    >>> from modelog.models.events import AliasChangeRequested, ModelVersionRequested
    >>> from modelog.models.registry_fold import answered
    >>> t = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    >>> def register(c):
    ...     return ModelVersionRequested(id=c, time=t, aggregate="churn", command_id=c,
    ...                                  model="churn", flavor="sklearn")
    >>> s = dt.timedelta(seconds=1)
    >>> move = AliasChangeRequested(id="c3", time=t, aggregate="churn", command_id="c3",
    ...                             model="churn", alias="prod", model_version=2, actor="ci",
    ...                             reason="better f1")
    >>> log = answered([(register("c1"), t - 2 * s), (register("c2"), t - s), (move, t)])
    >>> con = duckdb.connect()
    >>> _ = con.execute("create table events (id varchar, type varchar, time timestamptz, "
    ...                 "aggregate varchar, payload varchar)")
    >>> _ = con.executemany("insert into events values (?, ?, ?, ?, ?)",
    ...                     [[e.id, e.type_name(), e.time, e.aggregate, encode(e).decode()]
    ...                      for e in log])
    >>> aliases_as_of(ConnectionSource(con), "churn")[["alias", "model_version", "reason"]
    ...                                               ].values.tolist()
    [['prod', 2, 'better f1']]
    >>> aliases_as_of(ConnectionSource(con), "churn", t - dt.timedelta(days=1)).empty
    True
    """
    columns = ["alias", "model_version", "since", "actor", "reason", "previous_version"]
    when = None if at is None else as_utc(at)
    state = fold_model(read_registry_events(_ArrowSource(source), model), model, when)
    rows = [{"alias": a.alias, "model_version": a.version, "since": a.since, "actor": a.actor,
             "reason": a.reason, "previous_version": a.previous_version}
            for a in sorted(state.aliases.values(), key=lambda a: a.alias)]
    return pd.DataFrame(rows, columns=columns)


def alias_periods(history: pd.DataFrame, now: dt.datetime) -> pd.DataFrame:
    """The periods each version held each alias (for the timeline).

    A period starts when the alias is set to a version and ends at the next
    change of that alias (or ``now`` while it still holds).

    Returns
    -------
    pandas.DataFrame
        ``alias``, ``model_version``, ``start``, ``end``, ``actor``,
        ``reason`` (of the change that started the period), ``current``.

    Examples
    --------
    >>> t = pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True)
    >>> h = pd.DataFrame({"time": t, "alias": ["prod", "prod"], "action": ["set", "set"],
    ...                   "model_version": [1, 2], "actor": ["ci", "ci"],
    ...                   "reason": ["first", "better"], "event_id": ["e1", "e2"]})
    >>> p = alias_periods(h, pd.Timestamp("2026-01-05", tz="UTC"))
    >>> p[["model_version", "current"]].values.tolist()
    [[1, False], [2, True]]
    >>> str(p["end"].iloc[0].date())
    '2026-01-02'
    """
    columns = ["alias", "model_version", "start", "end", "actor", "reason", "current"]
    if history.empty:
        return pd.DataFrame(columns=columns)
    ordered = history.sort_values(["alias", "time", "event_id"], kind="stable").copy()
    ordered["end"] = ordered.groupby("alias")["time"].shift(-1)
    ordered["current"] = ordered["end"].isna()
    ordered["end"] = ordered["end"].fillna(pd.Timestamp(now))
    held = ordered[ordered["action"] == "set"].rename(columns={"time": "start"})
    held = held.astype({"model_version": "int64"})
    return held[columns].sort_values(["alias", "start"], ignore_index=True)


# -- lineage ------------------------------------------------------------------
_NODES_SQL = """
WITH RECURSIVE e AS (
    SELECT CASE WHEN starts_with(src_id, src_kind || ':') THEN src_id
                ELSE src_kind || ':' || src_id END AS src,
           src_kind,
           CASE WHEN starts_with(dst_id, dst_kind || ':') THEN dst_id
                ELSE dst_kind || ':' || dst_id END AS dst,
           dst_kind, relation, time
    FROM lineage_edges
)"""


def node_kind(node: str) -> str:
    """The kind of a lineage node id (the text before the first ``:``).

    Examples
    --------
    >>> node_kind("dataset:customers@3f2a9c1d0e4b"), node_kind("run:019a")
    ('dataset', 'run')
    """
    return node.split(":", 1)[0]


def lineage_nodes(source: QuerySource) -> pd.DataFrame:
    """Every node of the lineage graph. Columns: ``node`` (``kind:id``), ``kind``, ``edges``.

    Sorted by kind (models first, see :data:`NODE_KINDS`) then node id.
    """
    order = ", ".join(f"'{k}'" for k in NODE_KINDS)
    return _df(source, _NODES_SQL + f"""
SELECT node, any_value(kind) AS kind, count(*) AS edges FROM (
    SELECT src AS node, src_kind AS kind FROM e UNION ALL SELECT dst, dst_kind FROM e
) GROUP BY node
ORDER BY coalesce(list_position([{order}], any_value(kind)), 99), node LIMIT 5000""")


def lineage_around(source: QuerySource, node: str, *, depth: int = 3) -> pd.DataFrame:
    """The lineage edges within ``depth`` hops upstream and downstream of ``node``.

    Upstream follows edges backwards (what ``node`` was made from), downstream
    forwards (what was made from it); cycles are cut by the depth bound.

    Returns
    -------
    pandas.DataFrame
        ``src``, ``src_kind``, ``relation``, ``dst``, ``dst_kind``, ``time``,
        ``direction`` (``upstream``/``downstream``) and ``hops`` (1 = touches
        ``node``), one row per edge (the nearest occurrence).
    """
    hops = bounded("depth", depth, high=10)
    return _df(source, _NODES_SQL + """,
up(src, dst, relation, hops) AS (
    SELECT src, dst, relation, 1 FROM e WHERE dst = $node
    UNION
    SELECT e.src, e.dst, e.relation, up.hops + 1 FROM e JOIN up ON e.dst = up.src
    WHERE up.hops < $depth
), down(src, dst, relation, hops) AS (
    SELECT src, dst, relation, 1 FROM e WHERE src = $node
    UNION
    SELECT e.src, e.dst, e.relation, down.hops + 1 FROM e JOIN down ON e.src = down.dst
    WHERE down.hops < $depth
), found AS (
    SELECT src, dst, relation, 'upstream' AS direction, min(hops) AS hops FROM up GROUP BY ALL
    UNION ALL
    SELECT src, dst, relation, 'downstream', min(hops) FROM down GROUP BY ALL
)
SELECT f.src, any_value(e.src_kind) AS src_kind, f.relation, f.dst,
       any_value(e.dst_kind) AS dst_kind, min(e.time) AS time,
       arg_min(f.direction, f.hops) AS direction, min(f.hops) AS hops
FROM found f JOIN e USING (src, dst, relation)
GROUP BY f.src, f.relation, f.dst
ORDER BY hops, direction, f.src, f.dst LIMIT 2000""", {"node": node, "depth": hops})
