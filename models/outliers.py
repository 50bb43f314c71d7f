"""Point anomalies: a score for every prediction against the reference, gross outliers, their rate.

:class:`OutlierMonitor` scores each prediction's inputs against a reference --
the training dataset's profile (``profile_table`` columns) when the version has
one, else its first ``reference_size`` predictions -- and decides:

* the **score** of a prediction: the largest robust z of its numeric features
  (``|x - median| / scale``, scale the reference's IQR / 1.349, else its
  standard deviation, else a quarter of its range, else 1), an unseen category
  scoring :data:`UNSEEN_SCORE`;
* its **offending features**: numbers outside the reference's ``[min, max]``
  and categories the reference never saw (only when the reference lists every
  category), counted per feature (``out_of_range``, ``unseen``);
* whether it is a **gross outlier**: a number beyond the reference range by
  more than ``margin`` robust scales, or an unseen category;
* an **alert** when gross outliers come at a rate a stable stream would not
  produce: the count among the last ``window`` scored predictions against
  the rate expected under the reference (binomial tail ``P(X >= k) < alpha``,
  at least ``min_count`` outliers, then a ``cooldown``).

The expected rate of a feature (:func:`tail_rate`) extrapolates the
reference's own tail: a future value exceeds the reference maximum of ``n``
values with probability ``1 / (n + 1)``; beyond it, the tail decays
exponentially at the pace it did from the 99th percentile to the maximum.
Heavy-tailed features therefore expect more outliers than light-tailed
ones, and a stable stream stays silent. Unseen categories: the Good-Turing
missing mass (categories seen once / ``n``). A floor ``base_rate`` keeps the
estimate from claiming certainty.

Pure: imports numpy, scipy and :mod:`modelog.models` only.

Examples
--------
>>> ref = {"columns": {"x": {"kind": "numeric", "count": 10_000, "min": -4.0, "max": 4.0,
...        "std": 1.0, "quantiles": {"p01": -2.33, "p25": -0.6745, "p50": 0.0,
...                                  "p75": 0.6745, "p99": 2.33}}}}
>>> m = OutlierMonitor(OutlierConfig(), reference=ref)
>>> m.score({"x": 0.5})
Scored(score=0.5, offending=(), outlier=False)
>>> m.score({"x": 40.0})
Scored(score=40.0, offending=('x',), outlier=True)
>>> m.expected_rate < 1e-5
True
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, final

import numpy as np
from mypy_extensions import mypyc_attr
from scipy import special

from modelog.models.errors import InvalidParameterError
from modelog.models.pickled import FrozenState

__all__ = ["UNSEEN_SCORE", "CategorySummary", "NumericSummary", "OutlierConfig",
           "OutlierDecision", "OutlierMonitor", "Scored", "summaries_from_profile",
           "summaries_from_sample", "tail_rate"]

UNSEEN_SCORE = 10.0
"""The score of an unseen category (as a number ten robust scales from the median)."""


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True, kw_only=True)
class OutlierConfig(FrozenState):
    """Point anomalies (flat keys ``outliers`` for ``enabled``, ``outlier_<name>``).

    Parameters
    ----------
    enabled
        Score predictions at all.
    margin
        Robust scales beyond the reference range that make a gross outlier.
    window, alpha, min_count, cooldown
        The rate test: gross outliers among the last ``window`` scored
        predictions, binomial tail below ``alpha``, at least ``min_count`` of
        them; no new alert for ``cooldown`` predictions after one.
    base_rate
        Floor of each feature's expected outlier rate.
    batch, batch_seconds
        A ``PredictionsScored`` event carries up to ``batch`` scored
        predictions, or those of ``batch_seconds`` of event time.
    """

    enabled: bool = True
    margin: float = 3.0
    window: int = 1_000
    alpha: float = 1e-4
    min_count: int = 3
    cooldown: int = 1_000
    base_rate: float = 1e-6
    batch: int = 500
    batch_seconds: float = 1.0

    def __post_init__(self) -> None:
        for name in ("window", "min_count", "cooldown", "batch"):
            if getattr(self, name) < 1:
                raise InvalidParameterError("OutlierConfig", name, getattr(self, name),
                                            "must be >= 1")
        for name in ("alpha", "base_rate"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise InvalidParameterError("OutlierConfig", name, getattr(self, name),
                                            "must be strictly between 0 and 1")
        for name in ("margin", "batch_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidParameterError("OutlierConfig", name, value, "must be > 0")


def tail_rate(n: float, extreme: float, quantile: float, fence: float, scale: float) -> float:
    """The expected rate of values beyond ``fence``, past a reference ``extreme`` of ``n`` values.

    ``quantile`` is the reference's 99th percentile (1st for the lower tail):
    the tail is taken to decay exponentially beyond the extreme at the pace it
    did from that quantile to the extreme (``scale`` when that pace is unknown).

    Examples
    --------
    >>> f"{tail_rate(999, 6.9, 4.6, 9.3, 0.8):.1e}"  # exponential(1) data: e^-9.3 = 9.1e-05
    '9.0e-05'
    """
    beyond = 1.0 / (n + 1.0)
    gap = abs(extreme - quantile)
    ratio = 0.01 * (n + 1.0)
    beta = gap / math.log(ratio) if ratio > 1.0 and gap > 0 else scale
    return beyond * math.exp(-abs(fence - extreme) / max(beta, 1e-12))


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class NumericSummary(FrozenState):
    """A numeric feature's reference: range, median, robust scale, fences, tail rates."""

    low: float
    high: float
    median: float
    scale: float
    fence_low: float
    fence_high: float
    rate: float


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class CategorySummary(FrozenState):
    """A categorical feature's reference: its categories, whether complete, the unseen rate."""

    categories: frozenset[str]
    complete: bool
    rate: float


Summary = NumericSummary | CategorySummary


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _numeric(n: float, low: float, high: float, q: Mapping[str, float | None], std: float | None,
             cfg: OutlierConfig) -> NumericSummary:
    p25, p50, p75 = q.get("p25"), q.get("p50"), q.get("p75")
    median = p50 if p50 is not None else (low + high) / 2
    scale = 0.0
    if p25 is not None and p75 is not None:
        scale = (p75 - p25) / 1.349
    if scale <= 0 and std:
        scale = std
    if scale <= 0:
        scale = (high - low) / 4 or 1.0
    fence_low, fence_high = low - cfg.margin * scale, high + cfg.margin * scale
    p01, p99 = q.get("p01"), q.get("p99")
    rate = (tail_rate(n, high, high if p99 is None else p99, fence_high, scale)
            + tail_rate(n, low, low if p01 is None else p01, fence_low, scale))
    return NumericSummary(low, high, median, scale, fence_low, fence_high,
                          max(rate, cfg.base_rate))


def _categories(counts: Mapping[str, float], other: float, cfg: OutlierConfig) -> CategorySummary:
    n = sum(counts.values()) + other
    singletons = sum(1 for c in counts.values() if c == 1)
    rate = max((singletons + 1) / (n + 1), cfg.base_rate)
    return CategorySummary(frozenset(counts), other == 0, rate)


def summaries_from_profile(columns: Mapping[str, Any], cfg: OutlierConfig) -> dict[str, Summary]:
    """Per-feature summaries of ``profile_table`` columns (unusable columns are skipped)."""
    out: dict[str, Summary] = {}
    for name, col in columns.items():
        if not isinstance(col, Mapping):
            continue
        kind = col.get("kind")
        if kind == "numeric":
            low, high, n = _finite(col.get("min")), _finite(col.get("max")), _finite(
                col.get("count"))
            quantiles = col.get("quantiles")
            q = {k: _finite(v) for k, v in quantiles.items()} if isinstance(
                quantiles, Mapping) else {}
            if low is None or high is None or n is None or n < 1 or high < low:
                continue
            out[str(name)] = _numeric(n, low, high, q, _finite(col.get("std")), cfg)
        elif kind == "string":
            top = col.get("top")
            if not isinstance(top, list):
                continue
            counts = {str(t.get("value")): float(t["count"]) for t in top
                      if isinstance(t, Mapping) and _finite(t.get("count")) is not None}
            other = _finite(col.get("other_count")) or 0.0
            if counts:
                out[str(name)] = _categories(counts, other, cfg)
    return out


def summaries_from_sample(sample: Mapping[str, Sequence[Any]], cfg: OutlierConfig,
                          min_values: int = 20) -> dict[str, Summary]:
    """Per-feature summaries of raw reference values (the warm-up window)."""
    out: dict[str, Summary] = {}
    for name, values in sample.items():
        numbers = [float(v) for v in values if _finite(v) is not None]
        strings = [v for v in values if isinstance(v, str)]
        if len(numbers) >= max(len(strings), min_values):
            arr = np.asarray(numbers)
            qs = np.quantile(arr, [0.01, 0.25, 0.5, 0.75, 0.99])
            q = dict(zip(("p01", "p25", "p50", "p75", "p99"), map(float, qs), strict=True))
            out[name] = _numeric(arr.size, float(arr.min()), float(arr.max()), q,
                                 float(arr.std()), cfg)
        elif len(strings) >= min_values:
            out[name] = _categories(collections.Counter(strings), 0.0, cfg)
    return out


def round4(x: float) -> float:
    """``round(x, 4)``, the same float, without formatting ``x`` as decimal digits.

    ``round(x, 4)`` is the double nearest to ``n / 10_000``, ``n`` the integer
    nearest to ``x * 10_000`` (exactly). Below a million that product is off by
    less than 10**-5 of a unit, so when its fraction is not that close to one half
    ``n`` is read off the product and the division is exact to the same double;
    otherwise (and for larger, negative or non-finite values) ``round`` decides.

    >>> [round4(x) for x in (0.0, 1.23456, 0.1 + 0.2, 1e300)]
    [0.0, 1.2346, 0.3, 1e+300]
    >>> round4(2.00005), round(2.00005, 4)  # just below the tie, as stored in binary
    (2.0, 2.0)
    """
    if 0.0 <= x < 1e6:
        y = x * 10_000.0
        whole = math.floor(y)
        fraction = y - whole
        if fraction < 0.49999:
            return whole / 10_000.0
        if fraction > 0.50001:
            return (whole + 1) / 10_000.0
    return round(x, 4)


@final
class Scored:
    """The score of one prediction, its offending features and whether it is a gross outlier.

    One is made per prediction: a plain class with its own ``__init__``, which
    compiled (see ``setup.py``) runs no Python code, as a dataclass's generated
    one would.
    """

    def __init__(self, score: float, offending: tuple[str, ...], outlier: bool) -> None:
        self.score = score
        self.offending = offending
        self.outlier = outlier

    def __repr__(self) -> str:
        return (f"Scored(score={self.score!r}, offending={self.offending!r}, "
                f"outlier={self.outlier!r})")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Scored) and self.score == other.score
                and self.offending == other.offending and self.outlier == other.outlier)


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class OutlierDecision(FrozenState):
    """An outlier-rate alert: ``count`` gross outliers in ``window_size`` predictions."""

    count: int
    window_size: int
    expected: float
    p_value: float
    alpha: float
    keys: tuple[str, ...]
    features: tuple[tuple[str, int], ...]

    @property
    def statistic(self) -> float:
        """The observed outlier rate."""
        return self.count / self.window_size


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class OutlierMonitor:
    """Scores predictions against a reference and tests the rate of gross outliers.

    Parameters
    ----------
    config
        :class:`OutlierConfig`.
    reference
        A ``profile_table`` profile (or its ``columns``); ``None`` or unusable:
        the first ``reference_size`` predictions become the reference.
    reference_size, max_features
        The warm-up length; most features tracked.
    """

    def __init__(self, config: OutlierConfig, reference: Mapping[str, Any] | None = None, *,
                 reference_size: int = 1_000, max_features: int = 200,
                 max_keys: int = 20) -> None:
        self.config = config
        self.reference_size = reference_size
        self.max_features = max_features
        self.max_keys = max_keys
        columns = reference.get("columns", reference) if reference else None
        summaries = summaries_from_profile(columns, config) if isinstance(
            columns, Mapping) else {}
        self._sample: dict[str, list[Any]] | None = None if summaries else {}
        self.summaries: dict[str, Summary] = {}
        self._tables()
        self.expected_rate = 0.0
        self.n_seen = 0
        self.n_scored = 0
        self.n_outliers = 0
        self.n_alerts = 0
        self.out_of_range: collections.Counter[str] = collections.Counter()
        self.unseen: collections.Counter[str] = collections.Counter()
        self._flags: collections.deque[bool] = collections.deque(maxlen=config.window)
        self._in_window = 0
        self._keys: collections.deque[tuple[str, tuple[str, ...]]] = collections.deque(
            maxlen=max_keys)
        self._cooldown = 0
        self.decision: OutlierDecision | None = None
        if summaries:
            self._use(summaries)

    def _use(self, summaries: dict[str, Summary]) -> None:
        self.summaries = dict(list(summaries.items())[:self.max_features])
        self._tables()
        survive = 1.0
        for s in self.summaries.values():
            survive *= 1.0 - s.rate
        self.expected_rate = min(1.0 - survive, 0.999)

    def _tables(self) -> None:
        """What :meth:`score` reads: numeric bounds, and the categories of complete ones."""
        self._numeric = {name: (s.median, s.scale, s.low, s.high, s.fence_low, s.fence_high)
                         for name, s in self.summaries.items() if isinstance(s, NumericSummary)}
        self._categorical = {name: s.categories for name, s in self.summaries.items()
                             if isinstance(s, CategorySummary) and s.complete}

    @property
    def warming_up(self) -> bool:
        """Whether the warm-up reference is still being collected."""
        return self._sample is not None

    def score(self, inputs: Mapping[str, Any]) -> Scored:
        """The score of ``inputs`` (0 for features the reference does not know)."""
        best = 0.0
        offending: list[tuple[float, str]] | None = None
        outlier = False
        numeric, categorical = self._numeric, self._categorical
        for name, value in inputs.items():
            cls = type(value)
            if cls is float or cls is int:
                bounds = numeric.get(name)
                if bounds is None:
                    continue
                median, scale, low, high, fence_low, fence_high = bounds
                if cls is float:
                    x: float = value  # compiled: arithmetic on a C double from here
                    z = abs(x - median) / scale
                    beyond = x > high or x < low
                    gross = beyond and (x > fence_high or x < fence_low)
                else:  # an int compares exactly, however large
                    z = abs(value - median) / scale
                    beyond = value > high or value < low
                    gross = beyond and (value > fence_high or value < fence_low)
                if beyond:
                    if offending is None:
                        offending = []
                    offending.append((z, name))
                    if gross:
                        outlier = True
            elif cls is str:
                categories = categorical.get(name)
                if categories is None or value in categories:
                    continue
                z = UNSEEN_SCORE
                if offending is None:
                    offending = []
                offending.append((z, name))
                outlier = True
            else:
                continue
            if z > best:
                best = z
        if offending is None:
            return Scored(round4(best), (), False)
        if len(offending) > 1:
            offending.sort(key=lambda t: (-t[0], t[1]))
        return Scored(round4(best), tuple(n for _, n in offending[:5]), outlier)

    def update(self, inputs: Mapping[str, Any], key: str) -> Scored | None:
        """Score one prediction and run the rate test (``None`` while warming up).

        After the call, :attr:`decision` holds an alert's decision, else ``None``.
        """
        self.decision = None
        self.n_seen += 1
        sample = self._sample
        if sample is not None:
            for name, value in inputs.items():
                values = sample.get(name)
                if values is None:
                    if len(sample) >= self.max_features:
                        continue
                    values = sample[name] = []
                values.append(value)
            if self.n_seen >= self.reference_size:
                self._sample = None
                self._use(summaries_from_sample(sample, self.config))
            return None
        scored = self.score(inputs)
        self.n_scored += 1
        for name in scored.offending:
            s = self.summaries[name]
            (self.out_of_range if isinstance(s, NumericSummary) else self.unseen)[name] += 1
        flags = self._flags
        if len(flags) == flags.maxlen and flags[0]:
            self._in_window -= 1
        flags.append(scored.outlier)
        if self._cooldown:
            self._cooldown -= 1
        if scored.outlier:
            self.n_outliers += 1
            self._in_window += 1
            self._keys.append((key, scored.offending))
            self._test()
        return scored

    def _test(self) -> None:
        cfg = self.config
        k, n = self._in_window, len(self._flags)
        if k < cfg.min_count or self._cooldown:
            return
        p0 = max(self.expected_rate, cfg.base_rate)
        p_value = float(special.bdtrc(k - 1, n, p0))
        if p_value >= cfg.alpha:
            return
        self._cooldown = cfg.cooldown
        self.n_alerts += 1
        features = collections.Counter(f for _, offending in self._keys for f in offending)
        self.decision = OutlierDecision(
            count=k, window_size=n, expected=p0, p_value=p_value, alpha=cfg.alpha,
            keys=tuple(key for key, _ in self._keys),
            features=tuple(sorted(features.items(), key=lambda t: (-t[1], t[0]))))

    def stats(self) -> dict[str, float | None]:
        """Counters for ``MonitorStatsReported``: outliers, expected rate, per-feature counts."""
        out: dict[str, float | None] = {
            "outliers": float(self.n_outliers),
            "outlier_rate": self._in_window / len(self._flags) if self._flags else None,
            "outlier_expected_rate": None if self.warming_up else self.expected_rate,
            "outlier_alerts": float(self.n_alerts),
        }
        out.update({f"out_of_range.{k}": float(v) for k, v in self.out_of_range.items()})
        out.update({f"unseen_category.{k}": float(v) for k, v in self.unseen.items()})
        return out
