"""Queries of the Retraining page: retrain requests, their jobs and the gate, as typed functions.

A retrain request is a ``RetrainRequested`` row of the ``alerts`` table (its
``detected_id`` is the request's ``trigger_id``); its job is the runs the retrain
runner tagged ``retrain_request`` with the request id (more than one when an attempt
was interrupted and resumed) and the ``RetrainJobEnded`` report in the ``events``
ledger (status, candidate and production holdout values, the gate's reason, the
window's dataset version). Each function takes a
:class:`~modelog.dashboard.data.QuerySource`, runs one bounded query and returns a
DataFrame; :func:`holdout_scores` reshapes jobs for the chart and
:func:`upstream_lineage` renders a version's lineage
(:func:`modelog.store.lineage.lineage`). Nothing here imports Streamlit.

Examples
--------
>>> import duckdb
>>> from modelog.dashboard.data import ConnectionSource
>>> from modelog.store.schema import create_schema
>>> con = duckdb.connect()
>>> create_schema(con)
>>> source = ConnectionSource(con)
>>> retrain_jobs(source).empty, list(retrain_requests(source).columns)[:4]
(True, ['request_id', 'time', 'model', 'model_version'])
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from modelog.dashboard.data import QuerySource, bounded
from modelog.store.lineage import lineage
from modelog.store.queries import QuerySource as StoreSource

__all__ = [
    "JOB_STATUSES",
    "holdout_scores",
    "retrain_jobs",
    "retrain_models",
    "retrain_requests",
    "run_metrics",
    "upstream_lineage",
]

JOB_STATUSES: tuple[str, ...] = ("queued", "running", "candidate", "rejected", "failed")
"""A job's status: no run yet, a run without a report, then the report's status."""

_REQUESTS = """
WITH requests AS (
    SELECT event_id AS request_id, time, model, model_version, message AS reason,
           detected_id AS trigger_id, params->>'$.trigger' AS policy_trigger,
           window_start, window_end
    FROM alerts
    WHERE type = 'RetrainRequested' AND ($model IS NULL OR model = $model)
), reports AS (
    SELECT r.*, time AS ended
    FROM (SELECT time, id, json_transform(payload, '{"request_id": "VARCHAR",
              "status": "VARCHAR", "reason": "VARCHAR", "run_id": "VARCHAR",
              "model_version": "INTEGER", "production_version": "INTEGER",
              "metric": "VARCHAR", "candidate_value": "DOUBLE", "production_value": "DOUBLE",
              "holdout_rows": "BIGINT", "dataset": "VARCHAR"}') AS r
          FROM events WHERE type = 'RetrainJobEnded')
    QUALIFY row_number() OVER (PARTITION BY r.request_id ORDER BY time, id) = 1
), job_runs AS (
    SELECT tags->>'$.retrain_request' AS request_id, count(*) AS attempts,
           min(started) AS started, arg_max(run_id, started) AS last_run
    FROM runs WHERE tags->>'$.retrain_request' IS NOT NULL
    GROUP BY 1
), jobs AS (
    SELECT q.*,
           CASE WHEN q.trigger_id IS NULL OR q.trigger_id = '' THEN
                    coalesce(q.policy_trigger, 'manual')
                ELSE coalesce(t.type || coalesce(' ' || t.kind, '')
                              || coalesce(' on ' || t.feature, ''), 'alert') END AS trigger,
           coalesce(p.status, CASE WHEN j.request_id IS NULL THEN 'queued'
                                   ELSE 'running' END) AS status,
           coalesce(p.run_id, j.last_run) AS run_id, coalesce(j.attempts, 0) AS attempts,
           j.started, p.ended, epoch(p.ended - j.started) AS duration_s,
           p.model_version AS candidate_version, p.production_version, p.metric,
           p.candidate_value, p.production_value, p.holdout_rows,
           CASE p.status WHEN 'candidate' THEN 'passed' WHEN 'rejected' THEN 'failed'
                END AS gate,
           p.reason AS outcome, p.dataset
    FROM requests q
    LEFT JOIN alerts t ON t.event_id = q.trigger_id
    LEFT JOIN reports p ON p.request_id = q.request_id
    LEFT JOIN job_runs j ON j.request_id = q.request_id
)"""


def _model(model: str | None) -> str | None:
    return None if model is None else str(model)


def retrain_models(source: QuerySource) -> pd.DataFrame:
    """Models with retrain requests. Columns: ``model``, ``requests``, ``last_requested``;
    the most recently requested first."""
    df: pd.DataFrame = source.query_df("""
SELECT model, count(*) AS requests, max(time) AS last_requested
FROM alerts WHERE type = 'RetrainRequested'
GROUP BY model ORDER BY last_requested DESC, model LIMIT 1000""")
    return df


def retrain_requests(source: QuerySource, model: str | None = None, *,
                     limit: int = 200) -> pd.DataFrame:
    """Retrain requests, newest first, with what triggered them and their job's status.

    Columns: ``request_id``, ``time``, ``model``, ``model_version`` (the version that
    was serving), ``reason``, ``trigger`` (the alert's type, kind and feature, or the
    policy's trigger such as ``manual``), ``trigger_id``, ``window_start``,
    ``window_end``, ``status`` (see :data:`JOB_STATUSES`).
    """
    df: pd.DataFrame = source.query_df(_REQUESTS + """
SELECT request_id, time, model, model_version, reason, trigger, trigger_id, window_start,
       window_end, status
FROM jobs ORDER BY time DESC, request_id LIMIT $limit""",
                                       {"model": _model(model),
                                        "limit": bounded("limit", limit, high=1000)})
    return df


def retrain_jobs(source: QuerySource, model: str | None = None, *,
                 limit: int = 200) -> pd.DataFrame:
    """Retrain jobs (requests with a run or a report), newest first.

    Columns: ``request_id``, ``model``, ``requested``, ``trigger``, ``status``,
    ``run_id`` (the report's run, else the latest attempt), ``attempts``, ``started``,
    ``ended`` (the report's time; null while running), ``duration_s``,
    ``candidate_version`` (null when nothing was registered), ``production_version``,
    ``metric``, ``candidate_value``, ``production_value``, ``holdout_rows``, ``gate``
    (``passed``, ``failed``, or null when the job did not reach it), ``outcome`` (the
    report's reason, with the gate's numbers) and ``dataset`` (the window's version).
    """
    df: pd.DataFrame = source.query_df(_REQUESTS + """
SELECT request_id, model, time AS requested, trigger, status, run_id, attempts, started, ended,
       duration_s, candidate_version, production_version, metric, candidate_value,
       production_value, holdout_rows, gate, outcome, dataset
FROM jobs WHERE status <> 'queued'
ORDER BY coalesce(started, time) DESC, request_id LIMIT $limit""",
                                       {"model": _model(model),
                                        "limit": bounded("limit", limit, high=1000)})
    return df


def run_metrics(source: QuerySource, run_id: str) -> pd.DataFrame:
    """The latest metrics of a job's run (row counts, holdout values, ``gate_passed``).

    Columns: ``key``, ``value``; sorted by key.
    """
    df: pd.DataFrame = source.query_df(
        "SELECT key, value FROM run_latest_metrics WHERE run_id = $run ORDER BY key LIMIT 500",
        {"run": str(run_id)})
    return df


def holdout_scores(jobs: pd.DataFrame) -> pd.DataFrame:
    """Candidate and production holdout values of the jobs that reached the gate, long form.

    Columns: ``job`` (``model vN`` or the request id's start), ``request_id``,
    ``metric``, ``side`` (``candidate``/``production``), ``value``, ``gate``.

    Examples
    --------
    >>> jobs = pd.DataFrame({"request_id": ["r1", "r2"], "model": ["churn", "churn"],
    ...                      "candidate_version": [3, None], "metric": ["accuracy", None],
    ...                      "candidate_value": [0.9, None], "production_value": [0.7, None],
    ...                      "gate": ["passed", None]})
    >>> holdout_scores(jobs)[["job", "side", "value"]].values.tolist()
    [['churn v3', 'candidate', 0.9], ['churn v3', 'production', 0.7]]
    """
    columns = ["job", "request_id", "metric", "side", "value", "gate"]
    if jobs.empty:
        return pd.DataFrame(columns=columns)
    reached = jobs[jobs["metric"].notna() & jobs["candidate_value"].notna()]
    rows: list[dict[str, Any]] = []
    for job in reached.to_dict("records"):
        version = job["candidate_version"]
        label = (f"{job['model']} v{int(version)}" if pd.notna(version)
                 else f"{job['model']} {str(job['request_id'])[:8]}")
        for side in ("candidate", "production"):
            value = job[f"{side}_value"]
            if pd.notna(value):
                rows.append({"job": label, "request_id": job["request_id"],
                             "metric": job["metric"], "side": side, "value": float(value),
                             "gate": job["gate"]})
    return pd.DataFrame(rows, columns=columns)


def upstream_lineage(source: StoreSource, ref: str, *, depth: int = 6) -> str:
    """The upstream lineage of ``ref`` (``model@vN`` or a run id) as text: the run, the
    request and the alert that caused it, the data window and its parent datasets."""
    return lineage(source, ref, "up", depth=bounded("depth", depth, high=10)).render()
