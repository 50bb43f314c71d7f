"""The Retraining page of the dashboard: requests, jobs, the gate, and links to runs and lineage.

:func:`retrain_page` is a page function for ``st.navigation`` (registered in
:mod:`modelog.dashboard.app`); it queries with :mod:`modelog.dashboard.retrain_data`
and renders through the plumbing of :mod:`modelog.dashboard.pages` (settings, the
reader, empty and error states). A job links to its run on the Runs page and to
its model version (or run) on the Lineage page, and shows the upstream lineage
of the candidate: run, retrain request, the alert that caused it, the data window.
Imports Streamlit, Altair and :mod:`modelog.dashboard` / :mod:`modelog.store`.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from modelog.dashboard import retrain_data as rd
from modelog.dashboard.data import QuerySource
from modelog.dashboard.pages import _render, _when, lineage_page, runs_page
from modelog.dashboard.text import code, plain
from modelog.dashboard.text import missing as _absent
from modelog.store.errors import StoreError
from modelog.store.reader import Reader

__all__ = ["EMPTY_RETRAIN", "holdout_chart", "retrain_page"]

EMPTY_RETRAIN = ("**No retrain requests yet**: a retrain policy requests one when drift is "
                 "detected, or ask by hand with `modelog retrain MODEL`; keep "
                 "`modelog retrainer` running to serve them.")
ALL_MODELS = "all models"
JOB_COLORS: dict[str, str] = {"candidate": "#d4edda", "rejected": "#fff3cd",
                              "failed": "#f8d7da", "running": "#d1ecf1", "queued": "#e2e3e5"}
"""Background colour of a job's status cell."""
_JOB_COLUMNS = ["requested", "model", "trigger", "status", "attempts", "duration_s",
                "candidate_version", "production_version", "metric", "candidate_value",
                "production_value", "holdout_rows", "gate", "run_id", "request_id"]


def holdout_chart(scores: pd.DataFrame) -> alt.Chart:
    """Candidate and production holdout values side by side, one group per job.

    Examples
    --------
    >>> scores = pd.DataFrame({"job": ["m v2", "m v2"], "request_id": ["r", "r"],
    ...                        "metric": ["accuracy"] * 2, "side": ["candidate", "production"],
    ...                        "value": [0.9, 0.7], "gate": ["passed"] * 2})
    >>> holdout_chart(scores).to_dict()["mark"]["type"]
    'bar'
    """
    chart: alt.Chart = alt.Chart(scores).mark_bar().encode(
        x=alt.X("job:N", title=None, sort=None),
        xOffset=alt.XOffset("side:N"),
        y=alt.Y("value:Q", title="holdout value"),
        color=alt.Color("side:N", title=None,
                        scale=alt.Scale(domain=["candidate", "production"],
                                        range=["#2e7d32", "#9e9e9e"])),
        tooltip=["job", "metric", "side", alt.Tooltip("value:Q", format=".4f"), "gate",
                 "request_id"],
    ).properties(height=260)
    return chart


def _job_label(job: dict[str, Any]) -> str:
    version = "" if _absent(job["candidate_version"]) else f" → v{int(job['candidate_version'])}"
    return f"{job['model']} · {job['status']}{version} · {_when(job['requested'])}"


def _open(page: Any, url_path: str, state: dict[str, Any]) -> None:
    """Preset the widgets of another page, then switch to it."""
    for key, value in state.items():
        st.session_state[key] = value
    try:
        st.switch_page(st.Page(page, url_path=url_path))
    except StreamlitAPIException:
        st.caption(f"Open the page `/{url_path}` from the sidebar.")


def _job_detail(source: QuerySource, job: dict[str, Any]) -> None:
    status, outcome = job["status"], job["outcome"]
    if status == "candidate":
        st.success(f"Gate passed: {plain(outcome)}", icon=":material/check_circle:")
    elif status == "rejected":
        st.warning(f"Gate failed, not aliased `candidate`: {plain(outcome)}",
                   icon=":material/block:")
    elif status == "failed":
        st.error(f"Job failed, nothing registered: {plain(outcome)}", icon=":material/error:")
    else:
        st.info(f"Job {status}: no report yet.", icon=":material/hourglass_empty:")
    cols = st.columns(4)
    metric = job["metric"] if not _absent(job["metric"]) else "metric"
    candidate, production = job["candidate_value"], job["production_value"]
    cols[0].metric(f"Candidate {metric}", "—" if _absent(candidate) else f"{candidate:.4f}",
                   None if _absent(candidate) or _absent(production)
                   else f"{candidate - production:+.4f}")
    cols[1].metric(f"Production {metric}", "—" if _absent(production) else f"{production:.4f}")
    cols[2].metric("Holdout rows", "—" if _absent(job["holdout_rows"])
                   else f"{int(job['holdout_rows']):,}")
    cols[3].metric("Duration", "—" if _absent(job["duration_s"])
                   else f"{float(job['duration_s']):.1f} s")
    st.caption(f"Request {code(job['request_id'])} · trigger {plain(job['trigger'])} · run "
               f"{code(job['run_id'])} ({job['attempts']} attempt(s)) · window dataset "
               f"{code(None if _absent(job['dataset']) else job['dataset'])}")
    run_id = None if _absent(job["run_id"]) else str(job["run_id"])
    ref = (f"{job['model']}@v{int(job['candidate_version'])}"
           if not _absent(job["candidate_version"]) else run_id)
    left, right = st.columns(2)
    if run_id and left.button("Open the run", key="retrain_open_run",
                              icon=":material/science:"):
        _open(runs_page, "runs", {"experiment": "all experiments", "run_filter": "",
                                  "run_order": "", "selected_runs": [run_id]})
    if ref and right.button("Open the lineage", key="retrain_open_lineage",
                            icon=":material/account_tree:"):
        node = f"model:{ref}" if ref != run_id else f"run:{ref}"
        _open(lineage_page, "lineage", {"lineage_node": node})
    if run_id:
        metrics = rd.run_metrics(source, run_id)
        if not metrics.empty:
            st.dataframe(metrics, hide_index=True, key="retrain_run_metrics")
    if ref and isinstance(source, Reader):
        with st.expander(f"Lineage of {ref} (upstream)", expanded=True):
            try:
                st.code(rd.upstream_lineage(source, ref), language=None)
            except StoreError as exc:
                st.caption(f"No lineage: {plain(exc)}")


def _retrain_body(source: QuerySource) -> None:
    models = rd.retrain_models(source)
    if models.empty:
        st.info(EMPTY_RETRAIN, icon=":material/model_training:")
        return
    choice = st.selectbox("Model", [ALL_MODELS, *models["model"]], key="retrain_model")
    model = None if choice == ALL_MODELS else str(choice)
    st.subheader("Requests")
    st.dataframe(rd.retrain_requests(source, model), hide_index=True, key="retrain_requests")
    jobs = rd.retrain_jobs(source, model)
    st.subheader("Jobs")
    if jobs.empty:
        st.caption("No job has started yet: is `modelog retrainer` running?")
        return
    st.dataframe(jobs[_JOB_COLUMNS].style.map(
        lambda s: f"background-color: {JOB_COLORS[s]}" if s in JOB_COLORS else "",
        subset=["status"]), hide_index=True, key="retrain_jobs")
    scores = rd.holdout_scores(jobs)
    if not scores.empty:
        st.subheader("Holdout: candidate vs production")
        st.altair_chart(holdout_chart(scores), width="stretch")
    records: dict[str, dict[str, Any]] = {
        str(j["request_id"]): {str(k): v for k, v in j.items()} for j in jobs.to_dict("records")}
    chosen = st.selectbox("Job", list(records), key="retrain_job",
                          format_func=lambda r: _job_label(records[r]))
    _job_detail(source, records[str(chosen)])


def retrain_page() -> None:
    """Retraining: requests, jobs with status and duration, the gate, runs and lineage."""
    _render("Retraining", _retrain_body, EMPTY_RETRAIN)
