"""Issue 13, without a broker: performance estimation before labels, multivariate drift by
PCA reconstruction, segments, and the quality processor that runs them per model version."""

from __future__ import annotations

import datetime as dt
import math
import random

import numpy as np
import pytest
from scipy import stats

from modelog.models.alerts import ALERT_TYPE_NAMES, MONITOR_ALERT_TYPE_NAMES, is_alert
from modelog.models.errors import InvalidParameterError, MonitorConfigError
from modelog.models.events import Event, LabelObserved, MonitorConfigured, PredictionMade
from modelog.models.monitor import ServingMonitor
from modelog.models.monitor_config import parse_monitor_config
from modelog.models.multivariate import ReconstructionDrift
from modelog.models.perf_estimation import PerformanceEstimator
from modelog.models.pickled import instance_state
from modelog.models.processor import Processor
from modelog.models.quality_config import QualityConfig, parse_quality_config
from modelog.models.quality_monitor import QualityMonitor
from modelog.models.segments import OTHER, SegmentMonitor
from modelog.streams.topics import Topics
from modelog.streams.worker import RecordRouter

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# -- performance estimation ------------------------------------------------------------------
def _run_binary(est: PerformanceEstimator, n: int, seed: int, *, sharpen: float = 1.0,
                shift_after: int | None = None) -> list:
    """Feed `n` binary predictions; the truth is drawn from the calibrated probability.

    `sharpen` > 1 makes the model overconfident (it reports sigmoid(sharpen * logit)).
    After `shift_after`, the truth no longer follows the score as closely (accuracy drops
    while the model keeps being as confident: a drop labels would show, and a calibrated
    CBPE cannot; used for the realized comparison only).
    """
    rng = random.Random(seed)
    for i in range(n):
        logit = rng.gauss(0, 2)
        p_true = _sigmoid(logit)
        reported = _sigmoid(sharpen * logit)
        est.update(reported, f"p{i}", T0 + dt.timedelta(seconds=i))
        est.learn_one(f"p{i}", int(rng.random() < p_true))
    return list(est.history)


def test_estimates_match_realized_accuracy_and_f1_on_calibrated_probabilities() -> None:
    means, f1_means = [], []
    for seed in range(5):
        est = PerformanceEstimator(window=500, reference_size=1_000)
        history = _run_binary(est, 10_000, seed=seed)
        assert len(history) == 20 and est.calibrated
        gaps = [c.gap for c in history]
        # each window within sampling noise (sd of a window's realized accuracy ~0.018) ...
        assert max(abs(g) for g in gaps) < 0.08, (seed, gaps)
        # ... and no worse on average than the labelled reference's own noise (sd ~0.013)
        means.append(sum(gaps) / len(gaps))
        f1_means.append(sum(c.realized_f1 - c.estimated_f1 for c in history) / len(history))
        assert abs(means[-1]) < 0.03 and abs(f1_means[-1]) < 0.04, (seed, means, f1_means)
    assert abs(sum(means) / len(means)) < 0.01 and abs(sum(f1_means) / len(f1_means)) < 0.015


def test_multiclass_probability_dicts_are_estimated_too() -> None:
    rng = random.Random(4)
    est = PerformanceEstimator(window=400, reference_size=400, calibrate=False)
    classes = ["a", "b", "c"]
    for i in range(6_000):
        w = [rng.expovariate(1.0) ** 2 for _ in classes]
        probs = {c: x / sum(w) for c, x in zip(classes, w, strict=True)}
        truth = rng.choices(classes, weights=list(probs.values()))[0]
        est.update(probs, i)
        est.learn_one(i, truth)
    gaps = [c.gap for c in est.history]
    assert len(gaps) == 15 and abs(sum(gaps) / len(gaps)) < 0.015
    assert all(c.estimated_f1 is None for c in est.history)  # three classes: no F1


def test_calibration_on_the_labelled_reference_corrects_an_overconfident_model() -> None:
    raw = PerformanceEstimator(window=500, reference_size=2_000, calibrate=False)
    calibrated = PerformanceEstimator(window=500, reference_size=2_000, calibrate=True)
    raw_gaps = [c.gap for c in _run_binary(raw, 8_000, seed=2, sharpen=3.0)[4:]]
    cal_gaps = [c.gap for c in _run_binary(calibrated, 8_000, seed=2, sharpen=3.0)[4:]]
    # overconfident: the raw estimate is far too optimistic; the calibrated one is not
    assert sum(raw_gaps) / len(raw_gaps) < -0.05
    assert abs(sum(cal_gaps) / len(cal_gaps)) < 0.015


def test_a_label_free_accuracy_drop_is_alerted_and_a_stable_stream_is_not() -> None:
    def stream(drop_at: int | None, seed: int) -> list[int]:
        rng = random.Random(seed)
        est = PerformanceEstimator(window=500, reference_size=1_000)
        alerts = []
        for i in range(10_000):
            hard = drop_at is not None and i >= drop_at
            logit = rng.gauss(0, 0.6 if hard else 2.5)  # harder inputs: less confident model
            p = _sigmoid(logit)
            est.update(p, i)
            if est.drift_detected:
                alerts.append(i)
            if i < 1_000:  # labels only for the reference: none after it
                est.learn_one(i, int(rng.random() < p))
        return alerts

    assert stream(None, seed=5) == []
    alerts = stream(6_000, seed=5)
    assert len(alerts) == 1 and 6_000 <= alerts[0] < 7_000, alerts


# -- multivariate drift ----------------------------------------------------------------------
def _rows(rng: np.random.Generator, n: int, rho: float) -> list[dict[str, float]]:
    z = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], size=n)
    return [{"a": float(a), "b": float(b), "plan": "x"} for a, b in z]


def test_a_correlation_flip_with_unchanged_marginals_is_detected() -> None:
    rng = np.random.default_rng(11)
    reference, before, after = _rows(rng, 1_000, 0.8), _rows(rng, 3_000, 0.8), \
        _rows(rng, 1_500, -0.8)
    det = ReconstructionDrift(reference_size=1_000, window=500)
    detections = []
    for i, x in enumerate(reference + before + after):
        det.update(x, i)
        if det.drift_detected:
            detections.append(i)
    assert det.features == ["a", "b"] and det.components == 1
    assert detections == [1_000 + 3_000 + 499], detections  # the first window after the flip
    # ... which per-feature Kolmogorov-Smirnov tests do not see: the marginals are unchanged
    for feature in ("a", "b"):
        p = stats.ks_2samp([r[feature] for r in reference], [r[feature] for r in after]).pvalue
        assert p > 1e-3, (feature, p)


def test_a_stable_correlated_stream_stays_silent() -> None:
    rng = np.random.default_rng(12)
    det = ReconstructionDrift(reference_size=1_000, window=500)
    breached = 0
    for x in _rows(rng, 26_000, 0.8):
        det.update(x)
        assert not det.drift_detected
        breached += sum(c.breached for c in det.checks)
    assert breached == 0


@pytest.mark.parametrize("seed", range(3))
def test_independent_features_keep_a_residual_and_a_stable_stream_stays_silent(seed: int) -> None:
    """Two independent features each explain ~half the variance: 65 % needs both, which
    would leave a reconstruction error of float noise (~1e-16) compared with a band of
    noise, alerting at random (found end to end). At least one component is left out."""
    rng = np.random.default_rng(seed)
    det = ReconstructionDrift(reference_size=1_000, window=500)
    for i, x in enumerate(_rows(rng, 11_000, 0.0)):
        det.update(x, i)
        assert not det.drift_detected, i
    assert det.components == 1 and det.reference_mean > 0.1
    detections = []
    for i, x in enumerate(_rows(rng, 1_000, 0.9)):  # they become correlated
        det.update(x, i)
        detections += [i] if det.drift_detected else []
    assert detections == [499]


def test_an_exact_linear_relationship_is_watched_without_alerting_on_float_noise() -> None:
    rng = np.random.default_rng(4)
    det = ReconstructionDrift(reference_size=1_000, window=500)
    for i in range(6_000):
        a = float(rng.normal())
        det.update({"a": a, "b": 2 * a + 1}, i)
        assert not det.drift_detected, i
    detections = []
    for i in range(500):
        a = float(rng.normal())
        det.update({"a": a, "b": 1 - 2 * a}, i)  # the relationship flips
        detections += [i] if det.drift_detected else []
    assert detections == [499]


def test_multivariate_needs_two_numeric_features() -> None:
    det = ReconstructionDrift(reference_size=20, window=10)
    for i in range(40):
        det.update({"a": float(i % 7), "plan": "x", "flag": True})
    assert not det.enabled and "at least 2" in det.reason and det.checks == []


# -- segments ----------------------------------------------------------------------------------
def _segment_stream(mon: SegmentMonitor, seed: int, bad: str | None, n: int = 8_000
                    ) -> list[list[str]]:
    rng = random.Random(seed)
    found = []
    for i in range(n):
        country = rng.choices(["FR", "DE", "US", "ES", "IT"], [4, 3, 2, 1, 1])[0]
        plan = rng.choice(["free", "pro"])
        rate = 0.35 if (country == bad and i >= n // 2) else 0.1
        segs = mon.update({"country": country, "plan": plan})
        mon.learn_one(segs, float(rng.random() < rate))
        if mon.drift_detected:
            found.append([f"{t.feature}={t.value}" for t in mon.findings[0].segments])
    return found


def test_one_worse_segment_is_named_in_one_alert() -> None:
    found = _segment_stream(SegmentMonitor(["country", "plan"]), seed=7, bad="US")
    assert found == [["country=US"]], found


def test_stable_segments_stay_silent() -> None:
    for seed in range(3):
        assert _segment_stream(SegmentMonitor(["country", "plan"]), seed=seed, bad=None) == []


def test_segment_cardinality_is_bounded_with_other() -> None:
    mon = SegmentMonitor(["user"], top_k=3, max_tracked=5)
    for i in range(1_000):
        segs = mon.update({"user": f"u{i % 50}" if i % 2 else "big"})
        mon.learn_one(segs, 0.0)
    rows = mon.table()
    assert rows[0].value == "big" and rows[-1].value == OTHER
    assert len(rows) == 4 and sum(r.predictions for r in rows) == 1_000
    assert len(mon._state["user"]) <= 6  # 5 tracked values and the "other" bucket


def test_traffic_mix_drift_per_segment_against_the_reference() -> None:
    """Each segment's share of recent traffic against its share in the first predictions:
    a shift confined to one segment shows as its PSI term, the feature's PSI sums them."""
    rng = random.Random(5)
    mon = SegmentMonitor(["country"], window=1_000, reference_size=2_000)
    for _ in range(1_999):
        mon.update({"country": rng.choice(["FR", "DE", "US", "ES"])})
    assert mon.mix_psi() == {} and all(r.share is None for r in mon.table())  # no reference yet
    for _ in range(1_001):
        mon.update({"country": rng.choice(["FR", "DE", "US", "ES"])})
    assert mon.mix_psi()["country"] < 0.02  # the same mix: stable
    for i in range(1_000):  # ES doubles its share, taken from the others
        mon.update({"country": "ES" if i % 2 else rng.choice(["FR", "DE", "US"])})
    rows = {r.value: r for r in mon.table()}
    es = rows["ES"]
    assert es.share == pytest.approx(0.5) and es.reference_share == pytest.approx(0.25, abs=0.03)
    assert es.psi is not None and es.psi > 0.15
    assert max(rows.values(), key=lambda r: r.psi or 0.0).value == "ES"
    assert mon.mix_psi()["country"] == pytest.approx(sum(r.psi or 0.0 for r in rows.values()))
    assert mon.mix_psi()["country"] > 0.2
    with pytest.raises(InvalidParameterError, match="reference_size"):
        SegmentMonitor(["country"], reference_size=0)


def test_a_segment_snapshot_from_before_the_mix_statistic_still_restores() -> None:
    import pickle

    mon = SegmentMonitor(["country"], reference_size=10)
    for value in ["FR", "DE"] * 20:
        mon.learn_one(mon.update({"country": value}), 0.0)
    old = instance_state(mon)  # its attributes (compiled classes have no __dict__)
    for name in ("reference_size", "_seen", "_reference", "_recent"):
        del old[name]
    stale = SegmentMonitor.__new__(SegmentMonitor)
    stale.__setstate__(old)
    restored = pickle.loads(pickle.dumps(stale))
    for _ in range(1_005):
        restored.update({"country": "FR"})
    assert [r.value for r in restored.table()] == ["FR", "DE"]
    assert restored.mix_psi()["country"] == pytest.approx(0.0)


# -- the processor ---------------------------------------------------------------------------
def serving(n: int, seed: int, *, flip_at: int | None = None, bad_country_at: int | None = None,
            label_lag: int = 3) -> list[Event]:
    """Predictions with probability outputs, two correlated features and a country."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    events: list[Event] = []
    labels: list[tuple[int, Event]] = []
    for i in range(n):
        t = T0 + dt.timedelta(seconds=i)
        rho = -0.8 if flip_at is not None and i >= flip_at else 0.8
        a, b = nrng.multivariate_normal([0, 0], [[1, rho], [rho, 1]])
        country = rng.choice(["FR", "DE", "US"])
        p = _sigmoid(rng.gauss(0, 2))
        truth = int(rng.random() < p)
        if bad_country_at is not None and i >= bad_country_at and country == "DE" \
                and rng.random() < 0.4:
            truth = 1 - int(p >= 0.5)
        pid = f"p{i}"
        events.append(PredictionMade(id=f"e{i}", time=t, aggregate="churn", prediction_id=pid,
                                     model="churn", model_version=1, output=p,
                                     inputs={"a": float(a), "b": float(b), "country": country}))
        labels.append((i + label_lag, LabelObserved(id=f"l{i}", time=t, aggregate="churn",
                                                    prediction_id=pid, model="churn",
                                                    label=truth)))
        while labels and labels[0][0] <= i:
            events.append(labels.pop(0)[1])
    events.extend(e for _, e in labels)
    return events


def _configured(config: dict) -> MonitorConfigured:
    return MonitorConfigured(id="cfg", time=T0, aggregate="churn", model="churn", config=config)


def test_processor_defaults_estimate_and_watch_correlations_but_no_segments() -> None:
    qm = QualityMonitor()
    assert isinstance(qm, Processor)
    out = qm.process_many(serving(4_000, seed=1, flip_at=3_000))
    kinds = {e.type_name() for e in out}
    assert {"PerformanceEstimated", "PerformanceRealized", "MultivariateDriftReported",
            "MultivariateDriftDetected"} <= kinds, kinds
    assert not kinds & {"SegmentMetricsReported", "SegmentDegraded", "PerformanceDropEstimated"}
    [alert] = [e for e in out if e.type_name() == "MultivariateDriftDetected"]
    assert is_alert(alert) and alert.statistic > alert.threshold and "correlations" in \
        alert.message
    assert len({e.id for e in out}) == len(out)  # derived ids are unique


def test_processor_segments_from_configuration_name_the_worse_country() -> None:
    qm = QualityMonitor()
    qm.process(_configured({"quality": {"segments": ["country"], "segment_check_every": 100},
                            "check_every": 50}))
    out = qm.process_many(serving(6_000, seed=2, bad_country_at=3_000))
    degraded = [e for e in out if e.type_name() == "SegmentDegraded"]
    assert len(degraded) == 1 and degraded[0].segments == ["country=DE"], degraded
    assert is_alert(degraded[0]) and degraded[0].statistic > degraded[0].threshold
    reports = [e for e in out if e.type_name() == "SegmentMetricsReported"]
    assert len(reports) == 12
    assert {s.value for s in reports[-1].segments} == {"FR", "DE", "US"}
    assert reports[-1].degraded == ["country=DE"]
    assert not reports[0].mix_psi and reports[-1].mix_psi["country"] < 0.05  # same mix
    assert all(s.share is not None and s.reference_share is not None and s.psi is not None
               for s in reports[-1].segments)


def test_processor_ignores_non_probability_outputs_and_regression() -> None:
    qm = QualityMonitor(QualityConfig(window=50, multivariate=False))
    out = []
    for i in range(300):
        t = T0 + dt.timedelta(seconds=i)
        out += qm.process(PredictionMade(id=f"e{i}", time=t, aggregate="m", prediction_id=f"p{i}",
                                         model="m", model_version=1, inputs={}, output=i % 3))
        out += qm.process(LabelObserved(id=f"l{i}", time=t, aggregate="m", prediction_id=f"p{i}",
                                        model="m", label=1))
    assert out == []
    # a float output with a non-binary label is a regression: estimation stops for the version
    qm.process(PredictionMade(id="r", time=T0, aggregate="r", prediction_id="r", model="r",
                              model_version=1, inputs={}, output=0.4))
    qm.process(LabelObserved(id="rl", time=T0, aggregate="r", prediction_id="r", model="r",
                             label=0.37))
    assert qm.estimator("r", 1) is None


def test_processor_snapshot_and_restore_continue_exactly() -> None:
    events = serving(5_000, seed=3, flip_at=3_500, bad_country_at=2_500)
    config = _configured({"quality": {"segments": ["country"], "segment_check_every": 100}})
    whole = QualityMonitor()
    whole.process(config)
    want = whole.process_many(events)
    first = QualityMonitor()
    first.process(config)
    got = first.process_many(events[:2_345])
    second = QualityMonitor()
    second.restore(first.snapshot())
    got += second.process_many(events[2_345:])
    assert got == want and len(want) > 20


def test_quality_configuration_is_parsed_with_field_named_errors() -> None:
    cfg = parse_quality_config({"quality": {"segments": "country", "window": 100,
                                            "positive_class": 1}})
    assert cfg.segments == ("country",) and cfg.window == 100 and cfg.positive_class == "1"
    for config, field in (({"quality": {"windw": 3}}, "quality.windw"),
                          ({"quality": {"window": 0}}, "quality.window"),
                          ({"quality": {"multivariate_variance": 1.5}},
                           "quality.multivariate_variance"),
                          ({"quality": {"calibration_bins": 0}}, "quality.calibration_bins"),
                          ({"quality.segments": [1, 2]}, "quality.segments"),
                          ({"quality": {"calibrate": "yes"}}, "quality.calibrate"),
                          ({"quality": 3}, "quality")):
        with pytest.raises(MonitorConfigError) as info:
            parse_quality_config(config, model="churn")
        assert info.value.field == field and info.value.model == "churn", (config, info.value)
    # the serving monitor's parser leaves the section to this one
    assert parse_monitor_config({"quality": {"windw": 3}, "quality.x": 1}).stats_every == 500
    assert QualityConfig().to_mapping()["segments"] == []


def test_router_applies_good_and_dead_letters_bad_quality_configuration() -> None:
    from modelog.models import codec
    from modelog.models.deadletter import DeadLetter

    topics = Topics("acme.")
    router = RecordRouter(topics, ServingMonitor(), quality=QualityMonitor())
    bad = codec.encode(_configured({"quality": {"segments": 3}, "check_every": 10}))
    [out] = router.route(b"churn", bad, topics.monitoring, 0, 0)
    assert out.topic == topics.dead_letter
    assert "'quality.segments'" in DeadLetter.from_headers(out.headers).reason
    # the serving monitor did not take the rest of a rejected configuration either
    assert router.monitor.config_for("churn").drift.check_every == 100
    good = codec.encode(_configured({"quality": {"segments": ["country"]}, "check_every": 10}))
    assert router.route(b"churn", good, topics.monitoring, 0, 1) == []
    assert router.quality.config_for("churn").segments == ("country",)
    assert router.monitor.config_for("churn").drift.check_every == 10
    state = router.snapshot()
    again = RecordRouter(topics, ServingMonitor(), quality=QualityMonitor())
    again.restore(state)
    assert again.quality.config_for("churn").segments == ("country",)


def test_new_alerts_are_alerts_but_not_the_serving_monitors() -> None:
    names = ("PerformanceDropEstimated", "MultivariateDriftDetected", "SegmentDegraded")
    assert set(names) <= set(ALERT_TYPE_NAMES)
    assert not set(names) & set(MONITOR_ALERT_TYPE_NAMES)


# -- views and dashboard (a real DuckDB file, the page under Streamlit's AppTest) -----------
def _panel(path: str) -> None:
    import duckdb

    from modelog.dashboard.data import ConnectionSource
    from modelog.dashboard.quality_panel import quality_panel

    quality_panel(ConnectionSource(duckdb.connect(path, read_only=True)), "churn", None)


def test_views_and_the_dashboard_panel_show_estimates_correlations_and_segments(tmp_path
                                                                               ) -> None:
    import duckdb
    from streamlit.testing.v1 import AppTest

    from modelog.dashboard import quality_panel as panel
    from modelog.dashboard.data import ConnectionSource
    from modelog.models import codec
    from modelog.store.schema import create_schema

    qm = QualityMonitor()
    qm.process(_configured({"quality": {"segments": ["country"], "segment_check_every": 100}}))
    derived = qm.process_many(serving(5_000, seed=2, flip_at=4_000, bad_country_at=2_500))
    path = str(tmp_path / "q.duckdb")
    con = duckdb.connect(path)
    create_schema(con)
    for e in derived:
        con.execute("INSERT INTO events (id, type, time, aggregate, payload) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [e.id, e.type_name(), e.time, e.aggregate, codec.encode(e).decode()])
    source = ConnectionSource(con)
    perf = panel.performance(source, "churn")
    assert len(perf) == 10 and perf["realized_accuracy"].notna().sum() == 10
    # before the segment's concept change the estimate holds; after it, labels show what
    # probabilities cannot: the realized accuracy falls below the estimate
    assert (perf["gap"][:5].abs() < 0.05).all() and (perf["gap"][5:] < -0.04).all()
    assert perf["calibrated"].iloc[-1]
    seg = panel.segments(source, "churn", 1)
    assert set(seg["value"]) == {"DE", "FR", "US"}
    assert seg.set_index("value").loc["DE", "degraded"]
    mv = panel.multivariate(source, "churn")
    assert len(mv) == 8 and mv["breached"].iloc[-1] and not mv["breached"].iloc[0]
    layers = panel.performance_chart(perf).to_dict()["layer"]
    assert len(layers) == 3
    con.close()
    at = AppTest.from_function(_panel, args=(path,), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    text = "\n".join(str(m.value) for m in at.markdown)
    assert "estimated from the predicted probabilities" in text and "`country=DE`" in text
    assert len(at.dataframe) == 1
    assert any("Traffic mix against the reference" in str(c.value) and "`country`" in
               str(c.value) for c in at.caption)
    assert {"share", "reference_share", "psi", "feature_psi"} <= set(seg.columns)
