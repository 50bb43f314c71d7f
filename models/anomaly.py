"""Anomalous inputs: Half-Space Trees scores turned into rate-based alerts.

:class:`AnomalyMonitor` scores each input dict with Half-Space Trees
(:class:`~modelog.models.hst.HalfSpaceForest`, the algorithm of River's
``HalfSpaceTrees`` laid out as arrays) behind a min-max scaler (non-numeric
features are ignored; the scaler learns its ranges during warm-up and is then
frozen, so a shift lands outside the learned range instead of stretching it).
A single high score is ordinary noise -- by construction 5 % of normal inputs
score above the 95th percentile -- so it does not alert on scores. It alerts on a *rate*:

1. a running quantile ``q`` of the score (``river.stats.Quantile``), learned
   after warm-up on the traffic seen so far, is the score threshold;
2. over the last ``window`` inputs it counts how many scored above it;
3. under normal traffic that count is Binomial(``window``, ``p``) with ``p = 1 - q``,
   or the larger share of normal inputs that score above the threshold against
   the trees' current reference (:meth:`AnomalyMonitor.expected_rate`: discrete
   inputs put scores on a few values, and a whole value can lie above the
   threshold for one window), the window counted against the threshold of now; an
   *anomalous burst* is declared when the count reaches the smallest ``k`` with
   ``P(X >= k) < alpha`` (and at least ``min_count``).

After an alert no new alert is raised for ``cooldown`` inputs, and the
threshold is not learned during that time.

It follows River's drift-detector protocol
(:class:`~modelog.models.processor.Detector`): ``update(x)`` per input, then
``drift_detected`` and ``findings`` (the :class:`AnomalyDecision` of a burst).
:meth:`AnomalyMonitor.prescore` scores a batch of upcoming inputs at once, for
the same decisions at a fraction of the cost. This module owns the anomaly
detector; it imports only numpy, River's running quantile and :mod:`modelog.models`.

The default ``q`` is 0.95, not 0.99: Half-Space Trees scores saturate close to
1, so the top 1 % of normal traffic (points in the tails of *any* feature)
scores about as high as a shifted input and a +4 sigma shift of one feature
barely changes the 99 % tail; it moves the bulk of the scores above the 95th
percentile. Measured on 20 seeded streams (three gaussian features, 6,000
normal inputs then +4 sigma on one): no false alert, every shift alerted
within 150 inputs.

Examples
--------
>>> import random
>>> rng = random.Random(1)
>>> monitor = AnomalyMonitor(seed=1, warm_up=500)
>>> alerts = []
>>> for i in range(3_000):
...     shift = 4.0 if i >= 2_000 else 0.0
...     x = {"age": rng.gauss(40 + 10 * shift, 10), "income": rng.gauss(3, 1), "city": "Paris"}
...     monitor.update(x, key=f"p-{i}")
...     if monitor.drift_detected:
...         alerts.append((i, monitor.findings[0]))
>>> [i for i, _ in alerts][:1], 2_000 <= alerts[0][0] < 2_100
([...], True)
>>> d = alerts[0][1]
>>> d.statistic >= d.threshold, 0 < len(d.keys) <= 20, d.keys[-1] == f"p-{alerts[0][0]}"
(True, True, True)
>>> monitor.features_seen
('age', 'income')
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from mypy_extensions import mypyc_attr
from river import stats

from modelog.models.errors import InvalidParameterError
from modelog.models.hst import HalfSpaceForest
from modelog.models.pickled import FrozenState

__all__ = ["AnomalyDecision", "AnomalyMonitor", "ahead_index", "binomial_critical_count",
           "binomial_tail"]

Param = str | int | float | bool | None


def binomial_tail(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``, computed exactly.

    Examples
    --------
    >>> round(binomial_tail(1, 2, 0.5), 3)
    0.75
    >>> binomial_tail(0, 10, 0.1)
    1.0
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    q = 1.0 - p
    return min(1.0, sum(math.comb(n, i) * p**i * q ** (n - i) for i in range(k, n + 1)))


def binomial_critical_count(n: int, p: float, alpha: float, min_count: int = 1) -> int:
    """The smallest count ``k >= min_count`` with ``P(X >= k) < alpha`` under Binomial(n, p).

    Returns ``n + 1`` when no count is that unlikely (the test can never fire).

    Examples
    --------
    >>> binomial_critical_count(200, 0.05, 1e-4)
    24
    """
    for k in range(max(0, min_count), n + 1):
        if binomial_tail(k, n, p) < alpha:
            return k
    return n + 1


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class AnomalyDecision(FrozenState):
    """An anomalous burst of inputs.

    Attributes
    ----------
    detector
        ``"hst"`` (Half-Space Trees).
    params
        The hyperparameters of the monitor (trees, quantile, window, alpha...).
    statistic
        Fraction of the last ``window_size`` inputs that scored above the threshold.
    threshold
        The critical fraction: the burst rule is ``statistic >= threshold``.
    score_threshold
        The learned ``q``-quantile of the anomaly score that defines "above".
    expected
        The fraction expected under normal traffic, ``1 - q``.
    p_value
        ``P(X >= observed count)`` under Binomial(``window_size``, ``1 - q``).
    window_size
        Number of inputs in the window.
    keys
        Keys (prediction ids) of the most recent inputs above the threshold in
        the window, oldest first, at most ``max_keys``.
    n_observations
        Inputs scored so far, this one included.
    """

    detector: str
    params: Mapping[str, Param]
    statistic: float
    threshold: float
    score_threshold: float
    expected: float
    p_value: float
    window_size: int
    keys: tuple[str, ...]
    n_observations: int

    def describe(self) -> str:
        """The detector and its hyperparameters, e.g. ``HalfSpaceTrees(n_trees=10, ...)``."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"HalfSpaceTrees({args})"


_NUMBER_CLASSES = frozenset((float, int, bool))


def ahead_index(keys: Sequence[str]) -> dict[str, int]:
    """Each key's position, for inputs scored ahead; a key given twice is left out (its
    inputs may differ: each is then scored when it comes).

    Examples
    --------
    >>> ahead_index(["a", "b", "a", "c"])
    {'b': 1, 'c': 3}
    """
    index = {key: i for i, key in enumerate(keys)}
    if len(index) < len(keys):
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                index.pop(key, None)
            seen.add(key)
    return index


def numeric_features(x: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric features of ``x`` (booleans as 0/1); everything else is dropped.

    Examples
    --------
    >>> numeric_features({"a": 1, "b": "x", "c": None, "d": True, "e": float("nan")})
    {'a': 1.0, 'd': 1.0}
    """
    out: dict[str, float] = {}
    for k, v in x.items():
        if isinstance(v, bool | int | float):
            f = float(v)
            if math.isfinite(f):
                out[k] = f
    return out


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class AnomalyMonitor:
    """Score inputs with Half-Space Trees and alert on bursts of high scores.

    Parameters
    ----------
    n_trees, height, window_size, seed
        Half-Space Trees hyperparameters (``window_size`` is the trees' mass window).
    q
        Quantile of the score used as the per-input threshold.
    window
        Number of recent inputs whose exceedance rate is tested.
    alpha
        Significance of the one-sided binomial test of that rate.
    min_count
        Never alert on fewer than this many exceedances in the window.
    warm_up
        Inputs learned before any score counts (the trees need at least one
        mass window, the quantile a few hundred scores).
    learn_every
        After warm-up, every input is scored but only 1 in ``learn_every`` is
        learned by the trees. Half-Space Trees estimate the mass of each region
        from the inputs they learn, so a regular sample estimates the same
        profile at a fraction of the cost; the trees' mass window then spans
        ``window_size * learn_every`` inputs.
    cooldown
        Inputs after an alert during which no new alert is raised and the
        threshold is frozen.
    max_keys
        Most keys a decision reports.

    Examples
    --------
    >>> m = AnomalyMonitor(warm_up=10, window=20)
    >>> m.update({"x": 1.0, "label": "a"}, key="p-1")
    >>> m.last_score, m.n_observations, m.rolling_mean_score, m.drift_detected
    (0.0, 1, None, False)
    >>> m.update({"only": "text"})
    >>> m.n_observations, m.findings
    (1, ())
    """

    detector = "hst"
    _ahead_span: tuple[int, int] = (0, 0)  # (also for a state pickled before it existed)
    # Scores against the trees' reference masses of the inputs learned the window before
    # those masses, now and before the last pivot; inputs scored since the pivot; the rows
    # of the reference masses; the rows the next reference is learning (class defaults: a
    # state pickled before they existed reads as the plain binomial rule).
    _epoch_scores: np.ndarray | None = None
    _prev_epoch_scores: np.ndarray | None = None
    _since_pivot = 0
    _reference_rows: list[Sequence[float]] | None = None
    _epoch_rows: list[Sequence[float]] | None = None
    _criticals: dict[float, int] | None = None

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int | None = None,
        *,
        q: float = 0.95,
        window: int = 200,
        alpha: float = 1e-4,
        min_count: int = 5,
        warm_up: int = 1_000,
        cooldown: int = 1_000,
        max_keys: int = 20,
        learn_every: int = 1,
    ) -> None:
        checks: list[tuple[str, Any, bool, str]] = [
            ("n_trees", n_trees, n_trees >= 1, "must be >= 1"),
            ("height", height, 1 <= height <= 20, "must be between 1 and 20"),
            ("window_size", window_size, window_size >= 1, "must be >= 1"),
            ("q", q, 0.0 < q < 1.0, "must be strictly between 0 and 1"),
            ("window", window, window >= 1, "must be >= 1"),
            ("alpha", alpha, 0.0 < alpha < 1.0, "must be strictly between 0 and 1"),
            ("min_count", min_count, min_count >= 1, "must be >= 1"),
            ("warm_up", warm_up, warm_up >= 0, "must be >= 0"),
            ("cooldown", cooldown, cooldown >= 0, "must be >= 0"),
            ("max_keys", max_keys, max_keys >= 0, "must be >= 0"),
            ("learn_every", learn_every, learn_every >= 1, "must be >= 1"),
        ]
        for name, value, ok, rule in checks:
            if not ok:
                raise InvalidParameterError("AnomalyMonitor", name, value, rule)
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.q = q
        self.window = window
        self.alpha = alpha
        self.min_count = min_count
        self.warm_up = warm_up
        self.cooldown = cooldown
        self.max_keys = max_keys
        self.learn_every = learn_every
        self._generation = 0  # window pivots of the trees so far
        self._ahead: dict[str, int] = {}  # prescored key -> row
        self._ahead_rows: np.ndarray = np.zeros((0, 0))
        self._ahead_scores: list[float] = []  # of the rows in _ahead_span
        self._ahead_span = (0, 0)
        self._ahead_generation = 0
        self._forest = HalfSpaceForest(n_trees, height, window_size, seed)
        # the min-max scaler of the trees' features: learned during warm-up, then frozen
        self._lo: list[float] = []
        self._hi: list[float] = []
        self._quantile: Any = stats.Quantile(q)
        self.critical_count = binomial_critical_count(window, 1.0 - q, alpha, min_count)
        # (key, score, exceeded) of the last `window` scored inputs after warm-up
        self._window: collections.deque[tuple[str, float, bool]] = collections.deque(maxlen=window)
        self._exceeded = 0
        self._score_sum = 0.0
        self.n_observations = 0
        self.n_alerts = 0
        self._cooldown_left = 0
        self.last_score: float | None = None
        self._decision: AnomalyDecision | None = None

    # -- state -------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Param]:
        """The hyperparameters, as reported in decisions."""
        return {
            "n_trees": self.n_trees, "height": self.height, "window_size": self.window_size,
            "seed": self.seed, "q": self.q, "window": self.window, "alpha": self.alpha,
            "min_count": self.min_count, "warm_up": self.warm_up, "cooldown": self.cooldown,
            "learn_every": self.learn_every,
        }

    @property
    def score_threshold(self) -> float | None:
        """The current ``q``-quantile of the score (``None`` during warm-up)."""
        value = self._quantile.get()
        return None if value is None else float(value)

    @property
    def rolling_mean_score(self) -> float | None:
        """Mean score over the window (``None`` before the first scored input)."""
        return self._score_sum / len(self._window) if self._window else None

    @property
    def rolling_max_score(self) -> float | None:
        """Highest score in the window (``None`` before the first scored input)."""
        return max(s for _, s, _ in self._window) if self._window else None

    @property
    def anomalous_fraction(self) -> float | None:
        """Fraction of the window above the score threshold (``None`` before any)."""
        return self._exceeded / len(self._window) if self._window else None

    @property
    def drift_detected(self) -> bool:
        """Whether the last :meth:`update` completed a burst (see :attr:`findings`)."""
        return self._decision is not None

    @property
    def findings(self) -> Sequence[AnomalyDecision]:
        """The decision of the last :meth:`update` (empty unless it completed a burst)."""
        return () if self._decision is None else (self._decision,)

    @property
    def features_seen(self) -> tuple[str, ...]:
        """The numeric features the trees learn from (those of the first input), sorted."""
        return self._forest.features

    # -- learning ------------------------------------------------------------------
    def prescore(self, inputs: Sequence[tuple[str, Mapping[str, Any]]]) -> int:
        """Score upcoming inputs at once; :meth:`update` then uses these scores.

        A batch-processing caller (the monitoring worker) passes the inputs it
        is about to feed, with their keys, in order. Decisions are exactly
        those of feeding :meth:`update` alone: the scores are computed with the
        trees' current reference masses, and when the trees pivot to a new
        window in between, the remaining scores are computed again. Nothing is
        precomputed during warm-up (the scaler still learns). Returns how many
        inputs were scored ahead.
        """
        self._ahead = {}
        forest = self._forest
        if self.warm_up == 0 or self.n_observations < self.warm_up or \
                forest.first_window or not forest.built:
            return 0
        names = forest.features
        raw = [[x.get(name) for name in names] for _, x in inputs]
        if {type(v) for row in raw for v in row} <= _NUMBER_CLASSES:  # the usual case
            return self._ahead_from([key for key, _ in inputs], raw)
        nan = math.nan
        keys: list[str] = []
        rows: list[list[float]] = []
        for key, x in inputs:
            row: list[float] = []
            usable = False
            for name in names:
                v = x.get(name)
                if type(v) is float or type(v) is int or type(v) is bool:
                    row.append(float(v))  # type: ignore[arg-type]
                    usable = True
                else:
                    row.append(nan)
            if usable or numeric_features(x):
                keys.append(key)
                rows.append(row)
        return self._ahead_from(keys, rows)

    def _ahead_from(self, keys: list[str], rows: Sequence[Sequence[Any]]) -> int:
        """Score ``rows`` (numbers in the trees' feature order) ahead under ``keys``."""
        if not rows:
            return 0
        self._ahead_rows = self._scale_rows(np.asarray(rows, dtype=float))
        self._ahead = ahead_index(keys)
        self._score_ahead()
        return len(keys)

    def _scale_rows(self, raw: np.ndarray) -> np.ndarray:
        """Min-max scale rows of the trees' features (non-finite values become NaN)."""
        lo = np.asarray(self._lo, dtype=float)
        span = np.asarray(self._hi, dtype=float) - lo
        raw = np.where(np.isfinite(raw), raw, np.nan)
        ok = np.isfinite(span) & (span > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled: np.ndarray = np.where(ok, (raw - lo) / np.where(ok, span, 1.0),
                                          np.where(np.isnan(raw), np.nan, 0.0))
        return scaled

    def _scale(self, features: Mapping[str, float]) -> list[float]:
        """The scaled row of one input's finite numeric features (NaN where missing)."""
        row: list[float] = []
        for name, lo, hi in zip(self._forest.features, self._lo, self._hi, strict=True):
            v = features.get(name)
            if v is None:
                row.append(math.nan)
            elif hi > lo and math.isfinite(hi - lo):
                row.append((v - lo) / (hi - lo))
            else:
                row.append(0.0)
        return row

    def _score_ahead(self, start: int = 0) -> None:
        """Score the prescored rows from ``start`` up to where the trees may pivot next.

        Scores hold until the trees pivot (:attr:`_generation`), so only the
        rows until the next possible pivot are scored at once: a batch is
        scored about once, not again from each pivot to its end.
        """
        forest = self._forest
        span = max(32, (forest.window_size - forest.counter + 1) * self.learn_every)
        stop = min(start + span, self._ahead_rows.shape[0])
        self._ahead_scores = forest.score_many(self._ahead_rows[start:stop]).tolist()
        self._ahead_span = (start, stop)
        self._ahead_generation = self._generation

    def _ahead_score(self, key: str) -> tuple[float, Sequence[float]] | None:
        i = self._ahead.pop(key, None)
        if i is None:
            return None
        start, stop = self._ahead_span
        if self._ahead_generation != self._generation or not start <= i < stop:
            self._score_ahead(i)
            start = i
        return self._ahead_scores[i - start], self._ahead_rows[i]

    def _learn(self, row: Sequence[float]) -> None:
        rows = self._epoch_rows
        if rows is None:
            rows = self._epoch_rows = []
        rows.append(row)
        if self._forest.learn_one(row):  # the trees pivoted: the reference masses changed
            self._generation += 1
            self._epoch_rows = []
            self._pivoted(rows)

    def _pivoted(self, rows: list[Sequence[float]]) -> None:
        """Score the inputs learned the window before ``rows`` against the new masses.

        ``rows`` (the window just learned) are the new reference masses. The inputs
        of the window before are inputs like the ones to come, if nothing changes,
        and unlike ``rows`` they are not part of the masses they are scored against
        (a value scarce in the reference scores high, and is scarce *because* of the
        reference's sampling: in-sample it would undercount). Their share above the
        threshold is what the burst test expects (:meth:`expected_rate`). Scores do
        not change until the next pivot.
        """
        older, self._reference_rows = self._reference_rows, rows
        self._prev_epoch_scores, self._since_pivot = self._epoch_scores, 0
        self._epoch_scores = self._forest.score_many(np.asarray(older, dtype=float)) \
            if older else None

    def expected_rate(self) -> float:
        """The exceedance share the burst test expects of normal inputs now.

        ``1 - q``, or more when the inputs learned the window before the trees'
        reference masses score above the current threshold more often (and those
        before the previous masses while the tested window reaches back before the
        pivot). On continuous features the share is about ``1 - q``; on discrete
        ones (flags, one-hot columns, small counts) scores sit on a few values, and a
        whole value can lie above the threshold for one reference window and below
        it for the next: against ``1 - q`` that read as a burst in a stable stream.
        """
        p = 1.0 - self.q
        threshold = self.score_threshold
        if threshold is None or self.n_observations <= self.warm_up:  # no test yet
            return p
        for scores in (self._epoch_scores,
                       self._prev_epoch_scores if self._since_pivot < self.window else None):
            if scores is not None and scores.size:
                p = max(p, float(np.count_nonzero(scores > threshold)) / scores.size)
        return p

    def _critical_at(self, p: float) -> int:
        """:func:`binomial_critical_count` at ``p`` rounded up to 0.1 % (cached)."""
        cache = self._criticals
        if cache is None:
            cache = self._criticals = {}
        p = min(1.0, math.ceil(p * 1000.0) / 1000.0)
        k = cache.get(p)
        if k is None:
            k = cache[p] = binomial_critical_count(self.window, p, self.alpha, self.min_count)
        return k

    def update(self, x: Mapping[str, Any], key: str | None = None) -> None:
        """Score and learn one input; :attr:`drift_detected` tells whether a burst completed.

        ``key`` (e.g. the prediction id) is the input's evidence in a decision
        and its handle for :meth:`prescore`; by default its 1-based number.
        Inputs without any numeric feature are skipped (nothing is learned).
        The trees split on the numeric features of the first input.
        """
        self._decision = None
        if key is None:
            key = str(self.n_observations + 1)
        # scored ahead (after warm-up, the scaler frozen): known to have numeric features
        ahead = self._ahead_score(key) if self._ahead else None
        row: Sequence[float]
        if ahead is not None:
            score, row = ahead
        else:
            features = numeric_features(x)
            if not features:
                return
            forest = self._forest
            if not forest.built:
                forest.build(sorted(features))
                self._lo = [math.inf] * len(forest.features)
                self._hi = [-math.inf] * len(forest.features)
            if self.n_observations < self.warm_up or self.warm_up == 0:
                lo, hi = self._lo, self._hi
                for i, name in enumerate(forest.features):
                    v = features.get(name)
                    if v is not None:
                        if v < lo[i]:
                            lo[i] = v
                        if v > hi[i]:
                            hi[i] = v
            row = self._scale(features)
            score = forest.score_one(row)
        self.n_observations += 1
        self.last_score = score
        if self.n_observations <= self.warm_up:
            self._learn(row)
            if self.n_observations > self.window_size:  # the trees have a reference mass
                self._quantile.update(score)
            return

        threshold = self.score_threshold
        exceeded = threshold is not None and score > threshold
        if self.learn_every == 1 or (self.n_observations - self.warm_up) % self.learn_every == 0:
            self._learn(row)
        if len(self._window) == self.window:
            _, old_score, old_exceeded = self._window[0]
            self._score_sum -= old_score
            self._exceeded -= old_exceeded
        self._window.append((key, score, exceeded))
        self._score_sum += score
        self._exceeded += exceeded
        self._since_pivot += 1

        if self._cooldown_left > 0:
            self._cooldown_left -= 1
            return
        self._quantile.update(score)
        if len(self._window) < self.window or self._exceeded < self.critical_count:
            return
        expected = self.expected_rate()
        critical = self.critical_count
        count = self._exceeded
        now = self.score_threshold
        if now is not None:
            # against the threshold of now, as the expected share (a score on a value
            # just below it counted when the threshold was lower)
            count = sum(1 for _, score_, _ in self._window if score_ > now)
            if expected > 1.0 - self.q:
                critical = self._critical_at(expected)
            if count < critical:
                return
        self._cooldown_left = self.cooldown
        self.n_alerts += 1
        keys = [k for k, score_, e in self._window if (e if now is None else score_ > now)
                ][-self.max_keys:] if self.max_keys else []
        self._decision = AnomalyDecision(
            detector=self.detector,
            params=self.params,
            statistic=count / self.window,
            threshold=critical / self.window,
            score_threshold=float(now) if now is not None else math.nan,
            expected=expected,
            p_value=binomial_tail(count, self.window, expected),
            window_size=self.window,
            keys=tuple(keys),
            n_observations=self.n_observations,
        )

    def __repr__(self) -> str:
        return (f"AnomalyMonitor(n_trees={self.n_trees}, height={self.height}, "
                f"window_size={self.window_size}, seed={self.seed}, q={self.q})")
