"""Time travel: every answer "as of T" equals the answer of a ledger that holds only the
events up to T.

The lifecycle scenario of ``test_lifecycle_views.py`` (datasets, runs, registry,
predictions) plus monitoring events (drift detected and resolved, monitor stats) is
projected into a real DuckDB file. For each cut time T, a second file is filled with only
the events whose time is at or before T -- the truth at T. The as-of answers over the
full file (read from the file, and through a real query server) must equal the answers
over the truth file: every derived table and view, the lifecycle queries, lineage, the
registry, the dashboard's data functions and the CLI.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from modelog.config import Settings
from modelog.dashboard import data as dash
from modelog.models import events as ev
from modelog.models.ids import new_id
from modelog.store import lineage as lin
from modelog.store import queries as q
from modelog.store import registry as reg
from modelog.store.as_of import SNAPSHOTS, snapshot
from modelog.store.derivations import DERIVED_TABLES
from modelog.store.errors import AsOfError, NotFoundError
from modelog.store.query_server import QueryServer
from modelog.store.reader import Reader
from modelog.store.readonly_sql import LOCKED_CONFIG
from modelog.store.views import VIEWS

sys.path.insert(0, str(Path(__file__).parent))
import test_lifecycle_views as LV  # noqa: N812  (the lifecycle scenario)

at = LV.at
runner = CliRunner()


def _monitoring() -> list[ev.Event]:
    def env(minute: float) -> dict[str, Any]:
        return {"id": new_id(), "time": at(minute), "aggregate": "churn", "producer": "worker"}

    drift = ev.DriftDetected(**env(33), model="churn", model_version=1, kind="concept",
                             detector="adwin", statistic=0.4, threshold=0.2,
                             message="error rate up")
    return [
        drift,
        ev.MonitorStatsReported(**env(38), model="churn", model_version=1,
                                stats={"rolling_error": 0.3, "predictions": 10.0}),
        ev.DriftDetected(**env(44), model="churn", model_version=2, kind="data", feature="age",
                         detector="psi", statistic=0.5, threshold=0.25),
        ev.DriftResolved(**env(48), model="churn", model_version=1, kind="concept",
                         detector="adwin", detected_id=drift.id),
        ev.MonitorStatsReported(**env(53), model="churn", model_version=2,
                                stats={"rolling_error": 0.1, "predictions": 20.0}),
    ]


EVENTS: list[ev.Event] = [*LV.EVENTS, *_monitoring()]
CUTS = [at(15), at(35), at(45), at(52)]
"""Mid-runs (no registry yet); production on v1 and a drift open; v2 on staging and the
first drift still open; production moved to v2, the drift resolved."""


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("as-of") / "data")
    LV.fill(settings.duckdb_path, EVENTS)
    return settings


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> dict[dt.datetime, Settings]:
    """For each cut T: a ledger of only the events up to T."""
    out = {}
    for i, cut in enumerate(CUTS):
        settings = Settings(data_dir=tmp_path_factory.mktemp(f"truth{i}") / "data")
        LV.fill(settings.duckdb_path, [e for e in EVENTS if e.time <= cut], seed=i)
        out[cut] = settings
    return out


def _all(reader: Reader, name: str) -> list[dict[str, Any]]:
    return reader.query(f"SELECT * FROM {name} ORDER BY ALL").to_pylist()  # type: ignore[no-any-return]


@pytest.mark.parametrize("cut", CUTS, ids=lambda c: c.strftime("%H:%M"))
def test_every_table_and_view_as_of_equals_the_ledger_up_to_then(
        full: Settings, truth: dict[dt.datetime, Settings], cut: dt.datetime) -> None:
    then, expected = Reader(full, as_of=cut), Reader(truth[cut])
    for name in [*DERIVED_TABLES, *VIEWS]:
        assert _all(then, name) == _all(expected, name), name
    ids = "SELECT id FROM events ORDER BY id"
    assert then.query(ids).equals(expected.query(ids))
    assert then.query("SELECT count(*) AS n FROM events WHERE time > ?", [cut]).to_pylist() \
        == [{"n": 0}]  # events after T are invisible
    live = Reader(full).query("SELECT count(*) AS n FROM events").to_pylist()[0]["n"]
    assert live == len(EVENTS) > then.query("SELECT count(*) AS n FROM events").to_pylist()[0]["n"]


@pytest.mark.parametrize("cut", [CUTS[0], CUTS[2], CUTS[3]], ids=lambda c: c.strftime("%H:%M"))
def test_lifecycle_queries_as_of(full: Settings, truth: dict[dt.datetime, Settings],
                                 cut: dt.datetime) -> None:
    then, expected = Reader(full, as_of=cut), Reader(truth[cut])
    pd.testing.assert_frame_equal(q.list_runs(then, ""), q.list_runs(expected, ""))
    pd.testing.assert_frame_equal(q.list_datasets(then), q.list_datasets(expected))
    for run in q.list_runs(expected, "")["run_id"]:
        assert q.show_run(then, run) == q.show_run(expected, run)
    if cut < at(20):  # nothing registered yet: the model is unknown then
        with pytest.raises(NotFoundError):
            reg.registry_state(then, "churn", as_of=cut)
        assert q.list_runs(then, "")["run_id"].tolist() == ["run-c", "run-b", "run-a"]
        return
    assert reg.registry_state(then, "churn", as_of=cut) == reg.registry_state(expected, "churn")
    pd.testing.assert_frame_equal(reg.registry_history(then, "churn"),
                                  reg.registry_history(expected, "churn"))
    for ref in ("churn@v1", "churn-train@1"):
        assert lin.lineage(then, ref).to_dict() == lin.lineage(expected, ref).to_dict()


def test_registry_as_of_tells_what_was_in_production(full: Settings) -> None:
    state = reg.registry_state(Reader(full, as_of=at(45)), "churn", as_of=at(45))
    assert {a: s.version for a, s in state.aliases.items()} == {"production": 1, "staging": 2}
    later = reg.registry_state(Reader(full, as_of=at(52)), "churn", as_of=at(52))
    assert later.aliases["production"].version == 2 and later.aliases["production"].actor == "bob"


def test_query_server_answers_as_of_like_the_file(full: Settings, tmp_path: Path) -> None:
    con = duckdb.connect(str(full.duckdb_path), read_only=True, config=LOCKED_CONFIG)
    try:
        with QueryServer(con) as server:
            served = Settings(data_dir=tmp_path, query_url=server.url)
            for cut in CUTS[1:3]:
                by_server, by_file = Reader(served, as_of=cut), Reader(full, as_of=cut)
                for sql in ("SELECT * FROM alerts ORDER BY ALL",
                            "SELECT * FROM aliases ORDER BY ALL",
                            "SELECT count(*) AS n, max(time) AS last FROM predictions"):
                    assert by_server.query(sql).equals(by_file.query(sql)), sql
            # the server keeps its rules for as-of queries: one read statement
            with pytest.raises(Exception, match="only read statements"):
                Reader(served, as_of=CUTS[1]).query("delete from events")
            with pytest.raises(AsOfError, match="in the future"):
                Reader(served, as_of="2999-01-01").query("select 1")
    finally:
        con.close()


def test_bad_as_of_is_refused_with_the_reason(full: Settings) -> None:
    with pytest.raises(AsOfError, match="before the first event of the ledger"):
        Reader(full, as_of=at(-10)).query("select count(*) from runs")
    with pytest.raises(AsOfError, match="is in the future"):
        Reader(full, as_of=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).query("select 1")
    with pytest.raises(AsOfError, match="not an ISO date or time"):
        Reader(full, as_of="last tuesday")


def test_a_late_event_joins_the_past_once_projected(tmp_path: Path) -> None:
    """Event time: an event that happened before T but arrives later is part of "as of T"."""
    path = tmp_path / "late.duckdb"
    early = [e for e in EVENTS if e.time <= at(40)]
    LV.fill(path, early)
    con = duckdb.connect(str(path))
    try:
        before = snapshot(con, at(40)).execute("select count(*) from labels, predictions"
                                               ).fetchall()
        n_pred = SNAPSHOTS.get(con, at(40)).execute("select count(*) from predictions"
                                                    ).fetchall()[0][0]
        late = ev.PredictionMade(id=new_id(), time=at(39), aggregate="churn", producer="late",
                                 prediction_id="p-late", model="churn", model_version=1,
                                 inputs={"age": 1}, output=0)
        LV.project_batch(con, [late])
        # the cache notices the ledger up to T changed
        assert SNAPSHOTS.get(con, at(40)).execute("select count(*) from predictions"
                                                  ).fetchall()[0][0] == n_pred + 1
        assert before == [(0,)]
    finally:
        con.close()


@pytest.mark.parametrize("cut", CUTS[1:], ids=lambda c: c.strftime("%H:%M"))
def test_dashboard_data_as_of(full: Settings, truth: dict[dt.datetime, Settings],
                              cut: dt.datetime) -> None:
    """The live monitoring page's data -- alerts, metrics, drift -- as it stood at T."""
    then, expected = Reader(full, as_of=cut), Reader(truth[cut])
    con = duckdb.connect(str(full.duckdb_path), read_only=True, config=LOCKED_CONFIG)
    con_truth = duckdb.connect(str(truth[cut].duckdb_path), read_only=True, config=LOCKED_CONFIG)
    try:  # a Reader (as the app) and a plain connection (notebooks, tests)
        pairs = [(then, expected),
                 (dash.ConnectionSource(con, as_of=cut.isoformat()),
                  dash.ConnectionSource(con_truth))]
        for source, truth_source in pairs:
            for frame in (dash.overview, dash.models, dash.alert_feed):
                pd.testing.assert_frame_equal(frame(source), frame(truth_source))
            pd.testing.assert_frame_equal(dash.monitor_series(source, "churn"),
                                          dash.monitor_series(truth_source, "churn"))
            pd.testing.assert_frame_equal(dash.aliases(source, "churn"),
                                          dash.aliases(truth_source, "churn"))
    finally:
        con.close()
        con_truth.close()
    feed = dash.alert_feed(then)
    drift = feed[feed["type"] == "DriftDetected"].set_index("model_version")
    if cut < at(48):  # the concept drift was still open at T
        assert pd.isna(drift.loc[1, "resolved_at"])
    else:
        assert drift.loc[1, "resolved_at"] == at(48)


def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    from modelog.cli import app

    result = runner.invoke(app, ["--data-dir", str(settings.data_dir), *args])
    return result.exit_code, result.output


def test_cli_as_of(full: Settings, truth: dict[dt.datetime, Settings]) -> None:
    cut = CUTS[2]
    sql = "select type, count(*) as n from alerts group by type order by type"
    code, out = _cli(full, "query", "--as-of", cut.isoformat(), sql, "-f", "json")
    assert code == 0, out
    assert [json.loads(line) for line in out.splitlines()] == [{"type": "DriftDetected", "n": 2}]
    assert _cli(truth[cut], "query", sql, "-f", "json")[1] == out
    for args in (["runs", "list", "-F", "json"], ["datasets", "list", "-F", "json"],
                 ["lineage", "churn@v1", "-F", "json"], ["runs", "show", "run-c"]):
        code, out = _cli(full, *args, "--as-of", cut.isoformat())
        assert code == 0, out
        assert out == _cli(truth[cut], *args)[1], args
    code, out = _cli(full, "registry", "show", "churn", "--as-of", cut.isoformat())
    assert code == 0 and "production -> v1" in out and "staging -> v2" in out, out
    code, out = _cli(full, "runs", "list", "--as-of", "2999-01-01")
    assert code == 1 and "in the future" in out
    code, out = _cli(full, "query", "--as-of", at(-5).isoformat(), "select 1")
    assert code == 1 and "before the first event" in out


def test_dashboard_as_of_control(full: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sidebar's "As of" field turns the live page into the page as it stood then."""
    from streamlit.testing.v1 import AppTest

    from modelog.dashboard import app as app_module

    monkeypatch.setenv("MODELOG_DATA_DIR", str(full.data_dir))
    monkeypatch.delenv("MODELOG_QUERY_URL", raising=False)
    page = AppTest.from_file(str(app_module.__file__), default_timeout=60)
    page.run()
    assert not page.exception, page.exception
    live = {m.label: m.value for m in page.metric}
    assert live["Events projected"] == str(len(EVENTS))
    cut = CUTS[1]
    page.text_input(key="as_of_text").set_value(cut.strftime("%Y-%m-%d %H:%M")).run()
    assert not page.exception and not page.error, page.error
    then = {m.label: m.value for m in page.metric}
    assert then["Events projected"] == str(sum(e.time <= cut for e in EVENTS))
    assert then["Predictions"] == str(sum(isinstance(e, ev.PredictionMade) and e.time <= cut
                                          for e in EVENTS))
    assert then["Open alerts"] == "1"  # the concept drift detected at 09:33, not yet resolved
    page.text_input(key="as_of_text").set_value("2999-01-01").run()
    assert any("in the future" in str(e.value) for e in page.error)
    page.text_input(key="as_of_text").set_value("").run()
    assert {m.label: m.value for m in page.metric} == live
