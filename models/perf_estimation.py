"""Performance before labels: confidence-based performance estimation (NannyML's CBPE).

This module owns :class:`PerformanceEstimator`, the per-version detector that
estimates a classifier's accuracy (and F1 for binary classifiers) per window of
predictions from the probabilities it logged, before any label arrives, and
compares each estimate with the realized figures once the window's labels came;
plus :class:`HistogramCalibrator` and :func:`probability_view`. Pure: imports
only the standard library and :mod:`modelog.models`.

How it estimates. A prediction whose ``output`` is a dict of class
probabilities (``{"no": 0.2, "yes": 0.8}``) predicts its argmax; the chance it
is right is the argmax's probability. A float in ``[0, 1]`` is read as the
probability of class ``"1"`` of a binary classifier (the predicted class is
``"1"`` from 0.5). The expected accuracy of a window is the mean chance of being
right; for a binary classifier the expected confusion matrix
(``TP = sum p`` over predicted positives, ``FP = sum (1 - p)`` over them,
``FN = sum p`` over predicted negatives) gives the expected F1.

CBPE assumes **calibrated** probabilities: among predictions made with 0.8,
80% are right. Many models are not. With ``calibrate=True`` the first
``reference_size`` labelled predictions of the version (the labelled
reference) fit a histogram-binning calibrator (equal-width bins over the
score; a score is corrected by its bin's mean gap between outcome -- positive
for binary, correct for multiclass -- and score on the reference, shrunk
towards no correction so a small reference cannot spoil calibrated
probabilities; bins with fewer than ``min_bin_count`` predictions keep the raw
score); every window
closed after that is estimated with calibrated probabilities
(``calibrated=True`` on the estimate). Before the calibrator is fitted,
estimates use the raw probabilities.

When it alerts. The reference accuracy is the realized accuracy of the
labelled reference (or, until it exists, the estimate of the version's first
window); a window whose estimated accuracy falls below
``reference - max(tolerance, k * sqrt(a (1 - a) / window))`` opens a drop
(one finding; closed again by a window above it).

Examples
--------
>>> import random
>>> rng = random.Random(1)
>>> est = PerformanceEstimator(window=200, reference_size=200)
>>> for i in range(600):
...     p = rng.random()                      # calibrated: P(y = 1) = p
...     est.update(p, f"p{i}")                # before the label: a window may close
...     est.learn_one(f"p{i}", int(rng.random() < p))
>>> [(c.index, round(c.estimated_accuracy, 2), round(c.realized_accuracy, 2))
...  for c in est.history]
[(0, 0.77, 0.77), (1, 0.75, 0.73), (2, 0.75, 0.81)]
>>> est.calibrated, est.reference_accuracy
(True, 0.765)
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import math
from collections.abc import Hashable, Sequence
from typing import Any

from mypy_extensions import mypyc_attr

from modelog.models.errors import InvalidParameterError
from modelog.models.pickled import FrozenState

__all__ = ["HistogramCalibrator", "PerformanceDrop", "PerformanceEstimator", "ProbabilityView",
           "WindowComparison", "WindowEstimate", "label_key", "probability_view", "same_class"]


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class ProbabilityView(FrozenState):
    """What an output says as a classifier: predicted class, its confidence, P(positive)."""

    predicted: str
    confidence: float
    positive: float | None  # P(positive class) of a binary classifier, else None


_POSITIVE_NAMES = ("1", "1.0", "true", "yes", "positive", "pos")


def probability_view(output: Any, positive_class: str | None = None,
                     predicted: str | None = None) -> ProbabilityView | None:
    """Read a prediction's ``output`` as class probabilities; ``None`` if it is not one.

    A dict of class -> probability (normalised by its sum) or a float in
    ``[0, 1]`` (P(class ``"1"``)). A two-class dict is binary when its positive
    class is known: ``positive_class``, else a key named 1/true/yes/positive.
    The predicted class is ``predicted`` when it is a class of the dict (the
    class the model answered, which a tuned threshold may make other than the
    most probable one), else the most probable class.

    Examples
    --------
    >>> probability_view({"no": 0.3, "yes": 0.7})
    ProbabilityView(predicted='yes', confidence=0.7, positive=0.7)
    >>> probability_view(0.2), probability_view(3), probability_view(1.5)
    (ProbabilityView(predicted='0', confidence=0.8, positive=0.2), None, None)
    >>> probability_view({"a": 1.0, "b": 1.0, "c": 2.0}).confidence
    0.5
    >>> probability_view({"0": 0.6, "1": 0.4}, predicted="1")
    ProbabilityView(predicted='1', confidence=0.4, positive=0.4)
    """
    if isinstance(output, float):
        if not 0.0 <= output <= 1.0:
            return None
        return ProbabilityView("1" if output >= 0.5 else "0", max(output, 1.0 - output), output)
    if not isinstance(output, dict) or not output:
        return None
    total = 0.0
    best_key, best = "", -1.0
    for key, value in output.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            return None
        total += value
        if value > best:
            best_key, best = str(key), float(value)
    if total <= 0:
        return None
    if predicted is not None and predicted != best_key:
        chosen = output.get(predicted)
        if chosen is not None:
            best_key, best = predicted, float(chosen)
    positive: float | None = None
    if len(output) == 2:
        pos = positive_class if positive_class in output else next(
            (k for k in output if str(k).lower() in _POSITIVE_NAMES), None)
        if pos is not None:
            positive = float(output[pos]) / total
    return ProbabilityView(best_key, best / total, positive)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def same_class(label: str, predicted: str) -> bool:
    """Whether a label and a class, both as text, name one class.

    Case aside, and a number whatever its spelling: a label ``1.0`` from a float
    column is class ``"1"`` of an integer classifier.

    >>> same_class("1.0", "1"), same_class("Yes", "yes"), same_class("1", "2")
    (True, True, False)
    """
    if label == predicted:
        return True
    label, predicted = label.lower(), predicted.lower()
    if label == predicted:
        return True
    a = _number(label)
    return a is not None and a == _number(predicted)


def label_key(label: Any, binary_float: bool) -> str:
    """A label as the class name it is compared with (``True``/``1.0`` -> ``"1"`` for floats).

    >>> label_key(True, True), label_key(0.0, True), label_key("yes", False), label_key(2, False)
    ('1', '0', 'yes', '2')
    """
    if binary_float:
        if isinstance(label, bool):
            return "1" if label else "0"
        if isinstance(label, int | float) and label in (0, 1):
            return str(int(label))
        if isinstance(label, str) and label.lower() in ("true", "false"):
            return "1" if label.lower() == "true" else "0"
    return str(label)


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class HistogramCalibrator:
    """Histogram binning with shrinkage: each bin corrects scores by its observed offset.

    A bin's offset is (positives - sum of scores) / (count + ``prior``): the gap
    between what happened and what the scores said, shrunk towards 0 (the scores
    are right) by ``prior`` pseudo-observations, so a small reference does not
    make a calibrated model worse. ``predict(score)`` is ``score + offset`` of
    its bin, clipped to [0, 1]; a bin with fewer than ``min_bin_count``
    reference scores keeps the raw score.

    Examples
    --------
    >>> cal = HistogramCalibrator(bins=2, min_bin_count=2, prior=0).fit(
    ...     [0.6, 0.7, 0.9, 0.9, 0.2], [0, 1, 1, 1, 0])
    >>> cal.predict(0.65), cal.predict(0.9), cal.predict(0.1)
    (0.625, 0.875, 0.1)
    """

    def __init__(self, bins: int = 10, min_bin_count: int = 10, prior: float = 20.0) -> None:
        if bins < 1:
            raise InvalidParameterError("HistogramCalibrator", "bins", bins, "must be >= 1")
        self.bins = bins
        self.min_bin_count = min_bin_count
        self.prior = prior
        self.offsets: list[float | None] = [None] * bins

    def _bin(self, score: float) -> int:
        return min(self.bins - 1, max(0, int(score * self.bins)))

    def fit(self, scores: Sequence[float], outcomes: Sequence[int]) -> HistogramCalibrator:
        """Learn each bin's offset from reference ``scores`` and their 0/1 ``outcomes``."""
        counts = [0] * self.bins
        gaps = [0.0] * self.bins
        for s, y in zip(scores, outcomes, strict=True):
            b = self._bin(s)
            counts[b] += 1
            gaps[b] += y - s
        self.offsets = [g / (c + self.prior) if c >= self.min_bin_count else None
                        for g, c in zip(gaps, counts, strict=True)]
        return self

    def predict(self, score: float) -> float:
        """The calibrated probability of ``score`` (the raw score in a sparse bin)."""
        offset = self.offsets[self._bin(score)]
        return score if offset is None else min(1.0, max(0.0, score + offset))


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass
class WindowEstimate:
    """The estimate of one closed window of predictions."""

    index: int
    size: int
    start: dt.datetime | None
    end: dt.datetime | None
    accuracy: float
    f1: float | None
    calibrated: bool
    reference_accuracy: float | None
    threshold: float | None
    evidence: tuple[str, ...] = ()


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass
class WindowComparison:
    """A window's estimate next to what its labels showed."""

    index: int
    size: int
    labelled: int
    start: dt.datetime | None
    end: dt.datetime | None
    estimated_accuracy: float
    realized_accuracy: float
    estimated_f1: float | None
    realized_f1: float | None

    @property
    def gap(self) -> float:
        """Realized minus estimated accuracy."""
        return self.realized_accuracy - self.estimated_accuracy


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class PerformanceDrop(FrozenState):
    """Evidence of an estimated accuracy drop."""

    estimate: WindowEstimate
    reference_accuracy: float
    threshold: float


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass
class _Window:
    index: int
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    keys: list[Hashable] = dataclasses.field(default_factory=list)
    expected_correct: float = 0.0
    tp: float = 0.0
    fp: float = 0.0
    fn: float = 0.0
    binary: int = 0  # predictions with a P(positive)
    estimate: WindowEstimate | None = None
    labelled: int = 0
    correct: int = 0
    r_tp: int = 0
    r_fp: int = 0
    r_fn: int = 0
    reported: bool = False


def _f1(tp: float, fp: float, fn: float) -> float | None:
    denominator = 2 * tp + fp + fn
    return None if denominator <= 0 else 2 * tp / denominator


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class PerformanceEstimator:
    """CBPE per window of predictions, its calibration, and the realized comparison.

    Parameters
    ----------
    window
        Predictions per estimated window.
    reference_size
        Labelled predictions forming the reference (calibration and reference accuracy).
    calibrate
        Fit a :class:`HistogramCalibrator` on the reference (``False``: trust the model).
    bins, min_bin_count
        The calibrator's equal-width bins and the fewest reference predictions a bin needs.
    k, tolerance
        A window whose estimate is below the reference accuracy by more than
        ``max(tolerance, k * sqrt(a (1 - a) / window))`` is a drop.
    label_share
        A closed window is compared with its realized figures once this share
        of its predictions is labelled.
    max_windows
        Closed windows kept waiting for labels (older ones are forgotten).
    positive_class
        The positive class of two-class dict outputs (for F1).

    Read-outs after :meth:`update`: :attr:`estimates` (the window it closed),
    :attr:`drift_detected` and :attr:`findings` (a drop opened); after
    :meth:`learn_one`: :attr:`comparisons` (windows now compared).
    """

    def __init__(self, window: int = 500, reference_size: int = 1_000, *, calibrate: bool = True,
                 bins: int = 10, min_bin_count: int = 10, k: float = 3.0,
                 tolerance: float = 0.02, label_share: float = 0.5, max_windows: int = 20,
                 positive_class: str | None = None) -> None:
        for name, value in (("window", window), ("reference_size", reference_size),
                            ("max_windows", max_windows)):
            if value < 1:
                raise InvalidParameterError("PerformanceEstimator", name, value, "must be >= 1")
        if not 0.0 < label_share <= 1.0:
            raise InvalidParameterError("PerformanceEstimator", "label_share", label_share,
                                        "must be in (0, 1]")
        if k < 0 or tolerance < 0:
            raise InvalidParameterError("PerformanceEstimator", "k" if k < 0 else "tolerance",
                                        min(k, tolerance), "must be >= 0")
        self.window = window
        self.reference_size = reference_size
        self.calibrate = calibrate
        self.k = k
        self.tolerance = tolerance
        self.label_share = label_share
        self.max_windows = max_windows
        self.positive_class = positive_class
        HistogramCalibrator(bins, min_bin_count)  # fail now on bad calibration settings
        self.calibrator: HistogramCalibrator | None = None
        self._bins, self._min_bin_count = bins, min_bin_count
        self._ref_scores: list[float] = []
        self._ref_outcomes: list[int] = []
        self._ref_correct = self._ref_binary = 0
        self._ref_tp = self._ref_fp = self._ref_fn = 0
        self.reference_accuracy: float | None = None
        self.reference_f1: float | None = None
        self._first_estimate: float | None = None
        # key -> (window index, predicted class, raw score, positive class or None, float output?)
        self._pending: dict[Hashable, tuple[int, str, float, str | None, bool]] = {}
        self._windows: collections.OrderedDict[int, _Window] = collections.OrderedDict()
        self._current = _Window(0)
        self._dropped = False
        self.history: collections.deque[WindowComparison] = collections.deque(maxlen=50)
        self.estimates: list[WindowEstimate] = []
        self.comparisons: list[WindowComparison] = []
        self._findings: list[PerformanceDrop] = []
        self.n_predictions = 0
        self.n_skipped = 0

    # -- read-outs -------------------------------------------------------------
    @property
    def drift_detected(self) -> bool:
        """Whether the last :meth:`update` opened an estimated drop."""
        return bool(self._findings)

    @property
    def findings(self) -> Sequence[PerformanceDrop]:
        """The drop the last :meth:`update` opened (empty otherwise)."""
        return self._findings

    @property
    def calibrated(self) -> bool:
        """Whether estimates use the calibrator fitted on the labelled reference."""
        return self.calibrator is not None

    # -- input -----------------------------------------------------------------
    def update(self, output: Any, key: Hashable, time: dt.datetime | None = None,
               predicted: str | None = None) -> None:
        """One prediction: its ``output`` (probabilities) and its id ``key``.

        ``predicted``: the class the model answered, when ``output`` is its
        class probabilities (default: the most probable class).
        """
        if self.estimates:
            self.estimates, self._findings = [], []
        view = probability_view(output, self.positive_class, predicted)
        if view is None:
            self.n_skipped += 1
            return
        self.n_predictions += 1
        w = self._current
        if w.start is None:
            w.start = time
        w.end = time
        w.keys.append(key)
        binary_float = isinstance(output, float)
        pos_name: str | None = None
        if view.positive is not None:
            pos_name = "1" if binary_float else self._positive_name(output)
            q = self._calibrated(view.positive)
            if view.predicted == pos_name:
                w.tp += q
                w.fp += 1.0 - q
                w.expected_correct += q
            else:
                w.fn += q
                w.expected_correct += 1.0 - q
            w.binary += 1
        else:
            w.expected_correct += self._calibrated(view.confidence)
        score = view.positive if view.positive is not None else view.confidence
        self._pending[key] = (w.index, view.predicted, score, pos_name, binary_float)
        if len(w.keys) >= self.window:
            self._close()

    def _positive_name(self, output: dict[str, float]) -> str | None:
        if self.positive_class is not None and self.positive_class in output:
            return self.positive_class
        return next((str(k) for k in output if str(k).lower() in _POSITIVE_NAMES), None)

    def _calibrated(self, score: float) -> float:
        return score if self.calibrator is None else self.calibrator.predict(score)

    def _close(self) -> None:
        w = self._current
        n = len(w.keys)
        accuracy = w.expected_correct / n
        f1 = _f1(w.tp, w.fp, w.fn) if w.binary == n else None
        if self._first_estimate is None:
            self._first_estimate = accuracy
        reference = self.reference_accuracy if self.reference_accuracy is not None \
            else self._first_estimate
        threshold = None
        if reference is not None:
            spread = self.k * math.sqrt(max(reference * (1 - reference), 0.0) / self.window)
            threshold = reference - max(self.tolerance, spread)
        w.estimate = WindowEstimate(w.index, n, w.start, w.end, accuracy, f1, self.calibrated,
                                    reference, threshold,
                                    tuple(str(k) for k in w.keys[-20:]))
        self.estimates = [w.estimate]
        if threshold is not None and reference is not None:
            below = accuracy < threshold
            if below and not self._dropped:
                self._findings = [PerformanceDrop(w.estimate, reference, threshold)]
            self._dropped = below
        self._windows[w.index] = w
        self._current = _Window(w.index + 1)
        while len(self._windows) > self.max_windows:
            _, old = self._windows.popitem(last=False)
            for k in old.keys:
                self._pending.pop(k, None)

    def learn_one(self, key: Hashable, label: Any) -> None:
        """The label of prediction ``key`` (ignored if unknown or forgotten)."""
        if self.comparisons:
            self.comparisons = []
        entry = self._pending.pop(key, None)
        if entry is None:
            return
        index, predicted, score, pos_name, binary_float = entry
        truth = label_key(label, binary_float)
        correct = int(same_class(truth, predicted))
        is_pos = said_pos = False
        if pos_name is not None:
            is_pos = same_class(truth, pos_name)
            said_pos = predicted == pos_name
        if len(self._ref_outcomes) < self.reference_size:
            self._learn_reference(score, pos_name is not None, is_pos, said_pos, correct)
        w = self._current if index == self._current.index else self._windows.get(index)
        if w is None:
            return
        w.labelled += 1
        w.correct += correct
        w.r_tp += int(is_pos and said_pos)
        w.r_fp += int(not is_pos and said_pos)
        w.r_fn += int(is_pos and not said_pos)
        if w.estimate is not None and not w.reported and \
                w.labelled >= math.ceil(self.label_share * len(w.keys)):
            w.reported = True
            e = w.estimate
            comparison = WindowComparison(
                e.index, e.size, w.labelled, e.start, e.end, e.accuracy,
                w.correct / w.labelled, e.f1,
                _f1(w.r_tp, w.r_fp, w.r_fn) if e.f1 is not None else None)
            self.comparisons = [comparison]
            self.history.append(comparison)

    def _learn_reference(self, score: float, binary: bool, is_pos: bool, said_pos: bool,
                         correct: int) -> None:
        """One labelled reference prediction; at ``reference_size`` fit the calibrator."""
        self._ref_scores.append(score)
        self._ref_outcomes.append(int(is_pos) if binary else correct)
        self._ref_binary += int(binary)
        self._ref_correct += correct
        self._ref_tp += int(is_pos and said_pos)
        self._ref_fp += int(not is_pos and said_pos)
        self._ref_fn += int(is_pos and not said_pos)
        n = len(self._ref_outcomes)
        if n < self.reference_size:
            return
        self.reference_accuracy = self._ref_correct / n
        binary_all = self._ref_binary == n
        self.reference_f1 = _f1(self._ref_tp, self._ref_fp, self._ref_fn) if binary_all else None
        if self.calibrate and (binary_all or self._ref_binary == 0):
            self.calibrator = HistogramCalibrator(self._bins, self._min_bin_count).fit(
                self._ref_scores, self._ref_outcomes)
        self._ref_scores = []  # not needed again; the outcomes' count ends the reference
