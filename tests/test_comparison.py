"""The comparison statistics (models/comparison.py) checked against scipy on known data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from modelog.models.comparison import (
    EXACT_BELOW,
    Moments,
    PairedErrors,
    PairedTally,
    mcnemar,
    paired_t,
    student_t_sf2,
    two_proportion,
    welch_t,
)
from modelog.models.errors import ComparisonError


def _tally(base: np.ndarray, chal: np.ndarray) -> PairedTally:
    tally = PairedTally()
    for b, c in zip(base, chal, strict=True):
        tally.add(bool(b), bool(c))
    return tally


@pytest.mark.parametrize(("b", "c", "both"), [(3, 9, 50), (0, 7, 10), (12, 12, 5), (1, 23, 0)])
def test_mcnemar_exact_equals_scipy_binomtest(b: int, c: int, both: int) -> None:
    base = np.array([1] * both + [1] * b + [0] * c + [0] * 4)
    chal = np.array([1] * both + [0] * b + [1] * c + [0] * 4)
    r = mcnemar(_tally(base, chal))
    assert b + c < EXACT_BELOW and r.test == "mcnemar-exact"
    assert r.p_value == pytest.approx(stats.binomtest(c, b + c, 0.5).pvalue, rel=1e-9)
    assert r.pairs == len(base)
    assert r.effect == pytest.approx(chal.mean() - base.mean())
    assert r.baseline_value == pytest.approx(base.mean())


def test_mcnemar_chi2_with_continuity_equals_scipy() -> None:
    rng = np.random.default_rng(7)
    truth = rng.integers(0, 2, 2000)
    base = (rng.random(2000) < 0.80)
    chal = (rng.random(2000) < 0.84)
    r = mcnemar(_tally(base, chal))
    b = int((base & ~chal).sum())
    c = int((chal & ~base).sum())
    assert r.test == "mcnemar-chi2" and truth.size == r.pairs
    stat = (abs(b - c) - 1) ** 2 / (b + c)
    assert r.p_value == pytest.approx(stats.chi2.sf(stat, 1), rel=1e-9)
    # Wald interval of the paired difference of proportions
    n = 2000
    se = math.sqrt((b + c) - (c - b) ** 2 / n) / n
    z = stats.norm.ppf(0.975)
    assert (r.ci_low, r.ci_high) == pytest.approx(((c - b) / n - z * se, (c - b) / n + z * se))


def test_mcnemar_without_discordant_pairs_is_no_evidence() -> None:
    r = mcnemar(_tally(np.ones(30), np.ones(30)))
    assert (r.p_value, r.effect, r.ci_low, r.ci_high) == (1.0, 0.0, 0.0, 0.0)


def test_paired_t_equals_scipy_ttest_rel_and_its_interval() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=300)
    eb = np.abs(y - (y + rng.normal(0, 1.0, 300)))
    ec = np.abs(y - (y + rng.normal(0, 0.8, 300)))
    errors = PairedErrors()
    for b, c in zip(eb, ec, strict=True):
        errors.add(float(b), float(c))
    r = paired_t(errors, confidence=0.9)
    ref = stats.ttest_rel(eb, ec)
    ci = ref.confidence_interval(0.9)
    assert r.test == "paired-t" and r.pairs == 300 and r.metric == "mae"
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-7)
    assert r.effect == pytest.approx(eb.mean() - ec.mean())
    assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-7)
    assert (r.baseline_value, r.challenger_value) == pytest.approx((eb.mean(), ec.mean()))


def test_welch_t_equals_scipy_and_its_interval() -> None:
    rng = np.random.default_rng(11)
    eb, ec = np.abs(rng.normal(0, 1.0, 120)), np.abs(rng.normal(0, 0.7, 85))
    r = welch_t(Moments.of(eb), Moments.of(ec))
    ref = stats.ttest_ind(eb, ec, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert r.test == "welch-t" and r.pairs == 205
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-7)
    assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-7)


def test_two_proportion_z_equals_the_normal_reference() -> None:
    nb, kb, nc, kc = 1200, 930, 800, 655
    r = two_proportion(nb, kb, nc, kc)
    pb, pc = kb / nb, kc / nc
    pooled = (kb + kc) / (nb + nc)
    z = (pc - pb) / math.sqrt(pooled * (1 - pooled) * (1 / nb + 1 / nc))
    assert r.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    # the z test is the chi-square test of the 2x2 table without correction
    table = [[kb, nb - kb], [kc, nc - kc]]
    assert r.p_value == pytest.approx(
        stats.chi2_contingency(table, correction=False).pvalue, rel=1e-9)
    se = math.sqrt(pb * (1 - pb) / nb + pc * (1 - pc) / nc)
    assert r.ci_high - r.ci_low == pytest.approx(2 * stats.norm.ppf(0.975) * se)


@pytest.mark.parametrize("df", [1, 3, 10, 57.3, 1000])
def test_student_t_tail_equals_scipy(df: float) -> None:
    for t in (0.0, 0.4, 1.96, 3.5, -8.0):
        assert student_t_sf2(t, df) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9,
                                                     abs=1e-15)


def test_bad_input_names_the_rule() -> None:
    with pytest.raises(ComparisonError, match="at least one labelled pair"):
        mcnemar(PairedTally())
    with pytest.raises(ComparisonError, match="at least 2 labelled pairs; got 1"):
        errors = PairedErrors()
        errors.add(1.0, 2.0)
        paired_t(errors)
    with pytest.raises(ComparisonError, match="baseline arm: 5 correct of 3"):
        two_proportion(3, 5, 10, 5)
    with pytest.raises(ComparisonError, match=r"confidence = 1.5 is invalid"):
        welch_t(Moments.of([1, 2]), Moments.of([1, 2]), confidence=1.5)


def test_identical_errors_give_a_degenerate_but_finite_answer() -> None:
    errors = PairedErrors()
    for x in (1.0, 2.0, 3.0):
        errors.add(x, x)
    r = paired_t(errors)
    assert (r.effect, r.p_value, r.ci_low, r.ci_high) == (0.0, 1.0, 0.0, 0.0)
