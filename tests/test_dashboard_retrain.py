"""The Retraining page and its queries (requests, jobs, the gate, lineage).

The projection is the retrain scenario of ``test_retrain_lineage.py`` (a drift alert
whose request became candidate v2 of ``demo``, a manual request whose job failed, a
queued request), written into a real DuckDB file the way the projector writes it.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import pytest

from modelog.config import Settings
from modelog.dashboard import retrain_data as rd
from modelog.dashboard.data import ConnectionSource
from modelog.dashboard.errors import DashboardQueryError
from modelog.dashboard.text import plain
from modelog.store.reader import Reader
from modelog.store.schema import create_schema

# --import-mode=importlib: test modules are not importable by name; run the file instead.
RL = SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("test_retrain_lineage.py"))))


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("retrain-dashboard") / "data")
    RL.fill(settings.duckdb_path)
    return settings


@pytest.fixture(scope="module")
def source(scenario: Settings) -> Reader:
    return Reader(scenario)


def test_requests_with_trigger_window_and_status(source: Reader) -> None:
    assert rd.retrain_models(source)[["model", "requests"]].values.tolist() == [["demo", 3]]
    req = rd.retrain_requests(source)
    assert req["request_id"].tolist() == [RL.QUEUED, RL.MANUAL, RL.REQUEST]  # newest first
    assert req["status"].tolist() == ["queued", "failed", "candidate"]
    assert req["trigger"].tolist() == ["DriftDetected data on usage", "manual",
                                       "DriftDetected concept"]
    first = req.iloc[2]
    assert first["trigger_id"] == RL.ALERT and first["reason"] == "concept drift on demo v1"
    assert first["window_start"] == RL.at(30) and first["window_end"] == RL.at(60)
    assert rd.retrain_requests(source, "other").empty
    assert len(rd.retrain_requests(source, limit=1)) == 1


def test_jobs_status_duration_gate_and_holdout(source: Reader) -> None:
    jobs = rd.retrain_jobs(source, "demo").set_index("request_id")
    assert list(jobs.index) == [RL.MANUAL, RL.REQUEST]  # the queued request has no job
    ok, failed = jobs.loc[RL.REQUEST], jobs.loc[RL.MANUAL]
    assert (ok["status"], ok["gate"], ok["run_id"], ok["attempts"]) == (
        "candidate", "passed", RL.RUN_OK, 1)
    assert ok["duration_s"] == pytest.approx(4.5 * 60)  # run started at 62, report at 66.5
    assert (ok["candidate_version"], ok["production_version"], ok["metric"]) == (
        2, 1, "accuracy")
    assert (ok["candidate_value"], ok["production_value"], ok["holdout_rows"]) == (
        0.91, 0.72, 120)
    assert ok["outcome"] == RL.GATE and ok["dataset"] == f"demo-train@{RL.WINDOW[:12]}"
    assert failed["status"] == "failed" and failed["outcome"] == RL.FAILED
    assert failed["run_id"] == RL.RUN_FAILED and failed["duration_s"] == pytest.approx(180)
    assert failed["gate"] is None or failed["gate"] != failed["gate"]  # null
    scores = rd.holdout_scores(rd.retrain_jobs(source))
    assert scores[["job", "side", "value"]].values.tolist() == [
        ["demo v2", "candidate", 0.91], ["demo v2", "production", 0.72]]
    metrics = dict(rd.run_metrics(source, RL.RUN_OK).values.tolist())
    assert metrics["gate_passed"] == 1.0 and metrics["holdout_accuracy_candidate"] == 0.91


def test_upstream_lineage_text(source: Reader) -> None:
    text = rd.upstream_lineage(source, "demo@v2")
    assert text.startswith("model demo@v2")
    assert f"retrain {RL.REQUEST}" in text and f"alert {RL.ALERT}" in text
    assert f"demo-train@{RL.WINDOW[:12]}" in text


def test_limits_are_bounded(source: Reader) -> None:
    with pytest.raises(DashboardQueryError, match="between 1 and 1000"):
        rd.retrain_jobs(source, limit=0)
    with pytest.raises(DashboardQueryError):
        rd.upstream_lineage(source, "demo@v2", depth=99)


def test_connection_source_and_empty_projection(scenario: Settings) -> None:
    con = duckdb.connect(str(scenario.duckdb_path), read_only=True)
    try:
        assert len(rd.retrain_jobs(ConnectionSource(con))) == 2
    finally:
        con.close()
    empty = duckdb.connect()
    create_schema(empty)
    assert rd.retrain_models(ConnectionSource(empty)).empty
    assert rd.holdout_scores(rd.retrain_jobs(ConnectionSource(empty))).empty


# -- the page ---------------------------------------------------------------------------
def _page() -> None:
    from modelog.dashboard.retrain_page import retrain_page

    retrain_page()


def _run_page(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MODELOG_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MODELOG_QUERY_URL", raising=False)
    at = AppTest.from_function(_page, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_page_shows_requests_jobs_gate_and_lineage(scenario: Settings,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run_page(scenario.data_dir, monkeypatch)
    assert at.title[0].value == "Retraining"
    frames = [d.value for d in at.dataframe]
    requests = next(f for f in frames if "window_start" in f.columns)
    assert requests["status"].tolist() == ["queued", "failed", "candidate"]
    jobs = next(f for f in frames if "duration_s" in f.columns)
    assert set(jobs["status"]) == {"candidate", "failed"}
    assert at.get("vega_lite_chart")  # candidate vs production
    job = at.selectbox(key="retrain_job")
    assert job.value == RL.MANUAL  # the most recent job first
    assert any(plain(RL.FAILED) in e.value for e in at.error)  # shown verbatim
    job.select(RL.REQUEST).run()
    assert not at.exception and any(plain(RL.GATE) in s.value for s in at.success)
    assert {m.label: m.value for m in at.metric}["Candidate accuracy"] == "0.9100"
    code = "\n".join(c.value for c in at.code)
    assert f"retrain {RL.REQUEST}" in code and f"alert {RL.ALERT}" in code
    assert [b.label for b in at.button] == ["Open the run", "Open the lineage"]
    at.button(key="retrain_open_run").click().run()  # presets the Runs page's selection
    assert not at.exception and at.session_state["selected_runs"] == [RL.RUN_OK]
    at.selectbox(key="retrain_job").select(RL.REQUEST).run()
    at.button(key="retrain_open_lineage").click().run()
    assert not at.exception and at.session_state["lineage_node"] == "model:demo@v2"
    at.selectbox(key="retrain_model").select("demo").run()
    assert not at.exception


def test_page_empty_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    con = duckdb.connect(str(Settings(data_dir=tmp_path).duckdb_path))
    try:
        create_schema(con)
    finally:
        con.close()
    at = _run_page(tmp_path, monkeypatch)
    assert not at.error and "No retrain requests yet" in at.info[0].value
