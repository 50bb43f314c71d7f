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
  ``check_every`` predictions. The reference is the ``reference`` profile of
  the configuration, else the version's training dataset's profile (a version
  registered from a run that trained on a logged dataset, learned from
  ``ModelVersionRegistered``, ``RunDatasetUsed`` and ``DatasetVersionCreated``
  by :class:`~modelog.models.reference.TrainingReferences`), else the first
  ``reference_size`` predictions of the version; alerts name it;
* ``PredictionsScored`` batches: every prediction's anomaly score against the
  same reference, its offending features and whether it is a gross outlier,
  and ``AnomalyDetected(detector="outliers")`` when gross outliers come at an
  improbable rate (:class:`~modelog.models.outliers.OutlierMonitor`);
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
open is not alerted again; :class:`~modelog.models.monitor_state.AlertBook` keeps
the opening event's id, which its ``DriftResolved`` names as ``detected_id``.

Configuration: a :class:`~modelog.models.monitor_config.MonitorConfig` is the
default for every model, so a newly registered model is watched with no setup;
``MonitorConfigured`` events override it per model or per version at run time
(:class:`~modelog.models.config_book.ConfigBook`)
(:meth:`ServingMonitor.configure`; an invalid one raises
:class:`~modelog.models.errors.MonitorConfigError` naming the field, the value
and the rule, and changes nothing).

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

Derived events (:mod:`modelog.models.monitor_events`) have deterministic ids
(:func:`~modelog.models.ids.derived_id` of the triggering event's time, the
kind, the model, the version and the triggering prediction id) and take the
triggering event's time, so replaying the same log into a fresh monitor yields
identical events, and consumers drop the duplicates a restart produces.
:class:`ServingMonitor` is a :class:`~modelog.models.processor.Processor`: its
state (:mod:`modelog.models.monitor_state`) can be snapshotted and restored.

This module owns the join and the dispatch of events to the detectors; it
imports only :mod:`modelog.models`.

Labels arrive late or never, so the pending predictions are bounded: at most
``max_pending`` per model (the oldest are evicted) and none older than
``pending_ttl`` in event time. Everything unusual is counted, never raised:
evictions, labels for unknown predictions (``orphan_labels``), duplicate labels
and duplicate predictions. A label logged before its prediction is an orphan here;
the worker holds such labels until their prediction comes
(:class:`~modelog.models.early_labels.EarlyLabels`, :meth:`awaits_prediction`).

Examples
--------
>>> import datetime as dt
>>> from modelog.models.events import LabelObserved, PredictionMade
>>> from modelog.models.monitor_config import MonitorConfig
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
import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

from modelog.models.config_book import ConfigBook
from modelog.models.datadrift import DataDriftMonitor
from modelog.models.errors import ModelsError, UnsupportedEventError
from modelog.models.events import (
    DatasetVersionCreated,
    Event,
    LabelObserved,
    ModelVersionRegistered,
    MonitorConfigured,
    PredictionMade,
    RunDatasetUsed,
)
from modelog.models.monitor_config import OUTPUT, MonitorConfig
from modelog.models.monitor_events import (
    DriftKind,
    anomaly_event,
    concept_drift_event,
    data_drift_event,
    derived,
    drift_resolved_event,
    outlier_event,
    reference_phrase,
    scored_event,
    skew_event,
    stats_event,
)
from modelog.models.monitor_state import (
    AlertBook,
    ModelState,
    PendingPrediction,
    VersionState,
    output_value,
    predicted_class,
    prediction_error,
    probability_of_one,
)
from modelog.models.outliers import OutlierMonitor
from modelog.models.processor import SnapshotByPickle
from modelog.models.reference import TrainingReferences

__all__ = ["ServingMonitor"]

_STRUCTURAL = (("drift", "reference_size"), ("drift", "window"), ("drift", "psi_bins"),
               ("drift", "max_categories"), ("drift", "max_features"), ("drift", "reference"),
               ("drift", "training_reference"), ("skew", "signature"),
               ("skew", "nulls_tolerance"), (None, "max_evidence_ids"), (None, "outliers"))
"""Settings whose change restarts the data drift, prediction drift and skew monitors."""


def _setting(cfg: MonitorConfig, section: str | None, name: str) -> Any:
    return getattr(cfg if section is None else getattr(cfg, section), name)


CONFIRM_OFFSIDE = 50
"""Events in a row, all more than ``pending_ttl`` off the watermark, that move it there."""


def _shifted(time: dt.datetime, by: dt.timedelta) -> dt.datetime:
    """``time + by``, clamped to the representable range (year 1 to 9999)."""
    try:
        return time + by
    except OverflowError:
        return (dt.datetime.max if by > dt.timedelta(0) else dt.datetime.min).replace(
            tzinfo=dt.UTC)


class ServingMonitor(SnapshotByPickle):
    """Join predictions with labels and run the monitors of every model version.

    Parameters
    ----------
    config
        Detector choices and bounds (:class:`~modelog.models.monitor_config.MonitorConfig`).

    All state is in memory and is a pure function of the events processed so
    far, in order: rebuild it by replaying the serving log, or carry it over
    with :meth:`snapshot` and :meth:`restore`.
    """

    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config or MonitorConfig()
        self._models: dict[str, ModelState] = {}
        self._versions: dict[tuple[str, int], VersionState] = {}
        self._book = ConfigBook(self.config)
        self._references = TrainingReferences()
        self._signatures: dict[tuple[str, int], dict[str, str]] = {}

    # -- input ---------------------------------------------------------------
    def prescore(self, events: Iterable[Event]) -> int:
        """Score the anomaly inputs of upcoming predictions at once (a batch optimisation).

        Call it with the events about to be :meth:`process`-ed, in order (only
        the predictions among them are read); the results of :meth:`process` are
        exactly the same as without it (see
        :meth:`~modelog.models.anomaly.AnomalyMonitor.prescore`), only cheaper.
        Returns how many inputs were scored ahead.
        """
        upcoming: dict[tuple[str, int], list[tuple[str, Mapping[str, Any]]]] = {}
        for ev in events:
            if type(ev) is not PredictionMade:
                continue
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
        ``ModelVersionRegistered``, ``RunDatasetUsed``, ``DatasetVersionCreated``
        (see :meth:`observe_registry`) update the configuration, the signatures
        and the training references and derive nothing.

        Raises
        ------
        UnsupportedEventError
            For any other event.
        MonitorConfigError
            For a ``MonitorConfigured`` with an invalid configuration (nothing changes).
        """
        if type(event) is PredictionMade:  # a pointer test: events are not subclassed
            return self._on_prediction(event)
        if type(event) is LabelObserved:
            return self._on_label(event)
        if isinstance(event, MonitorConfigured):
            self.configure(event)
            return []
        if isinstance(event, ModelVersionRegistered | RunDatasetUsed | DatasetVersionCreated):
            self.observe_registry(event)
            return []
        raise UnsupportedEventError(event.type_name())

    def awaits_prediction(self, label: LabelObserved) -> bool:
        """Whether ``label``'s prediction is unknown here: neither pending nor labelled.

        Such a label would be an orphan now; it may have come before its prediction
        (see :class:`~modelog.models.early_labels.EarlyLabels`).
        """
        model = self._models.get(label.model)
        pid = label.prediction_id
        return model is None or (pid not in model.pending and pid not in model.joined)

    def config_for(self, model: str, version: int | None = None) -> MonitorConfig:
        """The configuration in force for ``model`` or one of its versions."""
        return self._book.config(model, version)

    def configure(self, event: MonitorConfigured) -> MonitorConfig:
        """Apply a ``MonitorConfigured`` on top of its model's (or version's) configuration.

        ``"reset": true`` drops the target's settings first
        (:class:`~modelog.models.config_book.ConfigBook`).

        Thresholds, ``check_every``, ``stats_every`` and the enable switches act
        at once on running versions. A change of the drift/skew structure
        (reference, windows, bins, signature, bounds) restarts the data drift,
        prediction drift and skew monitors of the model's versions (open
        conditions stay open and resolve normally; a restarted monitor tests
        every ``check_every`` predictions counted from its restart). Concept
        drift and anomaly settings apply to versions first seen afterwards.

        Raises
        ------
        MonitorConfigError
            When the configuration is invalid; the previous one stays in force.
        """
        old = {key: self.config_for(*key) for key in self._versions if key[0] == event.model}
        applied = self._book.apply(event.model, event.model_version, event.config)
        for (model, number), before in old.items():
            state = self._versions[(model, number)]
            new = self.config_for(model, number)
            thresholds = new.drift.thresholds()
            every = new.drift.check_every
            state.alerts.clear_after = new.drift.clear_after
            if any(_setting(before, *s) != _setting(new, *s) for s in _STRUCTURAL):
                self._start_drift(state, model, number, new)
            for monitor in (state.inputs_drift, state.output_drift):
                if monitor is not None:
                    monitor.thresholds = thresholds
                    monitor.check_every = every
            if state.skew is not None:
                state.skew.block = every
        return applied

    def observe_registry(self, event: ModelVersionRegistered | RunDatasetUsed
                         | DatasetVersionCreated) -> None:
        """Remember a registered version's signature (the reference of skew checks) and
        learn training references: a version registered from a run that trained on a
        dataset is compared with that dataset's profile as soon as all three are known."""
        if isinstance(event, ModelVersionRegistered):
            key = (event.model, event.model_version)
            self._signatures[key] = {c.name: c.type for c in event.signature}
            state = self._versions.get(key)
            if state is not None and event.signature:
                cfg = self.config_for(*key)
                state.skew = cfg.skew_monitor(self._signatures[key], self._training(*key)) \
                    if cfg.skew.enabled else None
        if self._references.observe(event):
            for (model, number), state in self._versions.items():
                ref = self._references.reference_for(model, number)
                if (ref.digest if ref else None) != state.training_digest:
                    self._start_drift(state, model, number, self.config_for(model, number))

    def _training(self, model: str, version: int) -> Any:
        ref = self._references.reference_for(model, version)
        return None if ref is None else ref.profile

    # -- inspection ------------------------------------------------------------
    def models(self) -> list[str]:
        """Models seen so far."""
        return sorted(self._models)

    def counters(self, model: str) -> dict[str, int]:
        """Join counters of a model (all zero for an unknown model)."""
        return (self._models.get(model) or ModelState()).counters()

    def rolling_error(self, model: str, version: int) -> float | None:
        """The rolling error of a model version (``None`` if it has no labels)."""
        state = self._versions.get((model, version))
        return None if state is None else state.drift.rolling_error

    # -- join ------------------------------------------------------------------
    def _model(self, name: str) -> ModelState:
        state = self._models.get(name)
        if state is None:
            state = self._models[name] = ModelState()
        return state

    def _version(self, model: str, version: int) -> VersionState:
        key = (model, version)
        state = self._versions.get(key)
        if state is None:
            cfg = self.config_for(model, version)
            state = self._versions[key] = VersionState(
                drift=cfg.concept.monitor(),
                anomaly=cfg.anomaly_monitor() if cfg.anomaly.enabled else None,
                labelled_window=collections.deque(maxlen=cfg.concept.error_window),
                outcomes=collections.deque(maxlen=cfg.concept.error_window),
                input_window=collections.deque(maxlen=cfg.anomaly.window),
                alerts=AlertBook(cfg.drift.clear_after),
                recent=collections.deque(maxlen=cfg.drift.window),
            )
            self._start_drift(state, model, version, cfg)
        return state

    def _start_drift(self, state: VersionState, model: str, version: int,
                     cfg: MonitorConfig) -> None:
        """(Re)create the data drift, prediction drift, skew and outlier monitors of a version.

        The reference: the configured profile, else the version's training dataset,
        else the warm-up. A training profile off the broker that the monitors refuse
        is ignored (the warm-up reference is used).
        """
        ref = self._references.reference_for(model, version)
        state.training_digest = ref.digest if ref is not None else None
        state.training_label = ref.label if ref is not None else ""
        training = ref.profile if ref is not None else None
        try:
            state.inputs_drift = cfg.drift.input_monitor(training)
            state.output_drift = cfg.drift.output_monitor(training)
            state.skew = cfg.skew_monitor(self._signatures.get((model, version)), training)
        except (ModelsError, KeyError, TypeError, ValueError):
            training, state.training_label = None, ""
            state.inputs_drift = cfg.drift.input_monitor()
            state.output_drift = cfg.drift.output_monitor()
            state.skew = cfg.skew_monitor(self._signatures.get((model, version)))
        state.outliers = None
        if cfg.outliers.enabled:
            reference, source = cfg.drift.reference_of(training)
            outliers = state.outliers = OutlierMonitor(
                cfg.outliers, reference, reference_size=cfg.drift.reference_size,
                max_features=cfg.drift.max_features, max_keys=cfg.max_evidence_ids)
            state.outlier_reference = reference_phrase(
                "warm-up" if outliers.warming_up else source, cfg.drift.reference_size, state)
        if state.recent.maxlen != cfg.drift.window:
            state.recent = collections.deque(state.recent, maxlen=cfg.drift.window)

    def _advance(self, state: ModelState, time: dt.datetime) -> None:
        """Move the model's event-time watermark and evict what it leaves behind.

        The watermark is the latest event time, except that a time more than
        ``pending_ttl`` away from it (a producer with a skewed clock, a label
        stamped in year 9999) does not move it: only ``CONFIRM_OFFSIDE`` such
        events in a row do (traffic resuming after a pause, a backfill). One
        bad timestamp thus cannot expire every pending prediction.
        """
        mark = state.watermark
        ttl = self.config.pending_ttl
        if mark is None:
            state.watermark = mark = time
        elif abs(time - mark) <= ttl:  # a difference of two datetimes never overflows
            state.offside = 0
            if time > mark:
                state.watermark = mark = time
        else:
            state.offside += 1
            state.offside_times += 1
            if state.offside < CONFIRM_OFFSIDE:
                return
            state.offside = 0
            state.watermark = mark = time
        horizon = state.horizon
        if state.horizon_of is not mark or horizon is None:  # the watermark moved
            state.horizon = horizon = _shifted(mark, -ttl)
            state.horizon_of = mark
        pending = state.pending
        while pending:
            first = next(iter(pending.values()))
            if first.time >= horizon:
                break
            pending.popitem(last=False)
            state.evicted_by_ttl += 1

    def _on_prediction(self, ev: PredictionMade) -> list[Event]:
        if ev.shadow:  # scored off the request path, never labelled: the rollout compares it
            return []
        name, number, time = ev.model, ev.model_version, ev.time
        model = self._model(name)
        self._advance(model, time)
        pid = ev.prediction_id
        pending = model.pending
        if pid in pending or pid in model.joined:
            model.duplicate_predictions += 1
            return []
        model.predictions += 1
        pending[pid] = PendingPrediction(number, ev.output, time)
        if len(pending) > self.config.max_pending:
            pending.popitem(last=False)
            model.evicted_by_size += 1

        key = (name, number)
        version = self._version(name, number)
        cfg = self.config_for(name, number)
        version.predictions += 1
        n = version.predictions
        if version.period_start is None:
            version.period_start = time
        if key not in self._signatures:
            version.unregistered += 1
        version.recent.append((pid, time))
        inputs = ev.inputs
        checked: list[tuple[DriftKind, DataDriftMonitor]] = []
        inputs_drift, output_drift, skew = version.inputs_drift, version.output_drift, None
        if cfg.drift.inputs and inputs_drift is not None:
            inputs_drift.update(inputs)
            if inputs_drift.checks:
                checked.append(("data", inputs_drift))
        if cfg.drift.outputs and output_drift is not None:
            output_drift.update({OUTPUT: output_value(ev.output)})
            if output_drift.checks:
                checked.append(("prediction", output_drift))
        if cfg.skew.enabled and version.skew is not None:
            skew = version.skew
            skew.update(inputs, pid)
        out: list[Event] = []
        anomaly = version.anomaly
        if anomaly is not None and n % cfg.anomaly.sample_every == 0:
            before = anomaly.n_observations
            anomaly.update(inputs, pid)
            if anomaly.n_observations > before:
                version.input_window.append((pid, time))
            if anomaly.drift_detected:
                out.append(anomaly_event(ev, version, anomaly.findings[0]))
        if version.outliers is not None:
            out.extend(self._score(ev, version, version.outliers, cfg))
        if checked:
            out.extend(self._drift_events(ev, version, cfg, checked))
        if skew is not None and skew.drift_detected:
            for finding in skew.findings:
                if (finding.feature, finding.kind) not in version.skew_reported:
                    version.skew_reported.add((finding.feature, finding.kind))
                    out.append(skew_event(ev, finding))
        if n % cfg.stats_every == 0:
            out.append(stats_event(ev, model, version, cfg))
            version.period_start = None
        return out

    def _score(self, ev: PredictionMade, version: VersionState, outliers: OutlierMonitor,
               cfg: MonitorConfig) -> list[Event]:
        """Score a prediction against the reference; the outlier alert and the batch if due."""
        scored = outliers.update(ev.inputs, ev.prediction_id)
        if scored is None:
            return []
        out: list[Event] = []
        if outliers.decision is not None:
            out.append(outlier_event(ev, version, outliers.decision))
        if not version.scored or version.scored_since is None:
            version.scored_since = ev.time
        version.scored.append((ev.prediction_id, scored.score, scored.outlier, scored.offending))
        if len(version.scored) >= cfg.outliers.batch or (
                ev.time - version.scored_since).total_seconds() >= cfg.outliers.batch_seconds:
            out.append(scored_event(ev, version))
        return out

    # -- data drift and prediction drift -----------------------------------------------
    def _drift_events(self, ev: PredictionMade, version: VersionState, cfg: MonitorConfig,
                      checked: list[tuple[DriftKind, DataDriftMonitor]]) -> list[Event]:
        """Record the tests the drift monitors just ran; open and resolve their conditions."""
        out: list[Event] = []
        stats = version.drift_stats
        book = version.alerts
        for kind, monitor, c in [(k, m, c) for k, m in checked for c in m.checks]:
            stats[f"{c.detector}.{c.feature}"] = c.statistic
            stats[f"{c.detector}_threshold.{c.feature}"] = \
                c.threshold if math.isfinite(c.threshold) else None
            key = (kind, c.feature, c.detector)
            opening = ""
            if c.breached and not book.is_open(key):
                opening = derived(kind, ev, ev.model_version, c.feature, c.detector)["id"]
            transition = book.observe(key, c.breached, opening)
            if transition is None:
                continue
            if transition[0] == "open":
                out.append(data_drift_event(ev, version, cfg, kind, monitor, c))
            else:
                out.append(drift_resolved_event(ev, kind, c, str(transition[1])))
        return out

    # -- labels and concept drift ------------------------------------------------------
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
        joined = model.joined
        joined[pid] = None
        if len(joined) > self.config.max_pending:
            joined.popitem(last=False)
        error = prediction_error(pending.output, ev.label)
        if error is None:
            model.unscorable_labels += 1
            return []
        version = self._version(ev.model, pending.version)
        value, classification = error
        drift = version.drift
        try:
            drift.update(value)
        except ValueError:  # e.g. an absolute error fed to a 0/1 detector (ddm, eddm)
            version.rejected_errors += 1
            return []
        version.labelled += 1
        version.error_sum += value
        version.labelled_window.append((pid, ev.time, value))
        if classification:
            version.outcomes.append((str(predicted_class(pending.output)), str(ev.label)))
        elif (p := probability_of_one(pending.output, ev.label)) is not None:
            version.outcomes.append(("1" if p >= 0.5 else "0", "1" if ev.label else "0"))
        if not drift.drift_detected:
            return []
        return [concept_drift_event(ev, pending.version, version, drift.findings[0], self.config)]
