"""Drift and anomaly detectors on seeded synthetic streams (pure, no broker)."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from modelog.errors import ModelogError
from modelog.models.anomaly import AnomalyMonitor, binomial_critical_count, binomial_tail
from modelog.models.drift import DETECTORS, ConceptDriftMonitor, make_drift_detector
from modelog.models.errors import (
    InvalidObservationError,
    InvalidParameterError,
    ModelsError,
    UnknownDetectorError,
)

CHANGE = 5_000  # stationary steps before the change
DRIFT_DELAY = 150  # ADWIN must detect within this many steps after the change
ANOMALY_DELAY = 250  # the anomaly monitor must alert within this many inputs


def bernoulli_errors(seed: int, before: float = 0.05, after: float = 0.5,
                     change: int = CHANGE, total: int = CHANGE + 1_000) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < (before if i < change else after)) for i in range(total)]


def run(monitor: ConceptDriftMonitor, errors: list[float]) -> list[tuple[int, object]]:
    out = []
    for i, e in enumerate(errors):
        monitor.update(e)
        if monitor.drift_detected:
            out.append((i, monitor.findings[0]))
    return out


# -- ConceptDriftMonitor ---------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_adwin_detects_once_after_change_and_never_before(seed: int) -> None:
    decisions = run(ConceptDriftMonitor(), bernoulli_errors(seed))
    assert len(decisions) == 1, [i for i, _ in decisions]
    i, d = decisions[0]
    assert CHANGE <= i < CHANGE + DRIFT_DELAY
    assert d.detector == "adwin"
    assert d.params["delta"] == 0.002
    assert d.statistic > 0.3  # the recent window is post-change
    assert d.reference == pytest.approx(0.05, abs=0.02)
    assert 10 <= d.window_size <= 200
    assert d.n_observations == i + 1
    assert d.describe().startswith("ADWIN(delta=0.002")


@pytest.mark.parametrize("name", sorted(set(DETECTORS) - {"kswin"}))
def test_every_binary_capable_detector_detects_the_change(name: str) -> None:
    # KSWIN's Kolmogorov-Smirnov test suits continuous errors (tested below),
    # not 0/1 streams with a 5 % rate.
    monitor = ConceptDriftMonitor(name, warm_up=100)
    decisions = run(monitor, bernoulli_errors(11))
    after = [i for i, _ in decisions if i >= CHANGE]
    assert after, f"{name} never detected the change"
    assert after[0] < CHANGE + 400
    first = next(d for i, d in decisions if i == after[0])
    assert first.detector == name
    assert first.statistic > first.reference
    assert monitor.n_detections == len(decisions)


@pytest.mark.parametrize("name", ["adwin", "page_hinkley", "kswin"])
def test_continuous_detectors_take_absolute_errors(name: str) -> None:
    rng = random.Random(3)
    errors = [abs(rng.gauss(1.0 if i < 3_000 else 4.0, 0.5)) for i in range(3_600)]
    params = {"seed": 1} if name == "kswin" else {}
    decisions = run(ConceptDriftMonitor(name, params, warm_up=100), errors)
    assert all(i >= 3_000 for i, _ in decisions) or name == "kswin"
    assert any(i >= 3_000 for i, _ in decisions)
    i, d = next((i, d) for i, d in decisions if i >= 3_000)
    assert i < 3_000 + 400
    assert d.statistic > 2.5


def test_one_drift_gives_one_decision_not_a_burst() -> None:
    # error rate stays high after the change: the restarted detector sees a new normal
    decisions = run(ConceptDriftMonitor(), bernoulli_errors(5, total=CHANGE + 5_000))
    assert len(decisions) == 1


def test_improvement_is_not_reported_by_default() -> None:
    errors = bernoulli_errors(2, before=0.5, after=0.05)
    assert run(ConceptDriftMonitor(), errors) == []
    both = run(ConceptDriftMonitor(direction="both"), errors)
    assert len(both) == 1 and both[0][1].statistic < both[0][1].reference


def test_warm_up_suppresses_early_alarms() -> None:
    errors = bernoulli_errors(4, change=150, total=400)
    late = run(ConceptDriftMonitor(warm_up=300), errors)
    assert all(i >= 300 for i, _ in late)
    early = run(ConceptDriftMonitor(warm_up=50), errors)
    assert early and early[0][0] < 300


def test_rolling_error_over_fixed_window() -> None:
    m = ConceptDriftMonitor(window=10)
    assert m.rolling_error is None
    for e in [1.0] * 10 + [0.0] * 5:
        m.update(e)
    assert m.rolling_error == pytest.approx(0.5)
    assert m.n_observations == 15
    assert not m.drift_detected


def test_every_detector_name_runs_on_a_binary_stream() -> None:
    for name in DETECTORS:
        m = ConceptDriftMonitor(name, {"seed": 0} if name == "kswin" else None)
        run(m, bernoulli_errors(0, total=300))
        assert m.n_observations == 300 and m.rolling_error is not None
        assert m.detector_params  # the hyperparameters River reports


def test_unknown_detector_names_valid_ones() -> None:
    with pytest.raises(UnknownDetectorError) as info:
        ConceptDriftMonitor("adwinn")
    message = str(info.value)
    assert "'adwinn'" in message
    for name in ("adwin", "page_hinkley", "kswin", "ddm", "eddm"):
        assert name in message
    assert isinstance(info.value, ModelsError) and isinstance(info.value, ModelogError)


def test_bad_hyperparameters_and_observations_are_named() -> None:
    with pytest.raises(InvalidParameterError, match="deltaa"):
        make_drift_detector("adwin", {"deltaa": 0.1})
    with pytest.raises(InvalidParameterError, match="window"):
        ConceptDriftMonitor(window=0)
    with pytest.raises(InvalidObservationError, match="nan"):
        ConceptDriftMonitor().update(math.nan)
    for bad in (math.inf, -0.5, -math.inf, "0.5", None):
        with pytest.raises(InvalidObservationError, match="finite numbers >= 0"):
            ConceptDriftMonitor().update(bad)  # type: ignore[arg-type]
    ConceptDriftMonitor("eddm").update(1.0)  # a 0/1 float is fine for a binary detector
    with pytest.raises(InvalidObservationError, match="0/1"):
        ConceptDriftMonitor("eddm").update(0.3)


# -- AnomalyMonitor ----------------------------------------------------------------
def gaussian_inputs(seed: int, shift_at: int, total: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for i in range(total):
        shift = 4.0 if i >= shift_at else 0.0  # +4 sigma on feature "a"
        rows.append({"a": rng.gauss(shift, 1.0), "b": rng.gauss(0.0, 1.0),
                     "c": rng.gauss(5.0, 2.0), "city": rng.choice(["Paris", "Lyon"]),
                     "vip": None})
    return rows


def feed(monitor: AnomalyMonitor, rows: list[dict[str, object]]) -> list[tuple[int, object]]:
    out = []
    for i, x in enumerate(rows):
        monitor.update(x, key=f"p-{i}")  # type: ignore[arg-type]
        if monitor.drift_detected:
            out.append((i, monitor.findings[0]))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_anomaly_alerts_soon_after_shift_and_never_before(seed: int) -> None:
    monitor = AnomalyMonitor(seed=seed)
    alerts = feed(monitor, gaussian_inputs(seed, CHANGE, CHANGE + 600))
    assert alerts, "no alert after the shift"
    i, d = alerts[0]
    assert CHANGE <= i < CHANGE + ANOMALY_DELAY, i
    assert d.detector == "hst"
    # expected: 1 - q, or the share the trees' reference window scores above the threshold
    assert d.statistic >= d.threshold > d.expected >= 0.05 and d.expected < 0.1
    assert d.p_value < monitor.alpha
    assert 0 < len(d.keys) <= 20
    assert all(int(k.split("-")[1]) > i - monitor.window for k in d.keys)
    assert sum(int(k.split("-")[1]) >= CHANGE for k in d.keys) > len(d.keys) / 2
    assert d.params["n_trees"] == 10 and d.params["q"] == 0.95


def test_anomaly_cooldown_is_respected() -> None:
    monitor = AnomalyMonitor(seed=0, cooldown=300, warm_up=600)
    rows = gaussian_inputs(0, 1_500, 1_500)
    rng = random.Random(9)
    # alternate blocks of strongly shifted inputs so the condition keeps re-arising
    for block in range(8):
        shift = 6.0 if block % 2 == 0 else 0.0
        rows += [{"a": rng.gauss(shift, 1.0), "b": rng.gauss(0, 1), "c": rng.gauss(5, 2)}
                 for _ in range(250)]
    alerts = [i for i, _ in feed(monitor, rows)]
    assert len(alerts) >= 2
    assert all(b - a > 300 for a, b in itertools.pairwise(alerts))
    assert monitor.n_alerts == len(alerts)


def test_non_numeric_features_are_ignored() -> None:
    monitor = AnomalyMonitor(seed=0, warm_up=50, window=20)
    for i, x in enumerate(gaussian_inputs(1, 10_000, 200)):
        monitor.update(x, key=str(i))  # type: ignore[arg-type]
    assert monitor.features_seen == ("a", "b", "c")
    before = monitor.n_observations
    monitor.update({"city": "Paris", "note": None}, key="x")
    assert not monitor.drift_detected and monitor.findings == ()
    assert monitor.n_observations == before
    assert monitor.last_score is not None and 0.0 <= monitor.last_score <= 1.0
    mean = monitor.rolling_mean_score
    assert mean is not None and 0.0 <= mean <= 1.0
    assert monitor.anomalous_fraction is not None


def test_anomaly_parameters_are_checked() -> None:
    with pytest.raises(InvalidParameterError, match="'q'"):
        AnomalyMonitor(q=1.5)
    with pytest.raises(InvalidParameterError, match="'window'"):
        AnomalyMonitor(window=0)


def test_binomial_helpers() -> None:
    assert binomial_tail(0, 5, 0.3) == 1.0
    assert binomial_tail(6, 5, 0.3) == 0.0
    assert binomial_tail(5, 5, 0.5) == pytest.approx(1 / 32)
    k = binomial_critical_count(200, 0.05, 1e-4)
    assert binomial_tail(k, 200, 0.05) < 1e-4 <= binomial_tail(k - 1, 200, 0.05)


def test_every_detector_follows_the_detector_protocol() -> None:
    from modelog.models.datadrift import DataDriftMonitor
    from modelog.models.processor import Detector
    from modelog.models.skew import SkewMonitor

    detectors: list[tuple[Detector, object]] = [
        (ConceptDriftMonitor(), 0.0),
        (AnomalyMonitor(warm_up=5, window=5), {"x": 1.0}),
        (DataDriftMonitor(reference_size=5, window=5, check_every=1), {"x": 1.0}),
        (SkewMonitor({"x": "double"}, block=1), {"x": 1.0}),
    ]
    for detector, x in detectors:
        assert isinstance(detector, Detector), type(detector).__name__
        assert detector.update(x) is None  # type: ignore[func-returns-value]
        assert detector.drift_detected is False and list(detector.findings) == []


@pytest.mark.parametrize("seed", range(3))
def test_anomaly_stays_silent_on_discrete_inputs(seed: int) -> None:
    # Flags and small counts put the scores on a few values; one whole value can lie above
    # the score quantile for a reference window. Against 1 - q that was a burst: a single
    # 0/1 feature raised 8-22 alerts in 30,000 stable inputs; so did small counts.
    rng = random.Random(seed)
    monitor = AnomalyMonitor(seed=seed, alpha=1e-5, learn_every=4)
    alerts = feed(monitor, [{"flag": rng.randint(0, 1)} for _ in range(30_000)])
    assert alerts == [], [(i, d.expected) for i, d in alerts]
    counts = AnomalyMonitor(seed=seed, alpha=1e-5, learn_every=4)
    nprng = np.random.default_rng(seed)
    alerts = feed(counts, [{"n": int(v), "flag": int(f)} for v, f in
                           zip(nprng.poisson(2.0, 30_000), nprng.random(30_000) < 0.3,
                               strict=True)])
    assert alerts == [], [(i, d.expected) for i, d in alerts]


def test_anomaly_expected_rate_follows_the_reference_window() -> None:
    # a 0/1 feature: some reference windows put a whole value above the threshold
    rng = random.Random(0)
    monitor = AnomalyMonitor(seed=0, warm_up=500, window_size=100)
    rates = []
    for i in range(5_000):
        monitor.update({"flag": rng.randint(0, 1)}, key=f"p-{i}")
        rates.append(monitor.expected_rate())
    assert max(rates) > 0.3 and min(rates) == pytest.approx(1 - monitor.q)
    # continuous features: about 1 - q
    continuous = AnomalyMonitor(seed=0, warm_up=500, window_size=100)
    rates = []
    for i in range(5_000):
        continuous.update({"x": rng.gauss(0, 1), "y": rng.gauss(0, 1)}, key=f"p-{i}")
        rates.append(continuous.expected_rate())
    assert max(rates) < 0.15
