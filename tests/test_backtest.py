"""Backtesting monitor configurations on a recorded ledger (a real DuckDB file)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from modelog.config import Settings
from modelog.models.codec import encode
from modelog.models.errors import MonitorConfigError
from modelog.models.events import Event
from modelog.models.monitor_config import (
    AnomalyConfig,
    ConceptDriftConfig,
    MonitorConfig,
    parse_monitor_config,
)
from modelog.store.backtest import backtest, compare, load_monitor_config
from modelog.store.errors import BacktestError
from modelog.store.reader import Reader
from modelog.store.schema import create_schema, derive
from modelog.streams.bench.quality import SCENARIOS, Detection, detect, scenario_events

LIVE = MonitorConfig(anomaly=AnomalyConfig(enabled=False))
SCENARIO = dataclasses.replace(SCENARIOS["friedman-abrupt"], n=5_600, label_delay=2)


def write_ledger(path: Path, events: list[Event]) -> None:
    """Put ``events`` in a DuckDB ledger as the projector would, and derive its tables."""
    con = duckdb.connect(str(path))
    create_schema(con)
    rows = pa.table({
        "id": [e.id for e in events],
        "type": [e.type_name() for e in events],
        "schema_version": pa.array([e.schema_version for e in events], pa.int32()),
        "time": pa.array([e.time for e in events], pa.timestamp("us", tz="UTC")),
        "aggregate": [e.aggregate for e in events],
        "producer": [e.producer for e in events],
        "topic": ["t.serving"] * len(events),
        "partition": pa.array([0] * len(events), pa.int32()),
        "offset": list(range(len(events))),
        "payload": [encode(e).decode() for e in events],
    })
    con.register("batch", rows)
    con.execute('INSERT INTO events SELECT id, type, schema_version, time, aggregate, producer, '
                'topic, partition, "offset", now(), payload FROM batch')
    derive(con, "events")
    con.close()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A serving history with a drift, plus the alerts a live worker raised on it."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("backtest"))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    events = scenario_events(SCENARIO, 11)
    live = detect(events, LIVE)
    other = scenario_events(dataclasses.replace(SCENARIO, name="other-model", n=600,
                                                drift_start=None, drift="none"), 1)
    write_ledger(settings.duckdb_path, [*events, *(d.event for d in live), *other])
    return {"reader": Reader(settings), "events": events, "live": live}


def test_backtest_with_the_live_configuration_reproduces_the_live_alerts(
        ledger: dict[str, Any]) -> None:
    live: list[Detection] = ledger["live"]
    report = backtest(ledger["reader"], SCENARIO.name, LIVE)
    assert live, "the history must hold a drift"
    assert report.predictions == report.labels == SCENARIO.n  # the other model is not read
    assert [a.id for a in report.candidate] == [d.event.id for d in live]
    assert [a.id for a in report.live] == [d.event.id for d in live]
    assert report.matched == {d.event.id for d in live}
    first = report.first_detection
    assert first is not None and first.type == "DriftDetected" and first.kind == "concept"
    # when: the event time and the number of predictions replayed by then
    assert first.time == live[0].event.time
    assert first.prediction_index is not None
    assert abs(first.prediction_index - live[0].index) <= SCENARIO.label_delay + 1
    assert report.counters["predictions"] == SCENARIO.n


def test_chunked_reading_and_progress_do_not_change_the_result(ledger: dict[str, Any]) -> None:
    calls: list[tuple[int, int]] = []
    whole = backtest(ledger["reader"], SCENARIO.name, LIVE)
    chunked = backtest(ledger["reader"], SCENARIO.name, LIVE, chunk_size=997,
                       progress=lambda done, total: calls.append((done, total)))
    assert chunked.candidate == whole.candidate
    total = 2 * SCENARIO.n
    assert len(calls) == -(-total // 997)
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_time_window_restricts_the_replay(ledger: dict[str, Any]) -> None:
    events: list[Event] = ledger["events"]
    start, end = events[1_000].time, events[3_000].time
    report = backtest(ledger["reader"], SCENARIO.name, LIVE, start=start, end=end)
    assert report.predictions + report.labels == 2_000
    assert report.live == ()  # the live drift alert is after the window
    with pytest.raises(BacktestError, match="window is empty"):
        backtest(ledger["reader"], SCENARIO.name, LIVE, start=end, end=start)


def test_render_and_to_dict(ledger: dict[str, Any]) -> None:
    report = backtest(ledger["reader"], SCENARIO.name, LIVE)
    text = report.render()
    assert "Backtest of friedman-abrupt" in text
    assert "DriftDetected" in text and "concept" in text
    assert f"candidate alerts: {len(ledger['live'])}, live alerts: {len(ledger['live'])}" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["counts"]["matched"] == len(ledger["live"])
    assert data["counts"]["candidate_only"] == data["counts"]["live_only"] == 0
    assert data["config"]["anomaly"] is False


def test_compare_shows_what_a_stricter_configuration_catches(ledger: dict[str, Any]) -> None:
    strict = parse_monitor_config({"anomaly": False, "detector": "page_hinkley",
                                   "detector_params": {"threshold": 5.0}, "drift_warm_up": 50})
    comparison = compare(ledger["reader"], SCENARIO.name, LIVE, strict)
    assert comparison.a.candidate == backtest(ledger["reader"], SCENARIO.name, LIVE).candidate
    assert len(comparison.b.candidate) > len(comparison.a.candidate)
    extra = comparison.only_b()
    assert extra and all(a.type == "DriftDetected" for a in extra)
    assert "page_hinkley" in comparison.render()
    assert len(comparison.to_dict()["earlier_or_only_in_b"]) == len(extra)


# -- configuration files ----------------------------------------------------------------
def test_load_toml_and_yaml(tmp_path: Path) -> None:
    toml = tmp_path / "monitor.toml"
    toml.write_text('detector = "page_hinkley"\npending_ttl = "12h"\nanomaly = false\n'
                    "[detector_params]\nthreshold = 20.0\n")
    cfg = load_monitor_config(toml)
    assert cfg == MonitorConfig(
        concept=ConceptDriftConfig(detector="page_hinkley", params={"threshold": 20.0}),
        pending_ttl=dt.timedelta(hours=12), anomaly=AnomalyConfig(enabled=False))
    yaml = tmp_path / "monitor.yaml"
    yaml.write_text("monitor:\n  stats_every: 50\n  pending_ttl: 90\n")
    assert load_monitor_config(yaml) == MonitorConfig(stats_every=50,
                                                      pending_ttl=dt.timedelta(seconds=90))
    # round trip through plain data
    assert parse_monitor_config(cfg.to_mapping()) == cfg


@pytest.mark.parametrize(("name", "text", "message"), [
    ("m.toml", 'detectr = "adwin"\n', "setting 'detectr' = 'adwin' is invalid: unknown setting; "
                                      "valid settings: detector, detector_params"),
    ("m.yaml", "stats_every: 0\n", "stats_every"),
    ("m.yaml", "pending_ttl: soon\n", "'pending_ttl' = 'soon' is invalid: not a duration"),
    ("m.yaml", "- a\n- b\n", "must be a mapping of monitor settings, not list"),
    ("m.toml", "detector = \n", "not valid TOML"),
    ("m.json", "{}", "use a .toml, .yaml or .yml file"),
    ("m.toml", 'detector = "nope"\n', "nope"),
])
def test_bad_configuration_files_say_what_is_wrong(tmp_path: Path, name: str, text: str,
                                                   message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MonitorConfigError, match=message) as info:
        load_monitor_config(path)
    assert str(path) in str(info.value)


def test_missing_configuration_file(tmp_path: Path) -> None:
    with pytest.raises(MonitorConfigError, match="cannot read monitor configuration"):
        load_monitor_config(tmp_path / "absent.toml")


def test_cli_backtest_and_compare(ledger: dict[str, Any], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from modelog.cli import app

    reader: Reader = ledger["reader"]
    monkeypatch.setenv("MODELOG_DATA_DIR", str(reader.settings.data_dir))
    live = tmp_path / "live.toml"
    live.write_text(f"anomaly = false\ndetector = \"{LIVE.concept.detector}\"\n")
    strict = tmp_path / "strict.yaml"
    strict.write_text("anomaly: false\ndetector: page_hinkley\ndetector_params:\n"
                      "  threshold: 5.0\ndrift_warm_up: 50\n")
    runner = CliRunner()
    out = runner.invoke(app, ["monitor", "backtest", SCENARIO.name, "--config", str(live),
                              "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["counts"]["candidate"] >= 1
    both = runner.invoke(app, ["monitor", "backtest", SCENARIO.name, "-c", str(live),
                               "--compare", str(strict)])
    assert both.exit_code == 0, both.output
    assert "page_hinkley" in both.output
    bad = runner.invoke(app, ["monitor", "backtest", SCENARIO.name, "-c", str(live),
                              "--from", "yesterday"])
    assert bad.exit_code == 1 and "--from 'yesterday'" in bad.output
