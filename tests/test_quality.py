"""Detection quality of the serving monitor on synthetic drift, and the replay through Kafka.

The bounds are the measured values (deterministic for these seeds) plus a margin:
see ``python -m modelog.streams.bench.quality`` for the full table.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from modelog.config import Settings
from modelog.models.codec import encode
from modelog.models.events import LabelObserved, PredictionMade
from modelog.models.monitor_config import AnomalyConfig, ConceptDriftConfig, MonitorConfig
from modelog.store.backtest import backtest
from modelog.store.reader import Reader
from modelog.streams.bench.quality import (
    SCENARIOS,
    ScenarioResult,
    detect,
    quality_table,
    run_scenario,
    scenario_events,
)
from modelog.streams.projector import Projector
from modelog.streams.topics import Topics

# Concept drift quality: anomaly scoring is off (it is slow and the inputs do not drift).
CONFIG = MonitorConfig(anomaly=AnomalyConfig(enabled=False))


@pytest.fixture(scope="module")
def results() -> dict[str, ScenarioResult]:
    """Every scenario the bounds below talk about, run once per module."""
    seeds = {"sea-abrupt": range(5), "friedman-abrupt": range(5), "agrawal-abrupt": range(3),
             "sea-gradual": range(3), "friedman-gradual": range(3), "sea-no-drift": range(2)}
    return {name: run_scenario(SCENARIOS[name], CONFIG, seeds=s) for name, s in seeds.items()}


@pytest.mark.parametrize(("name", "max_delay"), [
    ("sea-abrupt", 1_200),       # measured: mean 516, max 823 labelled events
    ("agrawal-abrupt", 300),     # measured: max 87
    ("friedman-abrupt", 300),    # measured: max 55
])
def test_abrupt_drift_is_detected_in_every_seed_without_false_alarms(
        results: dict[str, ScenarioResult], name: str, max_delay: int) -> None:
    r = results[name]
    assert r.detected_share == 1.0, [o.delay for o in r.outcomes]
    assert r.delay_max is not None and r.delay_max <= max_delay
    assert r.false_alarms == 0
    assert r.scenario.pre_drift == 5_000


@pytest.mark.parametrize(("name", "slack"), [
    ("sea-gradual", 1_000),      # width 3,000; measured: max 2,679
    ("friedman-gradual", 500),   # width 1,000; measured: max 215
])
def test_gradual_drift_is_detected_within_its_width_plus_slack(
        results: dict[str, ScenarioResult], name: str, slack: int) -> None:
    r = results[name]
    assert r.detected_share == 1.0, [o.delay for o in r.outcomes]
    assert r.delay_max is not None and r.delay_max <= r.scenario.width + slack
    assert r.false_alarms == 0


def test_no_drift_raises_no_alarm(results: dict[str, ScenarioResult]) -> None:
    r = results["sea-no-drift"]
    assert r.false_alarms == 0
    assert r.detected_share is None and r.delay_mean is None
    assert sum(len(o.alerts) for o in r.outcomes) == 0


def test_a_blunter_detector_is_slower(results: dict[str, ScenarioResult]) -> None:
    """The suite discriminates configurations: a tiny ADWIN delta detects later."""
    blunt = run_scenario(SCENARIOS["friedman-abrupt"],
                         MonitorConfig(anomaly=AnomalyConfig(enabled=False),
                                       concept=ConceptDriftConfig(params={"delta": 1e-9})),
                         seeds=range(2))
    sharp = results["friedman-abrupt"]
    assert blunt.delay_mean is not None and sharp.delay_mean is not None
    assert blunt.delay_mean > sharp.delay_mean


def test_scenario_events_are_a_deterministic_serving_log() -> None:
    scenario = dataclasses.replace(SCENARIOS["friedman-abrupt"], n=300, label_delay=3,
                                   drift_start=None, drift="none")
    first, again = scenario_events(scenario, 7), scenario_events(scenario, 7)
    assert first == again
    assert [e.id for e in first] != [e.id for e in scenario_events(scenario, 8)]
    predictions = [e for e in first if isinstance(e, PredictionMade)]
    labels = [e for e in first if isinstance(e, LabelObserved)]
    assert len(predictions) == len(labels) == 300
    assert all(isinstance(p.output, float) for p in predictions)
    # log order is time order, and each label follows its prediction by label_delay
    assert [e.time for e in first] == sorted(e.time for e in first)
    position = {e.id: i for i, e in enumerate(first)}
    assert all(position[lab.id] > position[pred.id] + 3
               for pred, lab in zip(predictions, labels, strict=True))
    assert set(predictions[0].inputs) == {f"x{i}" for i in range(10)}


def test_quality_table_is_markdown(results: dict[str, ScenarioResult]) -> None:
    table = quality_table([results["sea-abrupt"], results["sea-no-drift"]]).splitlines()
    assert len(table) == 4
    assert all(line.startswith("|") and line.endswith("|") for line in table)
    assert "| sea-abrupt | classification | abrupt at 5,000 | adwin | 5 | 100% |" in table[2]
    assert table[3].endswith("| 0 in 20,000 x 2 |")
    assert results["sea-abrupt"].to_dict()["detected_share"] == 1.0


@pytest.mark.broker
def test_backtest_over_the_projected_ledger_equals_the_direct_replay(
        topics: Settings) -> None:
    """Produce one scenario to Kafka, project it, backtest it: the same alerts as directly."""
    from confluent_kafka import Producer

    scenario = dataclasses.replace(SCENARIOS["friedman-abrupt"], n=5_600, label_delay=5)
    events = scenario_events(scenario, 3)
    direct = detect(events, CONFIG)
    assert direct, "the scenario must raise alerts to compare"
    t = Topics.from_settings(topics)
    producer = Producer(topics.kafka_config())
    # what a live worker would have published: the alerts land in the alerts table
    for ev in [*events, *(d.event for d in direct)]:
        producer.produce(t.for_event(ev), key=ev.aggregate.encode(), value=encode(ev))
        producer.poll(0)
    assert producer.flush(30) == 0

    total, deadline = len(events) + len(direct), time.monotonic() + 60
    projector = Projector(topics, serve=False)
    done = 0
    try:
        while done < total:
            assert time.monotonic() < deadline, f"only {done}/{total} records projected"
            done += projector.project_once(timeout=0.2)
    finally:
        projector.close()

    report = backtest(Reader(topics), scenario.name, CONFIG, chunk_size=4_000)
    assert report.predictions == report.labels == scenario.n
    assert [a.id for a in report.candidate] == [d.event.id for d in direct]
    assert [a.time for a in report.candidate] == [d.event.time for d in direct]
    assert report.matched == {d.event.id for d in direct}
    assert [a.id for a in report.live] == [d.event.id for d in direct]
