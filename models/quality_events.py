"""Events of data-quality monitoring beyond drift: point anomalies, estimated
performance, multivariate drift and per-segment metrics.

Builds on :mod:`modelog.models.event_base` only; the catalogue
(:data:`modelog.models.events.CATALOGUE`) gathers :data:`EVENTS`.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from modelog.models.event_base import Event, Name, Scalar, Severity, Version, Window

__all__ = ["EVENTS"]

EVENTS: tuple[type[Event], ...] = ()
"""The event types of this module, in the order the catalogue lists them."""


# -- performance estimation, multivariate drift, segments (models/quality_monitor.py) ----
class PerformanceEstimated(Event, frozen=True, kw_only=True):
    """A classifier's accuracy (and binary F1) estimated for a window of predictions, before labels.

    Confidence-based performance estimation (:mod:`modelog.models.perf_estimation`):
    ``calibrated`` says whether the probabilities were calibrated on the labelled
    reference; ``reference_accuracy`` and ``threshold`` are the accuracy it is
    compared with and the level below which a drop is alerted.
    """

    stream: ClassVar[str] = "monitoring"
    model: Name
    model_version: Version | None = None
    window: Window = Window()
    index: int = 0
    accuracy: float
    f1: float | None = None
    calibrated: bool = False
    reference_accuracy: float | None = None
    threshold: float | None = None
    detector: str = "cbpe"


class PerformanceRealized(Event, frozen=True, kw_only=True):
    """A window's estimate next to its realized accuracy (and F1) once its labels arrived."""

    stream: ClassVar[str] = "monitoring"
    model: Name
    model_version: Version | None = None
    window: Window = Window()
    index: int = 0
    labelled: int = 0
    estimated_accuracy: float
    realized_accuracy: float
    estimated_f1: float | None = None
    realized_f1: float | None = None
    gap: float = 0.0


class QualityAlert(Event, frozen=True, kw_only=True):
    """The fields the quality processor's alerts share (the ``alerts`` table's columns).

    Not an event type of its own: its subclasses are.
    """

    stream: ClassVar[str] = "monitoring"
    model: Name
    model_version: Version | None = None
    detector: str = ""
    feature: str | None = None
    statistic: float
    threshold: float
    params: dict[str, Scalar] = {}
    window: Window = Window()
    prediction_ids: list[str] = []
    severity: Severity = "warning"
    message: str = ""


class PerformanceDropEstimated(QualityAlert, frozen=True, kw_only=True):
    """Alert: a window's estimated accuracy fell below the reference's band (no labels needed)."""

    detector: str = "cbpe"


class MultivariateDriftReported(Event, frozen=True, kw_only=True):
    """A window's mean PCA reconstruction error against the reference band."""

    stream: ClassVar[str] = "monitoring"
    model: Name
    model_version: Version | None = None
    window: Window = Window()
    index: int = 0
    statistic: float
    lower: float
    upper: float
    reference_mean: float
    features: list[str] = []
    components: int = 0
    breached: bool = False


class MultivariateDriftDetected(QualityAlert, frozen=True, kw_only=True):
    """Alert: the joint distribution of the numeric inputs changed (PCA reconstruction error)."""

    detector: str = "pca_reconstruction"


class SegmentMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """One segment's figures: predictions, labelled in its rolling window, error, accuracy."""

    feature: str
    value: str
    predictions: int = 0
    labelled: int = 0
    error: float | None = None
    accuracy: float | None = None
    #: Traffic-mix drift: share of the recent predictions, share in the reference,
    #: and the segment's PSI term (absent until the reference is complete).
    share: float | None = None
    reference_share: float | None = None
    psi: float | None = None


class SegmentMetricsReported(Event, frozen=True, kw_only=True):
    """Periodic per-segment figures of a model version (the declared segment features)."""

    stream: ClassVar[str] = "monitoring"
    model: Name
    model_version: Version | None = None
    window: Window = Window()
    segments: list[SegmentMetrics] = []
    degraded: list[str] = []
    #: Each segment feature's traffic-mix PSI (recent window against the reference).
    mix_psi: dict[str, float] = {}


class SegmentDegraded(QualityAlert, frozen=True, kw_only=True):
    """Alert: segments whose error is significantly worse than the rest of their feature's.

    One alert per check that degrades a new segment; ``segments`` names every
    segment degraded then (``feature=value``), ``new`` the newly degraded;
    ``feature``/``statistic``/``threshold`` are the worst one's feature, error
    and the rest's error.
    """

    detector: str = "two_proportion"
    segments: list[str] = []
    new: list[str] = []


__all__ += ["MultivariateDriftDetected", "MultivariateDriftReported", "PerformanceDropEstimated",
            "PerformanceEstimated", "PerformanceRealized", "QualityAlert", "SegmentDegraded",
            "SegmentMetrics", "SegmentMetricsReported"]
EVENTS += (PerformanceEstimated, PerformanceRealized, PerformanceDropEstimated,
           MultivariateDriftReported, MultivariateDriftDetected, SegmentMetricsReported,
           SegmentDegraded)


# -- point anomalies (models/outliers.py) ---------------------------------------------
class PredictionsScored(Event, frozen=True, kw_only=True):
    """Anomaly scores of a batch of one version's predictions against its reference.

    Parallel lists, one entry per prediction: its id, its score (largest robust
    z of its features; an unseen category scores 10), whether it is a gross
    outlier, and its offending features (out of the reference range or unseen).
    ``reference`` names the reference (``training dataset churn-train v3``, ...).
    """

    stream: ClassVar[str] = "monitoring"
    model: Name
    model_version: Version | None = None
    reference: str = ""
    prediction_ids: list[str]
    scores: list[float]
    outliers: list[bool]
    features: list[list[str]]


__all__ += ["PredictionsScored"]
EVENTS += (PredictionsScored,)
