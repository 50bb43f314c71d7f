"""Every query the dashboard runs, as small typed functions returning DataFrames.

Each function takes a :class:`QuerySource` -- in the app a
:class:`modelog.store.reader.Reader`, which asks the projector's query server
or opens the DuckDB file read-only -- and runs one bounded query (a ``LIMIT``
or a fixed number of windows), so a refresh every couple of seconds stays cheap
however long the log grows. Nothing here imports Streamlit: the functions are
tested on their own.

Examples
--------
>>> import duckdb
>>> from modelog.store.schema import create_schema
>>> con = duckdb.connect()
>>> create_schema(con)
>>> source = ConnectionSource(con)
>>> overview(source).to_dict("records")[0]["predictions"]
0
>>> is_empty(overview(source))
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import duckdb
import numpy as np
import pandas as pd

from modelog.dashboard.errors import DashboardQueryError
from modelog.models.alerts import ALERT_TYPE_NAMES
from modelog.store.as_of import SNAPSHOTS

__all__ = [
    "ConnectionSource",
    "DashboardQueryError",
    "QuerySource",
    "alert_feed",
    "aliases",
    "dead_letter_reasons",
    "error_rate",
    "feature_drift",
    "is_empty",
    "latest_feature_drift",
    "learning_curve",
    "models",
    "monitor_series",
    "overview",
    "prediction_distribution",
]

Params = Sequence[Any] | dict[str, Any] | None

MAX_LIMIT = 10_000
"""Upper bound of every ``limit``/``windows`` argument (keeps refreshes bounded)."""


class QuerySource(Protocol):
    """Anything that runs read-only SQL and returns a DataFrame (``Reader`` does)."""

    def query_df(self, sql: str, params: Params = None) -> Any:
        """Run ``sql`` with ``params`` bound; return a ``pandas.DataFrame``."""
        ...


class ConnectionSource:
    """A :class:`QuerySource` over an open DuckDB connection (tests, notebooks).

    Parameters
    ----------
    con
        The connection to query; the caller owns it.
    as_of
        Answer as the projection stood at this time (ISO text or aware datetime):
        the same views over the ledger's events up to then
        (:mod:`modelog.store.as_of`); ``None`` or ``""``: live. In the app, a
        :class:`~modelog.store.reader.Reader` takes the same ``as_of``.

    Examples
    --------
    >>> import duckdb
    >>> ConnectionSource(duckdb.connect()).query_df("select 41 + ? as x", [1]).x.tolist()
    [42]
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, *, as_of: Any = None) -> None:
        self.con = con
        self.as_of = as_of or None

    def query_df(self, sql: str, params: Params = None) -> pd.DataFrame:
        """Run ``sql`` on a fresh cursor of the connection (or of its "as of" snapshot)."""
        con = self.con if self.as_of is None else SNAPSHOTS.get(self.con, self.as_of)
        return con.cursor().execute(sql, params).df()


def bounded(name: str, value: int, low: int = 1, high: int = MAX_LIMIT) -> int:
    """``value`` if it is an int in ``[low, high]``; else a :class:`DashboardQueryError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DashboardQueryError(
            f"{name}={value!r} must be an integer between {low} and {high}; "
            "pass a smaller value to keep the page fast."
        )
    return value


def _types(types: Iterable[str] | None) -> str:
    """An SQL ``IN`` list of known alert types (validated, so safe to inline)."""
    if types is None:
        return ""
    chosen = list(types)
    for t in chosen:
        if t not in ALERT_TYPE_NAMES:
            raise DashboardQueryError(
                f"alert type {t!r} is unknown; use one of {', '.join(ALERT_TYPE_NAMES)}."
            )
    if not chosen:
        raise DashboardQueryError("types must name at least one alert type (or be None).")
    return "AND a.type IN (" + ", ".join(f"'{t}'" for t in chosen) + ")"


# -- header -------------------------------------------------------------------
_OVERVIEW_SQL = """
SELECT
    (SELECT count(*) FROM events) AS events,
    (SELECT count(*) FROM predictions) AS predictions,
    (SELECT count(*) FROM labels) AS labels,
    (SELECT count(*) FROM alerts) AS alerts,
    (SELECT count(*) FROM alerts d
      WHERE d.type = 'DriftDetected'
        AND NOT EXISTS (SELECT 1 FROM alerts r
                        WHERE r.type = 'DriftResolved' AND r.detected_id = d.event_id))
        AS open_alerts,
    (SELECT dead_letters FROM dead_letter_count) AS dead_letters,
    (SELECT max(time) FROM events) AS last_event
"""


def overview(source: QuerySource) -> pd.DataFrame:
    """One row of header counts.

    Columns: ``events`` (projected), ``predictions``, ``labels``, ``alerts``,
    ``open_alerts`` (``DriftDetected`` without a ``DriftResolved`` naming it),
    ``dead_letters`` (distinct dead-lettered records) and ``last_event`` (time).
    """
    df: pd.DataFrame = source.query_df(_OVERVIEW_SQL)
    return df


def is_empty(overview_df: pd.DataFrame) -> bool:
    """Whether nothing was projected yet (the page then shows how to start).

    Examples
    --------
    >>> is_empty(pd.DataFrame([{"events": 0, "predictions": 0, "alerts": 0,
    ...                         "dead_letters": 0}]))
    True
    """
    if overview_df.empty:
        return True
    row = overview_df.iloc[0]
    return all(int(row[c] or 0) == 0 for c in ("events", "predictions", "alerts", "dead_letters"))


def dead_letter_reasons(source: QuerySource, limit: int = 5) -> pd.DataFrame:
    """The latest dead-lettered records (one row per source record), newest first.

    Columns: ``time``, ``reason``, ``source_topic``, ``source_partition``,
    ``source_offset``, ``consumer``, ``size`` (bytes of the value).
    """
    sql = """
SELECT time, reason, source_topic, source_partition, source_offset, consumer,
       octet_length(value) AS size
FROM dead_letters
QUALIFY row_number() OVER (PARTITION BY source_topic, source_partition, source_offset
                           ORDER BY time, "offset") = 1
ORDER BY time DESC, source_topic, source_offset DESC
LIMIT $limit"""
    df: pd.DataFrame = source.query_df(sql, {"limit": bounded("limit", limit)})
    return df


# -- models -------------------------------------------------------------------
def models(source: QuerySource) -> pd.DataFrame:
    """Every (model, version) seen in predictions, monitor stats or alerts.

    Columns: ``model``, ``model_version`` (may be null for unversioned alerts),
    ``predictions``, ``last_seen``; sorted by model then version.
    """
    sql = """
WITH seen AS (
    SELECT model, model_version, count(*) AS n, max(time) AS last FROM predictions GROUP BY ALL
    UNION ALL
    SELECT model, model_version, 0, max(time) FROM monitor_stats GROUP BY ALL
    UNION ALL
    SELECT model, model_version, 0, max(time) FROM alerts WHERE model IS NOT NULL GROUP BY ALL
)
SELECT model, model_version, CAST(sum(n) AS BIGINT) AS predictions, max(last) AS last_seen
FROM seen GROUP BY ALL
ORDER BY model, model_version NULLS LAST
LIMIT 1000"""
    df: pd.DataFrame = source.query_df(sql)
    return df


def aliases(source: QuerySource, model: str) -> pd.DataFrame:
    """The model's current aliases (``production``, ``staging``...).

    Columns: ``alias``, ``model_version``, ``since``, ``actor``, ``reason``.
    """
    sql = """
SELECT alias, model_version, since, actor, reason FROM aliases
WHERE model = $model ORDER BY alias LIMIT 100"""
    df: pd.DataFrame = source.query_df(sql, {"model": model})
    return df


# -- alerts -------------------------------------------------------------------
def alert_feed(
    source: QuerySource,
    model: str | None = None,
    model_version: int | None = None,
    *,
    types: Iterable[str] | None = None,
    since: Any = None,
    limit: int = 50,
) -> pd.DataFrame:
    """Alerts, newest first, with their evidence and whether a drift was resolved.

    Parameters
    ----------
    source
        Where to query.
    model, model_version
        Only this model (and version); ``None`` means all.
    types
        Only these alert types (see :data:`~modelog.models.alerts.ALERT_TYPE_NAMES`);
        ``None`` means all.
    since
        Only alerts at or after this time (a datetime or timestamp).
    limit
        At most this many rows.

    Returns
    -------
    pandas.DataFrame
        ``event_id``, ``type``, ``time``, ``model``, ``model_version``, ``kind``,
        ``feature``, ``detector``, ``statistic``, ``threshold``, ``severity``,
        ``message``, ``window_start``, ``window_end``, ``window_size``,
        ``prediction_ids`` (list), ``params`` (JSON text), ``detected_id`` and
        ``resolved_at`` (time of the ``DriftResolved`` naming a ``DriftDetected``).
    """
    sql = f"""
WITH resolved AS (
    SELECT detected_id, min(time) AS resolved_at FROM alerts
    WHERE type = 'DriftResolved' AND detected_id IS NOT NULL GROUP BY detected_id
)
SELECT a.event_id, a.type, a.time, a.model, a.model_version, a.kind, a.feature, a.detector,
       a.statistic, a.threshold, a.severity, a.message, a.window_start, a.window_end,
       a.window_size, a.prediction_ids, CAST(a.params AS VARCHAR) AS params, a.detected_id,
       CASE WHEN a.type = 'DriftDetected' THEN r.resolved_at END AS resolved_at
FROM alerts a LEFT JOIN resolved r ON r.detected_id = a.event_id
WHERE (CAST($model AS VARCHAR) IS NULL OR a.model = $model)
  AND (CAST($version AS INTEGER) IS NULL OR a.model_version = $version)
  AND (CAST($since AS TIMESTAMPTZ) IS NULL OR a.time >= $since)
  {_types(types)}
ORDER BY a.time DESC, a.event_id DESC
LIMIT $limit"""
    params = {"model": model, "version": model_version, "since": since,
              "limit": bounded("limit", limit)}
    df: pd.DataFrame = source.query_df(sql, params)
    return df


# -- series -------------------------------------------------------------------
def error_rate(
    source: QuerySource,
    model: str,
    model_version: int | None = None,
    *,
    window: int = 100,
    windows: int = 100,
) -> pd.DataFrame:
    """Error rate in consecutive windows of ``window`` labelled predictions.

    Windows are aligned on the model's first labelled prediction, so a window
    keeps its rows as new labels arrive; only the latest ``windows`` windows are
    returned (the last one may be partial: ``labelled < window``).

    Returns
    -------
    pandas.DataFrame
        ``window_index``, ``start``, ``end`` (prediction times), ``labelled``,
        ``errors``, ``error_rate`` (share not ``correct``) and
        ``mean_abs_error`` (numeric outputs only), oldest first.
    """
    sql = """
WITH scope AS (
    SELECT time, event_id, correct, abs_error FROM prediction_quality
    WHERE model = $model AND (CAST($version AS INTEGER) IS NULL OR model_version = $version)
      AND label IS NOT NULL
), total AS (SELECT count(*) AS n FROM scope),
latest AS (
    SELECT *, row_number() OVER (ORDER BY time DESC, event_id DESC) - 1 AS back
    FROM (SELECT * FROM scope ORDER BY time DESC, event_id DESC LIMIT $rows)
)
SELECT CAST((total.n - 1 - back) // $window AS BIGINT) AS window_index,
       min(time) AS start, max(time) AS "end", count(*) AS labelled,
       count(*) FILTER (WHERE NOT correct) AS errors,
       avg(CASE WHEN correct THEN 0.0 WHEN NOT correct THEN 1.0 END) AS error_rate,
       avg(abs_error) AS mean_abs_error
FROM latest, total
WHERE (total.n - 1 - back) // $window > (total.n - 1) // $window - $windows
GROUP BY ALL
ORDER BY window_index"""
    size = bounded("window", window, high=1_000_000)
    count = bounded("windows", windows)
    params = {"model": model, "version": model_version, "window": size, "windows": count,
              "rows": size * count}
    df: pd.DataFrame = source.query_df(sql, params)
    return df


def monitor_series(
    source: QuerySource, model: str, model_version: int | None = None, *, limit: int = 500
) -> pd.DataFrame:
    """The latest ``limit`` ``MonitorStatsReported`` points of a model, oldest first.

    Columns: ``time``, ``model_version``, ``window_end``, ``rolling_error``,
    ``anomaly_score_mean``, ``anomaly_score_max``, ``anomaly_rate``,
    ``predictions``, ``labelled``, and the live metric ``rolling_accuracy``,
    ``rolling_f1`` (classifiers) or ``rolling_mae`` (regressors) (missing stats
    are null).
    """
    stats = ("rolling_error", "anomaly_score_mean", "anomaly_score_max", "anomaly_rate",
             "predictions", "labelled", "rolling_accuracy", "rolling_f1", "rolling_mae")
    columns = ",\n       ".join(
        f"TRY_CAST(stats->>'$.{name}' AS DOUBLE) AS {name}" for name in stats
    )
    sql = f"""
SELECT * FROM (
    SELECT time, model_version, window_end,
       {columns}
    FROM monitor_stats
    WHERE model = $model AND (CAST($version AS INTEGER) IS NULL OR model_version = $version)
    ORDER BY time DESC, event_id DESC
    LIMIT $limit
) ORDER BY time"""
    params = {"model": model, "version": model_version, "limit": bounded("limit", limit)}
    df: pd.DataFrame = source.query_df(sql, params)
    return df


def feature_drift(
    source: QuerySource, model: str, model_version: int | None = None, *, limit: int = 200
) -> pd.DataFrame:
    """Per-feature drift statistics against their thresholds, from the latest stats points.

    The worker reports, in each ``MonitorStatsReported``, ``<detector>.<feature>``
    (the statistic: PSI, the KS distance D, chi-squared) and
    ``<detector>_threshold.<feature>``; drift is *above* the threshold. The
    model's output appears as feature ``__output__`` (prediction drift).

    Returns
    -------
    pandas.DataFrame
        Long format, oldest first: ``time``, ``model_version``, ``detector``,
        ``feature``, ``statistic``, ``threshold``.
    """
    sql = """
WITH points AS (
    SELECT time, event_id, model_version, stats FROM monitor_stats
    WHERE model = $model AND (CAST($version AS INTEGER) IS NULL OR model_version = $version)
    ORDER BY time DESC, event_id DESC
    LIMIT $limit
), entries AS (
    SELECT time, model_version, stats, unnest(json_keys(stats)) AS key FROM points
), split AS (
    SELECT time, model_version, stats, key, split_part(key, '.', 1) AS detector,
           substr(key, strpos(key, '.') + 1) AS feature
    FROM entries WHERE strpos(key, '.') > 0
)
SELECT time, model_version, detector, feature,
       TRY_CAST(stats ->> ('/' || replace(replace(key, '~', '~0'), '/', '~1')) AS DOUBLE)
           AS statistic,
       TRY_CAST(stats ->> ('/' || replace(replace(detector || '_threshold.' || feature, '~',
                                                  '~0'), '/', '~1')) AS DOUBLE) AS threshold
FROM split
WHERE NOT ends_with(detector, '_threshold')
ORDER BY time, feature, detector"""
    params = {"model": model, "version": model_version, "limit": bounded("limit", limit)}
    df: pd.DataFrame = source.query_df(sql, params)
    return df


def latest_feature_drift(drift: pd.DataFrame) -> pd.DataFrame:
    """The latest point of each (feature, detector) with its status, drifting first.

    Examples
    --------
    >>> df = pd.DataFrame({"time": [1, 2, 2], "model_version": [1, 1, 1],
    ...                    "detector": ["psi", "psi", "ks"], "feature": ["a", "a", "a"],
    ...                    "statistic": [0.1, 0.3, 0.05], "threshold": [0.2, 0.2, 0.1]})
    >>> latest_feature_drift(df)[["feature", "detector", "status"]].values.tolist()
    [['a', 'psi', 'drifting'], ['a', 'ks', 'ok']]
    """
    columns = ["feature", "detector", "statistic", "threshold", "status", "time"]
    if drift.empty:
        return pd.DataFrame(columns=columns)
    last = drift.sort_values("time", kind="stable").groupby(
        ["feature", "detector"], as_index=False).tail(1)
    status = [
        "no threshold" if pd.isna(t) or pd.isna(s) else ("drifting" if s > t else "ok")
        for s, t in zip(last["statistic"], last["threshold"], strict=True)
    ]
    out = last.assign(status=status)[columns]
    order = out["status"].map({"drifting": 0, "ok": 1}).fillna(2)
    return out.assign(_o=order).sort_values(["_o", "feature", "detector"]).drop(
        columns="_o").reset_index(drop=True)


def prediction_distribution(
    source: QuerySource, model: str, model_version: int | None = None, *, window: int = 500,
    bins: int = 10,
) -> pd.DataFrame:
    """Outputs of the first and the latest ``window`` predictions, as shares per value or bin.

    Categorical outputs (strings, booleans, integers with few values) are
    counted per value; other numbers are put in ``bins`` equal-width bins over
    both periods' range.

    Returns
    -------
    pandas.DataFrame
        ``period`` (``"first N"`` / ``"latest N"``), ``value`` (a category or a
        bin label), ``order`` (bin index for sorting), ``share``, ``count``.
    """
    sql = """
WITH scope AS (
    SELECT time, event_id, output FROM predictions
    WHERE model = $model AND (CAST($version AS INTEGER) IS NULL OR model_version = $version)
), first AS (SELECT 'first' AS period, output FROM scope ORDER BY time, event_id LIMIT $n),
latest AS (SELECT 'latest' AS period, output FROM scope ORDER BY time DESC, event_id DESC
           LIMIT $n)
SELECT period, json_type(output) AS kind, CAST(output AS VARCHAR) AS raw
FROM (SELECT * FROM first UNION ALL SELECT * FROM latest)"""
    n = bounded("window", window, high=100_000)
    raw: pd.DataFrame = source.query_df(sql, {"model": model, "version": model_version, "n": n})
    columns = ["period", "value", "order", "share", "count"]
    if raw.empty:
        return pd.DataFrame(columns=columns)
    labels = {"first": f"first {n}", "latest": f"latest {n}"}
    numeric = raw["kind"].isin(["DOUBLE", "UBIGINT", "BIGINT"])
    values = pd.to_numeric(raw["raw"].where(numeric), errors="coerce")
    categorical = not numeric.all() or (
        raw["kind"].isin(["UBIGINT", "BIGINT"]).all() and values.nunique() <= 20)
    if categorical:
        keys = raw["raw"].str.strip('"')
        frame = raw.assign(value=keys, order=0)
    else:
        low, high = float(values.min()), float(values.max())
        if high <= low:
            frame = raw.assign(value=f"{low:.4g}", order=0)
        else:
            edges = np.linspace(low, high, bins + 1)
            codes = np.clip(np.searchsorted(edges, values.to_numpy(), side="right") - 1,
                            0, bins - 1)
            frame = raw.assign(value=[f"{edges[c]:.4g}–{edges[c + 1]:.4g}" for c in codes],
                               order=codes)
    counts = frame.groupby(["period", "value", "order"], as_index=False).size()
    totals = counts.groupby("period")["size"].transform("sum")
    out = counts.assign(share=counts["size"] / totals, count=counts["size"],
                        period=counts["period"].map(labels))
    return out[columns].sort_values(["order", "value", "period"]).reset_index(drop=True)


def learning_curve(
    source: QuerySource, model: str, model_version: int | None = None
) -> pd.DataFrame:
    """Prequential metrics of the model's online learners, by labels learned.

    Online versions (registered with ``online=True``) report ``prequential_*``
    metrics under their registration's run or ``online-<model>-v<version>``.

    Returns
    -------
    pandas.DataFrame
        ``model_version``, ``run_id``, ``metric``, ``step``, ``value``, ``time``,
        ordered by version, metric and step; empty without an online learner.
    """
    sql = """
WITH learners AS (
    SELECT DISTINCT model_version,
           coalesce(run_id, 'online-' || model || '-v' || model_version) AS run_id
    FROM model_versions
    WHERE model = $model AND online
      AND (CAST($version AS INTEGER) IS NULL OR model_version = $version)
)
SELECT l.model_version, m.run_id, m.key AS metric, m.step, m.value, m.time
FROM run_metrics m JOIN learners l ON m.run_id = l.run_id
WHERE starts_with(m.key, 'prequential_')
ORDER BY l.model_version, metric, m.step"""
    df: pd.DataFrame = source.query_df(sql, {"model": model, "version": model_version})
    return df
