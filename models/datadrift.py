"""Data drift: per-feature distribution shift of a live window against a reference.

:class:`DataDriftMonitor` watches a stream of feature mappings (a model's
inputs, or its outputs under one name) and compares, per feature, the last
``window`` values with a *reference*: either the first ``reference_size``
observations (a warm-up window of live traffic) or a profile supplied up
front, shaped like :func:`modelog.models.profile.profile_table` output
(histograms for numeric columns, top categories for strings, true/false
counts for booleans -- this is how a training dataset's profile becomes the
reference).

Tests, per feature:

* numeric (``int``/``float`` values): the population stability index
  (``psi``, :func:`modelog.models.tabular.psi`) over fixed reference bins
  (reference deciles, or the profile's histogram bins plus an underflow and
  an overflow bin) and the two-sample
  Kolmogorov-Smirnov statistic (``ks``: the largest distance between the two
  empirical CDFs, alarm when its asymptotic p-value is below ``ks_alpha``);
* categorical (``str``/``bool`` values): ``psi`` over the reference
  categories plus an "other" bucket, the two-sample chi-squared test of
  homogeneity (``chi2``, alarm when p < ``chi2_alpha``), ``new_category``
  (share of the window in categories never seen in the reference -- only
  when the reference lists every category) and ``vanished_category``
  (reference categories holding at least ``vanished_category_share`` of the
  reference that are absent from a full window).

The per-feature windows and tests are :mod:`modelog.models.feature_drift`'s
trackers (re-exported here); this module assembles them per feature, learns a
warm-up reference and runs the tests every ``check_every`` observations.

:class:`DataDriftMonitor` follows River's drift-detector protocol
(:class:`~modelog.models.processor.Detector`): ``update(x)`` per observation;
on an update that ran the tests, :attr:`~DataDriftMonitor.checks` holds every
test's outcome, ``findings`` the breached ones and ``drift_detected`` says
whether there is any. This module owns the data drift monitor; it imports
only :mod:`modelog.models`.

Examples
--------
>>> import random
>>> rng = random.Random(1)
>>> m = DataDriftMonitor(reference_size=500, window=300, check_every=100)
>>> for i in range(2_000):
...     shift = 1.5 if i >= 1_000 else 0.0
...     m.update({"x": rng.gauss(shift, 1.0), "plan": rng.choice("ab")})
>>> checks = {(c.feature, c.detector): c for c in m.checks}
>>> checks["x", "psi"].breached, checks["x", "ks"].breached, m.drift_detected
(True, True, True)
>>> checks["plan", "chi2"].breached, sorted({f.feature for f in m.findings})
(False, ['x'])
"""

from __future__ import annotations

import collections
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from mypy_extensions import mypyc_attr

from modelog.models.errors import InvalidParameterError
from modelog.models.feature_drift import (
    CategoricalDrift,
    DriftThresholds,
    FeatureCheck,
    NumericDrift,
    Tracker,
)

__all__ = ["CategoricalDrift", "DataDriftMonitor", "DriftThresholds",
           "FeatureCheck", "NumericDrift"]


def _is_numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _from_profile(name: str, column: Mapping[str, Any], *, window: int,
                  max_categories: int, source: str = "profile") -> Tracker | None:
    kind = column.get("kind")
    if kind == "numeric":
        hist = column.get("histogram")
        if not hist:
            return None
        return NumericDrift.from_histogram(name, hist["edges"], hist["counts"], window=window,
                                           source=source)
    if kind == "string":
        top = {t["value"]: float(t["count"]) for t in column.get("top") or []}
        if not top:
            return None
        return CategoricalDrift.from_counts(name, top, float(column.get("other_count") or 0),
                                            window=window, max_categories=max_categories,
                                            source=source)
    if kind == "boolean":
        ref: dict[Hashable, float] = {True: float(column.get("true") or 0),
                                      False: float(column.get("false") or 0)}
        if sum(ref.values()) <= 0:
            return None
        return CategoricalDrift(name, ref, window=window, max_categories=max_categories,
                                source=source)
    return None


def profile_columns(reference: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The per-column profiles of a reference: ``reference["columns"]`` or the mapping itself."""
    if not reference:
        return {}
    columns = reference.get("columns", reference)
    return columns if isinstance(columns, Mapping) else {}


# -- many features ---------------------------------------------------------------------------------
@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class DataDriftMonitor:
    """Per-feature data drift of a stream of mappings (River style: ``update``, then ask).

    Parameters
    ----------
    reference_size
        Observations whose values become the reference of every feature the
        profile does not cover (the warm-up window).
    window
        Length of each feature's sliding live window.
    bins
        Quantile bins of the PSI of a warm-up reference.
    check_every
        Run the tests on every this many observations (an attribute: may
        change at run time); the tests of a feature run once its window is full.
    thresholds
        :class:`DriftThresholds` (an attribute: replace it at run time).
    reference
        Optional profile (``profile_table`` output or its ``columns``); the
        features it covers are compared with it from the first observation.
    max_categories, max_features
        Bounds of the state: distinct categories per window, features tracked.
    min_reference
        A warm-up feature with fewer non-null values is not tracked.
    source
        What the ``reference`` profile is (its trackers' ``source``): ``"profile"``
        (configured) or ``"training"`` (the version's training dataset).

    Values whose type does not match a feature's reference (a string for a
    numeric feature) and nulls are not fed to the statistics: they are
    counted (``type_mismatches``) and are the skew monitor's business.
    Features first seen after the warm-up are counted in ``untracked``.
    """

    def __init__(self, *, reference_size: int = 1_000, window: int = 500, bins: int = 10,
                 check_every: int = 100, thresholds: DriftThresholds | None = None,
                 reference: Mapping[str, Any] | None = None, max_categories: int = 100,
                 max_features: int = 200, min_reference: int = 20,
                 source: str = "profile") -> None:
        for name, value in (("reference_size", reference_size), ("window", window),
                            ("bins", bins), ("check_every", check_every),
                            ("max_categories", max_categories),
                            ("max_features", max_features), ("min_reference", min_reference)):
            if value < 1:
                raise InvalidParameterError("DataDriftMonitor", name, value, "must be >= 1")
        self.reference_size = reference_size
        self.window = window
        self.bins = bins
        self.check_every = check_every
        self.thresholds = thresholds or DriftThresholds()
        self.max_categories = max_categories
        self.max_features = max_features
        self.min_reference = min_reference
        self.trackers: dict[str, Tracker] = {}
        for name, column in profile_columns(reference).items():
            if len(self.trackers) >= max_features or not isinstance(column, Mapping):
                continue
            tracker = _from_profile(str(name), column, window=window,
                                    max_categories=max_categories, source=source)
            if tracker is not None:
                self.trackers[str(name)] = tracker
        self._sample: dict[str, list[Any]] | None = {}
        self.n_observations = 0
        self._type_mismatches = 0
        self._untracked: set[str] = set()
        # observations after warm-up, not yet read (dicts: compiled, read without a method call)
        self._pending: list[dict[str, Any]] = []
        self._checks: Sequence[FeatureCheck] = ()

    @property
    def warming_up(self) -> bool:
        """Whether the warm-up reference is still being collected."""
        return self._sample is not None

    @property
    def checks(self) -> Sequence[FeatureCheck]:
        """Every test the last :meth:`update` ran (empty when it ran none), sorted by feature."""
        return self._checks

    @property
    def findings(self) -> Sequence[FeatureCheck]:
        """The breached tests of the last :meth:`update`."""
        return [c for c in self._checks if c.breached]

    @property
    def drift_detected(self) -> bool:
        """Whether a test of the last :meth:`update` was breached."""
        return any(c.breached for c in self._checks)

    @property
    def type_mismatches(self) -> int:
        """Values whose type did not match their feature's reference (kept out of the tests)."""
        self._drain()
        return self._type_mismatches

    @property
    def untracked(self) -> set[str]:
        """Features first seen after the warm-up (not tracked)."""
        self._drain()
        return self._untracked

    def update(self, x: Mapping[str, Any]) -> None:
        """Take one observation (a feature mapping); every ``check_every``-th runs the tests.

        After the warm-up, observations are buffered and fed to the trackers
        feature by feature, in order, when the tests run (or a counter is read):
        the same windows as one observation at a time, at a fraction of the cost.
        """
        self._checks = ()
        self.n_observations += 1
        sample = self._sample
        if sample is None:
            self._pending.append(x if type(x) is dict else dict(x))
            if self.n_observations % self.check_every == 0:
                self._drain()
                self._checks = self._test()
            return
        self._take(x, sample)
        if self.n_observations % self.check_every == 0:
            self._checks = self._test()

    def _drain(self) -> None:
        """Feed the buffered observations to the trackers, one feature at a time."""
        batch = self._pending
        if not batch:
            return
        self._pending = []
        trackers = self.trackers
        for name in set().union(*batch):
            tracker = trackers.get(name)
            if tracker is None:
                self._untracked.add(name)
                continue
            column = [x.get(name) for x in batch]
            present = len(column) - column.count(None)
            good: list[Any]
            if type(tracker) is NumericDrift:
                good = [v for v in column if type(v) is float or type(v) is int]
            else:
                good = [v for v in column if type(v) is str or type(v) is bool]
            self._type_mismatches += present - len(good)
            if good:
                tracker.extend(good)

    def _take(self, x: Mapping[str, Any], sample: dict[str, list[Any]]) -> None:
        """One warm-up observation: into the reference sample, or its tracker if known."""
        trackers = self.trackers
        for name, value in x.items():
            tracker = trackers.get(name)
            if tracker is None:
                if value is not None:
                    values = sample.get(name)
                    if values is None:
                        if len(sample) + len(trackers) >= self.max_features:
                            continue
                        values = sample[name] = []
                    values.append(value)
                continue
            if value is None:
                continue
            cls = type(value)
            if type(tracker) is NumericDrift:
                if cls is float or cls is int:
                    tracker.update(value)
                    continue
            elif cls is str or cls is bool:
                tracker.update(value)
                continue
            self._type_mismatches += 1
        if self.n_observations >= self.reference_size:
            self._build(sample)
            self._sample = None

    def _build(self, sample: dict[str, list[Any]]) -> None:
        for name, values in sample.items():
            numeric = [float(v) for v in values if _is_numeric(v)]
            other = [v for v in values if isinstance(v, str | bool)]
            if len(numeric) >= len(other):
                if len(numeric) >= self.min_reference:
                    self.trackers[name] = NumericDrift.from_sample(
                        name, numeric, window=self.window, bins=self.bins)
            elif len(other) >= self.min_reference:
                self.trackers[name] = CategoricalDrift.from_counts(
                    name, dict(collections.Counter(other)), window=self.window,
                    max_categories=self.max_categories)

    def _test(self) -> list[FeatureCheck]:
        """The tests of every feature whose window is full (sorted by feature)."""
        out: list[FeatureCheck] = []
        for name in sorted(self.trackers):
            tracker = self.trackers.get(name)
            if tracker is not None and tracker.size >= self.window:
                out.extend(tracker.check(self.thresholds))
        return out
