"""Statistics that compare a challenger model with a baseline on the same or split traffic.

Pure: the standard library and :mod:`modelog.models.errors` only (no scipy at
run time; ``tests/test_comparison.py`` checks every number against scipy).

Paired (shadow: both versions scored the same requests):

* classification -- :func:`mcnemar` on the discordant pairs: the exact binomial
  test when there are fewer than :data:`EXACT_BELOW` discordant pairs, else
  the chi-square test with continuity correction (1 degree of freedom); the
  effect is the accuracy difference with a Wald interval for paired
  proportions;
* regression -- :func:`paired_t`: a paired t-test on the per-request
  difference of absolute errors (baseline minus challenger), with the
  t interval of its mean. Chosen over Wilcoxon's signed-rank test because it
  tests the quantity that is reported (the MAE difference), accumulates in
  constant memory and, at the hundreds of pairs a promotion needs, the
  central limit theorem makes it accurate for skewed errors too.

Unpaired (A/B arms: different requests):

* classification -- :func:`two_proportion`: the two-proportion z-test (pooled
  standard error for the test, unpooled for the interval);
* regression -- :func:`welch_t`: Welch's t-test on absolute errors.

Every result's ``effect`` is the challenger's advantage in the metric's better
direction (positive: the challenger is better): accuracy difference for
classes, MAE difference (baseline minus challenger) for numbers.

Examples
--------
>>> tally = PairedTally()
>>> for base_ok, chal_ok in [(True, True)] * 80 + [(False, True)] * 15 + [(True, False)] * 5:
...     tally.add(base_ok, chal_ok)
>>> r = mcnemar(tally)
>>> r.test, r.pairs, round(r.effect, 2), round(r.p_value, 4)
('mcnemar-exact', 100, 0.1, 0.0414)
>>> errors = PairedErrors()
>>> for b, c in [(1.0, 0.5), (2.0, 1.0), (1.5, 1.5), (3.0, 2.0)]:
...     errors.add(b, c)
>>> r = paired_t(errors)
>>> r.test, round(r.effect, 3), round(r.p_value, 3)
('paired-t', 0.625, 0.08)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import NormalDist

from mypy_extensions import mypyc_attr

from modelog.models.errors import ComparisonError
from modelog.models.pickled import FrozenState

__all__ = [
    "EXACT_BELOW",
    "ComparisonResult",
    "Moments",
    "PairedErrors",
    "PairedTally",
    "mcnemar",
    "paired_t",
    "student_t_sf2",
    "two_proportion",
    "welch_t",
]

EXACT_BELOW = 25
"""McNemar uses the exact binomial test below this many discordant pairs."""

_NORMAL = NormalDist()


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclass(frozen=True)
class ComparisonResult(FrozenState):
    """One test's outcome (the fields of :class:`~modelog.models.policy_events.ComparisonReported`).

    Attributes
    ----------
    test
        ``mcnemar-exact``, ``mcnemar-chi2``, ``paired-t``, ``two-proportion-z`` or ``welch-t``.
    metric
        ``accuracy`` (higher is better) or ``mae`` (lower is better).
    pairs
        Labelled pairs (paired tests) or labelled observations of both arms together.
    baseline_value, challenger_value
        The metric of each side.
    effect, ci_low, ci_high
        The challenger's advantage (positive: better) and its interval at ``confidence``.
    p_value
        Two-sided p-value of "no difference".
    """

    test: str
    metric: str
    pairs: int
    baseline_value: float
    challenger_value: float
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float = 0.95

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger metric value is better (accuracy) or worse (MAE)."""
        return self.metric != "mae"


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclass
class Moments:
    """Count, mean and sum of squared deviations, updated one value at a time (Welford).

    Examples
    --------
    >>> m = Moments.of([1.0, 2.0, 4.0])
    >>> m.n, round(m.mean, 4), round(m.variance, 4)
    (3, 2.3333, 2.3333)
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        """Take one value."""
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    @property
    def variance(self) -> float:
        """The sample variance (``ddof=1``); 0 with fewer than 2 values."""
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> Moments:
        """The moments of ``values``."""
        m = cls()
        for x in values:
            m.add(float(x))
        return m


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclass
class PairedTally:
    """Paired classification outcomes: both right/wrong and the two discordant counts."""

    n: int = 0
    baseline_correct: int = 0
    challenger_correct: int = 0
    baseline_only: int = 0
    challenger_only: int = 0

    def add(self, baseline_ok: bool, challenger_ok: bool) -> None:
        """Take one labelled pair (whether each side predicted the label)."""
        self.n += 1
        self.baseline_correct += baseline_ok
        self.challenger_correct += challenger_ok
        if baseline_ok and not challenger_ok:
            self.baseline_only += 1
        elif challenger_ok and not baseline_ok:
            self.challenger_only += 1


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclass
class PairedErrors:
    """Paired regression outcomes: each side's absolute errors and their difference."""

    baseline: Moments = field(default_factory=Moments)
    challenger: Moments = field(default_factory=Moments)
    diff: Moments = field(default_factory=Moments)

    @property
    def n(self) -> int:
        """Number of pairs."""
        return self.diff.n

    def add(self, baseline_error: float, challenger_error: float) -> None:
        """Take one labelled pair of absolute errors."""
        b, c = abs(baseline_error), abs(challenger_error)
        self.baseline.add(b)
        self.challenger.add(c)
        self.diff.add(b - c)


# -- distributions ------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_sf2(t: float, df: float) -> float:
    """Two-sided tail probability ``P(|T| >= |t|)`` of Student's t with ``df`` degrees.

    Examples
    --------
    >>> round(student_t_sf2(2.228, 10), 4)
    0.05
    """
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def _t_quantile(confidence: float, df: float) -> float:
    """The ``q`` with ``P(|T| <= q) = confidence`` (bisection on :func:`student_t_sf2`)."""
    alpha = 1.0 - confidence
    lo, hi = 0.0, 1.0
    while student_t_sf2(hi, df) > alpha:
        hi *= 2.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if student_t_sf2(mid, df) > alpha:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def _z_quantile(confidence: float) -> float:
    return _NORMAL.inv_cdf(0.5 + confidence / 2.0)


def _check(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ComparisonError(f"confidence = {confidence!r} is invalid: it must be in (0, 1)")


def _binom_two_sided_half(k: int, n: int) -> float:
    """Exact two-sided binomial p-value of ``k`` successes in ``n`` at p = 1/2."""
    k = min(k, n - k)
    log_half_n = -n * math.log(2.0)
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                        + log_half_n) for i in range(k + 1))
    return min(1.0, 2.0 * tail)


# -- paired -------------------------------------------------------------------------------

def mcnemar(tally: PairedTally, confidence: float = 0.95) -> ComparisonResult:
    """McNemar's test of two classifiers scored on the same labelled requests.

    Exact binomial below :data:`EXACT_BELOW` discordant pairs, chi-square with
    continuity correction from there. The effect is the accuracy difference
    (challenger minus baseline) with a Wald interval for paired proportions.

    Raises
    ------
    ComparisonError
        No pairs, or ``confidence`` outside (0, 1).

    Examples
    --------
    >>> r = mcnemar(PairedTally(n=200, baseline_correct=150, challenger_correct=170,
    ...                         baseline_only=10, challenger_only=30))
    >>> r.test, round(r.p_value, 5), round(r.ci_low, 4), round(r.ci_high, 4)
    ('mcnemar-chi2', 0.00266, 0.0396, 0.1604)
    """
    _check(confidence)
    n = tally.n
    if n < 1:
        raise ComparisonError("McNemar's test needs at least one labelled pair; got none")
    b, c = tally.baseline_only, tally.challenger_only
    discordant = b + c
    if discordant == 0:
        test, p = "mcnemar-exact", 1.0
    elif discordant < EXACT_BELOW:
        test, p = "mcnemar-exact", _binom_two_sided_half(c, discordant)
    else:
        stat = (abs(b - c) - 1.0) ** 2 / discordant
        test, p = "mcnemar-chi2", math.erfc(math.sqrt(stat / 2.0))
    effect = (c - b) / n
    se = math.sqrt(max(0.0, discordant - (c - b) ** 2 / n)) / n
    half = _z_quantile(confidence) * se
    return ComparisonResult(test, "accuracy", n, tally.baseline_correct / n,
                            tally.challenger_correct / n, effect, effect - half,
                            effect + half, p, confidence)


def _t_result(test: str, n: int, base: float, chal: float, effect: float, se: float,
              df: float, confidence: float) -> ComparisonResult:
    if se == 0.0:
        p = 1.0 if effect == 0.0 else 0.0
        return ComparisonResult(test, "mae", n, base, chal, effect, effect, effect, p,
                                confidence)
    half = _t_quantile(confidence, df) * se
    return ComparisonResult(test, "mae", n, base, chal, effect, effect - half, effect + half,
                            student_t_sf2(effect / se, df), confidence)


def paired_t(errors: PairedErrors, confidence: float = 0.95) -> ComparisonResult:
    """Paired t-test on the per-request difference of absolute errors (baseline - challenger).

    Raises
    ------
    ComparisonError
        Fewer than 2 pairs, or ``confidence`` outside (0, 1).
    """
    _check(confidence)
    n = errors.n
    if n < 2:
        raise ComparisonError(f"the paired t-test needs at least 2 labelled pairs; got {n}")
    se = math.sqrt(errors.diff.variance / n)
    return _t_result("paired-t", n, errors.baseline.mean, errors.challenger.mean,
                     errors.diff.mean, se, n - 1, confidence)


# -- unpaired (A/B arms) ------------------------------------------------------------------

def two_proportion(baseline_n: int, baseline_correct: int, challenger_n: int,
                   challenger_correct: int, confidence: float = 0.95) -> ComparisonResult:
    """Two-proportion z-test of the accuracies of two arms serving different requests.

    The test uses the pooled standard error, the interval of the difference
    the unpooled one.

    Raises
    ------
    ComparisonError
        An arm without observations, a count above its total, or a bad ``confidence``.

    Examples
    --------
    >>> r = two_proportion(1000, 800, 1000, 850)
    >>> r.test, round(r.effect, 3), round(r.p_value, 5)
    ('two-proportion-z', 0.05, 0.00326)
    """
    _check(confidence)
    for name, n, k in (("baseline", baseline_n, baseline_correct),
                       ("challenger", challenger_n, challenger_correct)):
        if n < 1 or not 0 <= k <= n:
            raise ComparisonError(f"{name} arm: {k} correct of {n} is invalid: it needs at "
                                  f"least one observation and 0 <= correct <= observations")
    pb, pc = baseline_correct / baseline_n, challenger_correct / challenger_n
    effect = pc - pb
    pooled = (baseline_correct + challenger_correct) / (baseline_n + challenger_n)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / baseline_n + 1 / challenger_n))
    p = (1.0 if effect == 0 else 0.0) if se0 == 0 else math.erfc(abs(effect) / se0 / math.sqrt(2))
    se = math.sqrt(pb * (1 - pb) / baseline_n + pc * (1 - pc) / challenger_n)
    half = _z_quantile(confidence) * se
    return ComparisonResult("two-proportion-z", "accuracy", baseline_n + challenger_n, pb, pc,
                            effect, effect - half, effect + half, p, confidence)


def welch_t(baseline: Moments, challenger: Moments, confidence: float = 0.95) -> ComparisonResult:
    """Welch's t-test on the absolute errors of two arms (effect: baseline MAE - challenger MAE).

    Raises
    ------
    ComparisonError
        An arm with fewer than 2 observations, or a bad ``confidence``.
    """
    _check(confidence)
    if baseline.n < 2 or challenger.n < 2:
        raise ComparisonError(f"Welch's t-test needs at least 2 observations per arm; got "
                              f"{baseline.n} and {challenger.n}")
    vb, vc = baseline.variance / baseline.n, challenger.variance / challenger.n
    se = math.sqrt(vb + vc)
    denom = (vb * vb / (baseline.n - 1) if vb else 0.0) + (vc * vc / (challenger.n - 1)
                                                          if vc else 0.0)
    df = (vb + vc) ** 2 / denom if denom else float(baseline.n + challenger.n - 2)
    return _t_result("welch-t", baseline.n + challenger.n, baseline.mean, challenger.mean,
                     baseline.mean - challenger.mean, se, df, confidence)
