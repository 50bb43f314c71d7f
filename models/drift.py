"""Concept drift on a stream of per-prediction errors.

:class:`ConceptDriftMonitor` watches the errors a deployed model makes -- 0/1
for a classifier (wrong or right), the absolute error for a regressor -- with a
River drift detector, and turns the step on which a drift *starts* into a
:class:`DriftDecision` carrying the evidence: the error level in the recent
window, the level it was before, the window size and the detector's
hyperparameters.

It follows River's protocol (:class:`~modelog.models.processor.Detector`): the
constructor takes hyperparameters only, then ``update(error)`` is called once
per labelled prediction; ``drift_detected`` tells whether that error completed
a detection and ``findings`` holds its decision. After a detection the
detector starts afresh and waits ``warm_up`` observations, so one drift gives
one decision, not a burst of them.

This module owns the concept drift detector; it imports only River and
:mod:`modelog.models.errors`.

Examples
--------
>>> import random
>>> rng = random.Random(7)
>>> monitor = ConceptDriftMonitor()
>>> decisions = []
>>> for i in range(4_000):
...     p = 0.05 if i < 2_000 else 0.5
...     monitor.update(float(rng.random() < p))
...     if monitor.drift_detected:
...         decisions.append((i, monitor.findings[0]))
>>> len(decisions)
1
>>> i, d = decisions[0]
>>> 2_000 < i < 2_150
True
>>> d.detector, round(d.reference, 2), d.statistic > 0.3, d.window_size < 100
('adwin', 0.06, True, True)
>>> d.describe()
'ADWIN(delta=0.002, clock=32, max_buckets=5, min_window_length=5, grace_period=10)'
"""

from __future__ import annotations

import collections
import dataclasses
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from mypy_extensions import mypyc_attr
from river import drift

from modelog.models.errors import (
    InvalidObservationError,
    InvalidParameterError,
    UnknownDetectorError,
)
from modelog.models.pickled import FrozenState

__all__ = ["DETECTORS", "ConceptDriftMonitor", "DriftDecision", "Param", "make_drift_detector"]

Param = str | int | float | bool | None
"""A hyperparameter value that can be written to an event."""

#: Detector names accepted by :class:`ConceptDriftMonitor`, with River's class.
DETECTORS: dict[str, Callable[..., Any]] = {
    "adwin": drift.ADWIN,
    "page_hinkley": drift.PageHinkley,
    "kswin": drift.KSWIN,
    "ddm": drift.binary.DDM,
    "eddm": drift.binary.EDDM,
}

_BINARY = frozenset({"ddm", "eddm"})
_LARGEST = sys.float_info.max
_MIN_RECENT = 10


def make_drift_detector(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """Create the River drift detector called ``name`` with hyperparameters ``params``.

    Raises
    ------
    UnknownDetectorError
        If ``name`` is not in :data:`DETECTORS` (the message lists the valid names).
    InvalidParameterError
        If River refuses a hyperparameter.

    Examples
    --------
    >>> make_drift_detector("page_hinkley", {"threshold": 20.0}).threshold
    20.0
    >>> make_drift_detector("cusum")
    Traceback (most recent call last):
    ...
    modelog.models.errors.UnknownDetectorError: unknown drift detector 'cusum'; choose one of: ...
    """
    factory = DETECTORS.get(name)
    if factory is None:
        raise UnknownDetectorError(name, DETECTORS)
    try:
        return factory(**dict(params or {}))
    except TypeError as exc:
        bad = next(iter(params or {}), "?")
        raise InvalidParameterError(name, bad, (params or {}).get(bad), str(exc)) from None
    except ValueError as exc:
        raise InvalidParameterError(name, ", ".join(params or {}) or "?", dict(params or {}),
                                    str(exc)) from None


def _scalar_params(detector: Any) -> dict[str, Param]:
    """The detector's constructor hyperparameters that are plain scalars."""
    params: dict[str, Any] = detector._get_params()
    return {k: v for k, v in params.items() if v is None or isinstance(v, str | int | float | bool)}


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class DriftDecision(FrozenState):
    """A drift started: what was detected, by which detector, on which evidence.

    Attributes
    ----------
    detector
        The detector's name in :data:`DETECTORS` (``"adwin"``...).
    params
        Its scalar hyperparameters.
    statistic
        Mean error over the recent window (the error rate for 0/1 errors).
    reference
        Mean error before the recent window, since the monitor last (re)started;
        ``nan`` if there is no such data.
    window_size
        Number of observations in the recent window.
    n_observations
        Observations seen by the monitor so far, this one included; the window
        covers observations ``n_observations - window_size + 1 .. n_observations``
        (1-based).
    """

    detector: str
    params: Mapping[str, Param]
    statistic: float
    reference: float
    window_size: int
    n_observations: int

    def describe(self) -> str:
        """The detector and its hyperparameters, e.g. ``ADWIN(delta=0.002, ...)``."""
        cls = DETECTORS[self.detector]
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{getattr(cls, '__name__', self.detector)}({args})"


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class ConceptDriftMonitor:
    """Detect when a model's errors start to drift, one decision per drift.

    Parameters
    ----------
    detector
        One of :data:`DETECTORS`: ``"adwin"`` (default), ``"page_hinkley"``,
        ``"kswin"``, ``"ddm"`` or ``"eddm"`` (the last two take 0/1 errors only;
        KSWIN's Kolmogorov-Smirnov test suits absolute errors better than 0/1
        ones; EDDM and DDM raise false alarms on low error rates more readily).
    params
        Hyperparameters passed to the River detector unchanged.
    warm_up
        No decision before this many observations, counted from the start and
        again from each detection.
    window
        Size of the rolling window behind :attr:`rolling_error` and of the
        recent window a decision reports (ADWIN reports its own post-change
        window when that is shorter).
    direction
        ``"increase"`` (default) reports only drifts where the recent error is
        above the reference (the model got worse); ``"both"`` reports any change.
        A decrease still restarts the detector silently in ``"increase"`` mode.

    Examples
    --------
    >>> m = ConceptDriftMonitor("ddm", warm_up=50, window=100)
    >>> for _ in range(3):
    ...     m.update(0.0)
    >>> m.n_observations, m.rolling_error, m.drift_detected, m.findings
    (3, 0.0, False, ())
    >>> m.update(0.5)
    Traceback (most recent call last):
    ...
    modelog.models.errors.InvalidObservationError: ConceptDriftMonitor(ddm): observation 0.5 ...
    """

    def __init__(
        self,
        detector: str = "adwin",
        params: Mapping[str, Any] | None = None,
        *,
        warm_up: int = 100,
        window: int = 200,
        direction: Literal["increase", "both"] = "increase",
    ) -> None:
        self.detector = detector
        self.params: dict[str, Any] = dict(params or {})
        self.warm_up = warm_up
        self.window = window
        self.direction = direction
        name = f"ConceptDriftMonitor({detector})"
        if warm_up < 0:
            raise InvalidParameterError(name, "warm_up", warm_up, "must be >= 0")
        if window < 1:
            raise InvalidParameterError(name, "window", window, "must be >= 1")
        if direction not in ("increase", "both"):
            raise InvalidParameterError(name, "direction", direction,
                                        "must be 'increase' or 'both'")
        self._detector = make_drift_detector(detector, self.params)
        self._name = name
        self._recent: collections.deque[float] = collections.deque(maxlen=window)
        self._recent_sum = 0.0
        self.n_observations = 0
        self.n_detections = 0
        self._since_reset = 0
        self._sum_since_reset = 0.0
        self._last: DriftDecision | None = None

    # -- River-style state ---------------------------------------------------
    @property
    def detector_params(self) -> dict[str, Param]:
        """The detector's scalar hyperparameters (defaults included)."""
        return _scalar_params(self._detector)

    @property
    def rolling_error(self) -> float | None:
        """Mean error over the last ``window`` observations (``None`` before the first)."""
        if not self._recent:
            return None
        return max(0.0, self._recent_sum) / len(self._recent)

    @property
    def drift_detected(self) -> bool:
        """Whether the last :meth:`update` started a drift (see :attr:`findings`)."""
        return self._last is not None

    @property
    def findings(self) -> Sequence[DriftDecision]:
        """The decision of the last :meth:`update` (empty unless a drift started)."""
        return () if self._last is None else (self._last,)

    def update(self, error: object) -> None:
        """Learn one error; on the step where a drift starts, :attr:`drift_detected` is true.

        Raises
        ------
        InvalidObservationError
            If ``error`` is not a finite number >= 0, or not 0/1 for a binary
            detector (``ddm``, ``eddm``).
        """
        self._last = None
        binary = self.detector in _BINARY
        value: float
        if type(error) is float and 0.0 <= error <= _LARGEST and not (  # type: ignore[operator]
                binary and error != 0.0 and error != 1.0):  # the usual case: valid as it is
            value = error  # type: ignore[assignment]
        else:
            if isinstance(error, bool):
                error = float(error)
            if not isinstance(error, int | float) or not math.isfinite(error) or error < 0:
                raise InvalidObservationError(self._name, error,
                                              "errors must be finite numbers >= 0")
            if binary and error not in (0, 1):
                raise InvalidObservationError(
                    self._name, error,
                    "this detector takes 0/1 errors (classification); use adwin, page_hinkley "
                    "or kswin for absolute errors",
                )
            value = float(error)
        if len(self._recent) == self.window:
            self._recent_sum -= self._recent[0]
        self._recent.append(value)
        self._recent_sum += value
        self.n_observations += 1
        self._since_reset += 1
        self._sum_since_reset += value

        self._detector.update(bool(value) if binary else value)
        if not self._detector.drift_detected or self._since_reset <= self.warm_up:
            return
        decision = self._decide()
        self._restart()
        if decision is not None:
            self.n_detections += 1
        self._last = decision

    # -- internals -------------------------------------------------------------
    def _recent_length(self) -> int:
        """Length of the recent (post-change) part of the rolling window.

        The split of the last ``window`` observations (since the last restart)
        that maximises the standardised difference of means
        ``(mean(after) - mean(before)) * sqrt(n_before * n_after / n)`` -- the
        most likely change point -- with at least ``_MIN_RECENT`` on each side.
        """
        values = list(self._recent)[-min(len(self._recent), self._since_reset):]
        n = len(values)
        if n < 2 * _MIN_RECENT:
            return max(1, n)
        total = sum(values)
        best_k, best = n, -math.inf
        suffix = 0.0
        sign = -1.0 if self.direction == "both" else 1.0
        for k in range(1, n - _MIN_RECENT + 1):  # k = size of the recent part
            suffix += values[n - k]
            if k < _MIN_RECENT:
                continue
            diff = suffix / k - (total - suffix) / (n - k)
            score = diff * math.sqrt(k * (n - k) / n)
            if self.direction == "both":
                score = abs(score) * -sign
            if score > best:
                best_k, best = k, score
        return best_k

    def _decide(self) -> DriftDecision | None:
        n = self._recent_length()
        recent = list(self._recent)[-n:]
        statistic = sum(recent) / n
        before = self._since_reset - n
        reference = (self._sum_since_reset - sum(recent)) / before if before > 0 else math.nan
        if self.direction == "increase" and not (statistic > reference):
            return None  # the model got better (or no reference): restart silently
        return DriftDecision(
            detector=self.detector,
            params=self.detector_params,
            statistic=statistic,
            reference=reference,
            window_size=n,
            n_observations=self.n_observations,
        )

    def _restart(self) -> None:
        self._detector = make_drift_detector(self.detector, self.params)
        self._since_reset = 0
        self._sum_since_reset = 0.0

    def __repr__(self) -> str:
        return f"ConceptDriftMonitor(detector={self.detector!r}, params={self.params!r})"
