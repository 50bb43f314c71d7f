"""The quality processor: performance before labels, multivariate drift and segments.

:class:`QualityMonitor` is a :class:`~modelog.models.processor.Processor` that
runs, per model version and beside the serving monitor, on the same
``PredictionMade`` / ``LabelObserved`` stream:

* :class:`~modelog.models.perf_estimation.PerformanceEstimator` -- for versions
  whose outputs are probabilities: ``PerformanceEstimated`` per window (before
  any label), ``PerformanceRealized`` once the window's labels arrived (estimate
  against realized, with the gap), and the alert ``PerformanceDropEstimated``;
* :class:`~modelog.models.multivariate.ReconstructionDrift` -- when the
  version's reference has at least two numeric features:
  ``MultivariateDriftReported`` per window and the alert
  ``MultivariateDriftDetected``;
* :class:`~modelog.models.segments.SegmentMonitor` -- for the configured
  segment features: ``SegmentMetricsReported`` every ``report_every``
  predictions and the alert ``SegmentDegraded`` (one alert naming the segments).

Its configuration is the ``quality`` section of the model's
``MonitorConfigured`` (:mod:`modelog.models.quality_config`); a changed
detector's settings restart that detector for the model's versions. The events
(:mod:`modelog.models.quality_events`) have ids derived from their trigger, so a
replay yields the same events. Pure: imports only :mod:`modelog.models`.

Examples
--------
>>> import datetime as dt
>>> from modelog.models.events import LabelObserved, PredictionMade
>>> t = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
>>> qm = QualityMonitor(QualityConfig(window=4, reference_size=4, multivariate=False))
>>> out = []
>>> for i, p in enumerate([0.9, 0.8, 0.1, 0.3, 0.95, 0.2, 0.6, 0.7]):
...     out += qm.process(PredictionMade(id=f"e{i}", time=t, aggregate="churn",
...         prediction_id=f"p{i}", model="churn", model_version=1, inputs={}, output=p))
...     out += qm.process(LabelObserved(id=f"l{i}", time=t, aggregate="churn",
...         prediction_id=f"p{i}", model="churn", label=int(p > 0.5)))
>>> [(e.type_name(), round(getattr(e, "accuracy", 0), 3)) for e in out][:3]
[('PerformanceEstimated', 0.825), ('PerformanceRealized', 0), ('PerformanceEstimated', 0.762)]
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from typing import Any

from mypy_extensions import mypyc_attr

from modelog.models.event_base import Window
from modelog.models.events import Event, LabelObserved, MonitorConfigured, PredictionMade
from modelog.models.ids import derived_id, epoch_ms
from modelog.models.monitor_state import prediction_error, probability_of_one
from modelog.models.multivariate import MultivariateCheck, ReconstructionDrift
from modelog.models.perf_estimation import (
    PerformanceDrop,
    PerformanceEstimator,
    WindowComparison,
    WindowEstimate,
    probability_view,
)
from modelog.models.processor import SnapshotByPickle
from modelog.models.quality_config import QualityConfig, parse_quality_config
from modelog.models.quality_events import (
    MultivariateDriftDetected,
    MultivariateDriftReported,
    PerformanceDropEstimated,
    PerformanceEstimated,
    PerformanceRealized,
    SegmentDegraded,
    SegmentMetrics,
    SegmentMetricsReported,
)
from modelog.models.segments import SegmentFinding, SegmentMonitor

__all__ = ["PRODUCER", "QualityConfig", "QualityMonitor"]

PRODUCER = "modelog-worker"
"""The ``producer`` of the events this processor derives."""


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass
class _Version:
    """The quality detectors of one model version."""

    estimator: PerformanceEstimator | None
    multivariate: ReconstructionDrift | None
    segments: SegmentMonitor | None
    probabilities: bool | None = None  # decided by the first prediction
    predictions: int = 0
    period_start: dt.datetime | None = None


def _envelope(kind: str, trigger: PredictionMade | LabelObserved, version: int,
              *extra: str) -> dict[str, Any]:
    return {
        "id": derived_id(epoch_ms(trigger.time), "quality", kind, trigger.model, str(version),
                         trigger.prediction_id, *extra),
        "time": trigger.time, "aggregate": trigger.model, "producer": PRODUCER,
        "model": trigger.model, "model_version": version,
    }


class QualityMonitor(SnapshotByPickle):
    """Performance estimation, multivariate drift and segment metrics of every model version.

    Parameters
    ----------
    config
        The default :class:`~modelog.models.quality_config.QualityConfig` of every
        model (a model's ``MonitorConfigured`` ``quality`` section overrides it).
    """

    def __init__(self, config: QualityConfig | None = None) -> None:
        self.config = config or QualityConfig()
        self._configs: dict[str, QualityConfig] = {}
        self._versions: dict[tuple[str, int], _Version] = {}
        # model -> prediction id -> (version, output, segment values[, True when the
        # prediction came with its class probabilities])
        self._pending: dict[str, collections.OrderedDict[str, tuple[Any, ...]]] \
            = {}
        self.evicted = 0

    # -- configuration -------------------------------------------------------------
    def config_for(self, model: str) -> QualityConfig:
        """The configuration in force for ``model``."""
        return self._configs.get(model, self.config)

    def parse(self, event: MonitorConfigured) -> QualityConfig:
        """The configuration ``event`` would give its model (raises ``MonitorConfigError``)."""
        return parse_quality_config(event.config, base=self.config_for(event.model),
                                    model=event.model)

    def apply(self, model: str, new: QualityConfig) -> None:
        """Put ``new`` in force for ``model``; the detectors whose settings changed restart."""
        old = self.config_for(model)
        self._configs[model] = new
        for (name, _), state in self._versions.items():
            if name != model:
                continue
            if old.part("estimation") != new.part("estimation"):
                state.estimator = new.estimator() if new.estimate_performance else None
                state.probabilities = None
            if old.part("multivariate") != new.part("multivariate"):
                state.multivariate = new.multivariate_detector() if new.multivariate else None
            if old.part("segment") != new.part("segment"):
                state.segments = new.segment_monitor() if new.segments else None

    def configure(self, event: MonitorConfigured) -> QualityConfig:
        """:meth:`parse` then :meth:`apply` (nothing changes when it raises)."""
        new = self.parse(event)
        self.apply(event.model, new)
        return new

    # -- processing ------------------------------------------------------------------
    def process(self, event: Event) -> list[Event]:
        """Take a serving event (or a ``MonitorConfigured``); return the derived events."""
        if type(event) is PredictionMade:  # a pointer test: events are not subclassed
            return self._on_prediction(event)
        if type(event) is LabelObserved:
            return self._on_label(event)
        if isinstance(event, MonitorConfigured):
            self.configure(event)
        return []

    def _version(self, model: str, number: int) -> _Version:
        state = self._versions.get((model, number))
        if state is None:
            cfg = self.config_for(model)
            state = self._versions[(model, number)] = _Version(
                estimator=cfg.estimator() if cfg.estimate_performance else None,
                multivariate=cfg.multivariate_detector() if cfg.multivariate else None,
                segments=cfg.segment_monitor() if cfg.segments else None)
        return state

    def _on_prediction(self, ev: PredictionMade) -> list[Event]:
        if ev.shadow:  # scored off the request path, never labelled: the rollout compares it
            return []
        pending = self._pending.get(ev.model)
        if pending is None:
            pending = self._pending[ev.model] = collections.OrderedDict()
        pid = ev.prediction_id
        if pid in pending:
            return []  # a retried send: the first one counts
        state = self._version(ev.model, ev.model_version)
        cfg = self.config_for(ev.model)
        state.predictions += 1
        if state.period_start is None:
            state.period_start = ev.time
        out: list[Event] = []
        estimator = state.estimator
        if estimator is not None:
            scores: Any = ev.output
            predicted: str | None = None
            if ev.probabilities is not None:  # the class answered, with its probabilities
                scores = ev.probabilities
                predicted = None if ev.output is None else str(ev.output)
                state.probabilities = True  # whatever the first outputs said
            elif state.probabilities is None:  # outputs that are probabilities themselves
                state.probabilities = probability_view(scores, cfg.positive_class) is not None
            if state.probabilities:
                estimator.update(scores, pid, ev.time, predicted)
                if estimator.estimates:
                    out += [self._estimated(ev, e) for e in estimator.estimates]
                    out += [self._drop(ev, d, cfg) for d in estimator.findings]
        mv = state.multivariate
        if mv is not None and mv.enabled:
            mv.update(ev.inputs, pid, ev.time)
            if mv.checks:
                out += [self._mv_report(ev, mv, c) for c in mv.checks]
                out += [self._mv_alert(ev, mv, c) for c in mv.findings]
        segments: tuple[str, ...] = ()
        if state.segments is not None:
            segments = state.segments.update(ev.inputs)
            if state.predictions % cfg.report_every == 0:
                out.append(self._segment_report(ev, state))
        # A fourth item marks a prediction logged with its class probabilities.
        pending[pid] = (ev.model_version, ev.output, segments) if ev.probabilities is None \
            else (ev.model_version, ev.output, segments, True)
        if len(pending) > cfg.max_pending:
            pending.popitem(last=False)
            self.evicted += 1
        return out

    def _on_label(self, ev: LabelObserved) -> list[Event]:
        pending = self._pending.get(ev.model)
        entry = None if pending is None else pending.pop(ev.prediction_id, None)
        if entry is None:
            return []
        number, output, segments = entry[0], entry[1], entry[2]
        state = self._versions.get((ev.model, number))
        if state is None:
            return []
        out: list[Event] = []
        if state.estimator is not None and state.probabilities and ev.label is not None:
            state.estimator.learn_one(ev.prediction_id, ev.label)
            if type(output) is float and len(entry) == 3 and ev.label not in (0, 1):
                # a float output read as P(class 1) (no probabilities logged), with a
                # non-binary label: a regressor
                state.estimator = None
            else:
                out += [self._realized(ev, number, c) for c in state.estimator.comparisons]
        if state.segments is not None and segments:
            error = prediction_error(output, ev.label)
            if error is not None:
                value, classification = error
                p = probability_of_one(output, ev.label)
                if p is not None:
                    value, classification = float(int(p >= 0.5) != ev.label), True
                state.segments.learn_one(segments, value, classification=classification)
                out += [self._degraded(ev, number, state, f) for f in state.segments.findings]
        return out

    # -- inspection ----------------------------------------------------------------------
    def estimator(self, model: str, version: int) -> PerformanceEstimator | None:
        """The performance estimator of a version (``None`` if off or unseen)."""
        state = self._versions.get((model, version))
        return None if state is None else state.estimator

    def multivariate(self, model: str, version: int) -> ReconstructionDrift | None:
        """The multivariate drift detector of a version (``None`` if off or unseen)."""
        state = self._versions.get((model, version))
        return None if state is None else state.multivariate

    def segments(self, model: str, version: int) -> SegmentMonitor | None:
        """The segment monitor of a version (``None`` if off or unseen)."""
        state = self._versions.get((model, version))
        return None if state is None else state.segments

    # -- events ------------------------------------------------------------------------
    @staticmethod
    def _estimated(ev: PredictionMade, e: WindowEstimate) -> PerformanceEstimated:
        return PerformanceEstimated(
            **_envelope("perf_estimate", ev, ev.model_version, str(e.index)),
            window=Window(start=e.start, end=e.end, size=e.size), index=e.index,
            accuracy=e.accuracy, f1=e.f1, calibrated=e.calibrated,
            reference_accuracy=e.reference_accuracy, threshold=e.threshold)

    @staticmethod
    def _drop(ev: PredictionMade, d: PerformanceDrop, cfg: QualityConfig
              ) -> PerformanceDropEstimated:
        e = d.estimate
        fall = d.reference_accuracy - e.accuracy
        how = "calibrated on the labelled reference" if e.calibrated else \
            "raw probabilities, not yet calibrated"
        return PerformanceDropEstimated(
            **_envelope("perf_drop", ev, ev.model_version, str(e.index)),
            statistic=e.accuracy, threshold=d.threshold,
            params={"reference_accuracy": d.reference_accuracy, "estimated_f1": e.f1,
                    "calibrated": e.calibrated, "k": cfg.k, "tolerance": cfg.tolerance,
                    "window": cfg.window},
            window=Window(start=e.start, end=e.end, size=e.size),
            prediction_ids=list(e.evidence),
            severity="critical" if fall >= 0.1 else "warning",
            message=(f"estimated accuracy of {ev.model} v{ev.model_version} over its last "
                     f"{e.size} predictions is {e.accuracy:.3f}, below {d.threshold:.3f} "
                     f"(reference {d.reference_accuracy:.3f}); estimated from the predicted "
                     f"probabilities ({how}), before any label"))

    @staticmethod
    def _realized(ev: LabelObserved, number: int, c: WindowComparison) -> PerformanceRealized:
        return PerformanceRealized(
            **_envelope("perf_realized", ev, number, str(c.index)),
            window=Window(start=c.start, end=c.end, size=c.size), index=c.index,
            labelled=c.labelled, estimated_accuracy=c.estimated_accuracy,
            realized_accuracy=c.realized_accuracy, estimated_f1=c.estimated_f1,
            realized_f1=c.realized_f1, gap=c.gap)

    @staticmethod
    def _mv_report(ev: PredictionMade, mv: ReconstructionDrift, c: MultivariateCheck
                   ) -> MultivariateDriftReported:
        return MultivariateDriftReported(
            **_envelope("mv_report", ev, ev.model_version, str(c.index)),
            window=Window(start=c.start, end=c.end, size=c.size), index=c.index,
            statistic=c.statistic, lower=c.lower, upper=c.upper,
            reference_mean=c.reference_mean, features=list(mv.features),
            components=mv.components, breached=c.breached)

    @staticmethod
    def _mv_alert(ev: PredictionMade, mv: ReconstructionDrift, c: MultivariateCheck
                  ) -> MultivariateDriftDetected:
        above = c.statistic > c.upper
        features = ", ".join(mv.features[:10]) + (" ..." if len(mv.features) > 10 else "")
        return MultivariateDriftDetected(
            **_envelope("mv_drift", ev, ev.model_version, str(c.index)),
            statistic=c.statistic, threshold=c.upper if above else c.lower,
            params={"lower": c.lower, "upper": c.upper, "reference_mean": c.reference_mean,
                    "components": mv.components, "features": len(mv.features),
                    "variance": mv.variance, "k": mv.k, "imputed": mv.imputed},
            window=Window(start=c.start, end=c.end, size=c.size),
            prediction_ids=list(c.keys),
            severity="critical" if abs(c.statistic - c.reference_mean)
            >= 2 * abs(c.upper - c.reference_mean) else "warning",
            message=(f"the joint distribution of {ev.model} v{ev.model_version}'s numeric "
                     f"inputs ({features}) changed: mean PCA reconstruction error "
                     f"{c.statistic:.4g} over {c.size} predictions is "
                     f"{'above' if above else 'below'} the reference band "
                     f"[{c.lower:.4g}, {c.upper:.4g}] -- their correlations moved, even if "
                     "each feature alone looks unchanged"))

    @staticmethod
    def _segment_report(ev: PredictionMade, state: _Version) -> SegmentMetricsReported:
        seg = state.segments
        assert seg is not None
        table = seg.table()
        rows = [SegmentMetrics(feature=r.feature, value=r.value, predictions=r.predictions,
                               labelled=r.labelled, error=r.error, accuracy=r.accuracy,
                               share=r.share, reference_share=r.reference_share, psi=r.psi)
                for r in table]
        out = SegmentMetricsReported(
            **_envelope("segment_report", ev, ev.model_version),
            window=Window(start=state.period_start, end=ev.time, size=state.predictions),
            segments=rows, degraded=[f"{f}={v}" for f, v in seg.degraded()],
            mix_psi=seg.mix_psi(table))
        state.period_start = None
        return out

    @staticmethod
    def _degraded(ev: LabelObserved, number: int, state: _Version, f: SegmentFinding
                  ) -> SegmentDegraded:
        seg = state.segments
        assert seg is not None
        worst = max(f.segments, key=lambda t: (t.error - t.rest_error, t.feature, t.value))
        names = [f"{t.feature}={t.value}" for t in f.segments]
        detail = "; ".join(f"{t.feature}={t.value}: error {t.error:.3f} vs {t.rest_error:.3f} "
                           f"for the rest (n={t.labelled}, p={t.p_value:.1e})"
                           for t in f.segments)
        return SegmentDegraded(
            **_envelope("segment_degraded", ev, number, *f.new),
            feature=worst.feature, statistic=worst.error, threshold=worst.rest_error,
            segments=names, new=list(f.new),
            params={"p_value": worst.p_value, "z": worst.z, "alpha": seg.alpha,
                    "tests": f.tests, "min_gap": seg.min_gap, "window": seg.window},
            severity="critical" if worst.error - worst.rest_error >= 0.2 else "warning",
            message=(f"{len(names)} segment(s) of {ev.model} v{number} worse than the rest: "
                     + detail))
