"""The Rollout page of the dashboard: challengers compared with production, and the decisions.

:func:`rollout_page` is a page function for ``st.navigation``; it lists, per
model, the ``comparisons`` view (one row per ``ComparisonReported``: test,
effect with its confidence interval, p-value, pairs), charts the effect and its
interval as the evidence grew, and the ``rollout_decisions`` timeline
(promotions and rollbacks with their evidence and the registry's outcome).
The query functions (:func:`comparisons`, :func:`rollout_decisions`,
:func:`rollout_models`) import no Streamlit. Imports Streamlit, Altair and
:mod:`modelog.dashboard` / :mod:`modelog.store`.

Examples
--------
>>> import duckdb
>>> from modelog.dashboard.data import ConnectionSource
>>> from modelog.store.schema import create_schema
>>> con = duckdb.connect()
>>> create_schema(con)
>>> source = ConnectionSource(con)
>>> comparisons(source).empty, list(rollout_decisions(source).columns)[:4]
(True, ['time', 'model', 'action', 'from_version'])
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from modelog.dashboard.data import QuerySource, bounded
from modelog.dashboard.text import code, plain

__all__ = ["EMPTY_ROLLOUT", "comparisons", "effect_chart", "rollout_decisions",
           "rollout_models", "rollout_page", "traffic_split"]

EMPTY_ROLLOUT = ("**No comparison yet**: log a challenger's predictions in shadow "
                 "(`shadow=True`, `paired_with` the served prediction) or as an A/B arm, and "
                 "their labels; `modelog policy promotion set MODEL ...` turns on automatic "
                 "promotion and rollback.")
ALL_MODELS = "all models"


def _model(model: str | None) -> str | None:
    return None if model is None else str(model)


def rollout_models(source: QuerySource) -> pd.DataFrame:
    """Models with comparisons or decisions: ``model``, ``reports``, ``last_report``."""
    df: pd.DataFrame = source.query_df("""
SELECT model, count(*) AS reports, max(time) AS last_report
FROM (SELECT model, time FROM comparisons UNION ALL SELECT model, time FROM rollout_decisions)
GROUP BY model ORDER BY last_report DESC, model LIMIT 1000""")
    return df


def traffic_split(source: QuerySource, model: str | None = None) -> pd.DataFrame:
    """Each model's traffic policy in force (its last ``TrafficPolicySet``): one row per
    alias with ``model``, ``alias``, ``role`` (``arm``/``shadow``), ``share`` of the
    requests (shadows score every request, share ``None``), ``since`` and ``reason``."""
    df: pd.DataFrame = source.query_df("""
WITH last AS (
    SELECT aggregate AS model, time, payload FROM events WHERE type = 'TrafficPolicySet'
      AND ($model IS NULL OR aggregate = $model)
    QUALIFY row_number() OVER (PARTITION BY aggregate ORDER BY time DESC, id DESC) = 1
), arms AS (
    SELECT model, time, payload->>'$.reason' AS reason,
           unnest(map_keys(json_transform(payload->'$.arms', '"MAP(VARCHAR, DOUBLE)"')))
               AS alias,
           unnest(map_values(json_transform(payload->'$.arms', '"MAP(VARCHAR, DOUBLE)"')))
               AS weight
    FROM last
), shadows AS (
    SELECT model, time, payload->>'$.reason' AS reason,
           unnest(json_transform(payload->'$.shadows', '["VARCHAR"]')) AS alias
    FROM last
)
SELECT model, alias, 'arm' AS role, weight / sum(weight) OVER (PARTITION BY model) AS share,
       time AS since, reason FROM arms
UNION ALL
SELECT model, alias, 'shadow', NULL, time, reason FROM shadows
ORDER BY model, role, alias""", {"model": _model(model)})
    return df


def comparisons(source: QuerySource, model: str | None = None, *,
                limit: int = 500) -> pd.DataFrame:
    """The ``comparisons`` view, newest first (all its columns)."""
    df: pd.DataFrame = source.query_df("""
SELECT * FROM comparisons WHERE $model IS NULL OR model = $model
ORDER BY time DESC, event_id LIMIT $limit""", {"model": _model(model),
                                               "limit": bounded("limit", limit, high=5000)})
    return df


def rollout_decisions(source: QuerySource, model: str | None = None, *,
                      limit: int = 200) -> pd.DataFrame:
    """The ``rollout_decisions`` view, newest first (with the registry's ``outcome``)."""
    df: pd.DataFrame = source.query_df("""
SELECT time, model, action, from_version, to_version, outcome, reason, evidence_id,
       command_id, event_id
FROM rollout_decisions WHERE $model IS NULL OR model = $model
ORDER BY time DESC, event_id LIMIT $limit""", {"model": _model(model),
                                               "limit": bounded("limit", limit, high=1000)})
    return df


def effect_chart(rows: pd.DataFrame) -> alt.LayerChart:
    """The challenger's effect and its confidence interval against the pairs seen.

    Examples
    --------
    >>> rows = pd.DataFrame({"pairs": [100, 200], "effect": [0.1, 0.12], "ci_low": [0.0, 0.05],
    ...                      "ci_high": [0.2, 0.19], "challenger_version": [2, 2],
    ...                      "baseline_version": [1, 1], "test": ["mcnemar-chi2"] * 2,
    ...                      "p_value": [0.06, 0.001]})
    >>> sorted(layer["mark"]["type"] for layer in effect_chart(rows).to_dict()["layer"])
    ['area', 'line', 'rule']
    """
    data = rows.assign(pair=lambda d: "v" + d["challenger_version"].astype(str) + " vs v"
                       + d["baseline_version"].astype(str))
    base = alt.Chart(data).encode(x=alt.X("pairs:Q", title="labelled pairs"),
                                  color=alt.Color("pair:N", title=None))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("ci_low:Q", title="effect"),
                                              y2="ci_high:Q")
    line = base.mark_line(point=True).encode(
        y="effect:Q", tooltip=["pair", "test", "pairs", alt.Tooltip("effect:Q", format="+.4f"),
                               alt.Tooltip("p_value:Q", format=".3g")])
    zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(strokeDash=[4, 4]).encode(y="y:Q")
    return alt.LayerChart(layer=[band, line, zero]).properties(height=260)


def _rollout_body(source: QuerySource) -> None:
    import streamlit as st

    models = rollout_models(source)
    if models.empty:
        st.info(EMPTY_ROLLOUT, icon=":material/compare_arrows:")
        return
    choice = st.selectbox("Model", [ALL_MODELS, *models["model"]], key="rollout_model")
    model = None if choice == ALL_MODELS else str(choice)
    split = traffic_split(source, model)
    st.subheader("Traffic split")
    if split.empty:
        st.caption("Default policy: production answers every request, no shadow.")
    else:
        arms = split[split["role"] == "arm"]
        if not arms.empty:
            st.altair_chart(alt.Chart(arms).mark_bar().encode(
                x=alt.X("share:Q", axis=alt.Axis(format="%")), y="model:N",
                color="alias:N", tooltip=["model", "alias", alt.Tooltip("share:Q", format=".0%"),
                                          "since", "reason"]).properties(height=80),
                width="stretch")
        st.dataframe(split, hide_index=True, key="rollout_traffic")
    decisions = rollout_decisions(source, model)
    st.subheader("Decisions")
    if decisions.empty:
        st.caption("No automatic promotion or rollback yet.")
    else:
        for d in decisions.head(20).to_dict("records"):
            icon = ":material/upgrade:" if d["action"] == "promote" else ":material/undo:"
            st.markdown(f"{icon} **{plain(d['action'])}** {code(d['model'])} "
                        f"v{d['from_version']} → v{d['to_version']} · {d['time']} · "
                        f"*{plain(d['outcome'])}*  \n{plain(d['reason'])}")
    rows = comparisons(source, model)
    st.subheader("Comparisons on the same traffic")
    if rows.empty:
        st.caption("No comparison reported yet.")
        return
    st.altair_chart(effect_chart(rows), width="stretch")
    st.dataframe(rows[["time", "model", "baseline_version", "challenger_version",
                       "challenger_alias", "test", "metric", "pairs", "baseline_value",
                       "challenger_value", "effect", "ci_low", "ci_high", "p_value"]],
                 hide_index=True, key="rollout_comparisons")


def rollout_page() -> None:
    """Rollout: comparisons of challengers with production, promotions and rollbacks."""
    from modelog.dashboard.pages import _render

    _render("Rollout", _rollout_body, EMPTY_ROLLOUT)
