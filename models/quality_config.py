"""The ``quality`` section of a model's monitor configuration, and its parser.

This module owns :class:`QualityConfig` -- how
:class:`~modelog.models.quality_monitor.QualityMonitor` estimates performance
before labels, watches multivariate drift and reports segments -- and
:func:`parse_quality_config`, which reads it from a ``MonitorConfigured.config``
(the ``quality`` mapping, or top-level keys ``quality.<setting>``). The serving
monitor's parser (:mod:`modelog.models.monitor_config`) leaves that section to
this one. Every problem is a :class:`~modelog.models.errors.MonitorConfigError`
naming the setting as written (``quality.window``), the value and the rule.
Imports only :mod:`modelog.models`.

Defaults need no configuration: estimation is on for versions whose outputs
are probabilities, multivariate drift is on when the reference has at least two
numeric features, segments are off until ``segments`` names some.

Examples
--------
>>> cfg = parse_quality_config({"quality": {"segments": ["country", "plan"], "window": 200},
...                             "quality.multivariate": False, "check_every": 50})
>>> cfg.segments, cfg.window, cfg.multivariate, cfg.estimate_performance
(('country', 'plan'), 200, False, True)
>>> try:
...     parse_quality_config({"quality": {"segment_alpha": 2}}, model="churn")
... except MonitorConfigError as exc:
...     print(exc.field, exc.value, exc.rule)
quality.segment_alpha 2.0 must be strictly between 0 and 1
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from modelog.models.errors import InvalidParameterError, MonitorConfigError
from modelog.models.monitor_config import count_rule
from modelog.models.multivariate import ReconstructionDrift
from modelog.models.perf_estimation import PerformanceEstimator
from modelog.models.segments import SegmentMonitor

__all__ = ["SECTION", "QualityConfig", "parse_quality_config"]

SECTION = "quality"
"""The key of the section in ``MonitorConfigured.config`` (and the prefix of flat keys)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class QualityConfig:
    """Performance estimation, multivariate drift and segments of one model's versions.

    Parameters
    ----------
    estimate_performance
        Estimate accuracy/F1 before labels for versions whose outputs are
        probabilities (a dict of class probabilities, or a float in [0, 1]).
    window, reference_size, calibrate, calibration_bins, k, tolerance, label_share,
    positive_class
        :class:`~modelog.models.perf_estimation.PerformanceEstimator`'s window,
        labelled reference, calibration, drop band, comparison rule, positive class.
    multivariate, multivariate_reference_size, multivariate_window, multivariate_variance,
    multivariate_k
        :class:`~modelog.models.multivariate.ReconstructionDrift`'s switch and settings.
    segments, segment_top_k, segment_window, segment_min_count, segment_alpha,
    segment_min_gap, segment_check_every
        The segment features and :class:`~modelog.models.segments.SegmentMonitor`'s settings.
    report_every
        Emit ``SegmentMetricsReported`` every this many predictions of a version.
    max_pending
        Predictions per model waiting for their label.
    """

    estimate_performance: bool = True
    window: int = 500
    reference_size: int = 1_000
    calibrate: bool = True
    calibration_bins: int = 10
    k: float = 3.0
    tolerance: float = 0.02
    label_share: float = 0.5
    positive_class: str | None = None
    multivariate: bool = True
    multivariate_reference_size: int = 1_000
    multivariate_window: int = 500
    multivariate_variance: float = 0.65
    multivariate_k: float = 4.0
    segments: tuple[str, ...] = ()
    segment_top_k: int = 10
    segment_window: int = 1_000
    segment_min_count: int = 30
    segment_alpha: float = 1e-3
    segment_min_gap: float = 0.05
    segment_check_every: int = 200
    report_every: int = 500
    max_pending: int = 100_000

    def __post_init__(self) -> None:
        for name in ("report_every", "max_pending"):
            if getattr(self, name) < 1:
                raise InvalidParameterError("QualityConfig", name, getattr(self, name),
                                            "must be >= 1")
        self.estimator()
        self.multivariate_detector()
        self.segment_monitor()

    def estimator(self) -> PerformanceEstimator:
        """A fresh performance estimator."""
        return PerformanceEstimator(
            self.window, self.reference_size, calibrate=self.calibrate,
            bins=self.calibration_bins, k=self.k, tolerance=self.tolerance,
            label_share=self.label_share, positive_class=self.positive_class)

    def multivariate_detector(self) -> ReconstructionDrift:
        """A fresh multivariate drift detector."""
        return ReconstructionDrift(self.multivariate_reference_size, self.multivariate_window,
                                   variance=self.multivariate_variance, k=self.multivariate_k)

    def segment_monitor(self) -> SegmentMonitor:
        """A fresh segment monitor of :attr:`segments`."""
        return SegmentMonitor(self.segments, top_k=self.segment_top_k,
                              window=self.segment_window, min_count=self.segment_min_count,
                              alpha=self.segment_alpha, min_gap=self.segment_min_gap,
                              check_every=self.segment_check_every,
                              reference_size=self.reference_size)

    def part(self, prefix: str) -> tuple[Any, ...]:
        """The settings of one detector (``estimation``, ``multivariate``, ``segment``)."""
        names = {"estimation": ("estimate_performance", "window", "reference_size", "calibrate",
                                "calibration_bins", "k", "tolerance", "label_share",
                                "positive_class"),
                 "multivariate": tuple(f.name for f in dataclasses.fields(self)
                                       if f.name.startswith("multivariate")),
                 "segment": ("segments", *(f.name for f in dataclasses.fields(self)
                                           if f.name.startswith("segment_")))}[prefix]
        return tuple(getattr(self, n) for n in names)

    def to_mapping(self) -> dict[str, Any]:
        """The plain form (the ``quality`` section) that :func:`parse_quality_config` reads."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}


_FIELDS = {f.name: f for f in dataclasses.fields(QualityConfig)}
# the detector's parameter names -> the setting
_PARAMETERS = {("HistogramCalibrator", "bins"): "calibration_bins",
               **{("ReconstructionDrift", n): f"multivariate_{n}"
                  for n in ("reference_size", "window", "variance", "k")},
               **{("SegmentMonitor", n): f"segment_{n}"
                  for n in ("top_k", "window", "min_count", "alpha", "min_gap", "check_every")}}


def _coerce(name: str, value: Any, bad: Any) -> Any:
    default = getattr(QualityConfig(), name)
    if name == "segments":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(
                isinstance(v, str) and 0 < len(v) <= 128 for v in value):
            raise bad(name, value, "must be a list of feature names (strings of 1-128 chars)")
        if len(value) > 20:
            raise bad(name, value, "at most 20 segment features")
        return tuple(dict.fromkeys(value))
    if name == "positive_class":
        if value is not None and not isinstance(value, str | int | bool):
            raise bad(name, value, "must be a class name (or null)")
        return None if value is None else str(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad(name, value, "must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(name, value, "must be an integer")
        if (rule := count_rule(value)) is not None:
            raise bad(name, value, rule)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad(name, value, "must be a finite number")
    return float(value)


def parse_quality_config(data: Mapping[str, Any], *, base: QualityConfig | None = None,
                         model: str | None = None, source: str | None = None
                         ) -> QualityConfig:
    """``base`` (default: the defaults) with the ``quality`` settings of ``data``.

    ``data`` is a whole ``MonitorConfigured.config``: its ``quality`` mapping and
    its ``quality.<setting>`` keys are read, every other key is left to the
    serving monitor's parser. ``source`` says where the settings came from, as in
    :class:`~modelog.models.errors.MonitorConfigError`.

    Raises
    ------
    MonitorConfigError
        On an unknown setting, a value of the wrong type or one a detector refuses.
    """
    base = QualityConfig() if base is None else base

    def bad(name: str, value: Any, rule: str) -> MonitorConfigError:
        return MonitorConfigError(f"{SECTION}.{name}", value, rule, model, source=source)

    if not isinstance(data, Mapping):
        raise MonitorConfigError("", data, "must be a mapping of monitor settings", model,
                                 source=source)
    items: list[tuple[str, Any]] = []
    section = data.get(SECTION)
    if section is not None:
        if not isinstance(section, Mapping):
            raise MonitorConfigError(SECTION, section,
                                     "must be a mapping of quality settings", model)
        items += [(str(k), v) for k, v in section.items()]
    prefix = SECTION + "."
    items += [(str(k)[len(prefix):], v) for k, v in data.items() if str(k).startswith(prefix)]
    if not items:
        return base
    changes: dict[str, Any] = {}
    for name, value in items:
        if name not in _FIELDS:
            raise bad(name, value, "unknown setting; valid: " + ", ".join(
                f"{SECTION}.{n}" for n in _FIELDS))
        changes[name] = _coerce(name, value, bad)
    try:
        return dataclasses.replace(base, **changes)
    except InvalidParameterError as exc:
        name = _PARAMETERS.get((exc.component, exc.parameter), exc.parameter)
        raise bad(name, exc.value, exc.rule) from None
