"""The serving join and per-model monitoring state (pure: no Kafka, no DuckDB).

:class:`ServingMonitor` reads decoded ``PredictionMade`` and ``LabelObserved``
events in log order and returns the derived events to publish on the
monitoring topic:

* ``DriftDetected(kind="concept")`` when the errors of a model version (each
  label joined with its prediction) start to drift
  (:class:`~modelog.models.drift.ConceptDriftMonitor`);
* ``AnomalyDetected`` when a burst of its inputs is anomalous
  (:class:`~modelog.models.anomaly.AnomalyMonitor`);
* ``MonitorStatsReported`` every ``stats_every`` predictions of a version.

Derived events have deterministic ids (:func:`~modelog.streams.ids.derived_id`
of the triggering event's time, the kind, the model, the version and the
triggering prediction id) and take the triggering event's time, so replaying
the same log into a fresh monitor yields identical events, and consumers drop
the duplicates a restart produces.

Labels arrive late or never, so the pending predictions are bounded: at most
``max_pending`` per model (the oldest are evicted) and none older than
``pending_ttl`` in event time. Everything unusual is counted, never raised:
evictions, labels for unknown predictions (``orphan_labels`` -- including a
label logged before its prediction), duplicate labels and duplicate predictions.

Examples
--------
>>> import datetime as dt
>>> from modelog.streams.events import LabelObserved, PredictionMade
>>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
>>> monitor = ServingMonitor(MonitorConfig(stats_every=2))
>>> def predict(i, output):
...     return PredictionMade(id=f"e{i}", time=t0 + dt.timedelta(seconds=i), aggregate="churn",
...                           prediction_id=f"p{i}", model="churn", model_version=1,
...                           inputs={"age": 30 + i}, output=output)
>>> monitor.process(predict(1, 1))
[]
>>> monitor.process(LabelObserved(id="l1", time=t0 + dt.timedelta(seconds=5), aggregate="churn",
...                               prediction_id="p1", model="churn", label=0))
[]
>>> [stats] = monitor.process(predict(2, 0))
>>> stats.type_name(), stats.stats["predictions"], stats.stats["labelled"]
('MonitorStatsReported', 2.0, 1.0)
>>> stats.stats["rolling_error"]
1.0
>>> monitor.counters("churn")["pending"]
1
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from modelog.models.anomaly import AnomalyDecision, AnomalyMonitor
from modelog.models.drift import ConceptDriftMonitor, DriftDecision, Param
from modelog.streams.errors import StreamsError
from modelog.streams.events import (
    AnomalyDetected,
    DriftDetected,
    Event,
    LabelObserved,
    MonitorStatsReported,
    PredictionMade,
    Window,
)
from modelog.streams.ids import derived_id

__all__ = ["PRODUCER", "MonitorConfig", "ServingMonitor", "UnsupportedEventError",
           "prediction_error"]

Severity = Literal["info", "warning", "critical"]

PRODUCER = "modelog-worker"
"""The ``producer`` of every event the monitor derives."""


class UnsupportedEventError(StreamsError, TypeError):
    """The serving monitor was given an event that is not a prediction or a label."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        super().__init__(
            f"ServingMonitor takes PredictionMade and LabelObserved events, not {type_name}; "
            "route other events elsewhere (the worker dead-letters them)."
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class MonitorConfig:
    """How a :class:`ServingMonitor` watches every model version.

    Parameters
    ----------
    detector, detector_params
        The concept drift detector (see :data:`modelog.models.drift.DETECTORS`)
        and its River hyperparameters.
    drift_warm_up, error_window
        No concept drift alarm before ``drift_warm_up`` labelled predictions
        (and after each detection); rolling error window.
    anomaly
        Whether to score inputs for anomalies at all.
    anomaly_n_trees, anomaly_height, anomaly_window_size, anomaly_seed
        Half-Space Trees hyperparameters (a fixed seed keeps replays identical).
    anomaly_q, anomaly_window, anomaly_alpha, anomaly_min_count, anomaly_warm_up, anomaly_cooldown
        The burst rule of :class:`~modelog.models.anomaly.AnomalyMonitor`.
    max_pending, pending_ttl
        Bounds of the predictions waiting for a label, per model.
    stats_every
        Emit ``MonitorStatsReported`` every this many predictions of a version.
    max_evidence_ids
        Most prediction ids an alert carries.
    """

    detector: str = "adwin"
    detector_params: Mapping[str, Param] = dataclasses.field(default_factory=dict)
    drift_warm_up: int = 100
    error_window: int = 200
    anomaly: bool = True
    anomaly_n_trees: int = 10
    anomaly_height: int = 8
    anomaly_window_size: int = 250
    anomaly_seed: int = 42
    anomaly_q: float = 0.95
    anomaly_window: int = 200
    anomaly_alpha: float = 1e-4
    anomaly_min_count: int = 5
    anomaly_warm_up: int = 1_000
    anomaly_cooldown: int = 1_000
    max_pending: int = 100_000
    pending_ttl: dt.timedelta = dt.timedelta(days=1)
    stats_every: int = 500
    max_evidence_ids: int = 20

    def __post_init__(self) -> None:
        from modelog.models.errors import InvalidParameterError

        for name in ("max_pending", "stats_every", "error_window", "anomaly_window"):
            value = getattr(self, name)
            if value < 1:
                raise InvalidParameterError("MonitorConfig", name, value, "must be >= 1")
        if self.pending_ttl <= dt.timedelta(0):
            raise InvalidParameterError("MonitorConfig", "pending_ttl", self.pending_ttl,
                                        "must be positive")
        # fail now, not at the first prediction, on a bad detector or parameter
        self.drift_monitor()
        self.anomaly_monitor()

    def drift_monitor(self) -> ConceptDriftMonitor:
        """A fresh concept drift monitor with this configuration."""
        return ConceptDriftMonitor(self.detector, self.detector_params,
                                   warm_up=self.drift_warm_up, window=self.error_window)

    def anomaly_monitor(self) -> AnomalyMonitor:
        """A fresh anomaly monitor with this configuration."""
        return AnomalyMonitor(
            n_trees=self.anomaly_n_trees, height=self.anomaly_height,
            window_size=self.anomaly_window_size, seed=self.anomaly_seed, q=self.anomaly_q,
            window=self.anomaly_window, alpha=self.anomaly_alpha,
            min_count=self.anomaly_min_count, warm_up=self.anomaly_warm_up,
            cooldown=self.anomaly_cooldown, max_keys=self.max_evidence_ids,
        )


def _argmax(output: Any) -> Any:
    if isinstance(output, dict) and output:
        return max(output.items(), key=lambda kv: kv[1])[0]
    if isinstance(output, list) and output:
        return max(range(len(output)), key=lambda i: output[i])
    return output


def prediction_error(output: Any, label: Any) -> tuple[float, bool] | None:
    """The error of one prediction and whether it is a 0/1 (classification) error.

    A float on either side means regression: the absolute error. Otherwise the
    prediction is a class (a probability dict or list predicts its argmax) and
    the error is ``output != label``. ``None`` when either side is missing.

    Examples
    --------
    >>> prediction_error("yes", "no"), prediction_error(2, 2), prediction_error(2.5, 4.0)
    ((1.0, True), (0.0, True), (1.5, False))
    >>> prediction_error({"a": 0.2, "b": 0.8}, "b"), prediction_error(None, 1)
    ((0.0, True), None)
    """
    if output is None or label is None:
        return None
    numeric = (int, float)
    if (isinstance(output, float) or isinstance(label, float)) and not (
        isinstance(output, bool) or isinstance(label, bool)
    ) and isinstance(output, numeric) and isinstance(label, numeric):
        return abs(float(output) - float(label)), False
    predicted = _argmax(output)
    if isinstance(output, dict):
        return float(str(predicted) != str(label)), True
    return float(predicted != label), True


@dataclasses.dataclass
class _Pending:
    version: int
    output: Any
    time: dt.datetime


@dataclasses.dataclass
class _ModelState:
    pending: collections.OrderedDict[str, _Pending] = dataclasses.field(
        default_factory=collections.OrderedDict)
    joined: collections.OrderedDict[str, None] = dataclasses.field(
        default_factory=collections.OrderedDict)
    watermark: dt.datetime | None = None
    predictions: int = 0
    labels: int = 0
    orphan_labels: int = 0
    duplicate_labels: int = 0
    duplicate_predictions: int = 0
    evicted_by_size: int = 0
    evicted_by_ttl: int = 0
    unscorable_labels: int = 0


@dataclasses.dataclass
class _VersionState:
    drift: ConceptDriftMonitor
    anomaly: AnomalyMonitor | None
    # (prediction id, label time, error) of recent labelled predictions
    labelled_window: collections.deque[tuple[str, dt.datetime, float]]
    # (prediction id, prediction time) of recent inputs the anomaly monitor scored
    input_window: collections.deque[tuple[str, dt.datetime]]
    predictions: int = 0
    labelled: int = 0
    error_sum: float = 0.0
    period_start: dt.datetime | None = None
    rejected_errors: int = 0


class ServingMonitor:
    """Join predictions with labels and run the monitors of every model version.

    Parameters
    ----------
    config
        Detector choices and bounds (:class:`MonitorConfig`).

    All state is in memory and is a pure function of the events processed so
    far, in order: rebuild it by replaying the serving log.
    """

    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config or MonitorConfig()
        self._models: dict[str, _ModelState] = {}
        self._versions: dict[tuple[str, int], _VersionState] = {}

    # -- input ---------------------------------------------------------------
    def process(self, event: Event) -> list[Event]:
        """Take one serving event; return the derived events to publish (often none).

        Raises
        ------
        UnsupportedEventError
            For any event other than ``PredictionMade`` and ``LabelObserved``.
        """
        if isinstance(event, PredictionMade):
            return self._on_prediction(event)
        if isinstance(event, LabelObserved):
            return self._on_label(event)
        raise UnsupportedEventError(event.type_name())

    def process_many(self, events: Iterable[Event]) -> list[Event]:
        """:meth:`process` each event in order; all derived events, in order."""
        out: list[Event] = []
        for event in events:
            out.extend(self.process(event))
        return out

    # -- inspection ------------------------------------------------------------
    def models(self) -> list[str]:
        """Models seen so far."""
        return sorted(self._models)

    def counters(self, model: str) -> dict[str, int]:
        """Join counters of a model (all zero for an unknown model)."""
        s = self._models.get(model) or _ModelState()
        return {
            "predictions": s.predictions,
            "labels": s.labels,
            "pending": len(s.pending),
            "orphan_labels": s.orphan_labels,
            "duplicate_labels": s.duplicate_labels,
            "duplicate_predictions": s.duplicate_predictions,
            "evicted_by_size": s.evicted_by_size,
            "evicted_by_ttl": s.evicted_by_ttl,
            "unscorable_labels": s.unscorable_labels,
        }

    def rolling_error(self, model: str, version: int) -> float | None:
        """The rolling error of a model version (``None`` if it has no labels)."""
        state = self._versions.get((model, version))
        return None if state is None else state.drift.rolling_error

    # -- join ------------------------------------------------------------------
    def _model(self, name: str) -> _ModelState:
        state = self._models.get(name)
        if state is None:
            state = self._models[name] = _ModelState()
        return state

    def _version(self, model: str, version: int) -> _VersionState:
        key = (model, version)
        state = self._versions.get(key)
        if state is None:
            cfg = self.config
            state = self._versions[key] = _VersionState(
                drift=cfg.drift_monitor(),
                anomaly=cfg.anomaly_monitor() if cfg.anomaly else None,
                labelled_window=collections.deque(maxlen=cfg.error_window),
                input_window=collections.deque(maxlen=cfg.anomaly_window),
            )
        return state

    def _advance(self, state: _ModelState, time: dt.datetime) -> None:
        if state.watermark is None or time > state.watermark:
            state.watermark = time
        horizon = state.watermark - self.config.pending_ttl
        pending = state.pending
        while pending:
            first = next(iter(pending.values()))
            if first.time >= horizon:
                break
            pending.popitem(last=False)
            state.evicted_by_ttl += 1

    def _remember_joined(self, state: _ModelState, prediction_id: str) -> None:
        state.joined[prediction_id] = None
        if len(state.joined) > self.config.max_pending:
            state.joined.popitem(last=False)

    def _on_prediction(self, ev: PredictionMade) -> list[Event]:
        model = self._model(ev.model)
        self._advance(model, ev.time)
        pid = ev.prediction_id
        if pid in model.pending or pid in model.joined:
            model.duplicate_predictions += 1
            return []
        model.predictions += 1
        model.pending[pid] = _Pending(ev.model_version, ev.output, ev.time)
        if len(model.pending) > self.config.max_pending:
            model.pending.popitem(last=False)
            model.evicted_by_size += 1

        version = self._version(ev.model, ev.model_version)
        version.predictions += 1
        if version.period_start is None:
            version.period_start = ev.time
        out: list[Event] = []
        if version.anomaly is not None:
            before = version.anomaly.n_observations
            decision = version.anomaly.update(ev.inputs, key=pid)
            if version.anomaly.n_observations > before:
                version.input_window.append((pid, ev.time))
            if decision is not None:
                out.append(self._anomaly_event(ev, version, decision))
        if version.predictions % self.config.stats_every == 0:
            out.append(self._stats_event(ev, model, version))
            version.period_start = None
        return out

    def _on_label(self, ev: LabelObserved) -> list[Event]:
        model = self._model(ev.model)
        self._advance(model, ev.time)
        pid = ev.prediction_id
        pending = model.pending.pop(pid, None)
        if pending is None:
            if pid in model.joined:
                model.duplicate_labels += 1
            else:
                model.orphan_labels += 1
            return []
        model.labels += 1
        self._remember_joined(model, pid)
        error = prediction_error(pending.output, ev.label)
        if error is None:
            model.unscorable_labels += 1
            return []
        version = self._version(ev.model, pending.version)
        value, _binary = error
        try:
            decision = version.drift.update(value)
        except ValueError:  # e.g. an absolute error fed to a 0/1 detector (ddm, eddm)
            version.rejected_errors += 1
            return []
        version.labelled += 1
        version.error_sum += value
        version.labelled_window.append((pid, ev.time, value))
        if decision is None:
            return []
        return [self._drift_event(ev, pending.version, version, decision)]

    # -- derived events -----------------------------------------------------------
    def _drift_event(self, ev: LabelObserved, version_no: int, version: _VersionState,
                     d: DriftDecision) -> DriftDetected:
        recent = list(version.labelled_window)[-d.window_size:]
        binary = all(e in (0.0, 1.0) for _, _, e in recent)
        wrong = [pid for pid, _, e in recent if e > 0][-self.config.max_evidence_ids:]
        what = "error rate" if binary else "mean absolute error"
        was = "n/a" if math.isnan(d.reference) else f"{d.reference:.2f}"
        message = (f"{what} {d.statistic:.2f} over the last {d.window_size} labelled "
                   f"predictions, was {was}; {d.describe()}")
        reference = None if math.isnan(d.reference) else d.reference
        return DriftDetected(
            **_derived("concept", ev, version_no),
            kind="concept",
            detector=d.detector,
            params={**d.params, "warm_up": self.config.drift_warm_up},
            statistic=d.statistic,
            threshold=reference,
            window=Window(start=recent[0][1] if recent else None, end=ev.time, size=d.window_size),
            prediction_ids=wrong,
            severity=_drift_severity(d.statistic, reference, binary),
            message=message,
        )

    def _anomaly_event(self, ev: PredictionMade, version: _VersionState,
                       d: AnomalyDecision) -> AnomalyDetected:
        recent = list(version.input_window)[-d.window_size:]
        count = round(d.statistic * d.window_size)
        message = (f"{count} of the last {d.window_size} inputs ({d.statistic:.1%}) scored above "
                   f"the {d.params['q']:.0%} anomaly-score quantile {d.score_threshold:.3f}; "
                   f"{d.expected:.1%} expected (p={d.p_value:.1e}); {d.describe()}")
        return AnomalyDetected(
            **_derived("anomaly", ev, ev.model_version),
            detector=d.detector,
            params={**d.params, "score_threshold": d.score_threshold, "p_value": d.p_value},
            statistic=d.statistic,
            threshold=d.threshold,
            window=Window(start=recent[0][1] if recent else None, end=ev.time, size=d.window_size),
            prediction_ids=list(d.keys),
            severity="critical" if d.statistic >= 2 * d.threshold else "warning",
            message=message,
        )

    def _stats_event(self, ev: PredictionMade, model: _ModelState,
                     version: _VersionState) -> MonitorStatsReported:
        anomaly = version.anomaly
        stats: dict[str, float | None] = {
            "predictions": float(version.predictions),
            "labelled": float(version.labelled),
            "rolling_error": version.drift.rolling_error,
            "mean_error": version.error_sum / version.labelled if version.labelled else None,
            "drift_detections": float(version.drift.n_detections),
            "anomaly_score_mean": anomaly.rolling_mean_score if anomaly else None,
            "anomaly_score_max": anomaly.rolling_max_score if anomaly else None,
            "anomaly_rate": anomaly.anomalous_fraction if anomaly else None,
            "anomaly_threshold": anomaly.score_threshold if anomaly else None,
            "anomaly_alerts": float(anomaly.n_alerts) if anomaly else None,
            "pending": float(len(model.pending)),
            "orphan_labels": float(model.orphan_labels),
            "duplicate_labels": float(model.duplicate_labels),
            "duplicate_predictions": float(model.duplicate_predictions),
            "evicted": float(model.evicted_by_size + model.evicted_by_ttl),
            "rejected_errors": float(version.rejected_errors),
        }
        return MonitorStatsReported(
            **_derived("stats", ev, ev.model_version),
            window=Window(start=version.period_start, end=ev.time, size=self.config.stats_every),
            stats=stats,
        )


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _ms(time: dt.datetime) -> int:
    return (time - _EPOCH) // dt.timedelta(milliseconds=1)


def _derived(kind: str, trigger: PredictionMade | LabelObserved, version: int) -> dict[str, Any]:
    """Envelope and subject of an event derived from ``trigger``, with its deterministic id.

    The id hashes the trigger's time, the kind, the model, the version and the
    prediction id, so replaying the same log yields the same ids.
    """
    model = trigger.model
    return {
        "id": derived_id(_ms(trigger.time), kind, model, str(version), trigger.prediction_id),
        "time": trigger.time,
        "aggregate": model,
        "producer": PRODUCER,
        "model": model,
        "model_version": version,
    }


def _drift_severity(statistic: float, reference: float | None, binary: bool) -> Severity:
    """``critical`` when the error at least doubled (and, for rates, rose by 0.1 or more)."""
    if reference is None:
        return "warning"
    doubled = statistic >= 2 * reference
    if binary:
        return "critical" if doubled and statistic - reference >= 0.1 else "warning"
    return "critical" if doubled else "warning"
