"""Multivariate drift: PCA reconstruction error against a reference (NannyML's method).

This module owns :class:`ReconstructionDrift`, a detector that catches a change
in how numeric features relate to each other -- their correlation -- even when
every feature's own distribution is unchanged, which per-feature tests (PSI,
Kolmogorov-Smirnov) cannot see. Pure: imports numpy, the standard library and
:mod:`modelog.models` only.

Method (NannyML's "data reconstruction drift"):

1. The first ``reference_size`` inputs of a version are the reference. Its
   numeric features (present as numbers in at least 90% of the rows, not
   constant; at most ``max_features``, by name) are standardised with the
   reference's means and standard deviations, and PCA keeps the fewest
   components explaining ``variance`` (default 65%) of the variance, at most
   all but one.
2. An input's reconstruction error is the Euclidean distance between its
   standardised vector and its projection back from those components. A
   missing or non-numeric value is replaced by the reference mean (counted in
   ``imputed``). It is capped at the largest error of the reference
   (:attr:`ReconstructionDrift.cap`), so a few gross outliers in a window --
   the point-anomaly monitor's business -- cannot pass for a change of the
   joint distribution (uncapped, 3 inputs in 1,000 with one value 20-40
   scales out breached the band).
3. Every ``window`` inputs the window's mean error is compared with the
   reference's: the band is ``mean +- k * sd``, where ``sd`` is the standard
   deviation of the reference's per-input errors times
   ``sqrt(1 / window + 1 / reference_size)`` (the standard error of the
   difference of a window's mean and the reference's). ``k`` is 4 by default
   (NannyML uses 3): every window is a test, and a long stable stream should
   stay silent. A window outside the band is breached;
   the first breached window opens a condition (one finding), which closes
   after ``clear_after`` windows inside the band.

Fewer than two usable numeric features: the detector stays off (``enabled``
is ``False`` and :attr:`ReconstructionDrift.reason` says why).

Examples
--------
Two features correlated +0.9, then -0.9; each stays N(0, 1):

>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> def rows(n, rho):
...     z = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n)
...     return [{"a": float(a), "b": float(b)} for a, b in z]
>>> det = ReconstructionDrift(reference_size=1000, window=250)
>>> detected = []
>>> for i, x in enumerate(rows(2000, 0.9) + rows(500, -0.9)):
...     det.update(x)
...     if det.drift_detected:
...         detected.append(i)
>>> det.features, det.components, detected
(['a', 'b'], 1, [2249])
>>> det.last_check.statistic > det.last_check.upper
True
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from mypy_extensions import mypyc_attr

from modelog.models.errors import InvalidParameterError
from modelog.models.pickled import FrozenState

__all__ = ["MultivariateCheck", "ReconstructionDrift"]


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class MultivariateCheck(FrozenState):
    """One window's mean reconstruction error against the reference band."""

    index: int
    size: int
    statistic: float
    lower: float
    upper: float
    reference_mean: float
    start: dt.datetime | None
    end: dt.datetime | None
    keys: tuple[str, ...] = ()

    @property
    def breached(self) -> bool:
        """Whether the window's mean error is outside the band."""
        return not self.lower <= self.statistic <= self.upper


MIN_BAND_SD = 1e-6
"""Smallest standard error of the band (standardised units): the error of an exact
linear relationship between features is float noise, not a statistic. The cap on an
input's error is at least 100 times it, so a broken relationship still moves the mean."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class ReconstructionDrift:
    """Detect a change in the joint distribution of numeric features by PCA reconstruction.

    Parameters
    ----------
    reference_size
        Inputs forming the reference (fit and threshold).
    window
        Inputs per checked window.
    variance
        Share of the reference's variance the kept components explain (0 < v < 1); at
        most all components but one are kept (else nothing is left to reconstruct).
    k
        Width of the band in standard errors of a window's mean.
    max_features
        Most numeric features used (the first by name).
    clear_after
        Windows inside the band that close an open condition.
    max_keys
        Input ids a check keeps as evidence.
    """

    cap: float = math.inf
    """The largest reference error: a larger input error counts as this (a class default,
    so a state pickled before the cap existed restores without one)."""

    def __init__(self, reference_size: int = 1_000, window: int = 500, *,
                 variance: float = 0.65, k: float = 4.0, max_features: int = 50,
                 clear_after: int = 1, max_keys: int = 20) -> None:
        if reference_size < 10:
            raise InvalidParameterError("ReconstructionDrift", "reference_size", reference_size,
                                        "must be >= 10")
        if window < 1:
            raise InvalidParameterError("ReconstructionDrift", "window", window, "must be >= 1")
        if not 0.0 < variance < 1.0:
            raise InvalidParameterError("ReconstructionDrift", "variance", variance,
                                        "must be strictly between 0 and 1")
        if k <= 0:
            raise InvalidParameterError("ReconstructionDrift", "k", k, "must be > 0")
        if max_features < 2:
            raise InvalidParameterError("ReconstructionDrift", "max_features", max_features,
                                        "must be >= 2")
        self.reference_size = reference_size
        self.window = window
        self.variance = variance
        self.k = k
        self.max_features = max_features
        self.clear_after = max(1, clear_after)
        self.max_keys = max_keys
        self.enabled = True
        self.reason = ""
        self.features: list[str] = []
        self.components = 0
        self.imputed = 0
        self.reference_mean = math.nan
        self.reference_sd = math.nan
        self.cap = math.inf
        self._reference: list[Mapping[str, Any]] = []
        self._mean = np.zeros(0)
        self._means: list[float] = []
        self._std = np.ones(0)
        self._basis = np.zeros((0, 0))
        self._rows: list[list[Any]] = []
        self._keys: list[str] = []
        self._start: dt.datetime | None = None
        self._end: dt.datetime | None = None
        self._checks = 0
        self._open = False
        self._clear = 0
        self.last_check: MultivariateCheck | None = None
        self.checks: list[MultivariateCheck] = []
        self._findings: list[MultivariateCheck] = []

    # -- read-outs ---------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        """Whether the reference has been fitted."""
        return self.components > 0

    @property
    def drift_detected(self) -> bool:
        """Whether the last :meth:`update` opened a condition."""
        return bool(self._findings)

    @property
    def findings(self) -> Sequence[MultivariateCheck]:
        """The check that opened the condition (empty otherwise)."""
        return self._findings

    # -- input -------------------------------------------------------------------
    def update(self, x: Mapping[str, Any], key: Hashable = "",
               time: dt.datetime | None = None) -> None:
        """One input: its features ``x``, its id ``key`` and time."""
        if self.checks:
            self.checks, self._findings = [], []
        if not self.enabled:
            return
        if not self.fitted:
            self._reference.append(dict(x))
            if len(self._reference) >= self.reference_size:
                self._fit()
            return
        row = [x.get(name) for name in self.features]
        for i, v in enumerate(row):  # ints pass (to float below); the rest is imputed
            cls = type(v)
            if cls is not float and cls is not int and _number(v) is None:
                self.imputed += 1
                row[i] = self._means[i]
        self._rows.append(row)
        if self._start is None:
            self._start = time
        self._end = time
        if len(self._keys) < self.max_keys:
            self._keys.append(str(key))
        if len(self._rows) >= self.window:
            self._check()

    def errors(self, rows: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """The reconstruction error of each row (values in :attr:`features` order)."""
        z = (np.asarray(rows, dtype=float) - self._mean) / self._std
        residual = z - (z @ self._basis) @ self._basis.T
        out: np.ndarray = np.sqrt(np.einsum("ij,ij->i", residual, residual))
        return out

    def _fit(self) -> None:
        rows = self._reference
        self._reference = []
        n = len(rows)
        names = sorted({k for r in rows for k, v in r.items() if _number(v) is not None})
        columns: dict[str, np.ndarray] = {}
        for name in names:
            values = [_number(r.get(name)) for r in rows]
            present = [v for v in values if v is not None]
            if len(present) < 0.9 * n:
                continue
            m = sum(present) / len(present)
            col = np.array([m if v is None else v for v in values], dtype=float)
            if float(col.std()) > 1e-12:
                columns[name] = col
            if len(columns) >= self.max_features:
                break
        if len(columns) < 2:
            self.enabled = False
            self.reason = (f"{len(columns)} usable numeric feature(s) in the reference; "
                           "multivariate drift needs at least 2")
            return
        self.features = list(columns)
        data = np.column_stack([columns[f] for f in self.features])
        self._mean = data.mean(axis=0)
        self._means = [float(m) for m in self._mean]
        self._std = data.std(axis=0)
        z = (data - self._mean) / self._std
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        explained = np.cumsum(s**2) / float(np.sum(s**2))
        # at most all but one: with every component kept, nothing is left to reconstruct
        # and the error is float noise (independent features each explaining a share)
        self.components = min(int(np.searchsorted(explained, self.variance) + 1), len(s) - 1)
        self._basis = vt[: self.components].T
        errors = self.errors(data)
        self.reference_mean = float(errors.mean())
        self.cap = max(float(errors.max()), 100 * MIN_BAND_SD)  # (see MIN_BAND_SD)
        # floored: features that are exact linear combinations reconstruct with float noise
        # (~1e-16) that must not make a band of noise; any real change is far above it
        self.reference_sd = max(float(errors.std(ddof=1)) * math.sqrt(1 / self.window + 1 / n),
                                MIN_BAND_SD)

    def _check(self) -> None:
        statistic = float(np.minimum(self.errors(self._rows), self.cap).mean())
        band = self.k * self.reference_sd
        check = MultivariateCheck(self._checks, len(self._rows), statistic,
                                  self.reference_mean - band, self.reference_mean + band,
                                  self.reference_mean, self._start, self._end, tuple(self._keys))
        self._checks += 1
        self._rows, self._keys, self._start, self._end = [], [], None, None
        self.last_check = check
        self.checks = [check]
        if check.breached:
            self._clear = 0
            if not self._open:
                self._open = True
                self._findings = [check]
        elif self._open:
            self._clear += 1
            if self._clear >= self.clear_after:
                self._open = False
