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

__all__ = ["LINE_COLORS", "MARKER_COLORS", "anomaly_chart", "error_rate_chart", "series_frame"]

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
