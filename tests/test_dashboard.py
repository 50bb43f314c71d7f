"""The dashboard: its queries (modelog.dashboard.data), charts, launcher and the page.

The page runs under ``streamlit.testing.v1.AppTest`` against a real DuckDB file
filled with a realistic scenario by :func:`fill_scenario` (also used by
``test_dashboard_browser.py``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from modelog.config import Settings, env_for
from modelog.dashboard import charts, data
from modelog.dashboard.errors import DashboardQueryError
from modelog.dashboard.launch import APP_PATH, dashboard_command
from modelog.errors import ConfigurationError
from modelog.store.reader import Reader
from modelog.store.schema import create_schema, derive

BASE = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
DRIFT_MESSAGE = "error rate of churn rose from 0.10 to 0.50"
DRIFT_ID = "019a0000-0000-7000-8000-00000000d001"
# 400 churn predictions (all labelled) + 100 price predictions (60 labelled),
# 4 alerts, 20 monitor stats, 1 alias change (its command and the registry's answer).
EXPECTED = {"events": 400 + 100 + 400 + 60 + 4 + 20 + 2, "predictions": 500, "labels": 460,
            "alerts": 4, "open_alerts": 1, "dead_letters": 1}

_SCENARIO_SQL = """
-- churn v1: a classifier; 10% errors for the first 200 predictions, 50% after.
INSERT INTO predictions
SELECT 'p-churn-' || i, 'churn-' || i, 'churn', 1, 'abc123',
       $base + i * INTERVAL 5 SECOND, json_object('tenure', i, 'plan', 'basic'),
       CAST(i % 2 AS JSON), 'pytest', NULL
FROM range(400) t(i);
INSERT INTO labels
SELECT 'l-churn-' || i, 'churn-' || i, 'churn', $base + i * INTERVAL 5 SECOND + INTERVAL 1 SECOND,
       CAST(CASE WHEN (i < 200 AND i % 10 = 0) OR (i >= 200 AND i % 2 = 0)
                 THEN 1 - i % 2 ELSE i % 2 END AS JSON)
FROM range(400) t(i);
-- price v1 then v2: a regressor, every label 2.0 off, 60 of 100 labelled.
INSERT INTO predictions
SELECT 'p-price-' || i, 'price-' || i, 'price', CASE WHEN i < 50 THEN 1 ELSE 2 END, 'abc123',
       $base + i * INTERVAL 10 SECOND, json_object('sqm', 40 + i), CAST(i * 1.5 AS JSON),
       'pytest', NULL
FROM range(100) t(i);
INSERT INTO labels
SELECT 'l-price-' || i, 'price-' || i, 'price', $base + i * INTERVAL 10 SECOND,
       CAST(i * 1.5 + 2.0 AS JSON)
FROM range(60) t(i);
INSERT INTO alerts VALUES
  ($drift_id, 'DriftDetected', $base + INTERVAL 1100 SECOND, 'churn', 1, 'concept', NULL,
   'adwin', 0.41, 0.2, 'critical', $message, $base + INTERVAL 1000 SECOND,
   $base + INTERVAL 1100 SECOND, 20, ['churn-200', 'churn-202', 'churn-204'],
   '{"delta": 0.002}', NULL),
  ('a-price-drift', 'DriftDetected', $base + INTERVAL 300 SECOND, 'price', 1, 'data', 'sqm',
   'ks', 0.3, 0.25, 'warning', 'sqm distribution shifted', NULL, NULL, 50, [], NULL, NULL),
  ('a-price-resolved', 'DriftResolved', $base + INTERVAL 600 SECOND, 'price', 1, 'data', 'sqm',
   'ks', 0.1, NULL, 'info', NULL, NULL, NULL, NULL, [], NULL, 'a-price-drift'),
  ('a-price-anomaly', 'AnomalyDetected', $base + INTERVAL 800 SECOND, 'price', 2, NULL, NULL,
   'hst', 0.93, 0.8, 'warning', 'inputs of price look anomalous', NULL, NULL, 25,
   ['price-55'], '{"n_trees": 25}', NULL);
INSERT INTO monitor_stats
SELECT 'm-churn-' || i, $base + (i + 1) * INTERVAL 100 SECOND, 'churn', 1,
       $base + (i + 1) * INTERVAL 100 SECOND,
       json_object('rolling_error', CASE WHEN i < 10 THEN 0.1 ELSE 0.5 END,
                   'anomaly_score_mean', 0.2 + i / 100, 'anomaly_score_max', 0.5 + i / 50,
                   'anomaly_rate', 0.01, 'predictions', (i + 1) * 20, 'labelled', (i + 1) * 20,
                   'psi.tenure', CASE WHEN i < 10 THEN 0.05 ELSE 0.35 END,
                   'psi_threshold.tenure', 0.2, 'ks.tenure', 0.02 + i / 1000,
                   'ks_threshold.tenure', 0.1, 'chi2.__output__', 1.5, 'chi2_threshold.__output__',
                   16.3, 'rolling_accuracy', CASE WHEN i < 10 THEN 0.9 ELSE 0.5 END,
                   'rolling_f1', 0.25)
FROM range(20) t(i);
-- the ledger: one row per derived row above, plus an alias change (the aliases view reads it)
INSERT INTO events
SELECT id, type, 1, time, model, 'pytest', 'modelog.x', 0,
       row_number() OVER (ORDER BY time, id), now(), '{}'
FROM (SELECT event_id AS id, 'PredictionMade' AS type, time, model FROM predictions
      UNION ALL SELECT event_id, 'LabelObserved', time, model FROM labels
      UNION ALL SELECT event_id, type, time, model FROM alerts
      UNION ALL SELECT event_id, 'MonitorStatsReported', time, model FROM monitor_stats);
INSERT INTO events VALUES
  ('c-alias', 'AliasChangeRequested', 1, $base, 'churn', 'pytest', 'modelog.registry-commands',
   0, 1, now(), '{"command_id": "cmd-1", "model": "churn", "alias": "production",
   "model_version": 1, "actor": "ci", "reason": "first"}'),
  ('e-alias', 'AliasSet', 1, $base, 'churn', 'modelog-registry', 'modelog.registry', 0, 1,
   now(), '{"command_id": "cmd-1", "model": "churn", "alias": "production",
   "model_version": 1, "actor": "ci", "reason": "first"}');
INSERT INTO dead_letters VALUES
  ('modelog.dead-letter', 0, 0, $base + INTERVAL 50 SECOND,
   'decode: not JSON', 'modelog.serving', 1, 17, 'projector', 'churn', 'garbage');
"""


def fill_scenario(path: Path) -> None:
    """Create ``path`` with the projection schema and the test scenario (then close it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        create_schema(con)
        for statement in duckdb.extract_statements(_SCENARIO_SQL):
            names = {"base", "message", "drift_id"} & set(statement.named_parameters)
            params = {"base": BASE, "message": DRIFT_MESSAGE, "drift_id": DRIFT_ID}
            con.execute(statement, {k: params[k] for k in names})
        # The scenario writes the hot tables directly; registry views derive from the ledger.
        derive(con, "(SELECT * FROM events WHERE type IN ('AliasSet', 'AliasRemoved', "
                    "'AliasChangeRequested'))")
        # an online River challenger of churn (v2) and its prequential accuracy
        con.execute("INSERT INTO model_versions (model, model_version, run_id, flavor, online, "
                    "time, event_id) VALUES ('churn', 2, NULL, 'river', true, ?, 'mv-2')", [BASE])
        con.execute("INSERT INTO run_metrics SELECT 'online-churn-v2', 'prequential_accuracy', "
                    "0.6 + i / 100, (i + 1) * 50, ? + i * INTERVAL 50 SECOND, 'rm-' || i "
                    "FROM range(20) t(i)", [BASE])
    finally:
        con.close()


def add_alert(path: Path, event_id: str, message: str, *, timeout: float = 20.0) -> None:
    """Insert a new critical DriftDetected alert now (retrying while a reader holds the file)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            con = duckdb.connect(str(path))
            break
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        con.execute(
            "INSERT INTO alerts (event_id, type, time, model, model_version, kind, detector, "
            "statistic, threshold, severity, message, window_size, prediction_ids) VALUES "
            "(?, 'DriftDetected', now(), 'churn', 1, 'concept', 'ddm', 3.2, 3.0, 'critical', "
            "?, 50, ['churn-399'])", [event_id, message])
    finally:
        con.close()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("dash") / "data")
    fill_scenario(settings.duckdb_path)
    return settings


@pytest.fixture(scope="module")
def source(scenario: Settings) -> Reader:
    return Reader(scenario)


# -- data -----------------------------------------------------------------------
def test_overview_counts(source: Reader) -> None:
    row = data.overview(source).iloc[0]
    assert {k: int(row[k]) for k in EXPECTED} == EXPECTED
    assert pd.Timestamp(row["last_event"]) == pd.Timestamp(BASE + dt.timedelta(seconds=2000))
    assert not data.is_empty(data.overview(source))


def test_models_lists_every_model_and_version(source: Reader) -> None:
    df = data.models(source)
    assert list(zip(df.model, df.model_version, df.predictions, strict=True)) == [
        ("churn", 1, 400), ("price", 1, 50), ("price", 2, 50)]


def test_alert_feed_newest_first_with_resolution(source: Reader) -> None:
    feed = data.alert_feed(source)
    assert list(feed.event_id) == [DRIFT_ID, "a-price-anomaly", "a-price-resolved",
                                   "a-price-drift"]
    drift = feed.iloc[0]
    assert (drift.message, drift.statistic, drift.threshold) == (DRIFT_MESSAGE, 0.41, 0.2)
    assert list(drift.prediction_ids) == ["churn-200", "churn-202", "churn-204"]
    assert json.loads(drift.params) == {"delta": 0.002}
    assert pd.isna(drift.resolved_at)
    resolved = feed.set_index("event_id").loc["a-price-drift", "resolved_at"]
    assert pd.Timestamp(resolved) == pd.Timestamp(BASE + dt.timedelta(seconds=600))


def test_alert_feed_filters(source: Reader) -> None:
    assert list(data.alert_feed(source, "price", 2).event_id) == ["a-price-anomaly"]
    only_drift = data.alert_feed(source, types=["DriftDetected"], limit=1)
    assert list(only_drift.event_id) == [DRIFT_ID]
    later = data.alert_feed(source, since=BASE + dt.timedelta(seconds=700))
    assert set(later.event_id) == {DRIFT_ID, "a-price-anomaly"}


@pytest.mark.parametrize(("kwargs", "text"), [
    ({"types": ["Nope"]}, "alert type 'Nope' is unknown"),
    ({"types": []}, "at least one alert type"),
    ({"limit": 0}, "limit=0 must be an integer between 1 and 10000"),
])
def test_alert_feed_rejects_bad_arguments(source: Reader, kwargs: dict[str, object],
                                          text: str) -> None:
    with pytest.raises(DashboardQueryError, match=text):
        data.alert_feed(source, **kwargs)  # type: ignore[arg-type]


def test_error_rate_windows(source: Reader) -> None:
    df = data.error_rate(source, "churn", window=100)
    assert list(df.window_index) == [0, 1, 2, 3]
    assert list(df.labelled) == [100] * 4
    assert list(df.error_rate.round(3)) == [0.1, 0.1, 0.5, 0.5]
    # only the latest windows, still aligned on the first labelled prediction
    tail = data.error_rate(source, "churn", window=150, windows=2)
    assert list(tail.window_index) == [1, 2] and list(tail.labelled) == [150, 100]
    price = data.error_rate(source, "price", 1, window=20)
    assert list(price.labelled) == [20, 20, 10]
    assert price.mean_abs_error.round(6).tolist() == [2.0, 2.0, 2.0]


def test_monitor_series_and_aliases(source: Reader) -> None:
    stats = data.monitor_series(source, "churn", 1, limit=5)
    assert len(stats) == 5 and stats.time.is_monotonic_increasing
    assert stats.rolling_error.tolist() == [0.5] * 5
    assert stats.anomaly_score_max.iloc[-1] == pytest.approx(0.5 + 19 / 50)
    assert data.monitor_series(source, "price").empty
    alias = data.aliases(source, "churn")
    assert list(zip(alias.alias, alias.model_version, strict=True)) == [("production", 1)]


def test_dead_letter_reasons(source: Reader) -> None:
    df = data.dead_letter_reasons(source)
    assert df.to_dict("records")[0] | {"time": None} == {
        "time": None, "reason": "decode: not JSON", "source_topic": "modelog.serving",
        "source_partition": 1, "source_offset": 17, "consumer": "projector", "size": 7}


def test_connection_source_on_empty_schema() -> None:
    con = duckdb.connect()
    create_schema(con)
    src = data.ConnectionSource(con)
    assert data.is_empty(data.overview(src))
    assert data.error_rate(src, "churn").empty and data.alert_feed(src).empty


# -- charts ---------------------------------------------------------------------
def test_error_rate_chart_layers_rules_at_drift_times(source: Reader) -> None:
    windows = data.error_rate(source, "churn", window=100)
    stats = data.monitor_series(source, "churn")
    drift = data.alert_feed(source, "churn", types=["DriftDetected", "DriftResolved"])
    spec = charts.error_rate_chart(windows, stats, drift).to_dict()
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["line", "line", "rule"]
    rows = spec["datasets"][spec["layer"][2]["data"]["name"]]
    assert [(r["message"], r["series"]) for r in rows] == [(DRIFT_MESSAGE, "DriftDetected")]
    segments = pd.DataFrame(spec["datasets"][spec["layer"][0]["data"]["name"]])
    # each window is drawn from its first to its last prediction
    assert segments.value.round(3).tolist() == [0.1, 0.1, 0.1, 0.1, 0.5, 0.5, 0.5, 0.5]
    monitor = spec["datasets"][spec["layer"][1]["data"]["name"]]
    assert len(monitor) == 20
    # one colour scale shared by every layer: lines and rule types in a single legend
    scales = [layer["encoding"]["color"]["scale"] for layer in spec["layer"]]
    assert scales[0] == scales[1] == scales[2]
    assert scales[0]["domain"] == ["error rate per window", "monitor rolling error",
                                   "DriftDetected"]
    assert scales[0]["range"][2] == charts.MARKER_COLORS["DriftDetected"]


def test_anomaly_chart_without_markers_has_one_layer() -> None:
    spec = charts.anomaly_chart(pd.DataFrame(), None).to_dict()
    assert len(spec["layer"]) == 1


# -- launcher -------------------------------------------------------------------
def test_dashboard_command_and_env(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, broker="k:1", sasl_username="u", query_url="http://q:1")
    cmd = dashboard_command(s, port=8123, address="0.0.0.0")
    assert cmd[1:5] == ["-m", "streamlit", "run", str(APP_PATH)]
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert flags["--server.port"] == "8123" and flags["--server.address"] == "0.0.0.0"
    assert flags["--server.headless"] == "true"
    assert flags["--browser.gatherUsageStats"] == "false"
    env = env_for(s)
    assert all(k.startswith("MODELOG_") for k in env)
    assert Settings.from_env(env) == s
    with pytest.raises(ConfigurationError, match="port=70000"):
        dashboard_command(s, port=70000)


# -- the page -------------------------------------------------------------------
def _run_page(data_dir: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MODELOG_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MODELOG_QUERY_URL", raising=False)
    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    at.run()
    return at


def test_page_shows_metrics_alerts_and_dead_letters(scenario: Settings,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run_page(scenario.data_dir, monkeypatch)
    assert not at.exception, at.exception
    assert not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Events projected": "986", "Predictions": "500", "Labels": "460",
                       "Open alerts": "1", "Dead-lettered": "1"}
    labels = [e.label for e in at.expander]
    assert any(DRIFT_MESSAGE in label and "CRITICAL" in label for label in labels)
    assert any("1 record(s) went to the dead-letter topic" in label for label in labels)
    assert at.title[0].value == "Live monitoring"
    assert [s.label for s in at.selectbox] == ["Model", "Version"]
    assert at.selectbox[0].value == "churn" and at.selectbox[0].options == ["churn", "price"]
    page = " ".join(str(md.value) for md in at.markdown)
    assert "`0.41` vs **threshold** `0.2`" in page and "churn-202" in " ".join(
        str(c.value) for c in at.code)
    assert "`production` → v1" in " ".join(str(c.value) for c in at.caption)


def test_page_switches_model_and_version(scenario: Settings,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run_page(scenario.data_dir, monkeypatch)
    at.selectbox(key="model").select("price").run()
    assert at.selectbox(key="version:price").options == ["all versions", "v1", "v2"]
    at.selectbox(key="version:price").select(2).run()
    at.toggle(key="feed_only_model").set_value(True).run()
    assert not at.exception
    labels = [e.label for e in at.expander]
    assert any("inputs of price look anomalous" in label for label in labels)
    assert not any(DRIFT_MESSAGE in label for label in labels)
    assert "Refreshing every 2 s." in [c.value for c in at.sidebar.caption]
    at.toggle(key="paused").set_value(True).run()
    assert not at.exception
    assert "Paused." in [c.value for c in at.sidebar.caption]


def test_page_empty_state_without_data(tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run_page(tmp_path / "nothing-here", monkeypatch)
    assert not at.exception and not at.error
    info = " ".join(str(i.value) for i in at.info)
    assert "No data yet" in info and "modelog up" in info and "modelog demo" in info
    assert not at.metric


def test_page_empty_state_with_empty_tables(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = Settings(data_dir=tmp_path).duckdb_path
    con = duckdb.connect(str(path))
    create_schema(con)
    con.close()
    at = _run_page(tmp_path, monkeypatch)
    assert not at.exception and not at.error
    assert "modelog demo" in " ".join(str(i.value) for i in at.info)


def test_page_reports_reader_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = Settings(data_dir=tmp_path).duckdb_path
    with contextlib.closing(duckdb.connect(str(path))) as con:
        con.execute("CREATE TABLE unrelated (x INTEGER)")
    at = _run_page(tmp_path, monkeypatch)
    assert not at.exception
    text = " ".join(str(e.value) for e in at.error)
    assert "Could not read the projection" in text and "modelog project" in text


# -- per-feature drift, prediction distribution, learning curve ---------------------------
def test_feature_drift_reads_every_statistic_with_its_threshold(source: Reader) -> None:
    df = data.feature_drift(source, "churn", 1)
    assert set(zip(df.feature, df.detector, strict=True)) == {
        ("tenure", "psi"), ("tenure", "ks"), ("__output__", "chi2")}
    psi = df[(df.feature == "tenure") & (df.detector == "psi")]
    assert len(psi) == 20 and list(psi.statistic[:2]) == [0.05, 0.05]
    assert psi.statistic.iloc[-1] == 0.35 and set(psi.threshold) == {0.2}
    latest = data.latest_feature_drift(df)
    assert latest.iloc[0][["feature", "detector", "status"]].tolist() == [
        "tenure", "psi", "drifting"]
    assert set(latest.status[1:]) == {"ok"}
    assert data.feature_drift(source, "price").empty


def test_prediction_distribution_compares_first_and_latest_window(source: Reader) -> None:
    churn = data.prediction_distribution(source, "churn", 1, window=100)
    assert set(churn.period) == {"first 100", "latest 100"} and set(churn.value) == {"0", "1"}
    assert churn.groupby("period").share.sum().round(6).tolist() == [1.0, 1.0]
    price = data.prediction_distribution(source, "price", None, window=50, bins=5)
    assert len(set(price.value)) == 5  # numeric outputs: equal-width bins
    first = price[price.period == "first 50"]
    assert first["count"].sum() == 50 and first.order.max() <= 2  # early prices are low


def test_learning_curve_of_the_online_version(source: Reader) -> None:
    curve = data.learning_curve(source, "churn")
    assert list(curve.step) == [(i + 1) * 50 for i in range(20)]
    assert set(curve.model_version) == {2} and set(curve.metric) == {"prequential_accuracy"}
    assert data.learning_curve(source, "price").empty
    spec = charts.learning_curve_chart(curve).to_dict()
    assert spec["encoding"]["y"]["field"] == "value"


def test_page_shows_feature_drift_distribution_and_learning_curve(
        scenario: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run_page(scenario.data_dir, monkeypatch)
    assert not at.exception, at.exception
    headers = [h.value for h in at.subheader]
    assert {"Feature drift", "Prediction distribution", "Online learning curve"} <= set(headers)
    page = " ".join(str(md.value) for md in at.markdown)
    assert "**1** of 2 monitored features drifting now: `tenure`" in page
    table = at.dataframe[-1].value
    assert table.iloc[0][["feature", "detector", "status"]].tolist() == [
        "tenure", "psi", "drifting"]
    captions = " ".join(str(c.value) for c in at.caption)
    assert "Prequential" in captions and "No online learner" not in captions
    assert "v1: accuracy **0.500**, F1 **0.25**" in page  # the latest live metric
