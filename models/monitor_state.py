"""The serving monitor's state per model and per model version, and its live metrics.

This module owns what :class:`~modelog.models.monitor.ServingMonitor` keeps
between events -- the predictions waiting for their label and the join
counters of each model (:class:`ModelState`), the detectors, rolling windows
and open alert conditions (:class:`AlertBook`) of each model version
(:class:`VersionState`) -- and the pure functions that
read a prediction against its label: :func:`prediction_error`,
:func:`live_metrics`, :func:`output_value`. It imports only
:mod:`modelog.models` detector modules.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Literal

from mypy_extensions import mypyc_attr

from modelog.models.anomaly import AnomalyMonitor
from modelog.models.datadrift import DataDriftMonitor
from modelog.models.drift import ConceptDriftMonitor
from modelog.models.errors import InvalidParameterError
from modelog.models.outliers import OutlierMonitor
from modelog.models.pickled import assign_state, instance_state
from modelog.models.skew import SkewMonitor

__all__ = ["AlertBook", "ModelState", "PendingPrediction", "VersionState", "live_metrics",
           "output_value", "predicted_class", "prediction_error", "probability_of_one"]

_POSITIVE = ("1", "True", "true", "yes", "1.0")


def live_metrics(outcomes: Iterable[tuple[str, str]],
                 errors: Sequence[float]) -> dict[str, float | None]:
    """Rolling accuracy and F1 of classifications, or MAE of regressions, over a window.

    F1 is of the positive class when the labels are binary with a positive
    value (``1``, ``True``, ``yes``), else the macro average over the classes
    seen. Without classifications, ``rolling_mae`` is the mean absolute error; with
    classifications and errors that are not all 0/1 (a binary classifier logging
    P(class 1), see :func:`probability_of_one`), both.

    Examples
    --------
    >>> m = live_metrics([("1", "1"), ("0", "1"), ("1", "0"), ("0", "0")], [0, 1, 1, 0])
    >>> m["rolling_accuracy"], m["rolling_f1"], m["rolling_mae"]
    (0.5, 0.5, None)
    >>> live_metrics([], [0.5, 1.5])["rolling_mae"]
    1.0
    >>> live_metrics([("1", "1"), ("0", "1")], [0.25, 0.75])
    {'rolling_accuracy': 0.5, 'rolling_f1': 0.6666666666666666, 'rolling_mae': 0.5}
    """
    pairs = list(outcomes)
    mae = sum(errors) / len(errors) if errors else None
    if not pairs:
        return {"rolling_accuracy": None, "rolling_f1": None, "rolling_mae": mae}
    if any(e != 0.0 and e != 1.0 for e in errors):  # probabilities: |p - y| beside accuracy
        return {**live_metrics(pairs, []), "rolling_mae": mae}
    accuracy = sum(p == t for p, t in pairs) / len(pairs)
    classes = {t for _, t in pairs} | {p for p, _ in pairs}
    positive = [c for c in _POSITIVE if c in classes]
    chosen = positive[:1] if len(classes) <= 2 and positive else sorted(classes)

    def f1(c: str) -> float:
        tp = sum(p == c and t == c for p, t in pairs)
        fp = sum(p == c and t != c for p, t in pairs)
        fn = sum(p != c and t == c for p, t in pairs)
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0

    return {"rolling_accuracy": accuracy, "rolling_f1": sum(map(f1, chosen)) / len(chosen),
            "rolling_mae": None}


def predicted_class(output: Any) -> Any:
    """The class an output predicts: a probability dict's or list's argmax, else itself.

    Examples
    --------
    >>> predicted_class({"a": 0.2, "b": 0.8}), predicted_class([0.7, 0.3]), predicted_class(3)
    ('b', 0, 3)
    """
    if isinstance(output, dict) and output:
        return max(output.items(), key=lambda kv: kv[1])[0]
    if isinstance(output, list) and output:
        return max(range(len(output)), key=lambda i: output[i])
    return output


_CLASS_TYPES = (int, str)
"""Class values compared by their text when their types differ (``1`` and ``"1"``)."""


def prediction_error(output: Any, label: Any) -> tuple[float, bool] | None:
    """The error of one prediction and whether it is a 0/1 (classification) error.

    A float on either side means regression: the absolute error. Otherwise the
    prediction is a class (a probability dict or list predicts its argmax) and
    the error is ``output != label``, an integer class and its text being the
    same class (labels often come from another system, as text: ``1`` and
    ``"1"`` agree). ``None`` when either side is missing.

    Examples
    --------
    >>> prediction_error("yes", "no"), prediction_error(2, 2), prediction_error(2.5, 4.0)
    ((1.0, True), (0.0, True), (1.5, False))
    >>> prediction_error({"a": 0.2, "b": 0.8}, "b"), prediction_error(None, 1)
    ((0.0, True), None)
    >>> prediction_error(1, "1"), prediction_error([0.2, 0.8], "1"), prediction_error(1, "2")
    ((0.0, True), (0.0, True), (1.0, True))
    """
    cls = type(output)
    if cls is type(label):  # the usual case: both sides of one plain type
        if cls is float:
            return abs(output - label), False
        if cls is int or cls is str or cls is bool:
            return float(output != label), True
    if output is None or label is None:
        return None
    numeric = (int, float)
    if (isinstance(output, float) or isinstance(label, float)) and not (
        isinstance(output, bool) or isinstance(label, bool)
    ) and isinstance(output, numeric) and isinstance(label, numeric):
        return abs(float(output) - float(label)), False
    predicted = predicted_class(output)
    if isinstance(output, dict) or (
            type(predicted) in _CLASS_TYPES and type(label) in _CLASS_TYPES
            and type(predicted) is not type(label)):
        return float(str(predicted) != str(label)), True
    return float(predicted != label), True


def probability_of_one(output: Any, label: Any) -> float | None:
    """``output`` when it reads as P(class 1) of a binary label: a float in [0, 1], a 0/1 label
    (int, bool or float).

    Such a prediction's error is ``|p - y|`` (:func:`prediction_error`), and it
    also predicts class 1 when ``p >= 0.5`` (rolling accuracy and F1).

    Examples
    --------
    >>> probability_of_one(0.8, 1), probability_of_one(0.8, 2), probability_of_one(1.5, 1)
    (0.8, None, None)
    """
    if type(output) is not float or not 0.0 <= output <= 1.0:
        return None
    if type(label) not in (int, bool, float) or label not in (0, 1):
        return None
    return float(output)


def output_value(output: Any) -> Any:
    """The value prediction drift watches: floats as numbers, classes as categories.

    Integers are class labels (categories); probability dicts and lists give
    their argmax class.

    Examples
    --------
    >>> output_value(0.25), output_value(1), output_value({"no": 0.9, "yes": 0.1})
    (0.25, '1', 'no')
    """
    cls = type(output)
    if cls is float or cls is str or cls is bool or output is None:
        return output
    if cls is int:
        return str(output)
    return str(predicted_class(output))


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class AlertBook:
    """Open/resolve bookkeeping of alert conditions: one alert per condition.

    ``observe(key, breached, event_id)`` returns ``("open", None)`` when a
    closed condition is breached (the condition remembers ``event_id``),
    ``("resolve", opening_id)`` after ``clear_after`` consecutive
    non-breached observations of an open condition, else ``None``.

    Examples
    --------
    >>> book = AlertBook(clear_after=2)
    >>> [book.observe("x", b, f"e{i}") for i, b in enumerate([True, True, False, False, True])]
    [('open', None), None, None, ('resolve', 'e0'), ('open', None)]
    """

    def __init__(self, clear_after: int) -> None:
        if clear_after < 1:
            raise InvalidParameterError("AlertBook", "clear_after", clear_after, "must be >= 1")
        self.clear_after = clear_after
        self._open: dict[Hashable, list[Any]] = {}  # key -> [opening id, clear streak]

    def is_open(self, key: Hashable) -> bool:
        """Whether the condition is open."""
        return key in self._open

    def opening_id(self, key: Hashable) -> str | None:
        """The id of the event that opened the condition (``None`` when closed)."""
        entry = self._open.get(key)
        return None if entry is None else str(entry[0])

    def open_keys(self) -> list[Hashable]:
        """The open conditions."""
        return list(self._open)

    def observe(self, key: Hashable, breached: bool, event_id: str
                ) -> tuple[Literal["open", "resolve"], str | None] | None:
        """Record one observation of a condition; the transition it causes, if any."""
        entry = self._open.get(key)
        if entry is None:
            if breached:
                self._open[key] = [event_id, 0]
                return "open", None
            return None
        if breached:
            entry[1] = 0
            return None
        entry[1] += 1
        if entry[1] >= self.clear_after:
            del self._open[key]
            return "resolve", str(entry[0])
        return None


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class PendingPrediction:
    """A prediction waiting for its label.

    One is made per prediction: a plain class with its own ``__init__``, which
    compiled runs no Python code (a dataclass's generated one would).
    """

    __slots__ = ("output", "time", "version")

    def __init__(self, version: int, output: Any, time: dt.datetime) -> None:
        self.version = version
        self.output = output
        self.time = time

    def __repr__(self) -> str:
        return (f"PendingPrediction(version={self.version!r}, output={self.output!r}, "
                f"time={self.time!r})")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PendingPrediction) and self.version == other.version
                and self.output == other.output and self.time == other.time)

    def __getstate__(self) -> tuple[int, Any, dt.datetime]:
        return self.version, self.output, self.time

    def __setstate__(self, state: Any) -> None:
        if type(state) is tuple and len(state) == 2:  # (None, slots): pickled as a dataclass
            version, output, time = state[1]["version"], state[1]["output"], state[1]["time"]
        else:
            version, output, time = state
        self.version = version
        self.output = output
        self.time = time


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass
class ModelState:
    """The join of one model: pending predictions, joined ids and the join counters."""

    pending: collections.OrderedDict[str, PendingPrediction] = dataclasses.field(
        default_factory=collections.OrderedDict)
    joined: collections.OrderedDict[str, None] = dataclasses.field(
        default_factory=collections.OrderedDict)
    watermark: dt.datetime | None = None
    #: The oldest event time a pending prediction may have, and the watermark it is of.
    horizon: dt.datetime | None = None
    horizon_of: dt.datetime | None = None
    #: Events in a row whose time is more than ``pending_ttl`` away from the watermark.
    offside: int = 0
    #: Events whose time was that far off the watermark (a producer's skewed clock).
    offside_times: int = 0
    predictions: int = 0
    labels: int = 0
    orphan_labels: int = 0
    duplicate_labels: int = 0
    duplicate_predictions: int = 0
    evicted_by_size: int = 0
    evicted_by_ttl: int = 0
    unscorable_labels: int = 0

    def __getstate__(self) -> dict[str, Any]:
        # The joined ids (up to ``max_pending`` per model) pickle ~3x faster as a list than
        # as an OrderedDict, and the pending predictions as tuples: a snapshot pauses the loop.
        state = instance_state(self)
        state["joined"] = list(self.joined)
        state["pending"] = [(k, p.version, p.output, p.time) for k, p in self.pending.items()]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state["joined"] = collections.OrderedDict.fromkeys(state["joined"])
        if not isinstance(state["pending"], dict):  # (a snapshot taken before: as it was)
            state["pending"] = collections.OrderedDict(
                (k, PendingPrediction(v, o, t)) for k, v, o, t in state["pending"])
        assign_state(self, state)

    def counters(self) -> dict[str, int]:
        """The join counters."""
        return {
            "predictions": self.predictions,
            "labels": self.labels,
            "pending": len(self.pending),
            "orphan_labels": self.orphan_labels,
            "duplicate_labels": self.duplicate_labels,
            "duplicate_predictions": self.duplicate_predictions,
            "evicted_by_size": self.evicted_by_size,
            "evicted_by_ttl": self.evicted_by_ttl,
            "unscorable_labels": self.unscorable_labels,
            "offside_times": self.offside_times,
        }


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass
class VersionState:
    """The detectors and rolling windows of one model version."""

    drift: ConceptDriftMonitor
    anomaly: AnomalyMonitor | None
    # (prediction id, label time, error) of recent labelled predictions
    labelled_window: collections.deque[tuple[str, dt.datetime, float]]
    # (predicted class, true class) of recent labelled classifications
    outcomes: collections.deque[tuple[str, str]]
    # (prediction id, prediction time) of recent inputs the anomaly monitor scored
    input_window: collections.deque[tuple[str, dt.datetime]]
    alerts: AlertBook
    # (prediction id, prediction time) of the last drift_window predictions
    recent: collections.deque[tuple[str, dt.datetime]]
    inputs_drift: DataDriftMonitor | None = None
    output_drift: DataDriftMonitor | None = None
    skew: SkewMonitor | None = None
    skew_reported: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    # latest drift statistics, for MonitorStatsReported
    drift_stats: dict[str, float | None] = dataclasses.field(default_factory=dict)
    predictions: int = 0
    labelled: int = 0
    error_sum: float = 0.0
    period_start: dt.datetime | None = None
    rejected_errors: int = 0
    unregistered: int = 0
    # point anomalies: the scorer, the reference it names, the scores not yet published
    outliers: OutlierMonitor | None = None
    outlier_reference: str = ""
    scored: list[tuple[str, float, bool, tuple[str, ...]]] = dataclasses.field(
        default_factory=list)
    scored_since: dt.datetime | None = None
    # the training dataset's digest and label ("" / None: none known)
    training_digest: str | None = None
    training_label: str = ""

    def evidence(self, max_ids: int) -> list[str]:
        """The ids of the last ``max_ids`` predictions."""
        recent = self.recent
        k = min(max_ids, len(recent))
        return [recent[i][0] for i in range(len(recent) - k, len(recent))]
