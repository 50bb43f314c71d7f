"""The serving join and per-model monitoring state (pure, no broker)."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from modelog.streams.events import (
    AnomalyDetected,
    DriftDetected,
    Event,
    LabelObserved,
    MonitorStatsReported,
    PredictionMade,
    RunStarted,
)
from modelog.streams.ids import id_time_ms
from modelog.streams.monitor import (
    PRODUCER,
    MonitorConfig,
    ServingMonitor,
    UnsupportedEventError,
    prediction_error,
)

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
CHANGE = 3_000


def prediction(i: int, output: object = 1, *, model: str = "churn", version: int = 1,
               inputs: dict[str, object] | None = None, seconds: float | None = None,
               pid: str | None = None) -> PredictionMade:
    return PredictionMade(
        id=f"e-p{i}", time=T0 + dt.timedelta(seconds=i if seconds is None else seconds),
        aggregate=model, producer="test", prediction_id=pid or f"p{i}", model=model,
        model_version=version, inputs=inputs if inputs is not None else {"x": float(i % 7)},
        output=output,  # type: ignore[arg-type]
    )


def label(i: int, value: object, *, model: str = "churn", seconds: float | None = None,
          pid: str | None = None) -> LabelObserved:
    return LabelObserved(
        id=f"e-l{i}", time=T0 + dt.timedelta(seconds=i + 0.5 if seconds is None else seconds),
        aggregate=model, producer="test", prediction_id=pid or f"p{i}", model=model,
        label=value,  # type: ignore[arg-type]
    )


def concept_stream(seed: int, n: int = 6_000, change: int = CHANGE,
                   shift_inputs_at: int | None = None) -> list[Event]:
    """Predictions with their label 5 steps later; error rate 5 % then 50 % from `change`."""
    rng = random.Random(seed)
    events: list[Event] = []
    outputs: dict[int, int] = {}
    for i in range(n):
        shift = 4.0 if shift_inputs_at is not None and i >= shift_inputs_at else 0.0
        out = rng.randint(0, 1)
        outputs[i] = out
        inputs = {"a": rng.gauss(shift, 1.0), "b": rng.gauss(0.0, 1.0), "segment": "eu"}
        events.append(prediction(i, out, inputs=inputs))
        j = i - 5
        if j >= 0:
            wrong = rng.random() < (0.05 if j < change else 0.5)
            events.append(label(j, outputs[j] if not wrong else 1 - outputs[j], seconds=i + 0.5))
    return events


@pytest.fixture(scope="module")
def drift_run() -> tuple[list[Event], list[Event]]:
    events = concept_stream(seed=7)
    return events, ServingMonitor(MonitorConfig(anomaly=False)).process_many(events)


# -- join -------------------------------------------------------------------------
def test_label_after_prediction_joins() -> None:
    m = ServingMonitor(MonitorConfig(anomaly=False))
    m.process(prediction(1, "yes"))
    assert m.counters("churn")["pending"] == 1
    assert m.process(label(1, "no")) == []
    c = m.counters("churn")
    assert (c["pending"], c["labels"], c["orphan_labels"]) == (0, 1, 0)
    assert m.rolling_error("churn", 1) == 1.0


def test_label_before_prediction_is_an_orphan_and_prediction_stays_pending() -> None:
    m = ServingMonitor(MonitorConfig(anomaly=False))
    m.process(label(1, 1, seconds=0.5))
    m.process(prediction(1, 1))
    c = m.counters("churn")
    assert c["orphan_labels"] == 1 and c["pending"] == 1 and c["labels"] == 0
    assert m.rolling_error("churn", 1) is None


def test_label_never_arrives_keeps_prediction_pending_until_ttl() -> None:
    m = ServingMonitor(MonitorConfig(anomaly=False, pending_ttl=dt.timedelta(hours=1)))
    m.process(prediction(1))
    m.process(prediction(2, seconds=1_800))
    assert m.counters("churn")["pending"] == 2
    m.process(prediction(3, seconds=3_700))  # p1 is now older than the TTL
    c = m.counters("churn")
    assert c["evicted_by_ttl"] == 1 and c["pending"] == 2
    m.process(label(1, 1, seconds=3_800))  # too late: p1 was evicted
    assert m.counters("churn")["orphan_labels"] == 1


def test_pending_bound_evicts_oldest() -> None:
    m = ServingMonitor(MonitorConfig(anomaly=False, max_pending=3))
    for i in range(5):
        m.process(prediction(i))
    c = m.counters("churn")
    assert c["pending"] == 3 and c["evicted_by_size"] == 2
    m.process(label(0, 1))
    m.process(label(4, 1))
    c = m.counters("churn")
    assert c["orphan_labels"] == 1 and c["labels"] == 1


def test_duplicates_are_ignored_and_counted() -> None:
    m = ServingMonitor(MonitorConfig(anomaly=False))
    m.process(prediction(1, 1))
    m.process(prediction(1, 0))  # same prediction id again (a retried send)
    m.process(label(1, 0))
    m.process(label(1, 0))
    m.process(prediction(1, 1))  # and once more after the join
    c = m.counters("churn")
    assert c["duplicate_predictions"] == 2
    assert c["duplicate_labels"] == 1
    assert c["predictions"] == 1 and c["labels"] == 1
    assert m.rolling_error("churn", 1) == 1.0  # the first prediction's output (1) counted


def test_models_and_versions_are_separate() -> None:
    m = ServingMonitor(MonitorConfig(anomaly=False))
    m.process(prediction(1, 1, model="a"))
    m.process(prediction(2, 1, model="b", version=3))
    m.process(label(2, 1, model="a"))  # p2 belongs to model b
    m.process(label(2, 0, model="b"))
    assert m.counters("a")["orphan_labels"] == 1
    assert m.rolling_error("b", 3) == 1.0 and m.rolling_error("b", 1) is None
    assert m.models() == ["a", "b"]


def test_other_events_are_refused() -> None:
    ev = RunStarted(id="r", time=T0, aggregate="r1", run_id="r1", experiment="exp")
    with pytest.raises(UnsupportedEventError, match="RunStarted"):
        ServingMonitor().process(ev)


def test_prediction_error_picks_by_type() -> None:
    assert prediction_error(1, 0) == (1.0, True)
    assert prediction_error("cat", "cat") == (0.0, True)
    assert prediction_error(True, False) == (1.0, True)
    assert prediction_error(3.0, 5) == (2.0, False)
    assert prediction_error([0.1, 0.9], 1) == (0.0, True)
    assert prediction_error({"a": 0.7, "b": 0.3}, "b") == (1.0, True)
    assert prediction_error(1, None) is None


# -- concept drift ------------------------------------------------------------------
def test_concept_drift_gives_exactly_one_alert_after_the_change(drift_run) -> None:
    _, derived = drift_run
    drifts = [e for e in derived if isinstance(e, DriftDetected)]
    assert len(drifts) == 1
    d = drifts[0]
    triggering = int(d.window.end.timestamp() - T0.timestamp())  # label of p(i) at i+5.5 s
    assert CHANGE <= triggering - 5 < CHANGE + 200
    assert d.kind == "concept" and d.detector == "adwin" and d.params["delta"] == 0.002
    assert d.statistic > 0.3 and d.threshold == pytest.approx(0.05, abs=0.02)
    assert d.model == d.aggregate == "churn" and d.model_version == 1
    assert d.producer == PRODUCER
    assert d.time == d.window.end
    assert d.window.start is not None and d.window.start <= d.window.end
    assert 0 < d.window.size <= 200
    assert 0 < len(d.prediction_ids) <= 20
    assert all(int(p[1:]) >= CHANGE - 50 for p in d.prediction_ids)
    assert d.severity == "critical"
    assert "error rate" in d.message and "was 0.0" in d.message and "ADWIN(delta=0.002" in d.message
    assert id_time_ms(d.id) == int(d.time.timestamp() * 1000)


def test_stats_are_reported_every_n_predictions(drift_run) -> None:
    _, derived = drift_run
    stats = [e for e in derived if isinstance(e, MonitorStatsReported)]
    assert len(stats) == 6_000 // 500
    first, last = stats[0], stats[-1]
    assert first.stats["predictions"] == 500.0
    assert first.window.size == 500 and first.window.start == T0
    assert first.stats["rolling_error"] is not None and first.stats["rolling_error"] < 0.15
    assert last.stats["rolling_error"] is not None and last.stats["rolling_error"] > 0.3
    # stats follow prediction 5999, before the label of p5994: six labels outstanding
    assert last.stats["pending"] == 6.0 and last.stats["orphan_labels"] == 0.0
    assert last.stats["anomaly_rate"] is None  # anomaly scoring disabled in this run
    assert len({s.id for s in stats}) == len(stats)


def test_replay_into_fresh_monitor_gives_identical_events(drift_run) -> None:
    events, derived = drift_run
    again = ServingMonitor(MonitorConfig(anomaly=False)).process_many(events)
    assert [e.id for e in again] == [e.id for e in derived]
    assert again == derived


# -- anomalies ------------------------------------------------------------------------
def test_anomaly_on_input_shift() -> None:
    events = concept_stream(seed=3, n=4_000, change=10_000, shift_inputs_at=3_000)
    cfg = MonitorConfig(stats_every=1_000)
    derived = ServingMonitor(cfg).process_many(events)
    anomalies = [e for e in derived if isinstance(e, AnomalyDetected)]
    assert anomalies, "no anomaly alert after the input shift"
    first = anomalies[0]
    index = int(first.prediction_ids[-1][1:])
    assert 3_000 <= index < 3_250
    assert first.statistic >= first.threshold
    assert first.detector == "hst" and first.params["q"] == 0.95
    assert first.window.size == 200 and first.window.start is not None
    assert "expected" in first.message
    assert len(anomalies) <= 1 + (4_000 - 3_000) // cfg.anomaly_cooldown
    assert not [e for e in derived if isinstance(e, DriftDetected)]
    stats = [e for e in derived if isinstance(e, MonitorStatsReported)]
    assert stats[-1].stats["anomaly_score_max"] is not None
    again = ServingMonitor(cfg).process_many(events)
    assert [e.id for e in again] == [e.id for e in derived]


def test_bad_config_fails_early() -> None:
    from modelog.models.errors import InvalidParameterError, UnknownDetectorError

    with pytest.raises(UnknownDetectorError):
        MonitorConfig(detector="nope")
    with pytest.raises(InvalidParameterError, match="stats_every"):
        MonitorConfig(stats_every=0)
