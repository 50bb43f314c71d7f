"""Altair charts of the dashboard, built from the DataFrames of :mod:`modelog.dashboard.data`.

Pure functions: DataFrames in, a layered chart out (no Streamlit, no I/O),
so they are tested by looking at the Vega-Lite spec they produce.

Examples
--------
>>> import pandas as pd
>>> windows = pd.DataFrame({
...     "start": pd.to_datetime(["2026-01-01T00:00Z", "2026-01-01T00:01Z"]),
...     "end": pd.to_datetime(["2026-01-01T00:00:59Z", "2026-01-01T00:01:59Z"]),
...     "error_rate": [0.1, 0.4]})
>>> markers = pd.DataFrame({"time": pd.to_datetime(["2026-01-01T00:00:30Z"]),
...                         "type": ["DriftDetected"], "detector": ["adwin"],
...                         "feature": [None], "severity": ["critical"], "message": ["drift"]})
>>> spec = error_rate_chart(windows, None, markers).to_dict()
>>> [layer["mark"]["type"] for layer in spec["layer"]]
['line', 'line', 'rule']
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

__all__ = ["LINE_COLORS", "MARKER_COLORS", "anomaly_chart", "error_rate_chart",
           "feature_drift_chart", "learning_curve_chart", "prediction_distribution_chart",
           "series_frame"]

MARKER_COLORS: dict[str, str] = {
    "DriftDetected": "#d62728",
    "DriftResolved": "#2ca02c",
    "AnomalyDetected": "#ff7f0e",
    "SkewDetected": "#9467bd",
    "RetrainRequested": "#1f77b4",
}
"""Colour of each alert type's vertical rule."""

LINE_COLORS: tuple[str, ...] = ("#1f77b4", "#8c564b", "#17becf", "#7f7f7f")
"""Colours of the line series, in order."""

_HEIGHT = 240


def series_frame(df: pd.DataFrame | None, time: str, columns: dict[str, str]) -> pd.DataFrame:
    """Long-form ``time, series, value`` rows from wide ``df`` (nulls dropped).

    Parameters
    ----------
    df
        Wide frame (``None`` or empty gives an empty result).
    time
        Name of its time column.
    columns
        Column name -> series label shown in the legend.

    Examples
    --------
    >>> wide = pd.DataFrame({"t": [1, 2], "a": [0.5, None]})
    >>> series_frame(wide, "t", {"a": "A"}).to_dict("records")
    [{'time': 1, 'series': 'A', 'value': 0.5}]
    """
    parts = []
    if df is not None and not df.empty:
        for column, label in columns.items():
            if column not in df:
                continue
            part = pd.DataFrame({"time": df[time], "series": label, "value": df[column]})
            parts.append(part.dropna(subset=["value"]))
    if not parts:
        return pd.DataFrame({"time": pd.Series(dtype="datetime64[ns, UTC]"),
                             "series": pd.Series(dtype=str), "value": pd.Series(dtype=float)})
    return pd.concat(parts, ignore_index=True)


def _color(series: list[str], types: list[str]) -> alt.Color:
    """One colour scale for lines and rules, so the chart has a single legend."""
    palette = [LINE_COLORS[i % len(LINE_COLORS)] for i in range(len(series))]
    return alt.Color(
        "series:N",
        scale=alt.Scale(domain=[*series, *types],
                        range=[*palette, *(MARKER_COLORS.get(t, "#7f7f7f") for t in types)]),
        legend=alt.Legend(orient="bottom", title=None, labelLimit=260),
    )


def _chart(lines: list[tuple[pd.DataFrame, bool]], markers: pd.DataFrame | None,
           y_title: str) -> alt.LayerChart:
    """Layer line series (``(frame, with_points)``) and vertical rules at ``markers``."""
    series = list(dict.fromkeys(str(v) for frame, _ in lines for v in frame["series"]))
    has_rules = markers is not None and not markers.empty
    types = sorted({str(t) for t in markers["type"]}) if has_rules and markers is not None else []
    color = _color(series, types)
    layers: list[Any] = []
    for frame, points in lines:
        layers.append(alt.Chart(frame).mark_line(point=points, strokeWidth=2 if points else 3)
                      .encode(x=alt.X("time:T", title=None),
                              y=alt.Y("value:Q", title=y_title), color=color,
                              tooltip=[alt.Tooltip("time:T", format="%H:%M:%S"), "series:N",
                                       alt.Tooltip("value:Q", format=".3f")]))
    if has_rules and markers is not None:
        keep = [c for c in ("time", "type", "detector", "feature", "severity", "message")
                if c in markers]
        rules = markers[keep].assign(series=markers["type"])
        layers.append(alt.Chart(rules).mark_rule(strokeWidth=2, strokeDash=[4, 3]).encode(
            x="time:T", color=color,
            tooltip=[alt.Tooltip(c, type="temporal" if c == "time" else "nominal")
                     for c in keep]))
    chart = alt.LayerChart(layer=layers)
    return chart.properties(height=_HEIGHT)


def error_rate_chart(
    windows: pd.DataFrame | None,
    stats: pd.DataFrame | None,
    markers: pd.DataFrame | None,
) -> alt.LayerChart:
    """Error rate over time with a vertical rule at each marker (drift alerts).

    Parameters
    ----------
    windows
        From :func:`modelog.dashboard.data.error_rate`: each window is drawn as
        a flat segment from its first to its last prediction.
    stats
        From :func:`modelog.dashboard.data.monitor_series` (its ``rolling_error``), or ``None``.
    markers
        From :func:`modelog.dashboard.data.alert_feed`, or ``None``.
    """
    label = {"error_rate": "error rate per window"}
    segments = pd.concat([series_frame(windows, "start", label),
                          series_frame(windows, "end", label)], ignore_index=True)
    monitor = series_frame(stats, "time", {"rolling_error": "monitor rolling error"})
    return _chart([(segments.sort_values("time", kind="stable"), False), (monitor, True)],
                  markers, "error rate")


def anomaly_chart(stats: pd.DataFrame | None, markers: pd.DataFrame | None) -> alt.LayerChart:
    """Anomaly scores (mean and max per monitor window) with anomaly alert rules.

    Examples
    --------
    >>> stats = pd.DataFrame({"time": pd.to_datetime(["2026-01-01T00:00Z"]),
    ...                       "anomaly_score_mean": [0.2], "anomaly_score_max": [0.9]})
    >>> spec = anomaly_chart(stats, None).to_dict()
    >>> len(spec["layer"]), spec["layer"][0]["mark"]["type"]
    (1, 'line')
    """
    series = series_frame(stats, "time", {"anomaly_score_mean": "mean anomaly score",
                                          "anomaly_score_max": "max anomaly score"})
    return _chart([(series, True)], markers, "anomaly score")


def feature_drift_chart(drift: pd.DataFrame, markers: pd.DataFrame | None = None,
                        *, columns: int = 3) -> alt.FacetChart:
    """One small chart per feature and detector: the statistic over time, its threshold dashed.

    Points above the threshold are red. ``markers`` (data drift alerts) add
    vertical rules to the feature they concern.

    Examples
    --------
    >>> df = pd.DataFrame({"time": pd.to_datetime(["2026-01-01T00:00Z", "2026-01-01T00:01Z"]),
    ...                    "detector": ["psi", "psi"], "feature": ["spend", "spend"],
    ...                    "statistic": [0.05, 0.4], "threshold": [0.2, 0.2]})
    >>> spec = feature_drift_chart(df).to_dict()
    >>> [layer["mark"]["type"] for layer in spec["spec"]["layer"]], spec["facet"]["field"]
    (['line', 'circle', 'line'], 'panel')
    """
    frame = drift.assign(
        panel=drift["feature"].replace({"__output__": "output (prediction drift)"})
        + " · " + drift["detector"],
        drifting=drift["statistic"] > drift["threshold"],
    )
    base = alt.Chart().encode(x=alt.X("time:T", title=None))
    tooltip = [alt.Tooltip("time:T", format="%H:%M:%S"), "feature:N", "detector:N",
               alt.Tooltip("statistic:Q", format=".4f"), alt.Tooltip("threshold:Q", format=".4f")]
    line = base.mark_line(color=LINE_COLORS[0]).encode(
        y=alt.Y("statistic:Q", title="statistic"), tooltip=tooltip)
    points = base.mark_circle(size=28).encode(
        y="statistic:Q", tooltip=tooltip,
        color=alt.Color("drifting:N", title="above threshold",
                        scale=alt.Scale(domain=[False, True], range=["#1f77b4", "#d62728"])))
    threshold = base.mark_line(strokeDash=[5, 4], color="#7f7f7f").encode(y="threshold:Q")
    layers: list[Any] = [line, points, threshold]
    if markers is not None and not markers.empty and "feature" in markers:
        keep = markers[markers["type"] == "DriftDetected"]
        rules = frame[["panel", "feature", "detector"]].drop_duplicates().merge(
            keep[["time", "feature", "detector", "message"]], on=["feature", "detector"])
        if not rules.empty:
            frame = pd.concat([frame, rules.assign(rule=True)], ignore_index=True)
            layers.append(alt.Chart().transform_filter("datum.rule == true").mark_rule(
                color=MARKER_COLORS["DriftDetected"], strokeDash=[4, 3]).encode(
                x="time:T", tooltip=["message:N"]))
    chart: alt.FacetChart = alt.layer(*layers, data=frame).properties(
        height=120, width=220).facet(facet=alt.Facet("panel:N", title=None), columns=columns,
                                     ).resolve_scale(y="independent")
    return chart


def prediction_distribution_chart(dist: pd.DataFrame) -> alt.Chart:
    """Share of each output value (or bin), first window beside the latest.

    Examples
    --------
    >>> df = pd.DataFrame({"period": ["first 500", "latest 500"], "value": ["1", "1"],
    ...                    "order": [0, 0], "share": [0.3, 0.6], "count": [150, 300]})
    >>> prediction_distribution_chart(df).to_dict()["mark"]["type"]
    'bar'
    """
    order = list(dict.fromkeys(dist.sort_values(["order", "value"])["value"]))
    chart: alt.Chart = alt.Chart(dist).mark_bar().encode(
        x=alt.X("value:N", title="output", sort=order),
        xOffset=alt.XOffset("period:N"),
        y=alt.Y("share:Q", title="share of predictions", axis=alt.Axis(format="%")),
        color=alt.Color("period:N", title=None,
                        scale=alt.Scale(range=[LINE_COLORS[2], LINE_COLORS[0]])),
        tooltip=["period:N", "value:N", alt.Tooltip("share:Q", format=".1%"), "count:Q"],
    ).properties(height=_HEIGHT)
    return chart


def learning_curve_chart(curve: pd.DataFrame) -> alt.Chart:
    """Prequential metrics of online learners against the number of labels learned.

    Examples
    --------
    >>> df = pd.DataFrame({"model_version": [2, 2], "metric": ["prequential_accuracy"] * 2,
    ...                    "step": [100, 200], "value": [0.7, 0.8]})
    >>> learning_curve_chart(df).to_dict()["encoding"]["x"]["field"]
    'step'
    """
    frame = curve.assign(series=[f"v{v} {m.removeprefix('prequential_')}"
                                 for v, m in zip(curve["model_version"], curve["metric"],
                                                 strict=True)])
    chart: alt.Chart = alt.Chart(frame).mark_line(point=False, strokeWidth=2).encode(
        x=alt.X("step:Q", title="labels learned"),
        y=alt.Y("value:Q", title="prequential metric"),
        color=alt.Color("series:N", title=None),
        tooltip=["series:N", "step:Q", alt.Tooltip("value:Q", format=".4f")],
    ).properties(height=_HEIGHT)
    return chart
