"""The events the serving monitor derives: their ids, wording, evidence and severity.

This module owns how a detection becomes an event -- ``DriftDetected``,
``DriftResolved``, ``AnomalyDetected``, ``SkewDetected`` and
``MonitorStatsReported`` -- and the deterministic ids of those events
(:func:`derived`): the hash of the triggering event's time, the kind, the
model, the version, the triggering prediction id and the feature/detector,
so replaying the same log yields the same events. It imports only
:mod:`modelog.models`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from modelog.models.anomaly import AnomalyDecision
from modelog.models.datadrift import DataDriftMonitor, FeatureCheck
from modelog.models.drift import DriftDecision, Param
from modelog.models.events import (
    AnomalyDetected,
    DriftDetected,
    DriftResolved,
    LabelObserved,
    MonitorStatsReported,
    PredictionMade,
    SkewDetected,
    Window,
)
from modelog.models.ids import derived_id, epoch_ms
from modelog.models.monitor_config import MonitorConfig
from modelog.models.monitor_state import ModelState, VersionState, live_metrics
from modelog.models.outliers import OutlierDecision
from modelog.models.quality_events import PredictionsScored
from modelog.models.skew import SkewFinding

__all__ = ["PRODUCER", "anomaly_event", "concept_drift_event", "data_drift_event",
           "derived", "drift_resolved_event", "outlier_event", "reference_phrase",
           "scored_event", "skew_event", "stats_event"]

Severity = Literal["info", "warning", "critical"]
DriftKind = Literal["data", "prediction"]

PRODUCER = "modelog-worker"
"""The ``producer`` of every event the monitor derives."""


def derived(kind: str, trigger: PredictionMade | LabelObserved, version: int,
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


def concept_drift_event(ev: LabelObserved, version_no: int, version: VersionState,
                        d: DriftDecision, config: MonitorConfig) -> DriftDetected:
    """``DriftDetected(kind="concept")`` of a decision on the errors of a version."""
    recent = list(version.labelled_window)[-d.window_size:]
    binary = all(e in (0.0, 1.0) for _, _, e in recent)
    wrong = [pid for pid, _, e in recent if e > 0][-config.max_evidence_ids:]
    what = "error rate" if binary else "mean absolute error"
    was = "n/a" if math.isnan(d.reference) else f"{d.reference:.2f}"
    message = (f"{what} {d.statistic:.2f} over the last {d.window_size} labelled "
               f"predictions, was {was}; {d.describe()}")
    reference = None if math.isnan(d.reference) else d.reference
    return DriftDetected(
        **derived("concept", ev, version_no),
        kind="concept",
        detector=d.detector,
        params={**d.params, "warm_up": config.concept.warm_up},
        statistic=d.statistic,
        threshold=reference,
        window=Window(start=recent[0][1] if recent else None, end=ev.time, size=d.window_size),
        prediction_ids=wrong,
        severity=_drift_severity(d.statistic, reference, binary),
        message=message,
    )


def anomaly_event(ev: PredictionMade, version: VersionState,
                  d: AnomalyDecision) -> AnomalyDetected:
    """``AnomalyDetected`` of a burst of anomalous inputs of a version."""
    recent = list(version.input_window)[-d.window_size:]
    count = round(d.statistic * d.window_size)
    message = (f"{count} of the last {d.window_size} inputs ({d.statistic:.1%}) scored above "
               f"the {d.params['q']:.0%} anomaly-score quantile {d.score_threshold:.3f}; "
               f"{d.expected:.1%} expected (p={d.p_value:.1e}); {d.describe()}")
    return AnomalyDetected(
        **derived("anomaly", ev, ev.model_version),
        detector=d.detector,
        params={**d.params, "score_threshold": d.score_threshold, "p_value": d.p_value},
        statistic=d.statistic,
        threshold=d.threshold,
        window=Window(start=recent[0][1] if recent else None, end=ev.time, size=d.window_size),
        prediction_ids=list(d.keys),
        severity="critical" if d.statistic >= 2 * d.threshold else "warning",
        message=message,
    )


_TESTS = {"psi": "PSI", "ks": "KS distance", "chi2": "chi-squared",
          "new_category": "share of new categories",
          "vanished_category": "reference share of vanished categories"}


def data_drift_event(ev: PredictionMade, version: VersionState, cfg: MonitorConfig,
                     kind: DriftKind, monitor: DataDriftMonitor,
                     c: FeatureCheck) -> DriftDetected:
    """``DriftDetected(kind="data"|"prediction")`` opening a feature's drift condition."""
    tracker = monitor.trackers[c.feature]
    what = "the output" if kind == "prediction" else f"feature {c.feature!r}"
    p = "" if c.p_value is None else f", p={c.p_value:.1e}"
    detail = f"; {c.detail}" if c.detail else ""
    d = cfg.drift
    against = reference_phrase(tracker.source, d.reference_size, version)
    message = (f"{_TESTS[c.detector]} of {what} {c.statistic:.3g} over the last "
               f"{tracker.size} predictions against {against} "
               f"({tracker.n_reference:.0f} values) exceeds {c.threshold:.3g}{p}{detail}")
    params: dict[str, Param] = {
        "window": d.window, "check_every": d.check_every,
        "reference": tracker.source, "reference_count": tracker.n_reference,
        "reference_name": against,
    }
    if c.detector == "psi" and tracker.source == "warm-up" and tracker.kind == "numeric":
        params["bins"] = d.psi_bins
    if c.detector in ("ks", "chi2"):
        params["alpha"] = d.ks_alpha if c.detector == "ks" else d.chi2_alpha
        params["p_value"] = c.p_value
    recent = version.recent
    return DriftDetected(
        **derived(kind, ev, ev.model_version, c.feature, c.detector),
        kind=kind, feature=c.feature, detector=c.detector, params=params,
        statistic=c.statistic, threshold=c.threshold if math.isfinite(c.threshold) else None,
        window=Window(start=recent[-tracker.size][1] if len(recent) >= tracker.size
                      else recent[0][1], end=ev.time, size=tracker.size),
        prediction_ids=version.evidence(cfg.max_evidence_ids),
        severity="critical" if c.statistic >= 2 * c.threshold else "warning",
        message=message,
    )


def drift_resolved_event(ev: PredictionMade, kind: DriftKind, c: FeatureCheck,
                         detected_id: str) -> DriftResolved:
    """``DriftResolved`` closing the condition opened by event ``detected_id``."""
    return DriftResolved(
        **derived(f"{kind}-resolved", ev, ev.model_version, c.feature, c.detector),
        kind=kind, feature=c.feature, detector=c.detector, detected_id=detected_id,
        statistic=c.statistic,
    )


def skew_event(ev: PredictionMade, f: SkewFinding) -> SkewDetected:
    """``SkewDetected`` of a skew condition first seen."""
    observed = f.observed
    if f.kind != "nulls":
        observed = f"{observed or 'absent'} in {f.count} of the last checked predictions"
    return SkewDetected(
        **derived("skew", ev, ev.model_version, f.feature, f.kind),
        feature=f.feature, kind=f.kind, expected=f.expected, observed=observed,
        prediction_ids=list(f.keys),
        severity="critical" if f.kind in ("missing", "type") else "warning",
    )


def stats_event(ev: PredictionMade, model: ModelState, version: VersionState,
                cfg: MonitorConfig) -> MonitorStatsReported:
    """``MonitorStatsReported``: the version's statistics, counters and live metrics."""
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
        **(version.outliers.stats() if version.outliers is not None else {}),
        **live_metrics(version.outcomes, [e for _, _, e in version.labelled_window]),
        **version.drift_stats,
    }
    return MonitorStatsReported(
        **derived("stats", ev, ev.model_version),
        window=Window(start=version.period_start, end=ev.time, size=cfg.stats_every),
        stats=stats,
    )


def reference_phrase(source: str, reference_size: int, version: VersionState) -> str:
    """How an alert names its reference: ``training dataset churn-train v3``, ``the first
    1000 predictions (no training dataset)``, ``the configured reference profile``."""
    if source == "training":
        return version.training_label or "the training dataset"
    if source == "profile":
        return "the configured reference profile"
    why = f"not in {version.training_label}" if version.training_label else "no training dataset"
    return f"the first {reference_size} predictions ({why})"


def scored_event(ev: PredictionMade, version: VersionState) -> PredictionsScored:
    """``PredictionsScored`` of the version's buffered scores (emptied)."""
    rows, version.scored = version.scored, []
    return PredictionsScored(
        **derived("scored", ev, ev.model_version), reference=version.outlier_reference,
        prediction_ids=[r[0] for r in rows], scores=[r[1] for r in rows],
        outliers=[r[2] for r in rows], features=[list(r[3]) for r in rows])


def outlier_event(ev: PredictionMade, version: VersionState, d: OutlierDecision
                  ) -> AnomalyDetected:
    """``AnomalyDetected(detector="outliers")``: gross outliers at an improbable rate."""
    features = ", ".join(f"{name} ({n})" for name, n in d.features[:5])
    message = (f"{d.count} gross outliers in the last {d.window_size} predictions "
               f"against {version.outlier_reference}; {d.expected * d.window_size:.2g} "
               f"expected (p={d.p_value:.1e}); offending features: {features}")
    return AnomalyDetected(
        **derived("outliers", ev, ev.model_version),
        detector="outliers",
        params={"window": d.window_size, "alpha": d.alpha, "p_value": d.p_value,
                "expected_rate": d.expected, "count": d.count,
                "reference_name": version.outlier_reference},
        statistic=d.statistic, threshold=d.expected,
        window=Window(start=None, end=ev.time, size=d.window_size),
        prediction_ids=list(d.keys),
        severity="critical" if d.count >= 10 * max(d.expected * d.window_size, 1) else "warning",
        message=message,
    )
