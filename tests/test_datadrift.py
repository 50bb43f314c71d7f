"""Data drift statistics (pure): PSI, KS, chi-squared, categories, alert bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from modelog.models.datadrift import (
    CategoricalDrift,
    DataDriftMonitor,
    DriftThresholds,
    NumericDrift,
)
from modelog.models.errors import InvalidParameterError
from modelog.models.monitor_state import AlertBook
from modelog.models.profile import profile_table, psi
from modelog.models.tabular import chi2_homogeneity, ks_critical_value, ks_p_value


def feed(tracker: NumericDrift | CategoricalDrift, values: object) -> None:
    for v in values:  # type: ignore[attr-defined]
        tracker.update(v)


# -- statistics against scipy / numpy ----------------------------------------------------------
@pytest.mark.parametrize("discrete", [False, True])
def test_ks_distance_is_exact_for_a_sample_reference(discrete: bool) -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, 1_000)
    live = rng.normal(0.3, 1.2, 2_000)
    if discrete:  # ties within and across the samples
        ref, live = np.round(ref * 2), np.round(live * 2)
    tracker = NumericDrift.from_sample("x", ref.tolist(), window=500)
    feed(tracker, live.tolist())  # the window keeps the last 500
    _, d = tracker.statistics()
    expected = stats.ks_2samp(ref, live[-500:]).statistic
    assert d == pytest.approx(expected, abs=1e-12)
    # the asymptotic p-value and critical value of the same test
    en = 1_000 * 500 / 1_500
    assert ks_p_value(d, 1_000, 500) == pytest.approx(stats.kstwobign.sf(math.sqrt(en) * d))
    crit = ks_critical_value(1e-3, 1_000, 500)
    assert stats.kstwobign.sf(math.sqrt(en) * crit) == pytest.approx(1e-3)


def test_ks_on_a_histogram_reference_is_a_lower_bound_within_the_bin_mass() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(0, 1, 20_000)
    live = rng.normal(0.5, 1, 500)
    prof = profile_table(pa.table({"x": ref}), bins=40)["columns"]["x"]["histogram"]
    tracker = NumericDrift.from_histogram("x", prof["edges"], prof["counts"], window=500)
    feed(tracker, live.tolist())
    _, d = tracker.statistics()
    exact = stats.ks_2samp(ref, live).statistic
    max_bin = max(prof["counts"]) / sum(prof["counts"])
    assert d <= exact + 1e-9
    assert exact - d <= max_bin + 0.01


def test_numeric_psi_uses_reference_deciles() -> None:
    rng = np.random.default_rng(3)
    ref, live = rng.normal(0, 1, 1_000), rng.normal(1, 1, 500)
    tracker = NumericDrift.from_sample("x", ref.tolist(), window=500, bins=10)
    feed(tracker, live.tolist())
    p, _ = tracker.statistics()
    edges = np.quantile(ref, np.arange(1, 10) / 10, method="inverted_cdf")
    e = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=10)
    a = np.bincount(np.searchsorted(edges, live, side="right"), minlength=10)
    assert p == pytest.approx(psi(e.tolist(), a.tolist()), rel=1e-9)
    assert p > 0.2


@pytest.mark.parametrize("reference", ["sample", "discrete", "histogram"])
def test_window_psi_counts_are_the_counts_per_psi_bin(reference: str) -> None:
    """PSI reads the window's count per bin off the cumulative bucket counts; it equals
    counting the window's values into the reference's PSI bins directly."""
    rng = np.random.default_rng(11)
    ref = rng.normal(40, 10, 2_000)
    if reference == "histogram":
        counts, edges = np.histogram(ref, bins=12)
        tracker = NumericDrift.from_histogram("x", edges.tolist(), counts.tolist(), window=700)
    else:
        sample = np.round(ref) if reference == "discrete" else ref
        tracker = NumericDrift.from_sample("x", sample.tolist(), window=700, bins=10)
    for step in range(4):
        live = rng.normal(40 + 5 * step, 12, 300)
        live[::37] = math.nan
        feed(tracker, (np.round(live) if reference == "discrete" else live).tolist())
        tracker.statistics()  # slides the buffered values in
        direct = np.bincount(tracker._psi_bins, weights=tracker._counts,
                             minlength=tracker._n_psi)
        assert tracker._window_psi_counts(np.cumsum(tracker._counts)) == direct.tolist()


def test_a_tracker_restored_from_before_the_psi_shortcut_still_checks() -> None:
    """A snapshot taken before the tracker cached its PSI bin ends lacks that attribute;
    the restored tracker computes it on first use and checks alike."""
    import copy

    from modelog.models.pickled import assign_state, instance_state

    rng = np.random.default_rng(5)
    tracker = NumericDrift.from_sample("x", rng.normal(0, 1, 1_000).tolist(), window=300)
    feed(tracker, rng.normal(0.5, 1, 400).tolist())
    state = copy.deepcopy(instance_state(tracker))
    state.pop("_psi_ends")
    old = NumericDrift.__new__(NumericDrift)
    assign_state(old, state)
    assert old.check(DriftThresholds()) == tracker.check(DriftThresholds())


def test_chi2_matches_scipy_contingency() -> None:
    ref, win = [300, 500, 200, 0], [150, 200, 100, 50]
    stat, p, dof = chi2_homogeneity(ref, win)
    expected = stats.chi2_contingency(np.array([ref, win]), correction=False)
    assert stat == pytest.approx(expected.statistic)
    assert p == pytest.approx(expected.pvalue)
    assert dof == expected.dof == 3
    assert chi2_homogeneity([5], [7]) == (0.0, 1.0, 0)


def test_sliding_window_equals_a_fresh_window() -> None:
    rng = np.random.default_rng(4)
    ref = rng.normal(0, 1, 800).tolist()
    values = rng.normal(0.2, 1, 3_333).tolist()
    slid = NumericDrift.from_sample("x", ref, window=300)
    feed(slid, values)
    fresh = NumericDrift.from_sample("x", ref, window=300)
    feed(fresh, values[-300:])
    assert slid.statistics() == fresh.statistics()
    assert slid.size == 300


# -- categorical ---------------------------------------------------------------------------------
def test_categorical_new_and_vanished_categories() -> None:
    d = CategoricalDrift("plan", {"a": 600, "b": 300, "c": 100}, window=200)
    feed(d, ["a", "b"] * 95 + ["z"] * 10)  # "c" (10 % of the reference) vanished, "z" is new
    checks = {c.detector: c for c in d.check(DriftThresholds())}
    assert checks["new_category"].breached and checks["new_category"].statistic == 0.05
    assert "z" in checks["new_category"].detail
    assert checks["vanished_category"].breached
    assert checks["vanished_category"].statistic == pytest.approx(0.1)
    assert "c" in checks["vanished_category"].detail


def test_categorical_stationary_stream_is_quiet() -> None:
    rng = np.random.default_rng(5)
    cats = ["a", "b", "c", "d"]
    probs = [0.4, 0.3, 0.2, 0.1]
    d = CategoricalDrift("plan", dict(zip(cats, rng.multinomial(1_000, probs).tolist(),
                                          strict=True)), window=500)
    feed(d, rng.choice(cats, 500, p=probs).tolist())
    assert not any(c.breached for c in d.check(DriftThresholds()))


def test_incomplete_profile_reference_never_calls_a_category_new() -> None:
    d = CategoricalDrift("plan", {"a": 50, "b": 40}, other=10, window=100)
    feed(d, ["a"] * 50 + ["b"] * 40 + ["tail"] * 10)
    checks = {c.detector: c for c in d.check(DriftThresholds())}
    assert "new_category" not in checks
    assert not checks["psi"].breached and not checks["chi2"].breached


def test_max_categories_bounds_the_window_state() -> None:
    d = CategoricalDrift("id", {"a": 10}, window=1_000, max_categories=5)
    feed(d, [f"user{i}" for i in range(1_000)])
    assert len(d._counts) <= 6  # five categories and "__other__"


# -- many features --------------------------------------------------------------------------------
def test_monitor_flags_only_the_shifted_feature() -> None:
    rng = np.random.default_rng(6)
    m = DataDriftMonitor(reference_size=1_000, window=500, check_every=250)
    for i in range(3_000):
        m.update({"a": float(rng.normal(1.5 if i >= 2_000 else 0.0)), "b": float(rng.normal()),
                  "k": int(rng.integers(0, 4)), "plan": str(rng.choice(["x", "y"]))})
        assert bool(m.checks) == (i >= 1_499 and (i + 1) % 250 == 0)  # reference + full window
        if i < 2_000:
            assert not m.drift_detected, i
    breached = {(c.feature, c.detector) for c in m.findings}
    assert breached == {("a", "psi"), ("a", "ks")} and m.drift_detected
    assert {c.feature for c in m.checks} == {"a", "b", "k", "plan"}
    assert isinstance(m.trackers["plan"], CategoricalDrift)
    assert isinstance(m.trackers["k"], NumericDrift)


def test_profile_reference_is_used_from_the_first_observation() -> None:
    rng = np.random.default_rng(7)
    training = pa.table({"a": rng.normal(0, 1, 5_000), "plan": rng.choice(["x", "y"], 5_000)})
    m = DataDriftMonitor(reference=profile_table(training), window=300, check_every=300)
    assert set(m.trackers) == {"a", "plan"}
    for _ in range(300):
        m.update({"a": float(rng.normal(2.0)), "plan": str(rng.choice(["x", "y"]))})
    checks = {(c.feature, c.detector): c for c in m.checks}
    assert checks["a", "psi"].breached and checks["a", "ks"].breached
    assert not checks["plan", "chi2"].breached
    assert m.trackers["a"].source == "profile"


def test_values_of_another_type_are_counted_not_learned() -> None:
    m = DataDriftMonitor(reference_size=50, window=50)
    for i in range(50):
        m.update({"x": float(i), "late": None})
    m.update({"x": "oops", "y": 1.0})
    m.update({"x": None})
    assert m.type_mismatches == 1 and m.untracked == {"y"}
    assert m.trackers["x"].size == 0


def test_bad_reference_histogram_is_rejected_with_the_rule() -> None:
    bad = {"columns": {"x": {"kind": "numeric", "histogram": {"edges": [0, 1], "counts": [1, 2]}}}}
    with pytest.raises(InvalidParameterError, match="len\\(edges\\) == len\\(counts\\) \\+ 1"):
        DataDriftMonitor(reference=bad)
    with pytest.raises(InvalidParameterError, match="ks_alpha"):
        DriftThresholds(ks_alpha=0.0)


# -- grouping ------------------------------------------------------------------------------------
def test_alert_book_opens_once_and_resolves_after_a_clear_streak() -> None:
    book = AlertBook(clear_after=3)
    seq = [True, True, False, True, False, False, False, False, True]
    transitions = [book.observe("k", b, f"e{i}") for i, b in enumerate(seq)]
    assert transitions == [("open", None), None, None, None, None, None, ("resolve", "e0"),
                           None, ("open", None)]
    assert book.opening_id("k") == "e8" and book.is_open("k")


@pytest.mark.parametrize("read_every", [1, 7, 100, 499, 500, 1_337])
def test_numeric_window_is_the_same_however_values_are_buffered(read_every: int) -> None:
    """Values slide in buffered; the window equals sliding them in one at a time."""
    import bisect
    import collections
    import random

    from modelog.models.datadrift import NumericDrift

    rng = random.Random(read_every)
    reference = [float(rng.randint(0, 50)) for _ in range(1_000)]
    drift = NumericDrift.from_sample("x", reference, window=500)
    points = sorted(set(reference))
    window: collections.deque[int] = collections.deque(maxlen=500)
    specials = [float("nan"), float("inf"), -float("inf"), 0, 50, 25.0, -3, 1e9]
    for i in range(3_000):
        value = rng.choice(specials) if i % 50 == 0 else rng.randint(-5, 55) + rng.choice(
            (0.0, 0.5))
        drift.update(value)
        k = bisect.bisect_left(points, value)
        window.append(2 * k + 1 if k < len(points) and points[k] == value else 2 * k)
        if i % read_every == 0 or i == 2_999:
            drift.statistics()
            assert list(drift._buckets) == list(window)
            assert drift._counts.tolist() == [window.count(b) for b in range(2 * len(points)
                                                                                 + 1)]
        assert drift.size == len(window)


@pytest.mark.parametrize("max_categories", [3, 100])
def test_categorical_extend_equals_update_one_by_one(max_categories: int) -> None:
    import random

    from modelog.models.datadrift import CategoricalDrift

    rng = random.Random(max_categories)
    one = CategoricalDrift("plan", {"a": 10, "b": 10}, window=50, max_categories=max_categories)
    many = CategoricalDrift("plan", {"a": 10, "b": 10}, window=50,
                            max_categories=max_categories)
    values = [rng.choice("abcdefg") if i % 300 < 200 else rng.choice("ab") for i in range(2_000)]
    i = 0
    while i < len(values):
        step = rng.choice((1, 7, 49, 50, 51, 130))
        chunk = values[i:i + step]
        many.extend(chunk)
        for v in chunk:
            one.update(v)
        assert list(many._values) == list(one._values) and many._counts == one._counts
        i += step


@pytest.mark.parametrize("check_every", [1, 100, 333])
def test_buffered_observations_give_the_same_checks_and_counters(check_every: int) -> None:
    import random

    from modelog.models.datadrift import DataDriftMonitor

    rng = random.Random(check_every)
    plain = DataDriftMonitor(reference_size=300, window=200, check_every=check_every,
                             max_categories=4)
    eager = DataDriftMonitor(reference_size=300, window=200, check_every=check_every,
                             max_categories=4)
    for i in range(3_000):
        shift = 2.0 if i > 1_800 else 0.0
        x: dict[str, object] = {"a": rng.gauss(shift, 1), "n": rng.randint(0, 9),
                                "plan": rng.choice("xyz" if i < 2_000 else "xyzuvw")}
        if i % 37 == 0:
            x["a"] = "oops"  # a type mismatch
        if i % 41 == 0:
            x["plan"] = None
        if i == 1_000:
            x["late"] = 1.0  # first seen after the warm-up: untracked
        plain.update(x)
        eager.update(x)
        _ = eager.type_mismatches  # reading a counter feeds the trackers now
        assert plain.checks == eager.checks
    assert plain.type_mismatches == eager.type_mismatches > 0
    assert plain.untracked == eager.untracked == {"late"}
    assert any(c.breached for c in plain.checks) or check_every == 333


@pytest.mark.parametrize("seed", range(5))
def test_an_integer_feature_is_stable_against_its_training_profile(seed: int) -> None:
    """Integer values lie on the profile's bin edges: the KS distance compares like with like.

    (Found end to end: `rooms` in 1..6 against its training dataset's profile raised a
    KS alert in the first window of an unchanged stream, its distance ~P(rooms = k).)
    """
    rng = np.random.default_rng(seed)
    draw = lambda n: rng.integers(1, 7, n)  # noqa: E731
    profile = profile_table(pa.table({"rooms": draw(3_000)}))["columns"]["rooms"]["histogram"]
    d = NumericDrift.from_histogram("rooms", profile["edges"], profile["counts"], window=500)
    stable = []
    for _ in range(10):
        for v in draw(500):
            d.update(int(v))
        stable.append({c.detector: c for c in d.check(DriftThresholds())})
    assert not any(c.breached for checks in stable for c in checks.values())
    assert max(checks["ks"].statistic for checks in stable) < 0.1  # critical: 0.119
    for v in rng.integers(2, 8, 500):  # shifted by one
        d.update(int(v))
    shifted = {c.detector: c for c in d.check(DriftThresholds())}
    assert shifted["ks"].breached and shifted["psi"].breached
    assert shifted["ks"].statistic == pytest.approx(1 / 6, abs=0.06)


def test_a_continuous_feature_against_its_profile_still_sees_values_beyond_its_range() -> None:
    rng = np.random.default_rng(1)
    profile = profile_table(pa.table({"x": rng.normal(0, 1, 5_000)}))["columns"]["x"]["histogram"]
    d = NumericDrift.from_histogram("x", profile["edges"], profile["counts"], window=500)
    for v in rng.normal(0, 1, 500):
        d.update(float(v))
    assert not any(c.breached for c in d.check(DriftThresholds()))
    for v in rng.normal(0, 1, 400):
        d.update(float(v))
    for _ in range(100):
        d.update(1e6)  # a fifth of the window above the reference's largest value
    ks = {c.detector: c for c in d.check(DriftThresholds())}["ks"]
    assert ks.breached and ks.statistic == pytest.approx(0.2, abs=0.01)


# -- stable streams of awkward shapes stay silent; a real shift still alarms --------------------
def _breaches(monitor: DataDriftMonitor, rows: list[dict[str, object]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for x in rows:
        monitor.update(x)
        out += [(c.feature, c.detector) for c in monitor.findings]
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identifiers_and_long_tailed_categories_are_stable_against_a_warm_up(seed: int) -> None:
    # Every user id is new; a Zipf-like category has a long tail the warm-up cannot cover.
    # Compared as complete references, both alarmed on every check (PSI 11 and ~0.4).
    rng = np.random.default_rng(seed)
    n = 12_000
    ids = [f"u{v}" for v in rng.integers(0, 10**9, n)]
    tail = [f"c{int(v) % 5000}" for v in rng.zipf(1.6, n)]
    monitor = DataDriftMonitor()
    rows: list[dict[str, object]] = [{"user": u, "page": c} for u, c in zip(ids, tail, strict=True)]
    assert _breaches(monitor, rows) == []
    user = monitor.trackers["user"]
    assert isinstance(user, CategoricalDrift) and user.reference == {} and user.other == 1_000
    # the tail's head is still compared: a shift of the top category is found
    shifted: list[dict[str, object]] = [
        {"user": f"v{i}", "page": "c1" if i % 2 else "c2"} for i in range(1_000)]
    assert ("page", "chi2") in _breaches(monitor, shifted)


def test_a_complete_profile_with_categories_seen_once_pools_them_with_unseen_ones() -> None:
    counts = {"a": 400.0, "b": 300.0, **{f"rare{i}": 1.0 for i in range(50)}, "twice": 2.0}
    tracker = CategoricalDrift.from_counts("x", counts)
    assert "rare0" not in tracker.reference and tracker.reference["twice"] == 2.0
    assert tracker.other == 50 + 2 * 1  # Good-Turing: n1 + 2 n2
    complete = CategoricalDrift.from_counts("x", {"a": 2.0, "b": 3.0})
    assert complete.other == 0.0 and complete.reference == {"a": 2.0, "b": 3.0}


def test_psi_needs_significance_a_small_reference_does_not_alarm_by_chance() -> None:
    # 60 reference values over 10 bins: PSI passes 0.2 by chance on a stable stream, but
    # the chi-squared test on the same bins does not reject: no breach.
    rng = np.random.default_rng(3)
    tracker = NumericDrift.from_sample("x", rng.normal(0, 1, 60).tolist(), window=500)
    high, breached = 0.0, []
    for _ in range(40):
        feed(tracker, rng.normal(0, 1, 100).tolist())
        psi_check = next(c for c in tracker.check(DriftThresholds()) if c.detector == "psi")
        high = max(high, psi_check.statistic)
        breached.append(psi_check.breached)
        assert psi_check.p_value is not None
    assert high > 0.2 and not any(breached)
    feed(tracker, rng.normal(2, 1, 500).tolist())  # +2 sigma: large and significant
    psi_check = next(c for c in tracker.check(DriftThresholds()) if c.detector == "psi")
    assert psi_check.breached and psi_check.p_value is not None and psi_check.p_value < 1e-5
