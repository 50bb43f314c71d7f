"""The lifecycle pages of the dashboard: Runs, Datasets, Registry and Lineage.

Each page is a function without arguments that ``st.navigation`` runs (see
:func:`lifecycle_pages`); it reads :class:`~modelog.config.Settings` from the
``MODELOG_*`` environment, queries through a :class:`~modelog.store.reader.Reader`
with the functions of :mod:`modelog.dashboard.lifecycle_data`, and draws with
:mod:`modelog.dashboard.lifecycle_charts`. Empty projections show what to do
instead of an empty table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from modelog.config import Settings
from modelog.dashboard import lifecycle_charts as charts
from modelog.dashboard import lifecycle_data as ld
from modelog.dashboard.data import QuerySource
from modelog.dashboard.text import code, plain
from modelog.dashboard.text import missing as _absent
from modelog.errors import ModelogError
from modelog.models.profile import diff_profiles
from modelog.store.errors import FilterSyntaxError, NoDataError, StoreError
from modelog.store.reader import Reader

__all__ = [
    "datasets_page",
    "lifecycle_pages",
    "lineage_page",
    "registry_page",
    "runs_page",
]

ALL_EXPERIMENTS = "all experiments"
PSI_THRESHOLD = 0.2
"""PSI above which a column is shown as drifted in a dataset diff."""
DRIFTED_STYLE = "background-color: #f8d7da"
DIFFERS_STYLE = "background-color: #fff3cd"

EMPTY_RUNS = ("**No runs yet**: log one with `client.start_run(...)` (then `run.log_params`, "
              "`run.log_metrics`), and keep `modelog project` running.")
EMPTY_DATASETS = ("**No datasets yet**: register a version with `client.log_dataset(...)`; "
                  "its schema and profile show up here.")
EMPTY_MODELS = ("**No registered models yet**: register a version with "
                "`client.register_model(...)` and point an alias at it with "
                "`client.set_alias(...)`.")
EMPTY_LINEAGE = ("**No lineage yet**: it grows as runs use datasets "
                 "(`run.log_input(...)`) and model versions are registered from runs.")


# -- formatting ---------------------------------------------------------------
def _when(value: Any) -> str:
    if _absent(value):
        return "—"
    ts = pd.Timestamp(value)
    return f"{(ts.tz_convert('UTC') if ts.tzinfo else ts):%Y-%m-%d %H:%M:%S} UTC"


def _short(run_id: str, name: Any) -> str:
    return f"{name} ({run_id[:8]})" if not _absent(name) and name else run_id


def _styled(df: pd.DataFrame, style: Callable[[pd.Series], list[str]]) -> Any:
    """``df`` with ``style`` applied row-wise (a pandas ``Styler``)."""
    return df.style.apply(style, axis=1)


def _table(title: str, frame: pd.DataFrame, empty: str) -> None:
    """A bold title, then ``frame`` (or the ``empty`` caption when it has no rows)."""
    st.markdown(f"**{title}**")
    if frame.empty:
        st.caption(empty)
    else:
        st.dataframe(frame, hide_index=True)


# -- plumbing -----------------------------------------------------------------
def _render(title: str, body: Callable[[QuerySource], None], empty: str) -> None:
    """Title, settings and reader; run ``body``; turn store errors into messages."""
    st.set_page_config(page_title=f"modelog · {title}", layout="wide")
    st.title(title)
    try:
        settings = Settings.from_env()
    except ModelogError as exc:
        st.error(f"Invalid configuration: {exc}")
        return
    try:
        body(Reader(settings, timeout=10.0, as_of=st.session_state.get("modelog_as_of")))
    except NoDataError:
        st.info(f"{empty}\n\nData directory: `{settings.data_dir.resolve()}`",
                icon=":material/hourglass_empty:")
    except StoreError as exc:
        st.error(f"Could not read the projection: {exc}\n\nCheck that `modelog project` runs "
                 "for this data directory (or that MODELOG_QUERY_URL is right), then reload.",
                 icon=":material/error:")


# -- runs ---------------------------------------------------------------------
def _runs_body(source: QuerySource) -> None:
    exps = ld.experiments(source)
    if exps.empty:
        st.info(EMPTY_RUNS, icon=":material/science:")
        return
    left, mid, right = st.columns([2, 4, 2])
    experiment = left.selectbox("Experiment", [ALL_EXPERIMENTS, *exps["experiment"]],
                                key="experiment")
    text = mid.text_input("Filter", key="run_filter",
                          placeholder="metrics.accuracy > 0.8 and params.model = 'rf'",
                          help="MLflow-style: metrics.<key>, params.<key>, tags.<key>, "
                               "status, name, started...; AND, OR, NOT, IN, LIKE.")
    order = right.text_input("Order by", key="run_order", placeholder="metrics.accuracy DESC")
    try:
        table = ld.runs(source, text, order,
                        experiment=None if experiment == ALL_EXPERIMENTS else experiment)
    except FilterSyntaxError as exc:
        which = "order-by" if exc.text == order and order != text else "filter"
        st.error(f"**The {which} could not be parsed.**\n```\n{exc}\n```",
                 icon=":material/error:")
        return
    if table.empty:
        st.caption("No run matches.")
        return
    shown = table[["name", "experiment", "status", "started", "ended", "run_id",
                   "parent_run_id", "code_commit", "error"]]
    st.dataframe(shown.style.map(lambda s: f"background-color: {charts.STATUS_COLORS[s]}"
                                 if s in charts.STATUS_COLORS else "", subset=["status"]),
                 hide_index=True, key="runs_table")
    names = dict(zip(table["run_id"], table["name"], strict=True))
    chosen = st.multiselect("Runs to inspect", list(names), key="selected_runs",
                            format_func=lambda r: _short(r, names[r]),
                            placeholder="pick one run for its details, several to compare")
    if len(chosen) == 1:
        _run_detail(source, table[table["run_id"] == chosen[0]].iloc[0])
    elif chosen:
        _run_compare(source, chosen, {r: _short(r, names[r]) for r in chosen})


def _run_detail(source: QuerySource, run: pd.Series) -> None:
    run_id = str(run["run_id"])
    st.subheader(f"Run {_short(run_id, run['name'])}")
    cols = st.columns(4)
    cols[0].metric("Status", str(run["status"]))
    cols[1].metric("Experiment", str(run["experiment"]))
    cols[2].metric("Started", _when(run["started"]))
    cols[3].metric("Ended", _when(run["ended"]))
    dirty = " (dirty working tree)" if not _absent(run["code_dirty"]) and run["code_dirty"] else ""
    st.markdown(f"**Code** commit {code(run['code_commit'])} on branch "
                f"{code(run['code_branch'])}{dirty}"
                + ("" if _absent(run["parent_run_id"]) else
                   f" · child of run {code(run['parent_run_id'])}"))
    if not _absent(run["error"]) and run["error"]:
        st.error(f"Failed: {plain(run['error'])}", icon=":material/error:")
    tags = ld.parse_json(run["tags"])
    if tags:
        st.markdown("**Tags** " + ", ".join(code(f"{k}={v}") for k, v in tags.items()))
    left, right = st.columns(2)
    with left:
        _table("Parameters", ld.run_params(source, [run_id])[["key", "value"]],
               "No parameters logged.")
    with right:
        _table("Latest metrics", ld.run_latest_metrics(source, [run_id])[["key", "value"]],
               "No metrics logged.")
    history = ld.metric_history(source, [run_id])
    if not history.empty:
        st.markdown("**Metric curves**")
        st.altair_chart(charts.metric_curves(history, color="key"), width="stretch")
    left, right = st.columns(2)
    with left:
        _table("Datasets used", ld.run_datasets(source, run_id), "None logged.")
    with right:
        _table("Artifacts", ld.run_artifacts(source, run_id), "None logged.")


def _run_compare(source: QuerySource, run_ids: Sequence[str], labels: dict[str, str]) -> None:
    st.subheader(f"Comparing {len(run_ids)} runs")
    params = ld.compare_params(ld.run_params(source, run_ids), run_ids).rename(columns=labels)
    st.markdown("**Parameters** (differing values highlighted)")
    if params.empty:
        st.caption("No parameters logged.")
    else:
        st.dataframe(_styled(params, lambda row: [DIFFERS_STYLE if row["differs"] else ""]
                             * len(row)), hide_index=True, key="compare_params")
    latest = ld.run_latest_metrics(source, run_ids)
    st.markdown("**Latest metrics**")
    if latest.empty:
        st.caption("No metrics logged.")
    else:
        wide = latest.pivot_table(index="key", columns="run_id", values="value",
                                  aggfunc="first")
        wide = wide.reindex(columns=[r for r in run_ids if r in wide.columns])
        st.dataframe(wide.rename(columns=labels).reset_index(), hide_index=True,
                     key="compare_metrics")
    history = ld.metric_history(source, run_ids)
    if not history.empty:
        st.markdown("**Metric curves**")
        history = history.assign(run=history["run_id"].map(labels))
        st.altair_chart(charts.metric_curves(history, color="run"))


def runs_page() -> None:
    """Runs: filter, inspect one, compare several."""
    _render("Runs", _runs_body, EMPTY_RUNS)


# -- datasets -----------------------------------------------------------------
def _column_profile(name: str, column: dict[str, Any]) -> None:
    kind = column.get("kind")
    nulls = f"{float(column.get('null_fraction') or 0):.1%} null"
    st.markdown(f"**{plain(name)}** · {code(column.get('type'))} · {plain(kind)} · {nulls}")
    if kind == "numeric":
        stats = {k: column.get(k) for k in ("min", "max", "mean", "std")}
        st.caption(" · ".join(f"{k} {v:.4g}" if isinstance(v, int | float) else f"{k} —"
                              for k, v in stats.items()))
        chart = charts.histogram_chart(column)
    elif kind == "string":
        st.caption(f"{column.get('distinct', '—')} distinct values")
        chart = charts.top_categories_chart(column)
    else:
        details = {k: v for k, v in column.items()
                   if k not in ("type", "kind", "null_fraction", "nulls")}
        st.caption(" · ".join(f"{plain(k)} {plain(v)}" for k, v in details.items()))
        chart = None
    if chart is not None:
        st.altair_chart(chart, width="stretch")


def _dataset_diff(name: str, versions: pd.DataFrame) -> None:
    st.subheader("Compare two versions")
    numbers = [int(v) for v in versions["version"]]
    left, right = st.columns(2)
    old = left.selectbox("Old version", numbers, index=min(1, len(numbers) - 1),
                         key=f"diff_old:{name}", format_func=lambda v: f"v{v}")
    new = right.selectbox("New version", numbers, index=0, key=f"diff_new:{name}",
                          format_func=lambda v: f"v{v}")
    rows = {int(r["version"]): r for r in versions.to_dict("records")}
    p_old, p_new = ld.parse_json(rows[old]["profile"]), ld.parse_json(rows[new]["profile"])
    if not p_old or not p_new:
        st.caption("Both versions need a profile to be compared "
                   "(`client.log_dataset(..., profile=True)`).")
        return
    diff = diff_profiles(p_old, p_new, old_rows=int(rows[old]["num_rows"]),
                         new_rows=int(rows[new]["num_rows"]))
    cols = st.columns(3)
    cols[0].metric("Rows", f"{diff.new_rows:,}", delta=f"{diff.row_delta:+,}")
    cols[1].metric("Schema", "changed" if diff.schema_changed else "unchanged")
    drifted = diff.drifted(PSI_THRESHOLD)
    cols[2].metric(f"Drifted columns (PSI > {PSI_THRESHOLD})", len(drifted))
    for col, typ in diff.added.items():
        st.markdown(f":green[+ added] {code(col)} ({plain(typ)})")
    for col, typ in diff.removed.items():
        st.markdown(f":red[− removed] {code(col)} ({plain(typ)})")
    for col, (a, b) in diff.retyped.items():
        st.markdown(f":orange[~ retyped] {code(col)}: {plain(a)} → {plain(b)}")
    if drifted:
        st.warning("Drifted: " + ", ".join(f"**{plain(c)}**" for c in drifted),
                   icon=":material/warning:")
    shifts = pd.DataFrame([
        {"column": c.name, "kind": c.kind, "psi": c.psi, "mean_delta": c.mean_delta,
         "std_delta": c.std_delta, "null_fraction_delta": c.null_fraction_delta,
         "new_categories": ", ".join(map(str, c.new_categories)),
         "vanished_categories": ", ".join(map(str, c.vanished_categories)),
         "drifted": c.name in drifted}
        for c in diff.columns.values()])
    if not shifts.empty:
        st.dataframe(_styled(shifts, lambda row: [DRIFTED_STYLE if row["drifted"] else ""]
                             * len(row)), hide_index=True, key="dataset_shifts")


def _datasets_body(source: QuerySource) -> None:
    names = ld.dataset_names(source)
    if names.empty:
        st.info(EMPTY_DATASETS, icon=":material/dataset:")
        return
    st.dataframe(names, hide_index=True)
    name = st.selectbox("Dataset", list(names["name"]), key="dataset")
    versions = ld.dataset_versions(source, name)
    st.dataframe(versions[["version", "num_rows", "digest", "parents", "time", "uri",
                           "description"]], hide_index=True, key="dataset_versions")
    version = st.selectbox("Version", [int(v) for v in versions["version"]],
                           key=f"dataset_version:{name}", format_func=lambda v: f"v{v}")
    row = versions[versions["version"] == version].iloc[0]
    st.subheader(f"{name} v{version}")
    st.caption(f"digest {code(row['digest'])} · {int(row['num_rows']):,} rows · "
               f"created {_when(row['time'])} by {plain(row['producer'])}")
    schema = ld.parse_json(row["columns"]) or []
    if schema:
        st.markdown("**Schema**")
        st.dataframe(pd.DataFrame(schema), hide_index=True, key="dataset_schema")
    profile = ld.parse_json(row["profile"])
    if not profile:
        st.caption("This version has no profile.")
    else:
        st.markdown("**Profile**")
        columns = profile.get("columns", {})
        grid = st.columns(2)
        for i, (col, summary) in enumerate(columns.items()):
            with grid[i % 2]:
                _column_profile(col, summary)
    if len(versions) >= 2:
        _dataset_diff(name, versions)


def datasets_page() -> None:
    """Datasets: versions, a version's schema and profile, and a diff of two versions."""
    _render("Datasets", _datasets_body, EMPTY_DATASETS)


# -- registry -----------------------------------------------------------------
def _as_of() -> dt.datetime:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    left, right = st.columns(2)
    day = left.date_input("As of date (UTC)", value=now.date(), key="as_of_date")
    clock = right.time_input("As of time (UTC)", value=now.time(), key="as_of_time", step=60)
    if not isinstance(day, dt.date):
        day = now.date()
    return dt.datetime.combine(day, clock or now.time(), tzinfo=dt.UTC)


def _registry_body(source: QuerySource) -> None:
    models = ld.model_names(source)
    if models.empty:
        st.info(EMPTY_MODELS, icon=":material/deployed_code:")
        return
    model = st.selectbox("Model", list(models["model"]), key="registry_model")
    versions = ld.model_versions(source, model)
    st.subheader("Versions")
    st.dataframe(versions, hide_index=True, key="model_versions",
                 column_config={"signature": st.column_config.TextColumn(width="medium")})
    history = ld.alias_history(source, model)
    current = ld.aliases_as_of(source, model)
    st.subheader("Aliases")
    if current.empty:
        st.caption(f"No alias points at a version of {plain(model)}: "
                   "`client.set_alias(...)`.")
    else:
        for row in current.to_dict("records"):
            st.markdown(f"{code(row['alias'])} → **v{row['model_version']}** since "
                        f"{_when(row['since'])} by {plain(row['actor'])} — "
                        f"{plain(row['reason'], 'no reason given')}")
    if history.empty:
        return
    st.subheader("Alias timeline")
    at = _as_of()
    periods = ld.alias_periods(history, max(dt.datetime.now(dt.UTC), at))
    st.altair_chart(charts.alias_timeline(periods, at), width="stretch")
    st.subheader(f"In force at {_when(at)}")
    then = ld.aliases_as_of(source, model, at)
    if then.empty:
        st.caption("No alias was set at that time.")
    for row in then.to_dict("records"):
        previous = row["previous_version"]
        st.success(f"{code(row['alias'])} was **v{row['model_version']}**, set "
                   f"{_when(row['since'])} by {plain(row['actor'])} because: "
                   f"{plain(row['reason'], 'no reason given')}"
                   + ("" if _absent(previous) else f" (replacing v{int(previous)})"))
    with st.expander("Full alias history"):
        st.dataframe(history, hide_index=True, key="alias_history")


def registry_page() -> None:
    """Registry: versions, current aliases, the alias timeline and "as of" answers."""
    _render("Registry", _registry_body, EMPTY_MODELS)


# -- lineage ------------------------------------------------------------------
def _lineage_body(source: QuerySource) -> None:
    nodes = ld.lineage_nodes(source)
    if nodes.empty:
        st.info(EMPTY_LINEAGE, icon=":material/account_tree:")
        return
    left, right = st.columns([4, 1])
    node = left.selectbox("Node", list(nodes["node"]), key="lineage_node",
                          help="A model version, dataset version, run, commit or alias.")
    depth = int(right.number_input("Levels", 1, 10, value=3, key="lineage_depth"))
    edges = ld.lineage_around(source, node, depth=depth)
    shown = {node, *edges["src"], *edges["dst"]}
    st.graphviz_chart(charts.lineage_dot(edges, node, ld.run_labels(source, sorted(shown))),
                      width="stretch")
    st.caption("Colours: " + ", ".join(f"{k}" for k in charts.KIND_COLORS)
               + " · the selected node is outlined in red.")
    if edges.empty:
        st.caption("This node has no edges within that many levels.")
    else:
        st.dataframe(edges, hide_index=True, key="lineage_edges")


def lineage_page() -> None:
    """Lineage: the graph around a node, upstream and downstream."""
    _render("Lineage", _lineage_body, EMPTY_LINEAGE)


def lifecycle_pages() -> list[Any]:
    """The ``st.Page`` objects of the lifecycle pages, in menu order."""
    return [
        st.Page(runs_page, title="Runs", icon=":material/science:", url_path="runs"),
        st.Page(datasets_page, title="Datasets", icon=":material/dataset:",
                url_path="datasets"),
        st.Page(registry_page, title="Registry", icon=":material/deployed_code:",
                url_path="registry"),
        st.Page(lineage_page, title="Lineage", icon=":material/account_tree:",
                url_path="lineage"),
    ]
