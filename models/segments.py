"""Per-segment metrics and "which segment got worse": :class:`SegmentMonitor`.

This module owns the per-segment view of a model version: for each declared
segment feature (``country``, ``plan``, ...) the prediction count and the
rolling error (accuracy for classifiers) of each segment value, and a test
that names the segments whose error is significantly worse than the rest of
the same feature's traffic. Pure: imports the standard library and
:mod:`modelog.models` only.

Bounded cardinality: the first ``max_tracked`` distinct values of a feature
get their own state (default ``4 * top_k``); later values share the bucket
``"other"``. Reports and tests show the ``top_k`` tracked values with the
most predictions and fold the remaining ones into ``"other"``.

The test, every ``check_every`` labels: for each shown segment with at least
``min_count`` labelled predictions in its rolling window, its error rate
against the rest of the feature's (two-proportion z-test, one-sided; for
regression errors Welch's z on the mean absolute error), Bonferroni-corrected
over the segments tested: a segment is degraded when its p-value is below
``alpha / tests`` and its error exceeds the rest's by at least ``min_gap``
(for regression: by ``min_gap`` times the rest's mean error). One finding per
check that degrades a new segment; it names every segment degraded then. A
degraded segment recovers after ``clear_after`` checks without the condition.

Traffic-mix drift, per segment: the first ``reference_size`` predictions fix each
segment's reference share of traffic; afterwards each segment's share over the
last ``window`` predictions is compared with it, as its term of the population
stability index, ``(share - reference) * ln(share / reference)`` (shares floored
at 1e-4), and the feature's PSI is their sum (below 0.1 stable, above 0.2 a
significant shift). Statistics only: the per-feature data drift monitors alert.

Examples
--------
>>> import random
>>> rng = random.Random(3)
>>> mon = SegmentMonitor(["country"], check_every=100)
>>> alerts = []
>>> for i in range(4000):
...     country = rng.choice(["FR", "DE", "US", "ES"])
...     wrong = rng.random() < (0.4 if country == "DE" and i > 2000 else 0.1)
...     segs = mon.update({"country": country})
...     mon.learn_one(segs, float(wrong), classification=True)
...     if mon.drift_detected:
...         alerts.append([(r.feature, r.value) for r in mon.findings[0].segments])
>>> alerts
[[('country', 'DE')]]
>>> [(r.value, r.predictions) for r in mon.table()][:2]
[('US', 1030), ('ES', 1006)]
>>> round(mon.mix_psi()["country"], 3)  # the same mix as in the first 1,000: stable
0.002
>>> for i in range(1000):                # then half of the traffic comes from DE
...     _ = mon.update({"country": "DE" if i % 2 else rng.choice(["FR", "US", "ES"])})
>>> de = next(r for r in mon.table() if r.value == "DE")
>>> round(de.reference_share, 2), round(de.share, 2), round(mon.mix_psi()["country"], 2)
(0.24, 0.5, 0.31)
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from mypy_extensions import mypyc_attr

from modelog.models.errors import InvalidParameterError
from modelog.models.pickled import FrozenState, assign_state, instance_state
from modelog.models.tabular import PSI_EPSILON

__all__ = ["OTHER", "SegmentFinding", "SegmentMonitor", "SegmentRow", "SegmentTest"]

OTHER = "other"
"""The bucket of values beyond the tracked ones (and of missing values: ``"null"`` is a value)."""


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class SegmentRow(FrozenState):
    """One segment's figures: its predictions and its rolling window of labelled errors."""

    feature: str
    value: str
    predictions: int
    labelled: int
    error: float | None
    accuracy: float | None
    #: Share of the last ``window`` predictions, share in the reference, and this
    #: segment's PSI term (``None`` until the reference is complete).
    share: float | None = None
    reference_share: float | None = None
    psi: float | None = None


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class SegmentTest(FrozenState):
    """A segment's error against the rest of its feature's traffic."""

    feature: str
    value: str
    labelled: int
    error: float
    rest_error: float
    z: float
    p_value: float
    degraded: bool


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class SegmentFinding(FrozenState):
    """The degraded segments of one check (the newly degraded among them)."""

    segments: tuple[SegmentTest, ...]
    new: tuple[str, ...]
    tests: int


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class _Rolling:
    """A bounded window of errors with running sums."""

    __slots__ = ("n_predictions", "sum", "sumsq", "values")

    def __init__(self, size: int) -> None:
        self.values: collections.deque[float] = collections.deque(maxlen=size)
        self.sum = 0.0
        self.sumsq = 0.0
        self.n_predictions = 0

    def add(self, value: float) -> None:
        if len(self.values) == self.values.maxlen:
            old = self.values[0]
            self.sum -= old
            self.sumsq -= old * old
        self.values.append(value)
        self.sum += value
        self.sumsq += value * value


def _norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _value(value: Any) -> str:
    if value is None:
        return "null"
    text = str(value)
    return text if len(text) <= 64 else text[:61] + "..."


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class SegmentMonitor:
    """Rolling metrics per segment value and the "which segment got worse" test.

    Parameters
    ----------
    features
        The segment features (input names).
    top_k
        Segments shown per feature (the rest fold into ``"other"``).
    window
        Labelled predictions in each segment's rolling window.
    min_count
        Labelled predictions a segment needs to be tested.
    alpha
        Family-wise significance level (Bonferroni over the segments tested).
    min_gap
        Smallest error difference (classification) or relative excess (regression) alerted.
    check_every
        Labels between tests.
    max_tracked
        Distinct values per feature with their own state (default ``4 * top_k``).
    clear_after
        Checks without the condition that end a segment's degradation.
    reference_size
        First predictions whose segment mix is the reference of the traffic-mix drift.
    """

    def __init__(self, features: Sequence[str], *, top_k: int = 10, window: int = 1_000,
                 min_count: int = 30, alpha: float = 1e-3, min_gap: float = 0.05,
                 check_every: int = 200, max_tracked: int | None = None,
                 clear_after: int = 3, reference_size: int = 1_000) -> None:
        for name, value in (("top_k", top_k), ("window", window), ("min_count", min_count),
                            ("check_every", check_every), ("clear_after", clear_after),
                            ("reference_size", reference_size)):
            if value < 1:
                raise InvalidParameterError("SegmentMonitor", name, value, "must be >= 1")
        if not 0.0 < alpha < 1.0:
            raise InvalidParameterError("SegmentMonitor", "alpha", alpha,
                                        "must be strictly between 0 and 1")
        if min_gap < 0:
            raise InvalidParameterError("SegmentMonitor", "min_gap", min_gap, "must be >= 0")
        self.features = list(features)
        self.top_k = top_k
        self.window = window
        self.min_count = min_count
        self.alpha = alpha
        self.min_gap = min_gap
        self.check_every = check_every
        self.max_tracked = max_tracked if max_tracked is not None else 4 * top_k
        self.clear_after = clear_after
        self.reference_size = reference_size
        self._state: dict[str, dict[str, _Rolling]] = {f: {} for f in self.features}
        self._seen = 0  # predictions counted
        self._reference: dict[str, collections.Counter[str]] = {
            f: collections.Counter() for f in self.features}
        self._recent: collections.deque[tuple[str, ...]] = collections.deque(maxlen=window)
        self._degraded: dict[tuple[str, str], int] = {}  # -> checks without the condition
        self._labels = 0
        self._classification = True
        self.last_tests: list[SegmentTest] = []
        self._findings: list[SegmentFinding] = []

    def __getstate__(self) -> dict[str, Any]:
        return instance_state(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle a snapshot; one taken before the traffic-mix statistic starts its
        reference now."""
        assign_state(self, state)
        if "_recent" not in state:
            self.reference_size = 1_000
            self._seen = 0
            self._reference = {f: collections.Counter() for f in self.features}
            self._recent = collections.deque(maxlen=self.window)

    # -- read-outs ---------------------------------------------------------------
    @property
    def drift_detected(self) -> bool:
        """Whether the last :meth:`learn_one` degraded a new segment."""
        return bool(self._findings)

    @property
    def findings(self) -> Sequence[SegmentFinding]:
        """The finding of the last :meth:`learn_one` (empty otherwise)."""
        return self._findings

    def degraded(self) -> list[tuple[str, str]]:
        """The segments degraded now, as ``(feature, value)``."""
        return sorted(self._degraded)

    # -- input -------------------------------------------------------------------
    def update(self, x: Mapping[str, Any]) -> tuple[str, ...]:
        """Count one prediction; return its segment values (give them to :meth:`learn_one`)."""
        out = []
        for feature in self.features:
            states = self._state[feature]
            value = _value(x.get(feature))
            if value not in states:
                if len(states) >= self.max_tracked:
                    value = OTHER
                if value not in states:
                    states[value] = _Rolling(self.window)
            states[value].n_predictions += 1
            out.append(value)
        values = tuple(out)
        if self._seen < self.reference_size:
            for feature, value in zip(self.features, values, strict=True):
                self._reference[feature][value] += 1
        else:
            self._recent.append(values)
        self._seen += 1
        return values

    def learn_one(self, segments: Sequence[str], error: float, *,
                  classification: bool = True) -> None:
        """One labelled prediction: its segment values (from :meth:`update`) and its error."""
        if self._findings:
            self._findings = []
        self._classification = classification
        for feature, value in zip(self.features, segments, strict=False):
            state = self._state[feature].get(value)
            if state is not None:
                state.add(error)
        self._labels += 1
        if self._labels % self.check_every == 0:
            self._check()

    # -- figures -----------------------------------------------------------------
    def _groups(self, feature: str) -> list[tuple[str, int, int, float, float]]:
        """``(value, predictions, labelled, sum, sumsq)``: the top values, then ``other``."""
        states = self._state[feature]
        ranked = sorted(states.items(), key=lambda kv: (-kv[1].n_predictions, kv[0]))
        shown = [(v, s) for v, s in ranked if v != OTHER][: self.top_k]
        names = {v for v, _ in shown}
        rows = [(v, s.n_predictions, len(s.values), s.sum, s.sumsq) for v, s in shown]
        rest = [s for v, s in states.items() if v not in names]
        if rest:
            rows.append((OTHER, sum(s.n_predictions for s in rest),
                         sum(len(s.values) for s in rest), sum(s.sum for s in rest),
                         sum(s.sumsq for s in rest)))
        return rows

    def table(self) -> list[SegmentRow]:
        """Every shown segment of every feature, most predictions first (``other`` last)."""
        out = []
        for i, feature in enumerate(self.features):
            groups = self._groups(feature)
            mix = self._mix(i, [g[0] for g in groups])
            for value, n, labelled, total, _ in groups:
                error = total / labelled if labelled else None
                accuracy = 1.0 - error if error is not None and self._classification else None
                share, ref, term = mix.get(value, (None, None, None))
                out.append(SegmentRow(feature, value, n, labelled, error, accuracy,
                                      share, ref, term))
        return out

    def mix_psi(self, rows: Sequence[SegmentRow] | None = None) -> dict[str, float]:
        """Each feature's traffic-mix PSI, recent window against the reference (once both
        exist): the sum of its segments' terms in ``rows`` (default: :meth:`table`)."""
        out: dict[str, float] = {}
        for r in self.table() if rows is None else rows:
            if r.psi is not None:
                out[r.feature] = out.get(r.feature, 0.0) + r.psi
        return out

    def _mix(self, index: int, shown: list[str]) -> dict[str, tuple[float, float, float]]:
        """``value -> (share, reference share, PSI term)`` over the shown values (the rest
        counted in ``other``); empty before the reference is complete."""
        if self._seen < self.reference_size or not self._recent:
            return {}
        names = set(shown)
        recent: collections.Counter[str] = collections.Counter()
        for values in self._recent:
            value = values[index]
            recent[value if value in names else OTHER] += 1
        reference: collections.Counter[str] = collections.Counter()
        for value, count in self._reference[self.features[index]].items():
            reference[value if value in names else OTHER] += count
        n_recent, n_reference = len(self._recent), sum(reference.values())
        out = {}
        for value in shown:
            share = recent[value] / n_recent
            ref = reference[value] / n_reference if n_reference else 0.0
            a, e = max(share, PSI_EPSILON), max(ref, PSI_EPSILON)
            out[value] = (share, ref, (a - e) * math.log(a / e))
        return out

    def _check(self) -> None:
        candidates: list[tuple[str, str, int, float, float, float]] = []
        for feature in self.features:
            groups = self._groups(feature)
            all_n = sum(g[2] for g in groups)
            all_sum = sum(g[3] for g in groups)
            all_sq = sum(g[4] for g in groups)
            for value, _, n, total, sq in groups:
                rest_n = all_n - n
                if n < self.min_count or rest_n < self.min_count:
                    continue
                z = self._z(n, total, sq, rest_n, all_sum - total, all_sq - sq)
                candidates.append((feature, value, n, total / n,
                                   (all_sum - total) / rest_n, z))
        tests = len(candidates)
        results = []
        for feature, value, n, error, rest_error, z in candidates:
            p = _norm_sf(z)
            gap = error - rest_error
            big = gap >= (self.min_gap if self._classification else self.min_gap * rest_error)
            results.append(SegmentTest(feature, value, n, error, rest_error, z, p,
                                       big and gap > 0 and p < self.alpha / tests))
        self.last_tests = results
        breached = {(t.feature, t.value) for t in results if t.degraded}
        new = sorted(breached - set(self._degraded))
        for key in list(self._degraded):
            if key in breached:
                self._degraded[key] = 0
            else:
                self._degraded[key] += 1
                if self._degraded[key] >= self.clear_after:
                    del self._degraded[key]
        for key in new:
            self._degraded[key] = 0
        if new:
            shown = tuple(t for t in results if (t.feature, t.value) in self._degraded)
            self._findings = [SegmentFinding(shown, tuple(f"{f}={v}" for f, v in new), tests)]

    def _z(self, n: int, total: float, sq: float, rest_n: int, rest_total: float,
           rest_sq: float) -> float:
        """The z statistic of "this segment's mean error exceeds the rest's"."""
        m1, m2 = total / n, rest_total / rest_n
        if self._classification:
            pooled = (total + rest_total) / (n + rest_n)
            var = pooled * (1 - pooled) * (1 / n + 1 / rest_n)
        else:
            v1 = max(sq / n - m1 * m1, 0.0) * n / max(n - 1, 1)
            v2 = max(rest_sq / rest_n - m2 * m2, 0.0) * rest_n / max(rest_n - 1, 1)
            var = v1 / n + v2 / rest_n
        if var <= 0:
            return 0.0 if m1 <= m2 else math.inf
        return (m1 - m2) / math.sqrt(var)
