"""Charts of the lifecycle pages: metric curves, profiles, alias timeline, lineage graph.

Pure functions: DataFrames (from :mod:`modelog.dashboard.lifecycle_data`) or
profile dicts (from :func:`modelog.models.profile.profile_table`) in, an Altair
chart or DOT text out -- no Streamlit, no I/O.

Examples
--------
>>> import pandas as pd
>>> curves = pd.DataFrame({"run": ["a", "a", "b", "b"], "key": ["loss"] * 4,
...                        "step": [0, 1, 0, 1], "value": [1.0, 0.5, 0.9, 0.7]})
>>> spec = metric_curves(curves, color="run").to_dict()
>>> spec["facet"]["field"], spec["spec"]["mark"]["type"]
('key', 'line')
>>> edges = pd.DataFrame({"src": ["dataset:d@1"], "src_kind": ["dataset"], "relation": ["used"],
...                       "dst": ["run:r1"], "dst_kind": ["run"]})
>>> '"dataset:d@1" -> "run:r1" [label="used"]' in lineage_dot(edges, "run:r1")
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import altair as alt
import pandas as pd

__all__ = [
    "KIND_COLORS",
    "STATUS_COLORS",
    "alias_timeline",
    "histogram_chart",
    "lineage_dot",
    "metric_curves",
    "top_categories_chart",
]

STATUS_COLORS: dict[str, str] = {"finished": "#d4edda", "failed": "#f8d7da",
                                 "running": "#d1ecf1"}
"""Background colour of a run's status cell."""

KIND_COLORS: dict[str, str] = {
    "model": "#f4cccc", "dataset": "#d9ead3", "run": "#cfe2f3", "git": "#eeeeee",
    "alias": "#fff2cc", "alert": "#f6b26b", "retrain": "#d9d2e9",
}
"""Fill colour of lineage nodes by kind (others are white)."""

_HEIGHT = 220


def metric_curves(history: pd.DataFrame, *, color: Literal["key", "run"] = "key"
                  ) -> alt.FacetChart | alt.Chart:
    """Metric values by step: one line per key (one run) or per run (comparison).

    Parameters
    ----------
    history
        From :func:`~modelog.dashboard.lifecycle_data.metric_history`
        (``run``, ``key``, ``step``, ``value``).
    color
        ``"key"``: one chart, a line per metric; ``"run"``: one small chart
        per metric (independent y scales) with a line per run, overlaid.
    """
    tooltip = ["run:N", "key:N", "step:Q", alt.Tooltip("value:Q", format=".4g")]
    base = alt.Chart(history).mark_line(point=True).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("value:Q", title=None),
        color=alt.Color(f"{color}:N", legend=alt.Legend(orient="bottom", title=None)),
        tooltip=tooltip,
    )
    if color == "key":
        single: alt.Chart = base.properties(height=_HEIGHT)
        return single
    facets: alt.FacetChart = base.properties(height=_HEIGHT - 60, width=260).facet(
        facet=alt.Facet("key:N", title=None), columns=3
    ).resolve_scale(y="independent")
    return facets


def histogram_chart(column: Mapping[str, Any]) -> alt.Chart | None:
    """Bars of a numeric column profile's histogram (``None`` without one).

    Examples
    --------
    >>> col = {"histogram": {"edges": [0.0, 1.0, 2.0], "counts": [3, 1]}}
    >>> histogram_chart(col).to_dict()["mark"]["type"]
    'bar'
    >>> histogram_chart({"kind": "numeric"}) is None
    True
    """
    hist = column.get("histogram") or {}
    edges, counts = list(hist.get("edges") or []), list(hist.get("counts") or [])
    if not counts or len(edges) != len(counts) + 1:
        return None
    bins = pd.DataFrame({"start": edges[:-1], "end": edges[1:], "count": counts})
    chart: alt.Chart = alt.Chart(bins).mark_bar(stroke="white").encode(
        x=alt.X("start:Q", title=None, bin="binned"), x2="end:Q",
        y=alt.Y("count:Q", title="rows"),
        tooltip=[alt.Tooltip("start:Q", format=".4g"), alt.Tooltip("end:Q", format=".4g"),
                 "count:Q"],
    ).properties(height=160)
    return chart


def top_categories_chart(column: Mapping[str, Any]) -> alt.Chart | None:
    """Horizontal bars of a string column profile's top categories (``None`` without any).

    Examples
    --------
    >>> col = {"top": [{"value": "a", "count": 2}, {"value": "b", "count": 1}],
    ...        "other_count": 4}
    >>> spec = top_categories_chart(col).to_dict()
    >>> [row["value"] for row in spec["datasets"][spec["data"]["name"]]]
    ['a', 'b', '(other)']
    """
    rows = [{"value": str(t.get("value")), "count": int(t.get("count") or 0)}
            for t in column.get("top") or []]
    if column.get("other_count"):
        rows.append({"value": "(other)", "count": int(column["other_count"])})
    if not rows:
        return None
    chart: alt.Chart = alt.Chart(pd.DataFrame(rows)).mark_bar().encode(
        y=alt.Y("value:N", sort=None, title=None), x=alt.X("count:Q", title="rows"),
        tooltip=["value:N", "count:Q"],
    ).properties(height=alt.Step(22))  # a fixed height collapses nominal lanes in Streamlit
    return chart


def alias_timeline(periods: pd.DataFrame, as_of: Any = None) -> alt.LayerChart:
    """One lane per alias, a bar per period a version held it; a rule at ``as_of``.

    The time axis spans the alias changes with a margin (periods still running
    are cut at its end), so old histories stay readable; ``as_of`` is marked
    only when it falls inside.

    Parameters
    ----------
    periods
        From :func:`~modelog.dashboard.lifecycle_data.alias_periods`.
    as_of
        A time to mark with a vertical rule (``None``: no rule).

    Examples
    --------
    >>> p = pd.DataFrame({"alias": ["prod"], "model_version": [1],
    ...                   "start": pd.to_datetime(["2026-01-01"], utc=True),
    ...                   "end": pd.to_datetime(["2026-01-02"], utc=True),
    ...                   "actor": ["ci"], "reason": ["first"], "current": [True]})
    >>> spec = alias_timeline(p, "2026-01-01T00:30Z").to_dict()
    >>> [layer["mark"]["type"] for layer in spec["layer"]]
    ['bar', 'text', 'rule']
    """
    frame = periods.assign(version="v" + periods["model_version"].astype(str))
    first = pd.Timestamp(frame["start"].min())
    last = pd.Timestamp(max(frame["start"].max(), frame.loc[~frame["current"], "end"].max()
                            if (~frame["current"]).any() else frame["start"].max()))
    pad = max((last - first) * 0.1, pd.Timedelta(hours=1))
    lo, hi = first - pad, last + pad
    scale = alt.Scale(domain=[lo.isoformat(), hi.isoformat()])
    base = alt.Chart(frame).encode(
        x=alt.X("start:T", title=None, scale=scale), x2="end:T",
        y=alt.Y("alias:N", title=None),
    )
    bars = base.mark_bar(cornerRadius=3, height=18, clip=True).encode(
        color=alt.Color("version:N", legend=alt.Legend(orient="bottom", title="version")),
        tooltip=["alias:N", "version:N", alt.Tooltip("start:T", format="%Y-%m-%d %H:%M:%S"),
                 alt.Tooltip("end:T", format="%Y-%m-%d %H:%M:%S"), "actor:N", "reason:N"],
    )
    labels = base.mark_text(align="left", dx=4, color="white", clip=True).encode(text="version:N")
    layers: list[Any] = [bars, labels]
    if as_of is not None and lo <= pd.Timestamp(as_of) <= hi:
        rule = pd.DataFrame({"time": [pd.Timestamp(as_of)], "label": ["as of"]})
        layers.append(alt.Chart(rule).mark_rule(strokeDash=[4, 3], color="#d62728",
                                                strokeWidth=2)
                      .encode(x=alt.X("time:T", scale=scale),
                              tooltip=[alt.Tooltip("time:T", title="as of")]))
    return alt.LayerChart(layer=layers).properties(height=alt.Step(40))


def _quote(text: Any) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def lineage_dot(edges: pd.DataFrame, focus: str | None = None,
                labels: Mapping[str, str] | None = None) -> str:
    """DOT text of a lineage graph, nodes filled by kind, ``focus`` drawn bold.

    Parameters
    ----------
    edges
        From :func:`~modelog.dashboard.lifecycle_data.lineage_around`
        (``src``, ``src_kind``, ``relation``, ``dst``, ``dst_kind``).
    focus
        The node the graph is drawn around (always drawn, even without edges).
    labels
        Node id -> text shown in its box (e.g. a run's name); default: the id.
    """
    kinds: dict[str, str] = {}
    for row in edges.itertuples(index=False):
        kinds.setdefault(str(row.src), str(row.src_kind))
        kinds.setdefault(str(row.dst), str(row.dst_kind))
    if focus is not None:
        kinds.setdefault(focus, focus.split(":", 1)[0])
    lines = ["digraph lineage {", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
             '  edge [fontname="Helvetica", fontsize=9, color="#555555"];']
    for node, kind in kinds.items():
        attrs = f'fillcolor="{KIND_COLORS.get(kind, "#ffffff")}"'
        if labels and node in labels:
            attrs += f", label={_quote(labels[node])}"
        if node == focus:
            attrs += ', penwidth=3, color="#d62728"'
        lines.append(f"  {_quote(node)} [{attrs}];")
    for row in edges.itertuples(index=False):
        lines.append(f"  {_quote(row.src)} -> {_quote(row.dst)} [label={_quote(row.relation)}];")
    lines.append("}")
    return "\n".join(lines)
