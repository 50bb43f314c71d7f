"""The serving join and per-model monitoring state (pure, no broker)."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from modelog.models.errors import UnsupportedEventError
from modelog.models.events import (
    AnomalyDetected,
    DriftDetected,
    Event,
    LabelObserved,
    MonitorStatsReported,
    PredictionMade,
    RunStarted,
)
from modelog.models.ids import id_time_ms
from modelog.models.monitor import ServingMonitor
from modelog.models.monitor_config import (
    AnomalyConfig,
    ConceptDriftConfig,
    MonitorConfig,
    parse_monitor_config,
)
from modelog.models.monitor_events import PRODUCER
from modelog.models.monitor_state import prediction_error

NO_ANOMALY = MonitorConfig(anomaly=AnomalyConfig(enabled=False))
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
    return events, ServingMonitor(NO_ANOMALY).process_many(events)


# -- join -------------------------------------------------------------------------
def test_label_after_prediction_joins() -> None:
    m = ServingMonitor(NO_ANOMALY)
    m.process(prediction(1, "yes"))
    assert m.counters("churn")["pending"] == 1
    assert m.process(label(1, "no")) == []
    c = m.counters("churn")
    assert (c["pending"], c["labels"], c["orphan_labels"]) == (0, 1, 0)
    assert m.rolling_error("churn", 1) == 1.0


def test_label_before_prediction_is_an_orphan_and_prediction_stays_pending() -> None:
    m = ServingMonitor(NO_ANOMALY)
    m.process(label(1, 1, seconds=0.5))
    m.process(prediction(1, 1))
    c = m.counters("churn")
    assert c["orphan_labels"] == 1 and c["pending"] == 1 and c["labels"] == 0
    assert m.rolling_error("churn", 1) is None


def test_label_never_arrives_keeps_prediction_pending_until_ttl() -> None:
    m = ServingMonitor(MonitorConfig(anomaly=AnomalyConfig(enabled=False),
                                     pending_ttl=dt.timedelta(hours=1)))
    m.process(prediction(1))
    m.process(prediction(2, seconds=1_800))
    assert m.counters("churn")["pending"] == 2
    m.process(prediction(3, seconds=3_700))  # p1 is now older than the TTL
    c = m.counters("churn")
    assert c["evicted_by_ttl"] == 1 and c["pending"] == 2
    m.process(label(1, 1, seconds=3_800))  # too late: p1 was evicted
    assert m.counters("churn")["orphan_labels"] == 1


def test_pending_bound_evicts_oldest() -> None:
    m = ServingMonitor(MonitorConfig(anomaly=AnomalyConfig(enabled=False), max_pending=3))
    for i in range(5):
        m.process(prediction(i))
    c = m.counters("churn")
    assert c["pending"] == 3 and c["evicted_by_size"] == 2
    m.process(label(0, 1))
    m.process(label(4, 1))
    c = m.counters("churn")
    assert c["orphan_labels"] == 1 and c["labels"] == 1


def test_a_pending_prediction_pickles_and_restores_as_it_was_pickled_before() -> None:
    """A pending prediction is a plain class (compiled, made without running Python); it
    pickles, and the state a slotted dataclass pickled (``(None, slots)``) still restores."""
    import pickle

    from modelog.models.monitor_state import PendingPrediction

    p = PendingPrediction(3, {"a": 0.25}, T0)
    assert pickle.loads(pickle.dumps(p)) == p
    assert repr(p) == f"PendingPrediction(version=3, output={{'a': 0.25}}, time={T0!r})"
    old = PendingPrediction.__new__(PendingPrediction)
    old.__setstate__((None, {"version": 3, "output": {"a": 0.25}, "time": T0}))
    assert old == p and old != PendingPrediction(4, {"a": 0.25}, T0)


def test_duplicates_are_ignored_and_counted() -> None:
    m = ServingMonitor(NO_ANOMALY)
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
    m = ServingMonitor(NO_ANOMALY)
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


def test_an_integer_class_and_its_text_are_the_same_class() -> None:
    """Labels often come from another system as text: 1 and "1" agree (they were counted
    wrong, so every prediction of such a model looked like an error)."""
    assert prediction_error(1, "1") == (0.0, True) and prediction_error("0", 0) == (0.0, True)
    assert prediction_error([0.3, 0.7], "1") == (0.0, True)
    assert prediction_error(1, "0") == (1.0, True) and prediction_error(1, "1.0") == (1.0, True)
    assert prediction_error(True, "True") == (1.0, True)  # booleans are not integers here
    m = ServingMonitor(NO_ANOMALY)
    for i in range(20):
        m.process(prediction(i, i % 2))
        m.process(label(i, str(i % 2)))
    assert m.rolling_error("churn", 1) == 0.0


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
    again = ServingMonitor(NO_ANOMALY).process_many(events)
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
    assert len(anomalies) <= 1 + (4_000 - 3_000) // cfg.anomaly.cooldown
    assert not [e for e in derived if isinstance(e, DriftDetected) and e.kind == "concept"]
    # the shifted input is also data drift, on feature "a" only
    assert {e.feature for e in derived if isinstance(e, DriftDetected)} == {"a"}
    stats = [e for e in derived if isinstance(e, MonitorStatsReported)]
    assert stats[-1].stats["anomaly_score_max"] is not None
    again = ServingMonitor(cfg).process_many(events)
    assert [e.id for e in again] == [e.id for e in derived]


def test_bad_config_fails_early() -> None:
    from modelog.models.errors import InvalidParameterError, UnknownDetectorError

    with pytest.raises(UnknownDetectorError):
        ConceptDriftConfig(detector="nope")
    with pytest.raises(InvalidParameterError, match="stats_every"):
        MonitorConfig(stats_every=0)


@pytest.mark.parametrize(("settings", "field"), [
    ({"drift_window": 10**9}, "drift_window"),
    ({"reference_size": 10**10}, "reference_size"),
    ({"max_pending": 10**11}, "max_pending"),
    ({"anomaly_n_trees": 10**7}, "anomaly_n_trees"),
    ({"detector": "kswin", "detector_params": {"window_size": 10**9}},
     "detector_params.window_size"),
    ({"quality": {"window": 10**8}}, "quality.window"),
])
def test_sizes_from_the_log_are_bounded(settings: dict[str, object], field: str) -> None:
    """A configuration is input from the log: no setting may grow a monitor without bound."""
    from modelog.models.errors import MonitorConfigError
    from modelog.models.quality_config import parse_quality_config

    with pytest.raises(MonitorConfigError) as info:
        if "quality" in settings:
            parse_quality_config(settings, model="m")
        else:
            parse_monitor_config(settings, model="m")
    assert info.value.field == field and "at most 1,000,000" in str(info.value)
    assert parse_monitor_config({"anomaly_seed": 10**12}).anomaly.seed == 10**12  # not a size


def test_a_forest_too_large_to_build_is_refused() -> None:
    """Trees are arrays of 2^(height+1) nodes grown in Python: their product is bounded."""
    from modelog.models.errors import InvalidParameterError, MonitorConfigError

    with pytest.raises(MonitorConfigError, match="nodes must be at most 1,048,576"):
        parse_monitor_config({"anomaly_n_trees": 1_000, "anomaly_height": 12}, model="m")
    with pytest.raises(InvalidParameterError, match="n_trees"):
        AnomalyConfig(n_trees=1, height=20)
    assert AnomalyConfig(n_trees=1, height=19).n_trees == 1


# -- data drift, prediction drift, skew, grouping, run-time configuration ------------------------
def feature_stream(seed: int, n: int, *, shift_at: int | None = None,
                   revert_at: int | None = None, model: str = "m",
                   output: str = "score") -> list[PredictionMade]:
    """Predictions with five inputs; feature "a" moves +1.5 sigma in [shift_at, revert_at)."""
    rng = random.Random(seed)
    out: list[PredictionMade] = []
    for i in range(n):
        shifted = shift_at is not None and i >= shift_at and (revert_at is None or i < revert_at)
        inputs = {"a": rng.gauss(1.5 if shifted else 0.0, 1.0), "b": rng.gauss(0.0, 1.0),
                  "c": rng.expovariate(1.0), "n": rng.randint(0, 5), "plan": rng.choice("xyz")}
        value: object = rng.random() if output == "score" else rng.choice(["no", "no", "yes"])
        out.append(prediction(i, value, model=model, inputs=inputs))
    return out


def alerts(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type_name() in ("DriftDetected", "DriftResolved",
                                                   "SkewDetected", "AnomalyDetected")]




@pytest.fixture(scope="module")
def shift_run() -> tuple[list[PredictionMade], list[Event]]:
    events = feature_stream(11, 9_000, shift_at=CHANGE, revert_at=6_000)
    return events, ServingMonitor(NO_ANOMALY).process_many(events)


def test_stationary_inputs_raise_no_alert_over_10000_predictions() -> None:
    for seed in (1, 2):
        derived = ServingMonitor(NO_ANOMALY).process_many(feature_stream(seed, 10_000))
        assert alerts(derived) == []
        stats = [e for e in derived if isinstance(e, MonitorStatsReported)][-1].stats
        assert stats["psi.a"] is not None and stats["psi.a"] < 0.1
        assert stats["ks.a"] is not None and stats["ks_threshold.a"] is not None
        assert stats["ks.a"] < stats["ks_threshold.a"]
        assert stats["psi.__output__"] is not None and stats["chi2.plan"] is not None


def test_shift_in_one_feature_is_data_drift_of_that_feature_only(shift_run) -> None:
    _, derived = shift_run
    detected = [e for e in derived if isinstance(e, DriftDetected)]
    # one alert per condition: PSI and KS of feature "a", nothing else
    assert sorted((d.kind, d.feature, d.detector) for d in detected) == [
        ("data", "a", "ks"), ("data", "a", "psi")]
    for d in detected:
        index = int(d.prediction_ids[-1][1:])
        assert CHANGE <= index < CHANGE + 300  # stated delay: within 300 predictions
        assert d.statistic > d.threshold and d.window.size == 500
        assert d.window.start is not None and d.window.end == d.time
        assert len(d.prediction_ids) == 20 and d.params["reference"] == "warm-up"
        assert "feature 'a'" in d.message and d.producer == PRODUCER
    psi_alert = next(d for d in detected if d.detector == "psi")
    assert psi_alert.threshold == 0.2 and psi_alert.params["bins"] == 10


def test_drift_resolves_once_the_shift_reverts(shift_run) -> None:
    _, derived = shift_run
    from modelog.models.events import DriftResolved

    detected = {e.detector: e for e in derived if isinstance(e, DriftDetected)}
    resolved = [e for e in derived if isinstance(e, DriftResolved)]
    assert sorted(r.detector for r in resolved) == ["ks", "psi"]
    for r in resolved:
        assert r.detected_id == detected[r.detector].id
        assert r.kind == "data" and r.feature == "a"
        assert r.statistic is not None and r.statistic < detected[r.detector].threshold
        # the shifted values leave the window (500), then a whole window below threshold
        assert 6_000 + 500 <= int((r.time - T0).total_seconds()) < 6_000 + 1_200


def test_data_drift_ids_are_deterministic(shift_run) -> None:
    events, derived = shift_run
    again = ServingMonitor(NO_ANOMALY).process_many(events)
    assert [e.id for e in again] == [e.id for e in derived]
    assert len({e.id for e in derived}) == len(derived)


def test_new_category_alert() -> None:
    events = feature_stream(3, 2_000)
    events += [prediction(i, 0.5, model="m", inputs={**e.inputs, "plan": "new-plan"})
               if i % 10 == 0 else e for i, e in zip(range(2_000, 4_000), feature_stream(4, 2_000),
                                                      strict=True)]
    derived = ServingMonitor(NO_ANOMALY).process_many(events)
    new = [e for e in alerts(derived) if isinstance(e, DriftDetected)
           and e.detector == "new_category"]
    assert len(new) == 1 and new[0].feature == "plan" and "new-plan" in new[0].message
    assert new[0].statistic >= 0.01


def test_prediction_drift_on_class_outputs() -> None:
    rng = random.Random(5)
    events = [prediction(i, "yes" if rng.random() < (0.2 if i < 3_000 else 0.6) else "no",
                         inputs={"x": rng.random()}) for i in range(4_000)]
    derived = ServingMonitor(NO_ANOMALY).process_many(events)
    drifts = [e for e in derived if isinstance(e, DriftDetected)]
    assert drifts and {d.kind for d in drifts} == {"prediction"}
    assert {d.feature for d in drifts} == {"__output__"}
    assert {"psi", "chi2"} <= {d.detector for d in drifts}
    assert min(int(d.prediction_ids[-1][1:]) for d in drifts) < 3_300


def registration(model: str = "m", version: int = 1, **columns: str) -> Event:
    from modelog.models.events import ColumnSchema, ModelVersionRegistered

    return ModelVersionRegistered(
        id=f"reg-{model}-{version}", time=T0, aggregate=model, model=model,
        model_version=version, flavor="river", artifact_uri="file:///m", artifact_digest="0" * 64,
        signature=[ColumnSchema(name, typ) for name, typ in columns.items()],
    )


def test_skew_against_the_registered_signature() -> None:
    from modelog.models.events import SkewDetected

    m = ServingMonitor(NO_ANOMALY)
    m.process(registration(a="double", b="double", plan="string", tenure="int64"))
    events = feature_stream(6, 1_000)
    events[50] = prediction(50, 0.1, model="m", inputs={**events[50].inputs, "b": "high"})
    derived = m.process_many(events)
    skews = {(e.feature, e.kind): e for e in derived if isinstance(e, SkewDetected)}
    assert set(skews) == {("tenure", "missing"), ("c", "unexpected"), ("n", "unexpected"),
                          ("b", "type")}
    assert skews["b", "type"].prediction_ids == ["p50"]
    assert skews["b", "type"].expected == "double" and "str" in str(skews["b", "type"].observed)
    assert len(skews["tenure", "missing"].prediction_ids) == 20
    assert skews["tenure", "missing"].severity == "critical"
    stats = [e for e in derived if isinstance(e, MonitorStatsReported)][-1].stats
    assert stats["skew_missing"] == 1_000 and stats["unregistered"] == 0
    # the drift statistic of b is not skewed by the string: it is counted instead
    assert stats["type_mismatches"] == 0  # p50 was in the warm-up: left out of the reference


def test_unregistered_models_are_still_monitored() -> None:
    derived = ServingMonitor(NO_ANOMALY).process_many(feature_stream(7, 500))
    [stats] = [e for e in derived if isinstance(e, MonitorStatsReported)]
    assert stats.stats["unregistered"] == 500 and stats.stats["predictions"] == 500


def configured(config: dict[str, object], model: str = "m", i: int = 0) -> Event:
    from modelog.models.events import MonitorConfigured

    return MonitorConfigured(id=f"cfg{i}", time=T0, aggregate=model, model=model, config=config)


def test_monitor_configured_overrides_a_threshold_at_run_time(shift_run) -> None:
    events, _ = shift_run
    m = ServingMonitor(NO_ANOMALY)
    m.process_many(events[:2_000])
    m.process(configured({"psi_threshold": 50.0}))
    derived = m.process_many(events[2_000:6_000])
    detected = {e.detector: e for e in derived if isinstance(e, DriftDetected)}
    assert set(detected) == {"ks"}  # PSI never reaches 50
    stats = [e for e in derived if isinstance(e, MonitorStatsReported)][-1].stats
    assert stats["psi_threshold.a"] == 50.0
    assert m.config_for("m").drift.psi_threshold == 50.0
    assert m.config_for("other").drift.psi_threshold == 0.2


def test_a_bad_configuration_is_rejected_and_changes_nothing() -> None:
    from modelog.models.errors import MonitorConfigError

    m = ServingMonitor(NO_ANOMALY)
    for config, field in (({"psi_threshold": "high"}, "psi_threshold"),
                          ({"check_every": 0}, "check_every"),
                          ({"no_such_setting": 1}, "no_such_setting"),
                          ({"ks_alpha": 2.0}, "ks_alpha"),
                          ({"reference": {"columns": {"a": {"kind": "numeric", "histogram": {
                              "edges": [1, 0], "counts": [3]}}}}}, "reference.a.histogram")):
        with pytest.raises(MonitorConfigError) as info:
            m.process(configured(config))
        assert info.value.field == field and info.value.model == "m"
        assert "MonitorConfigured" in str(info.value)
    assert m.config_for("m") == NO_ANOMALY


def test_configured_reference_profile_replaces_the_warm_up() -> None:
    import pyarrow as pa

    from modelog.models.profile import profile_table

    rng = random.Random(8)
    training = pa.table({"a": [rng.gauss(0, 1) for _ in range(5_000)],
                         "plan": [rng.choice("xyz") for _ in range(5_000)]})
    m = ServingMonitor(NO_ANOMALY)
    m.process(configured({"reference": profile_table(training), "check_every": 50,
                          "signature": [{"name": "a", "type": "double"},
                                        {"name": "plan", "type": "string"}]}))
    live = feature_stream(9, 700, shift_at=0)  # shifted from the first prediction
    derived = m.process_many(live)
    drifts = [e for e in derived if isinstance(e, DriftDetected)]
    assert {(d.feature, d.detector) for d in drifts} == {("a", "psi"), ("a", "ks")}
    assert all(d.params["reference"] == "profile" for d in drifts)
    # no warm-up: the first full window (500 predictions) already alerts
    assert min(int(d.prediction_ids[-1][1:]) for d in drifts) == 499
    skews = [e for e in derived if e.type_name() == "SkewDetected"]
    assert {(s.feature, s.kind) for s in skews} == {("b", "unexpected"), ("c", "unexpected"),
                                                    ("n", "unexpected")}


def test_bench_monitor_reports_throughput() -> None:
    from modelog.streams.bench.monitor import bench_monitor

    # without point-anomaly batches (PredictionsScored), only stats on a stationary stream
    r = bench_monitor(3_000, anomaly_sample_every=2,
                      config=parse_monitor_config({"outliers": False}))
    assert r["predictions"] == 3_000 and r["events"] == 6_000
    assert r["events_per_s"] > 1_000 and r["derived"] == 6  # stats only: a stationary stream


def test_stats_carry_the_rolling_live_metric_per_version() -> None:
    m = ServingMonitor(MonitorConfig(anomaly=AnomalyConfig(enabled=False), stats_every=100,
                                     concept=ConceptDriftConfig(error_window=100)))
    events: list[Event] = []
    for i in range(100):  # classifier v1: predicts 1; truth is 1 for i % 4 != 0
        events += [prediction(i, 1), label(i, 0 if i % 4 == 0 else 1)]
    for i in range(100, 200):  # regressor v2: always 2.5 off
        events += [prediction(i, 10.0, version=2), label(i, 12.5)]
    # stats are emitted at the 100th prediction of a version, before its label
    stats = [e for e in m.process_many(events) if isinstance(e, MonitorStatsReported)]
    assert len(stats) == 2
    v1 = next(s.stats for s in stats if s.model_version == 1)
    assert v1["rolling_accuracy"] == pytest.approx(74 / 99)  # 99 labelled when stats ran
    precision, recall = 74 / 99, 1.0
    assert v1["rolling_f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert v1["rolling_mae"] is None
    v2 = next(s.stats for s in stats if s.model_version == 2)
    assert v2["rolling_mae"] == pytest.approx(2.5) and v2["rolling_accuracy"] is None


def test_snapshot_mid_stream_then_restore_continues_identically() -> None:
    from modelog.models.processor import Processor

    cfg = parse_monitor_config({"anomaly_warm_up": 300, "anomaly_cooldown": 200,
                                "stats_every": 200, "check_every": 50, "reference_size": 300,
                                "drift_window": 200, "drift_warm_up": 50})
    events = concept_stream(seed=5, n=2_400, change=1_000, shift_inputs_at=1_600)
    events.insert(900, configured({"psi_threshold": 0.3, "ks_alpha": 1e-4}, model="churn"))
    whole = ServingMonitor(cfg)
    assert isinstance(whole, Processor)
    expected = whole.process_many(events)
    kinds = {e.type_name() for e in expected}
    assert {"DriftDetected", "AnomalyDetected", "MonitorStatsReported"} <= kinds
    for cut in (450, 2_000, 3_500):
        first = ServingMonitor(cfg)
        head = first.process_many(events[:cut])
        resumed = ServingMonitor()
        resumed.restore(first.snapshot())
        assert head + resumed.process_many(events[cut:]) == expected


WIRE_KEYS = [
    "detector", "detector_params", "drift_warm_up", "error_window", "anomaly", "anomaly_n_trees",
    "anomaly_height", "anomaly_window_size", "anomaly_seed", "anomaly_q", "anomaly_window",
    "anomaly_alpha", "anomaly_min_count", "anomaly_warm_up", "anomaly_cooldown", "max_pending",
    "pending_ttl", "stats_every", "max_evidence_ids", "anomaly_learn_every",
    "anomaly_sample_every", "data_drift", "prediction_drift", "skew", "reference_size",
    "drift_window", "check_every", "psi_bins", "psi_threshold", "ks_alpha", "chi2_alpha",
    "new_category_share", "vanished_category_share", "nulls_tolerance", "max_categories",
    "max_features", "reference", "signature",
    "training_reference", "outliers", "outlier_margin", "outlier_window", "outlier_alpha",
    "outlier_min_count", "outlier_cooldown", "outlier_base_rate", "outlier_batch",
    "outlier_batch_seconds",
]


def test_the_flat_wire_keys_and_the_nested_form_parse_alike() -> None:
    from modelog.models.monitor_config import SETTINGS

    defaults = MonitorConfig().to_mapping()
    assert list(defaults) == WIRE_KEYS  # the keys users send in MonitorConfigured.config
    special: dict[str, object] = {
        "detector": "page_hinkley", "detector_params": {"threshold": 20.0},
        "pending_ttl": 3600.0, "signature": {"a": "double"},
        "reference": {"columns": {"a": {"kind": "numeric", "null_fraction": 0.0,
                                        "histogram": {"edges": [0.0, 1.0], "counts": [5]}}}}}
    flat: dict[str, object] = {}
    for key, value in defaults.items():
        if key in special:
            flat[key] = special[key]
        elif isinstance(value, bool):
            flat[key] = not value
        elif isinstance(value, int):
            flat[key] = value + 1
        else:
            assert isinstance(value, float), key
            flat[key] = value / 2
    for key, value in flat.items():  # one at a time, as a MonitorConfigured sends them
        extra = {"detector": "page_hinkley"} if key == "detector_params" else {}
        assert parse_monitor_config({key: value, **extra}).to_mapping()[key] == value, key
    cfg = parse_monitor_config(flat)
    assert cfg.to_mapping() == flat
    nested: dict[str, dict[str, object]] = {}
    top: dict[str, object] = {}
    for key, (section, name) in SETTINGS.items():
        if section is None:
            top[key] = flat[key]
        else:
            nested.setdefault(section, {})[name] = flat[key]
    assert parse_monitor_config({**nested, **top}) == cfg
    assert cfg.concept.detector == "page_hinkley" and cfg.anomaly.alpha == 5e-6
    assert cfg.drift.window == 501 and cfg.skew.enabled is False and not cfg.anomaly.enabled


def test_configuration_errors_name_the_setting_as_it_was_written() -> None:
    from modelog.models.errors import MonitorConfigError

    for config, field in (({"anomaly_alpha": 2.0}, "anomaly_alpha"),
                          ({"anomaly": {"alpha": 2.0}}, "anomaly.alpha"),
                          ({"anomaly": {"alfa": 0.1}}, "anomaly.alfa"),
                          ({"drift_window": 0}, "drift_window"),
                          ({"psi_threshold": -1.0}, "psi_threshold"),
                          ({"detector": "cusum"}, "detector"),
                          ({"detector_params": {"threshold": 1.0}}, "detector_params"),
                          ({"concept": {"params": {"threshold": 1.0}}}, "concept.params"),
                          ({"pending_ttl": "soon"}, "pending_ttl")):
        with pytest.raises(MonitorConfigError) as info:
            parse_monitor_config(config, model="m")
        assert info.value.field == field, config
        assert "MonitorConfigured" in str(info.value)


FAR = [dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC), dt.datetime(1, 1, 1, tzinfo=dt.UTC)]


@pytest.mark.parametrize("far", FAR, ids=["year-9999", "year-1"])
def test_one_skewed_timestamp_does_not_expire_the_pending_predictions(far: dt.datetime) -> None:
    m = ServingMonitor(MonitorConfig(anomaly=AnomalyConfig(enabled=False),
                                     pending_ttl=dt.timedelta(hours=1)))
    for i in range(100):
        m.process(prediction(i))
    m.process(LabelObserved(id="e-far", time=far, aggregate="churn", prediction_id="nope",
                            model="churn", label=1))
    m.process(PredictionMade(id="e-far-p", time=far, aggregate="churn", prediction_id="far",
                             model="churn", model_version=1, inputs={"age": 1}, output=1))
    for i in range(100, 200):
        m.process(prediction(i))
        m.process(label(i - 100, 1, seconds=i + 0.5))
    c = m.counters("churn")
    assert c["labels"] == 100 and c["orphan_labels"] == 1  # the far label's own
    assert c["offside_times"] == 2 and c["evicted_by_ttl"] <= 1


def test_a_skewed_first_timestamp_is_corrected_by_the_traffic_after_it() -> None:
    from modelog.models.monitor import CONFIRM_OFFSIDE

    m = ServingMonitor(MonitorConfig(anomaly=AnomalyConfig(enabled=False),
                                     pending_ttl=dt.timedelta(hours=1)))
    m.process(PredictionMade(id="e-far-p", time=FAR[0], aggregate="churn",
                             prediction_id="far", model="churn", model_version=1,
                             inputs={"age": 1}, output=1))
    for i in range(300):
        m.process(prediction(i))
        if i >= 5:
            m.process(label(i - 5, 1, seconds=i + 0.5))
    c = m.counters("churn")
    # until CONFIRM_OFFSIDE events agreed, the predictions expired at once; then they joined
    assert c["labels"] >= 295 - CONFIRM_OFFSIDE and c["orphan_labels"] <= CONFIRM_OFFSIDE


def test_traffic_resuming_after_a_long_pause_moves_the_watermark() -> None:
    from modelog.models.monitor import CONFIRM_OFFSIDE

    m = ServingMonitor(MonitorConfig(anomaly=AnomalyConfig(enabled=False),
                                     pending_ttl=dt.timedelta(hours=1)))
    for i in range(10):
        m.process(prediction(i))  # never labelled
    day = 86_400
    for i in range(10, 10 + CONFIRM_OFFSIDE + 5):
        m.process(prediction(i, seconds=day + i))
    c = m.counters("churn")
    assert c["evicted_by_ttl"] == 10  # the old ones expired once the new clock was confirmed
    assert c["offside_times"] == CONFIRM_OFFSIDE


def test_a_classifier_logging_p_of_class_1_gets_accuracy_f1_and_the_mean_absolute_error() -> None:
    """P(class 1) as the output with 0/1 labels: the live metric was MAE only."""
    import datetime as dt

    from modelog.models.events import LabelObserved, PredictionMade
    from modelog.models.monitor import ServingMonitor
    from modelog.models.monitor_config import MonitorConfig

    mon = ServingMonitor(MonitorConfig(stats_every=5))
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cases = [(0.9, 1), (0.2, 0), (0.7, 0), (0.4, 1)]  # right, right, wrong, wrong
    for i, (p, _) in enumerate(cases):
        mon.process(PredictionMade(id=f"p{i}", time=t0, aggregate="m", prediction_id=f"x{i}",
                                   model="m", model_version=1, inputs={"a": 1.0}, output=p))
    for i, (_, y) in enumerate(cases):
        mon.process(LabelObserved(id=f"l{i}", time=t0, aggregate="m", prediction_id=f"x{i}",
                                  model="m", label=y))
    out = mon.process(PredictionMade(id="p9", time=t0, aggregate="m", prediction_id="x9",
                                     model="m", model_version=1, inputs={"a": 1.0},
                                     output=0.5))
    [stats] = [e for e in out if e.type_name() == "MonitorStatsReported"]
    assert stats.stats["rolling_accuracy"] == 0.5
    assert stats.stats["rolling_f1"] == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    assert stats.stats["rolling_mae"] == pytest.approx((0.1 + 0.2 + 0.7 + 0.6) / 4)
