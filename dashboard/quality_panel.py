"""The live page's quality panel: accuracy estimated before labels, multivariate drift, segments.

Queries (the ``performance_estimates`` and ``segment_metrics`` views, the
``MultivariateDriftReported`` events of the ``events`` ledger), the Altair charts
built from them, and :func:`quality_panel`, the Streamlit panel the live
monitoring page shows under the feature drift. The query and chart functions
are pure of Streamlit (DataFrames in and out) and tested without a browser.

Examples
--------
>>> import duckdb
>>> from modelog.dashboard.data import ConnectionSource
>>> from modelog.store.schema import create_schema
>>> con = duckdb.connect()
>>> create_schema(con)
>>> source = ConnectionSource(con)
>>> performance(source, "churn").empty, segments(source, "churn").empty
(True, True)
>>> import pandas as pd
>>> frame = pd.DataFrame({"window_end": pd.to_datetime(["2026-01-01T00:01Z"]),
...     "estimated_accuracy": [0.8], "realized_accuracy": [0.78], "threshold": [0.7],
...     "model_version": [1]})
>>> [layer["mark"]["type"] for layer in performance_chart(frame).to_dict()["layer"]]
['line', 'line', 'line']
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from modelog.dashboard.data import QuerySource, bounded
from modelog.dashboard.text import code

__all__ = ["multivariate", "multivariate_chart", "performance", "performance_chart",
           "quality_panel", "segment_chart", "segments"]

_VERSION = "($version IS NULL OR model_version = $version)"


def performance(source: QuerySource, model: str, version: int | None = None, *,
                limit: int = 500) -> pd.DataFrame:
    """The latest ``limit`` estimated windows (realized figures once labelled), oldest first."""
    df: pd.DataFrame = source.query_df(
        f"""SELECT * FROM (SELECT model_version, window_index, window_start, window_end,
                   window_size, estimated_accuracy, estimated_f1, realized_accuracy,
                   realized_f1, labelled, gap, threshold, reference_accuracy, calibrated,
                   below_threshold
            FROM performance_estimates WHERE model = $model AND {_VERSION}
            ORDER BY window_end DESC LIMIT $limit) ORDER BY window_end""",
        {"model": model, "version": version, "limit": bounded("limit", limit)})
    return df


def segments(source: QuerySource, model: str, version: int | None = None) -> pd.DataFrame:
    """The latest segment report of each version: one row per (feature, value)."""
    df: pd.DataFrame = source.query_df(
        f"""SELECT model_version, feature, value, predictions, labelled, error, accuracy,
                   share, reference_share, psi, feature_psi, degraded, time
            FROM segment_metrics WHERE latest AND model = $model AND {_VERSION}
            ORDER BY model_version DESC, feature, value = 'other', predictions DESC""",
        {"model": model, "version": version})
    return df


def multivariate(source: QuerySource, model: str, version: int | None = None, *,
                 limit: int = 500) -> pd.DataFrame:
    """The latest ``limit`` multivariate drift checks (mean reconstruction error and band)."""
    df: pd.DataFrame = source.query_df(
        f"""SELECT * FROM (
                SELECT CAST(payload->>'$.model_version' AS INTEGER) AS model_version,
                       CAST(payload->>'$.window.end' AS TIMESTAMPTZ) AS window_end,
                       CAST(payload->>'$.statistic' AS DOUBLE) AS statistic,
                       CAST(payload->>'$.lower' AS DOUBLE) AS lower,
                       CAST(payload->>'$.upper' AS DOUBLE) AS upper,
                       CAST(payload->>'$.breached' AS BOOLEAN) AS breached
                FROM events WHERE type = 'MultivariateDriftReported'
                    AND payload->>'$.model' = $model)
            WHERE {_VERSION} ORDER BY window_end DESC LIMIT $limit""",
        {"model": model, "version": version, "limit": bounded("limit", limit)})
    return df.sort_values("window_end") if not df.empty else df


def _long(frame: pd.DataFrame, time: str, columns: dict[str, str]) -> pd.DataFrame:
    parts = [pd.DataFrame({"time": frame[time], "value": frame[c], "series": label})
             for c, label in columns.items() if c in frame and frame[c].notna().any()]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        {"time": [], "value": [], "series": []})


def performance_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """Estimated (before labels) and realized accuracy per window, with the drop threshold."""
    long = _long(frame, "window_end", {"estimated_accuracy": "estimated (no labels)",
                                       "realized_accuracy": "realized (labels)",
                                       "threshold": "alert threshold"})
    color = alt.Color("series:N", legend=alt.Legend(orient="bottom", title=None),
                      scale=alt.Scale(domain=["estimated (no labels)", "realized (labels)",
                                              "alert threshold"],
                                      range=["#1f77b4", "#2ca02c", "#d62728"]))
    layers: list[Any] = []
    for series, dash, points in (("estimated (no labels)", [], True),
                                 ("realized (labels)", [], True),
                                 ("alert threshold", [4, 3], False)):
        layers.append(alt.Chart(long[long["series"] == series]).mark_line(
            point=points, strokeDash=dash).encode(
            x=alt.X("time:T", title=None),
            y=alt.Y("value:Q", title="accuracy", scale=alt.Scale(zero=False)), color=color,
            tooltip=[alt.Tooltip("time:T", format="%H:%M:%S"), "series:N",
                     alt.Tooltip("value:Q", format=".3f")]))
    return alt.LayerChart(layer=layers).properties(height=240)


def multivariate_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """Each window's mean reconstruction error inside (or outside) the reference band."""
    base = alt.Chart(frame).encode(x=alt.X("window_end:T", title=None))
    band = base.mark_area(opacity=0.2, color="#7f7f7f").encode(
        y=alt.Y("lower:Q", title="mean reconstruction error", scale=alt.Scale(zero=False)),
        y2="upper:Q")
    line = base.mark_line(point=True, color="#1f77b4").encode(
        y="statistic:Q",
        tooltip=[alt.Tooltip("window_end:T", format="%H:%M:%S"),
                 alt.Tooltip("statistic:Q", format=".3f"), "breached:N"])
    return alt.LayerChart(layer=[band, line]).properties(height=200)


def segment_chart(frame: pd.DataFrame) -> alt.Chart:
    """Error per segment (bars; red: degraded), one row of bars per feature."""
    data = frame.assign(segment=frame["value"].astype(str))
    chart: alt.Chart = alt.Chart(data).mark_bar().encode(
        x=alt.X("error:Q", title="error (rolling)"),
        y=alt.Y("segment:N", title=None, sort="-x"),
        row=alt.Row("feature:N", title=None),
        color=alt.condition("datum.degraded", alt.value("#d62728"), alt.value("#1f77b4")),
        tooltip=["feature:N", "segment:N", "predictions:Q", "labelled:Q",
                 alt.Tooltip("error:Q", format=".3f"),
                 alt.Tooltip("share:Q", title="share (recent)", format=".1%"),
                 alt.Tooltip("reference_share:Q", title="share (reference)", format=".1%"),
                 alt.Tooltip("psi:Q", title="mix PSI term", format=".3f")],
    ).properties(height=alt.Step(16))
    return chart


def quality_panel(source: QuerySource, model: str, version: int | None) -> None:
    """The Streamlit panel: estimated vs realized accuracy, multivariate drift, segments."""
    import streamlit as st

    st.subheader("Performance before labels, correlations, segments")
    left, right = st.columns(2, gap="large")
    with left:
        perf = performance(source, model, version)
        if perf.empty:
            st.caption("No accuracy estimate yet: the worker estimates it per window of "
                       "predictions whose output is class probabilities (a dict, or a float "
                       "in [0, 1]).")
        else:
            last = perf.iloc[-1]
            st.markdown(f"**Accuracy** — estimated from the predicted probabilities before "
                        f"labels (latest **{last['estimated_accuracy']:.3f}**"
                        + (", calibrated" if bool(last["calibrated"]) else "")
                        + "), realized once labels arrive")
            st.altair_chart(performance_chart(perf), width="stretch")
    with right:
        mv = multivariate(source, model, version)
        if mv.empty:
            st.caption("No multivariate drift check yet: it needs a reference of at least "
                       "two numeric features.")
        else:
            st.markdown("**Multivariate drift** — mean PCA reconstruction error per window "
                        "against the reference band (grey); outside: correlations changed")
            st.altair_chart(multivariate_chart(mv), width="stretch")
    seg = segments(source, model, version)
    if seg.empty:
        st.caption("No segments: declare segment features with "
                   '`{"quality": {"segments": ["country", "plan"]}}` in the model\'s monitor '
                   "configuration.")
        return
    bad = seg[seg["degraded"]]
    st.markdown(f"**Segments** — rolling error per segment value; **{len(bad)}** degraded"
                + (": " + ", ".join(code(f"{r.feature}={r.value}") for r in bad.itertuples())
                   if not bad.empty else ""))
    mix = seg.dropna(subset=["feature_psi"]).drop_duplicates(["model_version", "feature"])
    if not mix.empty:
        psi = [(str(f), float(v)) for f, v in zip(mix["feature"], mix["feature_psi"],
                                                      strict=True)]
        st.caption("Traffic mix against the reference (PSI; > 0.2: a significant shift): "
                   + ", ".join(f"`{f}` {v:.3f}" + (" (shifted)" if v > 0.2 else "")
                               for f, v in psi))
    chart_col, table_col = st.columns([3, 2], gap="large")
    with chart_col:
        st.altair_chart(segment_chart(seg[seg["error"].notna()]), width="stretch")
    with table_col:
        st.dataframe(seg.drop(columns=["time"]), hide_index=True, width="stretch",
                     column_config={"error": st.column_config.NumberColumn(format="%.3f"),
                                    "accuracy": st.column_config.NumberColumn(format="%.3f"),
                                    "share": st.column_config.NumberColumn(format="%.3f"),
                                    "reference_share": st.column_config.NumberColumn(
                                        format="%.3f"),
                                    "psi": st.column_config.NumberColumn(format="%.3f"),
                                    "feature_psi": st.column_config.NumberColumn(
                                        format="%.3f")})
