"""The monitoring issue's "done means", as a new user would try it, through real processes.

`modelog demo` registers and promotes a model, registers an online River challenger,
then streams traffic where one input drifts first and the concept later; a worker and a
projector (started by the `modelog` CLI) run against the session's broker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from modelog.config import Settings
from modelog.streams.demo import DemoConfig, run_demo
from modelog.streams.topics import ensure_topics
from tests.test_e2e import _q, _start, _stop, _wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

FEATURE_DRIFT_AT = 2_500
CONCEPT_DRIFT_AT = 5_000
PREDICTIONS = 7_000


@pytest.fixture(scope="module")
def live(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("e2e-monitoring")
    settings = Settings(broker=broker, data_dir=data, topic_prefix=f"e2em{os.getpid()}.",
                        partitions=2, producer_name="e2e")
    ensure_topics(settings)
    procs = {"worker": _start(settings, "worker", "--session-timeout", "6"),
             "projector": _start(settings, "project")}
    try:
        sent = run_demo(settings, DemoConfig(
            predictions=PREDICTIONS, drift_at=CONCEPT_DRIFT_AT,
            feature_drift_at=FEATURE_DRIFT_AT, online=True, rate=0, label_delay=20, seed=5,
        ), echo=lambda s: None, progress=False)
        s = settings
        _wait_for(lambda: _q(s, "select count(*) n from predictions")[0]["n"] == PREDICTIONS,
                  120, "every prediction in DuckDB")
        yield {"settings": settings, "procs": procs, "sent": sent}
    finally:
        for p in procs.values():
            _stop(p)


def _index_of(s: Settings, alert: dict[str, Any]) -> int:
    """How many predictions had been made when the alert's latest evidence was made."""
    evidence = f"select unnest(prediction_ids) from alerts where event_id = '{alert['event_id']}'"
    return int(_q(s, "select count(*) n from predictions where time <= (select max(time) "
                     f"from predictions where prediction_id in ({evidence}))")[0]["n"])


def test_input_drift_is_alerted_on_that_feature_after_it_starts(live: dict[str, Any]) -> None:
    s = live["settings"]
    alerts = _wait_for(lambda: _q(s, "select * from alerts where type = 'DriftDetected' and "
                                     "kind = 'data' order by time"), 120, "a data drift alert")
    assert {a["feature"] for a in alerts} == {"spend"}, [(a["feature"], a["detector"])
                                                         for a in alerts]
    first = alerts[0]
    assert FEATURE_DRIFT_AT < _index_of(s, first) < FEATURE_DRIFT_AT + 1_000
    assert first["statistic"] > first["threshold"] and first["detector"] in ("psi", "ks")


def test_concept_drift_then_one_retrain_request(live: dict[str, Any]) -> None:
    s = live["settings"]
    concept = _wait_for(lambda: _q(s, "select * from alerts where type = 'DriftDetected' and "
                                      "kind = 'concept' order by time"), 120,
                        "a concept drift alert")
    assert CONCEPT_DRIFT_AT < _index_of(s, concept[0]) < CONCEPT_DRIFT_AT + 1_500
    retrains = _wait_for(lambda: _q(s, "select time, payload from events where "
                                       "type = 'RetrainRequested'"), 60, "a retrain request")
    assert len(retrains) == 1, retrains  # the cooldown keeps one drift from asking twice
    assert retrains[0]["time"] >= concept[0]["time"]


def test_online_challenger_learns_and_reports_prequential_metrics(live: dict[str, Any]) -> None:
    s = live["settings"]
    rows = _wait_for(lambda: _q(s, "select step, value from run_metrics where run_id = "
                                   "'online-demo-churn-v2' and key = 'prequential_accuracy' "
                                   "order by step"), 120, "online metrics")
    steps = [r["step"] for r in rows]
    assert steps == sorted(steps) and steps[-1] > CONCEPT_DRIFT_AT // 2
    before = [r["value"] for r in rows if r["step"] < FEATURE_DRIFT_AT]
    assert before and before[-1] > 0.8  # it learned the concept before the drift
    aliases = _q(s, "select alias, model_version from aliases where model = 'demo-churn' "
                    "order by alias")
    assert {(a["alias"], a["model_version"]) for a in aliases} == {("challenger", 2),
                                                             ("production", 1)}
