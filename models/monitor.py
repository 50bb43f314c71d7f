"""The serving join and per-model monitoring state (pure: no Kafka, no DuckDB).

:class:`ServingMonitor` reads decoded ``PredictionMade`` and ``LabelObserved``
events in log order and returns the derived events to publish on the
monitoring topic:

* ``DriftDetected(kind="concept")`` when the errors of a model version (each
  label joined with its prediction) start to drift
  (:class:`~modelog.models.drift.ConceptDriftMonitor`);
* ``AnomalyDetected`` when a burst of its inputs is anomalous
  (:class:`~modelog.models.anomaly.AnomalyMonitor`; optionally 1 input in
  ``anomaly_sample_every``);
* ``DriftDetected(kind="data")`` when an input feature's distribution moves
  away from its reference and ``DriftDetected(kind="prediction")`` when the
  output's does (feature :data:`OUTPUT`; no labels needed) -- PSI and KS for
  numbers, PSI, chi-squared, new and vanished categories for classes
  (:class:`~modelog.models.datadrift.DataDriftMonitor`), evaluated every
  ``check_every`` predictions. The reference is the first ``reference_size``
  predictions of the version, or the ``reference`` profile of the
  configuration (e.g. the training dataset's ``profile_table``);
* ``SkewDetected`` when inputs disagree with the version's signature (from its
  ``ModelVersionRegistered``, else the configuration's ``signature``) or their
  share of nulls with the reference (:class:`~modelog.models.skew.SkewMonitor`),
  once per (model, version, feature, kind);
* ``DriftResolved`` when an open data or prediction drift condition has stayed
  below its threshold for a whole ``drift_window``;
* ``MonitorStatsReported`` every ``stats_every`` predictions of a version,
  with the latest drift statistics and thresholds per feature
  (``psi.<feature>``, ``ks.<feature>``, ``psi_threshold.<feature>``, ...,
  ``psi.__output__``) and the skew and bad-input counters.

Alert grouping: a condition (model, version, kind, feature, detector) that is
open is not alerted again; :class:`~modelog.models.datadrift.AlertBook` keeps
the opening event's id, which its ``DriftResolved`` names as ``detected_id``.

Configuration: :class:`MonitorConfig` is the default for every model, so a
newly registered model is watched with no setup; ``MonitorConfigured`` events
override it per model at run time (:meth:`ServingMonitor.configure`; an
invalid one raises :class:`MonitorConfigError` naming the field, the value and
the rule, and changes nothing).

Bad input rule. Never a crash, never a silently skewed statistic:

* predictions of models or versions never registered are monitored as any
  other (counted in ``unregistered``; without a signature there are no
  missing/unexpected/type checks, null shares are still watched);
* a feature value of the wrong type (a string where a number is expected) is
  skew (``SkewDetected(kind="type")``) and is kept out of the drift
  statistics (counted in ``type_mismatches``); nulls are kept out too and
  watched as a share (``kind="nulls"``);
* NaN and infinities never reach the monitor: the codec rejects them, and the
  worker dead-letters the record;
* labels for unknown prediction ids are counted (``orphan_labels``), labels
  arriving twice are ignored (``duplicate_labels``), as are predictions
  arriving twice (``duplicate_predictions``).

Derived events have deterministic ids (:func:`~modelog.models.ids.derived_id`
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
>>> from modelog.models.events import LabelObserved, PredictionMade
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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from modelog.models.anomaly import AnomalyDecision, AnomalyMonitor
from modelog.models.datadrift import (
    AlertBook,
    DataDriftMonitor,
    DriftThresholds,
    FeatureCheck,
    profile_columns,
)
from modelog.models.drift import ConceptDriftMonitor, DriftDecision, Param
from modelog.models.errors import ModelsError, MonitorConfigError, UnsupportedEventError
from modelog.models.events import (
    AnomalyDetected,
    DriftDetected,
    DriftResolved,
    Event,
    LabelObserved,
    ModelVersionRegistered,
    MonitorConfigured,
    MonitorStatsReported,
    PredictionMade,
    SkewDetected,
    Window,
)
from modelog.models.ids import derived_id, epoch_ms
from modelog.models.skew import SkewFinding, SkewMonitor

__all__ = ["OUTPUT", "PRODUCER", "MonitorConfig", "MonitorConfigError", "ServingMonitor",
           "UnsupportedEventError", "prediction_error"]

Severity = Literal["info", "warning", "critical"]

PRODUCER = "modelog-worker"
"""The ``producer`` of every event the monitor derives."""

OUTPUT = "__output__"
"""The feature name of a model's output in prediction drift events and statistics."""


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
    anomaly_learn_every
        After the anomaly warm-up, every sampled input is scored but the trees
        learn only 1 in this many (see
        :class:`~modelog.models.anomaly.AnomalyMonitor`'s ``learn_every``):
        learning is half of Half-Space Trees' cost.
    anomaly_sample_every
        Score 1 in this many inputs for anomalies (1: all). Half-Space Trees
        cost ~33 µs an input, the largest share of the hot path; sampling
        ``k`` multiplies throughput headroom but also the warm-up and the
        detection delay (counted in predictions) by ``k``, and a burst must
        last ~``k`` times longer to fill the test window.
    data_drift, prediction_drift, skew
        Watch the inputs' distributions, the output's distribution and the
        inputs against the signature.
    reference_size
        Predictions of a version forming the warm-up reference of every
        feature (and output) the ``reference`` profile does not cover.
    drift_window
        Sliding live window (predictions) compared with the reference; an open
        drift condition resolves after a whole window below its threshold.
    check_every
        Evaluate data/prediction drift and skew every this many predictions.
    psi_bins
        Quantile bins of a warm-up reference's PSI.
    psi_threshold, ks_alpha, chi2_alpha, new_category_share, vanished_category_share
        Drift thresholds (see :class:`~modelog.models.datadrift.DriftThresholds`).
    nulls_tolerance
        Largest accepted gap between live and reference shares of nulls.
    max_categories, max_features
        Bounds of the drift state: distinct categories per window, features per version.
    reference
        A ``profile_table``-shaped profile (e.g. of the training dataset) used
        as the reference of the features it covers (``"__output__"`` for the output).
    signature
        Feature name -> Arrow type for skew checks of versions whose
        ``ModelVersionRegistered`` carries no signature.
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
    anomaly_learn_every: int = 4
    anomaly_sample_every: int = 1
    data_drift: bool = True
    prediction_drift: bool = True
    skew: bool = True
    reference_size: int = 1_000
    drift_window: int = 500
    check_every: int = 100
    psi_bins: int = 10
    psi_threshold: float = 0.2
    ks_alpha: float = 1e-5
    chi2_alpha: float = 1e-3
    new_category_share: float = 0.01
    vanished_category_share: float = 0.05
    nulls_tolerance: float = 0.1
    max_categories: int = 100
    max_features: int = 200
    reference: Mapping[str, Any] | None = None
    signature: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        from modelog.models.errors import InvalidParameterError

        for name in ("max_pending", "stats_every", "error_window", "anomaly_window",
                     "anomaly_sample_every", "check_every"):
            value = getattr(self, name)
            if value < 1:
                raise InvalidParameterError("MonitorConfig", name, value, "must be >= 1")
        if self.pending_ttl <= dt.timedelta(0):
            raise InvalidParameterError("MonitorConfig", "pending_ttl", self.pending_ttl,
                                        "must be positive")
        if self.signature is not None and not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.signature.items()):
            raise InvalidParameterError("MonitorConfig", "signature", self.signature,
                                        "must map feature names to Arrow type names")
        # fail now, not at the first prediction, on a bad detector or parameter
        self.drift_monitor()
        self.anomaly_monitor()
        self.data_drift_monitor()
        self.output_drift_monitor()
        self.skew_monitor(None)

    def thresholds(self) -> DriftThresholds:
        """The data and prediction drift thresholds."""
        return DriftThresholds(psi=self.psi_threshold, ks_alpha=self.ks_alpha,
                               chi2_alpha=self.chi2_alpha,
                               new_category_share=self.new_category_share,
                               vanished_category_share=self.vanished_category_share)

    def _drift(self, reference: Mapping[str, Any] | None) -> DataDriftMonitor:
        return DataDriftMonitor(
            reference_size=self.reference_size, window=self.drift_window, bins=self.psi_bins,
            thresholds=self.thresholds(), reference=reference,
            max_categories=self.max_categories, max_features=self.max_features)

    def data_drift_monitor(self) -> DataDriftMonitor:
        """A fresh input drift monitor (the ``reference`` profile's columns, the rest warm-up)."""
        columns = {k: v for k, v in profile_columns(self.reference).items() if k != OUTPUT}
        return self._drift(columns)

    def output_drift_monitor(self) -> DataDriftMonitor:
        """A fresh prediction drift monitor (feature :data:`OUTPUT`)."""
        column = profile_columns(self.reference).get(OUTPUT)
        return self._drift({OUTPUT: column} if column else None)

    def skew_monitor(self, signature: Mapping[str, str] | None) -> SkewMonitor:
        """A fresh skew monitor (``signature`` from the registry, else :attr:`signature`)."""
        nulls = {str(k): float(v["null_fraction"])
                 for k, v in profile_columns(self.reference).items()
                 if isinstance(v, Mapping) and isinstance(v.get("null_fraction"), int | float)
                 and k != OUTPUT}
        return SkewMonitor(signature if signature else self.signature, nulls,
                           reference_size=self.reference_size, window=self.drift_window,
                           block=self.check_every, nulls_tolerance=self.nulls_tolerance,
                           max_keys=self.max_evidence_ids, max_features=self.max_features)

    def with_overrides(self, overrides: Mapping[str, Any], *, model: str | None = None
                       ) -> MonitorConfig:
        """This configuration with the settings of ``overrides`` (a ``MonitorConfigured.config``).

        Keys are field names; durations take seconds; ``signature`` also takes
        a list of ``{"name", "type"}`` (as ``ModelVersionRegistered.signature``).

        Raises
        ------
        MonitorConfigError
            On an unknown key, a value of the wrong type or a value the
            configuration refuses -- naming the field, the value and the rule.

        Examples
        --------
        >>> MonitorConfig().with_overrides({"psi_threshold": 0.3}).psi_threshold
        0.3
        >>> try:
        ...     MonitorConfig().with_overrides({"check_every": "often"})
        ... except MonitorConfigError as exc:
        ...     print(exc.field, exc.value, exc.rule)
        check_every often must be an integer
        """
        fields = {f.name for f in dataclasses.fields(self) if f.init}
        values: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in fields:
                raise MonitorConfigError(str(key), value,
                                         f"unknown setting; valid: {', '.join(sorted(fields))}",
                                         model)
            values[key] = _coerce(key, getattr(self, key), value, model)
        try:
            return dataclasses.replace(self, **values)
        except MonitorConfigError:
            raise
        except ModelsError as exc:
            field = getattr(exc, "parameter", None) or next(iter(values), "config")
            raise MonitorConfigError(str(field), getattr(exc, "value", None), str(exc),
                                     model) from None
        except (TypeError, ValueError) as exc:
            raise MonitorConfigError(next(iter(values), "config"), None, str(exc),
                                     model) from None

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
            learn_every=self.anomaly_learn_every,
        )


def _coerce(key: str, current: Any, value: Any, model: str | None) -> Any:
    """``value`` checked (and converted) against the type of the setting's current value."""
    def bad(rule: str) -> MonitorConfigError:
        return MonitorConfigError(key, value, rule, model)

    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise bad("must be true or false")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("must be an integer")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise bad("must be a finite number")
        return float(value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise bad("must be a string")
        return value
    if isinstance(current, dt.timedelta):
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise bad("must be a number of seconds")
        return dt.timedelta(seconds=value)
    if key == "signature" and isinstance(value, list):
        try:
            return {str(c["name"]): str(c["type"]) for c in value}
        except (KeyError, TypeError):
            raise bad('a list signature needs {"name": ..., "type": ...} items') from None
    if key == "reference" and isinstance(value, Mapping):
        columns = profile_columns(value)
        if not columns or not all(isinstance(c, Mapping) for c in columns.values()):
            raise bad("must be a profile_table() profile: {'columns': {name: column profile}}")
        return value
    if value is not None and not isinstance(value, Mapping):
        raise bad("must be a mapping (or null)")
    return value


_POSITIVE = ("1", "True", "true", "yes", "1.0")


def live_metrics(outcomes: Iterable[tuple[str, str]],
                 errors: Sequence[float]) -> dict[str, float | None]:
    """Rolling accuracy and F1 of classifications, or MAE of regressions, over a window.

    F1 is of the positive class when the labels are binary with a positive
    value (``1``, ``True``, ``yes``), else the macro average over the classes
    seen. Without classifications, ``rolling_mae`` is the mean absolute error.

    Examples
    --------
    >>> m = live_metrics([("1", "1"), ("0", "1"), ("1", "0"), ("0", "0")], [0, 1, 1, 0])
    >>> m["rolling_accuracy"], m["rolling_f1"], m["rolling_mae"]
    (0.5, 0.5, None)
    >>> live_metrics([], [0.5, 1.5])["rolling_mae"]
    1.0
    """
    pairs = list(outcomes)
    if not pairs:
        mae = sum(errors) / len(errors) if errors else None
        return {"rolling_accuracy": None, "rolling_f1": None, "rolling_mae": mae}
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
        self._configs: dict[str, MonitorConfig] = {}
        self._signatures: dict[tuple[str, int], dict[str, str]] = {}

    # -- input ---------------------------------------------------------------
    def prescore(self, predictions: Sequence[PredictionMade]) -> int:
        """Score the anomaly inputs of upcoming predictions at once (a batch optimisation).

        Call it with the predictions about to be :meth:`process`-ed, in order;
        the results of :meth:`process` are exactly the same as without it (see
        :meth:`~modelog.models.anomaly.AnomalyMonitor.prescore`), only cheaper.
        Returns how many inputs were scored ahead.
        """
        upcoming: dict[tuple[str, int], list[tuple[str, Mapping[str, Any]]]] = {}
        for ev in predictions:
            upcoming.setdefault((ev.model, ev.model_version), []).append(
                (ev.prediction_id, ev.inputs))
        scored = 0
        for key, items in upcoming.items():
            version = self._versions.get(key)
            if version is not None and version.anomaly is not None:
                scored += version.anomaly.prescore(items)
        return scored

    def process(self, event: Event) -> list[Event]:
        """Take one event; return the derived events to publish (often none).

        ``PredictionMade`` and ``LabelObserved`` are monitored;
        ``MonitorConfigured`` (see :meth:`configure`) and
        ``ModelVersionRegistered`` (see :meth:`observe_registry`) update the
        configuration and the signatures and derive nothing.

        Raises
        ------
        UnsupportedEventError
            For any other event.
        MonitorConfigError
            For a ``MonitorConfigured`` with an invalid configuration (nothing changes).
        """
        if isinstance(event, PredictionMade):
            return self._on_prediction(event)
        if isinstance(event, LabelObserved):
            return self._on_label(event)
        if isinstance(event, MonitorConfigured):
            self.configure(event)
            return []
        if isinstance(event, ModelVersionRegistered):
            self.observe_registry(event)
            return []
        raise UnsupportedEventError(event.type_name())

    def config_for(self, model: str) -> MonitorConfig:
        """The configuration in force for ``model`` (the default unless configured)."""
        return self._configs.get(model, self.config)

    def configure(self, event: MonitorConfigured) -> MonitorConfig:
        """Apply a model's ``MonitorConfigured`` on top of its current configuration.

        Thresholds, ``check_every``, ``stats_every`` and the enable switches act
        at once on running versions. A change of the drift/skew structure
        (reference, windows, bins, signature, bounds) restarts the data drift,
        prediction drift and skew monitors of the model's versions (open
        conditions stay open and resolve normally). Concept drift and anomaly
        settings apply to versions first seen afterwards.

        Raises
        ------
        MonitorConfigError
            When the configuration is invalid; the previous one stays in force.
        """
        old = self.config_for(event.model)
        new = old.with_overrides(event.config, model=event.model)
        self._configs[event.model] = new
        rebuild = any(getattr(old, f) != getattr(new, f) for f in _STRUCTURAL)
        thresholds = new.thresholds()
        for (model, number), state in self._versions.items():
            if model != event.model:
                continue
            state.alerts.clear_after = _clear_after(new)
            if rebuild:
                self._start_drift(state, model, number, new)
            for monitor in (state.inputs_drift, state.output_drift):
                if monitor is not None:
                    monitor.thresholds = thresholds
        return new

    def observe_registry(self, event: ModelVersionRegistered) -> None:
        """Remember a registered version and its signature (the reference of skew checks)."""
        key = (event.model, event.model_version)
        self._signatures[key] = {c.name: c.type for c in event.signature}
        state = self._versions.get(key)
        if state is not None and event.signature:
            state.skew = self.config_for(event.model).skew_monitor(self._signatures[key]) \
                if self.config_for(event.model).skew else None

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
            cfg = self.config_for(model)
            state = self._versions[key] = _VersionState(
                drift=cfg.drift_monitor(),
                anomaly=cfg.anomaly_monitor() if cfg.anomaly else None,
                labelled_window=collections.deque(maxlen=cfg.error_window),
                outcomes=collections.deque(maxlen=cfg.error_window),
                input_window=collections.deque(maxlen=cfg.anomaly_window),
                alerts=AlertBook(_clear_after(cfg)),
                recent=collections.deque(maxlen=cfg.drift_window),
            )
            self._start_drift(state, model, version, cfg)
        return state

    def _start_drift(self, state: _VersionState, model: str, version: int,
                     cfg: MonitorConfig) -> None:
        """(Re)create the data drift, prediction drift and skew monitors of a version."""
        state.inputs_drift = cfg.data_drift_monitor()
        state.output_drift = cfg.output_drift_monitor()
        state.skew = cfg.skew_monitor(self._signatures.get((model, version)))
        if state.recent.maxlen != cfg.drift_window:
            state.recent = collections.deque(state.recent, maxlen=cfg.drift_window)

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
        cfg = self._configs.get(ev.model, self.config)
        version.predictions += 1
        n = version.predictions
        if version.period_start is None:
            version.period_start = ev.time
        if (ev.model, ev.model_version) not in self._signatures:
            version.unregistered += 1
        version.recent.append((pid, ev.time))
        inputs = ev.inputs
        if cfg.data_drift and version.inputs_drift is not None:
            version.inputs_drift.update(inputs)
        if cfg.prediction_drift and version.output_drift is not None:
            version.output_drift.update({OUTPUT: _output_value(ev.output)})
        if cfg.skew and version.skew is not None:
            version.skew.update(inputs, pid)
        out: list[Event] = []
        anomaly = version.anomaly
        if anomaly is not None and n % cfg.anomaly_sample_every == 0:
            before = anomaly.n_observations
            decision = anomaly.update(inputs, key=pid)
            if anomaly.n_observations > before:
                version.input_window.append((pid, ev.time))
            if decision is not None:
                out.append(self._anomaly_event(ev, version, decision))
        if n % cfg.check_every == 0:
            out.extend(self._check(ev, version, cfg))
        if n % cfg.stats_every == 0:
            out.append(self._stats_event(ev, model, version, cfg))
            version.period_start = None
        return out

    # -- data drift, prediction drift, skew ------------------------------------------
    def _check(self, ev: PredictionMade, version: _VersionState,
               cfg: MonitorConfig) -> list[Event]:
        out: list[Event] = []
        checks: list[tuple[Literal["data", "prediction"], DataDriftMonitor, FeatureCheck]] = []
        sources: tuple[tuple[Literal["data", "prediction"], DataDriftMonitor | None, bool], ...] = (
            ("data", version.inputs_drift, cfg.data_drift),
            ("prediction", version.output_drift, cfg.prediction_drift))
        for kind, monitor, on in sources:
            if monitor is not None and on:
                checks.extend((kind, monitor, c) for c in monitor.check())
        stats = version.drift_stats
        book = version.alerts
        for kind, monitor, c in checks:
            stats[f"{c.detector}.{c.feature}"] = c.statistic
            stats[f"{c.detector}_threshold.{c.feature}"] = \
                c.threshold if math.isfinite(c.threshold) else None
            key = (kind, c.feature, c.detector)
            opening = ""
            if c.breached and not book.is_open(key):
                opening = _derived(kind, ev, ev.model_version, c.feature, c.detector)["id"]
            transition = book.observe(key, c.breached, opening)
            if transition is None:
                continue
            if transition[0] == "open":
                out.append(self._data_drift_event(ev, version, cfg, kind, monitor, c))
            else:
                out.append(DriftResolved(
                    **_derived(f"{kind}-resolved", ev, ev.model_version, c.feature, c.detector),
                    kind=kind, feature=c.feature, detector=c.detector,
                    detected_id=str(transition[1]), statistic=c.statistic,
                ))
        if cfg.skew and version.skew is not None:
            for finding in version.skew.check():
                if (finding.feature, finding.kind) not in version.skew_reported:
                    version.skew_reported.add((finding.feature, finding.kind))
                    out.append(self._skew_event(ev, version, finding))
        return out

    def _evidence(self, version: _VersionState, cfg: MonitorConfig) -> list[str]:
        recent = version.recent
        k = min(cfg.max_evidence_ids, len(recent))
        return [recent[i][0] for i in range(len(recent) - k, len(recent))]

    def _data_drift_event(self, ev: PredictionMade, version: _VersionState, cfg: MonitorConfig,
                          kind: Literal["data", "prediction"], monitor: DataDriftMonitor,
                          c: FeatureCheck) -> DriftDetected:
        tracker = monitor.trackers[c.feature]
        what = "the output" if kind == "prediction" else f"feature {c.feature!r}"
        names = {"psi": "PSI", "ks": "KS distance", "chi2": "chi-squared",
                 "new_category": "share of new categories",
                 "vanished_category": "reference share of vanished categories"}
        p = "" if c.p_value is None else f", p={c.p_value:.1e}"
        detail = f"; {c.detail}" if c.detail else ""
        message = (f"{names[c.detector]} of {what} {c.statistic:.3g} over the last "
                   f"{tracker.size} predictions vs the {tracker.source} reference "
                   f"({tracker.n_reference:.0f} values) exceeds {c.threshold:.3g}{p}{detail}")
        params: dict[str, Param] = {
            "window": cfg.drift_window, "check_every": cfg.check_every,
            "reference": tracker.source, "reference_count": tracker.n_reference,
        }
        if c.detector == "psi" and tracker.source == "warm-up" and tracker.kind == "numeric":
            params["bins"] = cfg.psi_bins
        if c.detector in ("ks", "chi2"):
            params["alpha"] = cfg.ks_alpha if c.detector == "ks" else cfg.chi2_alpha
            params["p_value"] = c.p_value
        recent = version.recent
        return DriftDetected(
            **_derived(kind, ev, ev.model_version, c.feature, c.detector),
            kind=kind, feature=c.feature, detector=c.detector, params=params,
            statistic=c.statistic, threshold=c.threshold if math.isfinite(c.threshold) else None,
            window=Window(start=recent[-tracker.size][1] if len(recent) >= tracker.size
                          else recent[0][1], end=ev.time, size=tracker.size),
            prediction_ids=self._evidence(version, cfg),
            severity="critical" if c.statistic >= 2 * c.threshold else "warning",
            message=message,
        )

    def _skew_event(self, ev: PredictionMade, version: _VersionState,
                    f: SkewFinding) -> SkewDetected:
        observed = f.observed
        if f.kind != "nulls":
            observed = f"{observed or 'absent'} in {f.count} of the last checked predictions"
        return SkewDetected(
            **_derived("skew", ev, ev.model_version, f.feature, f.kind),
            feature=f.feature, kind=f.kind, expected=f.expected, observed=observed,
            prediction_ids=list(f.keys),
            severity="critical" if f.kind in ("missing", "type") else "warning",
        )

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
        value, classification = error
        try:
            decision = version.drift.update(value)
        except ValueError:  # e.g. an absolute error fed to a 0/1 detector (ddm, eddm)
            version.rejected_errors += 1
            return []
        version.labelled += 1
        version.error_sum += value
        version.labelled_window.append((pid, ev.time, value))
        if classification:
            version.outcomes.append((str(_argmax(pending.output)), str(ev.label)))
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
                     version: _VersionState, cfg: MonitorConfig) -> MonitorStatsReported:
        anomaly = version.anomaly
        skew = version.skew.counts if version.skew is not None else {}
        inputs = version.inputs_drift
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
            "unregistered": float(version.unregistered),
            "type_mismatches": float(inputs.type_mismatches) if inputs else None,
            "untracked_features": float(len(inputs.untracked)) if inputs else None,
            "skew_missing": float(skew.get("missing", 0)),
            "skew_unexpected": float(skew.get("unexpected", 0)),
            "skew_type": float(skew.get("type", 0)),
            "skew_nulls": float(skew.get("nulls", 0)),
            "drift_open": float(len(version.alerts.open_keys())),
            **live_metrics(version.outcomes, [e for _, _, e in version.labelled_window]),
            **version.drift_stats,
        }
        return MonitorStatsReported(
            **_derived("stats", ev, ev.model_version),
            window=Window(start=version.period_start, end=ev.time, size=cfg.stats_every),
            stats=stats,
        )


_STRUCTURAL = ("reference_size", "drift_window", "psi_bins", "max_categories", "max_features",
               "reference", "signature", "nulls_tolerance", "max_evidence_ids")
"""Settings whose change restarts the data drift, prediction drift and skew monitors."""


def _clear_after(cfg: MonitorConfig) -> int:
    """Checks below threshold that resolve a condition: a whole window."""
    return max(1, -(-cfg.drift_window // cfg.check_every))


def _output_value(output: Any) -> Any:
    """The value prediction drift watches: floats as numbers, classes as categories.

    Integers are class labels (categories); probability dicts and lists give
    their argmax class.
    """
    cls = output.__class__
    if cls is float or cls is str or cls is bool or output is None:
        return output
    if cls is int:
        return str(output)
    return str(_argmax(output))


def _derived(kind: str, trigger: PredictionMade | LabelObserved, version: int,
             *extra: str) -> dict[str, Any]:
    """Envelope and subject of an event derived from ``trigger``, with its deterministic id.

    The id hashes the trigger's time, the kind, the model, the version, the
    prediction id and any ``extra`` parts (feature, detector), so replaying
    the same log yields the same ids.
    """
    model = trigger.model
    return {
        "id": derived_id(epoch_ms(trigger.time), kind, model, str(version), trigger.prediction_id,
                         *extra),
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
