"""Per-feature drift trackers: a sliding window of one feature against its reference.

:class:`NumericDrift` (PSI over fixed bins and the two-sample KS distance) and
:class:`CategoricalDrift` (PSI, chi-squared homogeneity, new and vanished
categories) keep the live window of one feature incrementally and test it on
demand; :class:`DriftThresholds` says when a test counts as drift and
:class:`FeatureCheck` is one test's outcome.
:class:`~modelog.models.datadrift.DataDriftMonitor` holds one tracker per
feature. This module imports only numpy, scipy and :mod:`modelog.models`.

Incremental state. Each numeric value is placed, by one ``searchsorted`` per
batch of buffered values, into a bucket of the sorted distinct reference
values (``2k`` strictly between two reference values, ``2k + 1`` equal to
one); a sliding histogram over those buckets is kept. A check folds the
buckets into the PSI bins and the CDFs with a few vectorised numpy operations.
Approximation: with a warm-up (sample) reference the KS statistic is *exact*
(the empirical CDF difference only jumps at sample points, and both one-sided
limits at every reference point are kept); with a histogram reference the
reference CDF is known only at the bin edges, so D is evaluated there -- a
lower bound of the true D, off by at most the largest bin's mass.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from mypy_extensions import mypyc_attr

from modelog.models.errors import InvalidParameterError
from modelog.models.pickled import FrozenState
from modelog.models.tabular import (
    chi2_critical_value,
    chi2_homogeneity,
    ks_critical_value,
    ks_p_value,
)
from modelog.models.tabular import psi as psi_from_counts

__all__ = ["OTHER", "CategoricalDrift", "Detector", "DriftThresholds", "FeatureCheck",
           "NumericDrift", "Tracker"]

OTHER = "__other__"
"""The bucket of categories beyond ``max_categories`` (and of a profile's untold tail)."""

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


# -- thresholds and check results ----------------------------------------------------------------
@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True, kw_only=True)
class DriftThresholds(FrozenState):
    """When a test counts as drift (may be replaced at run time).

    Parameters
    ----------
    psi
        PSI above this is drift (0.2: the usual "significant shift") when chance does not
        explain it: the chi-squared test on the same bins must also reject at
        ``chi2_alpha``. Between two samples of one distribution PSI grows with the
        number of bins (about ``(bins - 1) (1/n + 1/m)``): a long-tailed category or a
        small reference passes 0.2 on a stable stream.
    ks_alpha, chi2_alpha
        Significance levels of the KS and chi-squared tests. The KS default
        (1e-5, critical D ~0.13 for 1,000 reference and 500 live values) is
        low because the test repeats every few predictions on overlapping
        windows of every feature: at 1e-3 a 10-feature stationary stream
        raised false alarms; a +1.5 sigma shift still gives D ~0.5. The
        chi-squared default is 1e-5 for the same reason (at 1e-3 a stable
        four-category feature alarmed once in 46,000 predictions of the
        quality suite); a category whose share moves from 30 % to 60 % in a
        500-prediction window still gives p ~1e-40.
    new_category_share
        Share of the window in unseen categories that is drift.
    vanished_category_share
        Reference share from which a category absent from the window is drift.
    """

    psi: float = 0.2
    ks_alpha: float = 1e-5
    chi2_alpha: float = 1e-5
    new_category_share: float = 0.01
    vanished_category_share: float = 0.05

    def __post_init__(self) -> None:
        for name in ("ks_alpha", "chi2_alpha", "new_category_share", "vanished_category_share"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise InvalidParameterError("DriftThresholds", name, value,
                                            "must be strictly between 0 and 1")
        if not self.psi > 0:
            raise InvalidParameterError("DriftThresholds", "psi", self.psi, "must be > 0")


Detector = Literal["psi", "ks", "chi2", "new_category", "vanished_category"]


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class FeatureCheck(FrozenState):
    """The outcome of one test of one feature at one check.

    ``statistic`` is compared with ``threshold`` (``breached`` when above);
    for ``ks`` the statistic is the distance D and the threshold its critical
    value at ``ks_alpha``; for ``chi2`` both are the chi-squared statistic and
    its critical value, ``p_value`` carrying the test's p-value.
    """

    feature: str
    detector: Detector
    statistic: float
    threshold: float
    breached: bool
    p_value: float | None = None
    detail: str = ""


# -- numeric -----------------------------------------------------------------------------------
@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class NumericDrift:
    """Sliding-window PSI and KS of one numeric feature against a fixed reference.

    Build with :meth:`from_sample` (a reference sample) or :meth:`from_histogram`
    (a profile histogram), then :meth:`update` per value and :meth:`check`.

    Examples
    --------
    >>> d = NumericDrift.from_sample("x", [float(i % 100) for i in range(1_000)], window=100)
    >>> for i in range(100):
    ...     d.update(float(i))
    >>> [round(c.statistic, 3) for c in d.check(DriftThresholds())]
    [0.0, 0.0]
    """

    kind = "numeric"

    def __init__(self, feature: str, points: Sequence[float], cdf: Sequence[float],
                 psi_bins: Sequence[int], psi_reference: Sequence[float], n_reference: float,
                 *, window: int, exact: bool, source: str) -> None:
        self.feature = feature
        self._points: FloatArray = np.asarray(points, dtype=float)  # sorted, distinct
        self._n_points = int(self._points.size)
        self._cdf: FloatArray = np.asarray(cdf, dtype=float)
        self._psi_bins = np.asarray(psi_bins, dtype=np.intp)
        self._psi_reference: FloatArray = np.asarray(psi_reference, dtype=float)
        self._n_psi = int(self._psi_reference.size)
        self.n_reference = float(n_reference)
        self.window = window
        self.exact = exact
        self.source = source
        self._counts = np.zeros(2 * self._n_points + 1, dtype=np.int64)
        #: The window's buckets, oldest first (at most ``window``).
        self._buckets: np.ndarray = np.zeros(0, dtype=np.intp)
        self._pending: list[float] = []  # values not yet in the window (see update)
        self._reference_list = self._psi_reference.tolist()
        self._psi_ends: np.ndarray | None = None  # see _window_psi_counts

    @classmethod
    def from_sample(cls, feature: str, values: Sequence[float], *, window: int = 500,
                    bins: int = 10) -> NumericDrift:
        """A reference from raw values: PSI on their ``bins`` quantile bins, exact KS."""
        arr = np.sort(np.asarray(values, dtype=float))
        points, counts = np.unique(arr, return_counts=True)
        cdf = np.cumsum(counts) / arr.size
        qs = np.quantile(arr, np.arange(1, bins) / bins, method="inverted_cdf")
        edges = np.unique(qs)  # interior PSI edges, all reference values
        # bucket 2k: between points k-1 and k; 2k+1: equal to point k
        below = np.searchsorted(edges, points, side="right")  # PSI bin of "== point k"
        psi_bins = np.empty(2 * points.size + 1, dtype=np.intp)
        psi_bins[1::2] = below
        psi_bins[0] = 0
        psi_bins[2::2] = below  # strictly above point k (and below k+1): same bin as point k
        reference = np.bincount(np.searchsorted(edges, arr, side="right"),
                                minlength=edges.size + 1).astype(float)
        return cls(feature, points.tolist(), cdf.tolist(), psi_bins.tolist(), reference.tolist(),
                   arr.size, window=window, exact=True, source="warm-up")

    @classmethod
    def from_histogram(cls, feature: str, edges: Sequence[float], counts: Sequence[float], *,
                       window: int = 500, source: str = "profile") -> NumericDrift:
        """A reference from a histogram (``profile_table``'s ``edges``/``counts``).

        PSI bins: an underflow bin, the histogram's bins, an overflow bin (the
        last bin includes its upper edge, as numpy's histogram).
        """
        e = [float(x) for x in edges]
        c = np.asarray(counts, dtype=float)
        if len(e) != c.size + 1 or c.size == 0 or any(b <= a for a, b in itertools.pairwise(e)):
            raise InvalidParameterError(
                "NumericDrift", f"reference.{feature}.histogram", {"edges": e, "counts": list(c)},
                "needs len(edges) == len(counts) + 1 >= 2 and strictly increasing edges")
        if np.any(c < 0) or c.sum() <= 0:
            raise InvalidParameterError("NumericDrift", f"reference.{feature}.histogram.counts",
                                        list(c), "must be non-negative with a positive sum")
        n_bins = c.size
        cdf = np.concatenate([[0.0], np.cumsum(c) / c.sum()])  # at each edge
        psi_bins = np.empty(2 * len(e) + 1, dtype=np.intp)
        psi_bins[0] = 0  # below the first edge
        for k in range(len(e)):
            psi_bins[2 * k + 1] = min(k + 1, n_bins)  # equal to edge k: bin k (last bin closed)
            psi_bins[2 * k + 2] = k + 1 if k < n_bins else n_bins + 1
        reference = np.concatenate([[0.0], c, [0.0]])
        return cls(feature, e, cdf.tolist(), psi_bins.tolist(), reference.tolist(), c.sum(),
                   window=window, exact=False, source=source)

    @property
    def size(self) -> int:
        """Values in the live window."""
        return min(self.window, self._buckets.size + len(self._pending))

    def update(self, value: float) -> None:
        """Slide ``value`` into the window.

        Values are buffered and slid in together, in order, when the window is
        next read (:meth:`statistics`) or the buffer reaches a window's length:
        the same window as one at a time, at a fraction of the cost.
        """
        pending = self._pending
        pending.append(value)
        if len(pending) >= self.window:
            self._absorb()

    def extend(self, values: Sequence[float]) -> None:
        """Slide ``values`` into the window, in order (as :meth:`update` one by one)."""
        self._pending.extend(values)
        if len(self._pending) >= self.window:
            self._absorb()

    def _absorb(self) -> None:
        """Slide the buffered values into the window (bucket of each: one searchsorted)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        values = np.asarray(pending, dtype=float)
        points = self._points
        n_points = self._n_points
        i = np.searchsorted(points, values, side="left")
        # bucket 2k: between points k-1 and k; 2k+1: equal to point k
        b = 2 * i + (points.take(np.minimum(i, n_points - 1)) == values)
        nan = np.isnan(values)
        if nan.any():
            b[nan] = 0  # NaN compares below everything, as bisect puts it
        window, n = self.window, self._counts.size
        if b.size >= window:
            b = b[-window:]
            self._buckets = b
            self._counts = np.bincount(b, minlength=n)
            return
        held = self._buckets
        k = held.size + b.size - window
        if k > 0:
            self._counts -= np.bincount(held[:k], minlength=n)
            held = held[k:]
        self._buckets = np.concatenate((held, b))
        self._counts += np.bincount(b, minlength=n)

    def statistics(self) -> tuple[float, float]:
        """``(psi, ks_distance)`` of the current window (zeros when it is empty)."""
        self._absorb()
        m = self._buckets.size
        if m == 0:
            return 0.0, 0.0
        cumulative = np.cumsum(self._counts)
        psi = psi_from_counts(self._reference_list, self._window_psi_counts(cumulative))
        s = cumulative / m
        if self.exact:
            # F_window vs F_ref at each point k (s[2k+1]) and just below the next (s[2k+2]),
            # and below the first point (s[0])
            n = self._n_points
            d = float(np.abs(self._cdf[:, None] - s[1:].reshape(n, 2)).max()) if n else 0.0
            return psi, max(d, float(s[0]))
        # A histogram's bins are [e_k, e_k+1) (the last one closed): its CDF at edge k is the
        # mass *below* e_k, so the window's is too -- values on an edge (integers, say) count
        # above it, as in the reference -- and at the last edge, the mass up to it.
        n = self._n_points
        below = np.append(s[0:2 * n - 2:2], s[2 * n - 1])  # s[2k]: the mass below edge k
        return psi, float(np.abs(self._cdf - below).max())

    def _window_psi_counts(self, cumulative: np.ndarray) -> list[float]:
        """The window's count per PSI bin, from the cumulative bucket counts.

        A bucket's PSI bin never decreases with the bucket (both follow the values)
        and the first bucket is in bin 0, so a bin's count is the cumulative count
        at its last bucket less the one before: one read of a few cumulative counts
        instead of a weighted ``bincount`` of every bucket.
        """
        try:
            ends = self._psi_ends
        except AttributeError:  # restored from a snapshot taken before it existed
            ends = None
        if ends is None:
            ends = self._psi_ends = np.searchsorted(
                self._psi_bins, np.arange(self._n_psi), side="right") - 1
        out: list[float] = []
        before = 0
        for at in cumulative.take(ends).tolist():
            out.append(float(at - before))
            before = at
        return out

    def check(self, t: DriftThresholds) -> list[FeatureCheck]:
        """PSI and KS checks of the current window."""
        psi, d = self.statistics()
        m = self._buckets.size
        critical = ks_critical_value(t.ks_alpha, self.n_reference, m) if m else math.inf
        p = ks_p_value(d, self.n_reference, m) if m else 1.0
        p_psi = 1.0
        if psi > t.psi:  # significant too? (see DriftThresholds)
            actual = self._window_psi_counts(np.cumsum(self._counts))
            p_psi = chi2_homogeneity(self._reference_list, actual)[1]
        return [
            FeatureCheck(self.feature, "psi", psi, t.psi, psi > t.psi and p_psi < t.chi2_alpha,
                         p_psi),
            FeatureCheck(self.feature, "ks", d, critical, d > critical, p),
        ]


# -- categorical ---------------------------------------------------------------------------------
@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class CategoricalDrift:
    """Sliding-window PSI, chi-squared, new and vanished categories of one feature.

    Parameters
    ----------
    feature
        Its name.
    reference
        Category -> count in the reference.
    other
        Reference mass of categories not listed (a profile's tail); when zero
        the reference is complete and unseen categories are *new*.
    window, max_categories
        Window length; most distinct window categories tracked (the rest
        count under ``"__other__"``).

    Examples
    --------
    >>> d = CategoricalDrift("plan", {"a": 50, "b": 50}, window=100)
    >>> for i in range(100):
    ...     d.update("a" if i % 2 else "c")
    >>> {c.detector: c.breached for c in d.check(DriftThresholds())}
    {'psi': True, 'chi2': True, 'new_category': True, 'vanished_category': True}
    """

    kind = "categorical"

    def __init__(self, feature: str, reference: Mapping[Hashable, float], other: float = 0.0, *,
                 window: int = 500, max_categories: int = 100, source: str = "warm-up") -> None:
        self.feature = feature
        self.reference = dict(reference)
        self.other = float(other)
        self.window = window
        self.max_categories = max_categories
        self.source = source
        self._categories = list(self.reference)
        self._ref_counts = np.asarray([*self.reference.values(), self.other], dtype=float)
        self.n_reference = float(self._ref_counts.sum())
        self._ref_list: list[float] = self._ref_counts.tolist()
        self._counts: dict[Hashable, int] = {}
        self._values: collections.deque[Hashable] = collections.deque(maxlen=window)

    @classmethod
    def from_counts(cls, feature: str, counts: Mapping[Hashable, float], other: float = 0.0, *,
                    window: int = 500, max_categories: int = 100,
                    source: str = "warm-up") -> CategoricalDrift:
        """A tracker whose reference is a *sample*'s category counts (a warm-up, a profile).

        A sample that saw some categories only once has not seen every category
        the feature takes: an identifier, a long tail. Compared as complete,
        every later value outside it would count as new and PSI would alarm on a
        stable stream. So, when ``other`` is zero and categories were seen once,
        those are pooled with the unseen ones in the ``"__other__"`` bucket,
        whose reference mass is the Good-Turing estimate of the share a new
        sample puts outside the categories seen twice or more: ``n1 + 2 n2``
        (``n1`` categories seen once, ``n2`` seen twice; the outlier monitor's
        unseen-category rate is the same idea, ``n1 / n``). The reference is then
        incomplete, so there is no ``new_category`` test.

        Examples
        --------
        >>> ids = CategoricalDrift.from_counts("user", {f"u{i}": 1 for i in range(1000)})
        >>> ids.reference, ids.other
        ({}, 1000.0)
        >>> plan = CategoricalDrift.from_counts("plan", {"a": 5, "b": 3, "c": 2, "d": 1})
        >>> plan.reference, plan.other
        ({'a': 5, 'b': 3, 'c': 2}, 3.0)
        >>> CategoricalDrift.from_counts("plan", {"a": 5, "b": 2}).other  # complete
        0.0
        """
        if other > 0 or not any(n == 1 for n in counts.values()):
            return cls(feature, counts, other, window=window, max_categories=max_categories,
                       source=source)
        once = sum(1 for n in counts.values() if n == 1)
        twice = sum(1 for n in counts.values() if n == 2)
        listed = {c: n for c, n in counts.items() if n != 1}
        return cls(feature, listed, float(once + 2 * twice), window=window,
                   max_categories=max_categories, source=source)

    @property
    def size(self) -> int:
        """Values in the live window."""
        return len(self._values)

    def update(self, value: Hashable) -> None:
        """Slide ``value`` into the window (O(1))."""
        counts = self._counts
        if value not in counts and value not in self.reference \
                and len(counts) >= self.max_categories:
            value = OTHER
        values = self._values
        if len(values) == self.window:
            old = values[0]
            left = counts[old] - 1
            if left:
                counts[old] = left
            else:
                del counts[old]
        values.append(value)
        counts[value] = counts.get(value, 0) + 1

    def extend(self, values: Sequence[Hashable]) -> None:
        """Slide ``values`` into the window, in order (as :meth:`update` one by one).

        When the window's and the batch's categories fit in ``max_categories``
        none can be folded into ``"__other__"``, and the batch is counted at once.
        """
        counts = self._counts
        batch = collections.Counter(values)
        if len(counts.keys() | batch.keys()) > self.max_categories:
            for value in values:  # a category may overflow: the order matters
                self.update(value)
            return
        window = self._values
        if len(values) >= self.window:
            kept = list(values)[-self.window:]
            window.clear()
            window.extend(kept)
            self._counts = dict(collections.Counter(kept))
            return
        k = len(window) + len(values) - self.window
        if k > 0:
            for old, n in collections.Counter(itertools.islice(window, k)).items():
                left = counts[old] - n
                if left:
                    counts[old] = left
                else:
                    del counts[old]
        window.extend(values)
        for value, n in batch.items():
            counts[value] = counts.get(value, 0) + n

    def check(self, t: DriftThresholds) -> list[FeatureCheck]:
        """PSI, chi-squared, new- and vanished-category checks of the current window."""
        m = len(self._values)
        if m == 0:
            return []
        counts = self._counts
        known = [float(counts.get(c, 0)) for c in self._categories]
        unseen = {c: n for c, n in counts.items() if c not in self.reference}
        actual = [*known, float(sum(unseen.values()))]
        reference = self._ref_list
        psi = psi_from_counts(reference, actual)
        if self.other > 0:  # unseen categories may be the reference's untold tail
            stat, p, dof = chi2_homogeneity(reference, actual)
        else:  # each unseen category is its own column (reference count 0)
            stat, p, dof = chi2_homogeneity([*reference, *[0.0] * len(unseen)],
                                            [*known, 0.0, *map(float, unseen.values())])
        critical = chi2_critical_value(dof, t.chi2_alpha) if dof else math.inf
        out = [
            FeatureCheck(self.feature, "psi", psi, t.psi, psi > t.psi and p < t.chi2_alpha, p),
            FeatureCheck(self.feature, "chi2", stat, critical, p < t.chi2_alpha, p,
                         f"{dof} degrees of freedom"),
        ]
        if self.other == 0:
            share = sum(unseen.values()) / m
            names = sorted(map(str, unseen))[:10]
            out.append(FeatureCheck(self.feature, "new_category", share, t.new_category_share,
                                    share >= t.new_category_share and bool(unseen),
                                    detail=f"new: {', '.join(names)}" if names else ""))
        if m == self.window and self.n_reference > 0:
            gone = [c for c, n in self.reference.items()
                    if n / self.n_reference >= t.vanished_category_share and c not in counts]
            mass = sum(self.reference[c] for c in gone) / self.n_reference
            out.append(FeatureCheck(self.feature, "vanished_category", mass,
                                    t.vanished_category_share, bool(gone),
                                    detail="vanished: " + ", ".join(sorted(map(str, gone))[:10])
                                    if gone else ""))
        return out


Tracker = NumericDrift | CategoricalDrift
"""What tracks one feature's window."""
