"""How the serving monitor watches a model: per-detector settings and their one parser.

This module owns :class:`MonitorConfig` -- composed of one section per
detector (:class:`ConceptDriftConfig`, :class:`AnomalyConfig`,
:class:`DataDriftConfig`, :class:`SkewConfig`) plus the join and reporting
settings -- and :func:`parse_monitor_config`, the only reader of its plain form:
the ``config`` payload of a ``MonitorConfigured`` event and the backtest's
configuration file both go through it, and every problem is a
:class:`~modelog.models.errors.MonitorConfigError` naming the setting, the
value and the rule. It imports only :mod:`modelog.models` detector modules and
errors.

The plain form is flat, one key per setting (``{"detector": "page_hinkley",
"anomaly_alpha": 0.001}``: the keys of :data:`SETTINGS`, as users send them);
a nested form by section is accepted too (``{"anomaly": {"alpha": 0.001}}``).
A section key with a boolean is the flat switch (``{"anomaly": false}``).
Durations take seconds or a number with a unit (``"12h"``).

Examples
--------
>>> cfg = parse_monitor_config({"detector": "page_hinkley", "anomaly_alpha": 0.001,
...                             "pending_ttl": "2h", "drift": {"psi_threshold": 0.3}})
>>> cfg.concept.detector, cfg.anomaly.alpha, cfg.pending_ttl, cfg.drift.psi_threshold
('page_hinkley', 0.001, datetime.timedelta(seconds=7200), 0.3)
>>> parse_monitor_config(cfg.to_mapping()) == cfg
True
>>> try:
...     parse_monitor_config({"check_every": "often"})
... except MonitorConfigError as exc:
...     print(exc.field, exc.value, exc.rule)
check_every often must be an integer
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from modelog.models.anomaly import AnomalyMonitor
from modelog.models.datadrift import DataDriftMonitor, DriftThresholds, profile_columns
from modelog.models.drift import ConceptDriftMonitor, Param
from modelog.models.errors import InvalidParameterError, ModelsError, MonitorConfigError
from modelog.models.outliers import OutlierConfig
from modelog.models.skew import SkewMonitor

__all__ = ["OUTPUT", "SETTINGS", "AnomalyConfig", "ConceptDriftConfig", "DataDriftConfig",
           "MonitorConfig", "SkewConfig", "parse_monitor_config"]

OUTPUT = "__output__"
"""The feature name of a model's output in prediction drift events, statistics and profiles."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConceptDriftConfig:
    """Concept drift: a River detector over the errors of labelled predictions.

    Parameters
    ----------
    detector, params
        The detector (see :data:`modelog.models.drift.DETECTORS`) and its River
        hyperparameters (flat keys ``detector``, ``detector_params``).
    warm_up
        No alarm before this many labelled predictions, nor after each
        detection (``drift_warm_up``).
    error_window
        Rolling window of the error and of the live metrics (``error_window``).
    """

    detector: str = "adwin"
    params: Mapping[str, Param] = dataclasses.field(default_factory=dict)
    warm_up: int = 100
    error_window: int = 200

    def __post_init__(self) -> None:
        if self.error_window < 1:
            raise InvalidParameterError("ConceptDriftConfig", "error_window", self.error_window,
                                        "must be >= 1")
        self.monitor()  # fail now, not at the first label, on a bad detector or parameter

    def monitor(self) -> ConceptDriftMonitor:
        """A fresh concept drift monitor."""
        return ConceptDriftMonitor(self.detector, self.params, warm_up=self.warm_up,
                                   window=self.error_window)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnomalyConfig:
    """Anomalous inputs: Half-Space Trees and the burst rule (flat keys ``anomaly_<name>``).

    Parameters
    ----------
    enabled
        Whether to score inputs at all (flat key ``anomaly``).
    n_trees, height, window_size, seed
        Half-Space Trees hyperparameters (a fixed seed keeps replays identical).
    q, window, alpha, min_count, warm_up, cooldown
        The burst rule of :class:`~modelog.models.anomaly.AnomalyMonitor`.
        ``alpha`` is 1e-5 here (the detector's own default is 1e-4): on the
        quality suite's streams, where the trees learn one input in four, 1e-4
        raised 6 false alarms in 250,000 unchanging predictions and 1e-5 two
        (none since the burst test expects what the reference window scores,
        see :meth:`~modelog.models.anomaly.AnomalyMonitor.expected_rate`),
        while 20 seeded +4 sigma shifts were all still detected (median 57
        inputs, at most 389, before that change; see the README's detection
        quality section for the figures since).
    learn_every
        After the warm-up every sampled input is scored but the trees learn
        only 1 in this many: learning is half of Half-Space Trees' cost.
    sample_every
        Score 1 in this many inputs (1: all). Sampling ``k`` multiplies
        throughput headroom but also the warm-up and the detection delay
        (counted in predictions) by ``k``.
    """

    enabled: bool = True
    n_trees: int = 10
    height: int = 8
    window_size: int = 250
    seed: int = 42
    q: float = 0.95
    window: int = 200
    alpha: float = 1e-5
    min_count: int = 5
    warm_up: int = 1_000
    cooldown: int = 1_000
    learn_every: int = 4
    sample_every: int = 1

    def __post_init__(self) -> None:
        if self.sample_every < 1:
            raise InvalidParameterError("AnomalyConfig", "sample_every", self.sample_every,
                                        "must be >= 1")
        self.monitor()

    def monitor(self, max_keys: int = 20) -> AnomalyMonitor:
        """A fresh anomaly monitor whose alerts carry at most ``max_keys`` prediction ids."""
        return AnomalyMonitor(
            n_trees=self.n_trees, height=self.height, window_size=self.window_size,
            seed=self.seed, q=self.q, window=self.window, alpha=self.alpha,
            min_count=self.min_count, warm_up=self.warm_up, cooldown=self.cooldown,
            max_keys=max_keys, learn_every=self.learn_every)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataDriftConfig:
    """Data and prediction drift: live windows of inputs and output against a reference.

    Parameters
    ----------
    inputs, outputs
        Watch the inputs' distributions (flat key ``data_drift``) and the
        output's (``prediction_drift``).
    reference_size
        Predictions of a version forming the warm-up reference of every
        feature (and output) the ``reference`` profile does not cover; also
        the warm-up of the skew monitor's null shares.
    window
        Sliding live window (predictions) compared with the reference; an open
        condition resolves after a whole window below its threshold (``drift_window``).
    check_every
        Evaluate drift and skew every this many predictions.
    psi_bins
        Quantile bins of a warm-up reference's PSI.
    psi_threshold, ks_alpha, chi2_alpha, new_category_share, vanished_category_share
        Thresholds (see :class:`~modelog.models.datadrift.DriftThresholds`).
    max_categories, max_features
        Bounds of the state: distinct categories per window, features per version.
    reference
        A ``profile_table``-shaped profile used as the reference of the features
        it covers (:data:`OUTPUT` for the output); overrides the training dataset.
    training_reference
        Compare a version registered from a run that trained on a logged
        dataset with that dataset's profile (else: the warm-up reference).
    """

    inputs: bool = True
    outputs: bool = True
    reference_size: int = 1_000
    window: int = 500
    check_every: int = 100
    psi_bins: int = 10
    psi_threshold: float = 0.2
    ks_alpha: float = 1e-5
    chi2_alpha: float = 1e-5
    new_category_share: float = 0.01
    vanished_category_share: float = 0.05
    max_categories: int = 100
    max_features: int = 200
    reference: Mapping[str, Any] | None = None
    training_reference: bool = True

    def __post_init__(self) -> None:
        if self.check_every < 1:
            raise InvalidParameterError("DataDriftConfig", "check_every", self.check_every,
                                        "must be >= 1")
        try:
            self.thresholds()
        except InvalidParameterError as exc:
            name = "psi_threshold" if exc.parameter == "psi" else exc.parameter
            raise InvalidParameterError("DataDriftConfig", name, exc.value, exc.rule) from None
        self.input_monitor()
        self.output_monitor()

    @property
    def clear_after(self) -> int:
        """Checks below threshold that resolve a condition: a whole window."""
        return max(1, -(-self.window // self.check_every))

    def thresholds(self) -> DriftThresholds:
        """The data and prediction drift thresholds."""
        return DriftThresholds(psi=self.psi_threshold, ks_alpha=self.ks_alpha,
                               chi2_alpha=self.chi2_alpha,
                               new_category_share=self.new_category_share,
                               vanished_category_share=self.vanished_category_share)

    def _monitor(self, reference: Mapping[str, Any] | None, source: str) -> DataDriftMonitor:
        return DataDriftMonitor(
            reference_size=self.reference_size, window=self.window, bins=self.psi_bins,
            check_every=self.check_every, thresholds=self.thresholds(), reference=reference,
            max_categories=self.max_categories, max_features=self.max_features,
            source=source)

    def input_monitor(self, training: Mapping[str, Any] | None = None) -> DataDriftMonitor:
        """A fresh input drift monitor (the ``reference`` profile's columns, else those of
        the ``training`` profile, the rest warm-up)."""
        reference, source = self.reference_of(training)
        return self._monitor({k: v for k, v in profile_columns(reference).items()
                              if k != OUTPUT}, source)

    def output_monitor(self, training: Mapping[str, Any] | None = None) -> DataDriftMonitor:
        """A fresh prediction drift monitor (feature :data:`OUTPUT`)."""
        reference, source = self.reference_of(training)
        column = profile_columns(reference).get(OUTPUT)
        return self._monitor({OUTPUT: column} if column else None, source)

    def reference_of(self, training: Mapping[str, Any] | None
                     ) -> tuple[Mapping[str, Any] | None, str]:
        """The profile in force and its kind: the configured ``reference`` (``"profile"``),
        else the ``training`` dataset's (``"training"``), else none (``"warm-up"``)."""
        if self.reference:
            return self.reference, "profile"
        if training and self.training_reference:
            return training, "training"
        return None, "warm-up"

    def null_reference(self, training: Mapping[str, Any] | None = None) -> dict[str, float]:
        """The input features' reference shares of nulls, from the profile in force."""
        return {str(k): float(v["null_fraction"])
                for k, v in profile_columns(self.reference_of(training)[0]).items()
                if isinstance(v, Mapping) and isinstance(v.get("null_fraction"), int | float)
                and k != OUTPUT}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SkewConfig:
    """Training-serving skew: inputs against the signature and the reference null shares.

    Parameters
    ----------
    enabled
        Whether to check at all (flat key ``skew``).
    nulls_tolerance
        Largest accepted gap between live and reference shares of nulls.
    signature
        Feature name -> Arrow type for versions whose ``ModelVersionRegistered``
        carries no signature.
    """

    enabled: bool = True
    nulls_tolerance: float = 0.1
    signature: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if self.signature is not None and not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.signature.items()):
            raise InvalidParameterError("SkewConfig", "signature", self.signature,
                                        "must map feature names to Arrow type names")
        if not 0.0 < self.nulls_tolerance < 1.0:
            raise InvalidParameterError("SkewConfig", "nulls_tolerance", self.nulls_tolerance,
                                        "must be strictly between 0 and 1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MonitorConfig:
    """How a :class:`~modelog.models.monitor.ServingMonitor` watches every model version.

    Parameters
    ----------
    concept, anomaly, drift, skew, outliers
        The detectors' sections.
    max_pending, pending_ttl
        Bounds of the predictions waiting for a label, per model.
    stats_every
        Emit ``MonitorStatsReported`` every this many predictions of a version.
    max_evidence_ids
        Most prediction ids an alert carries.

    Examples
    --------
    >>> cfg = MonitorConfig(anomaly=AnomalyConfig(enabled=False), stats_every=50)
    >>> cfg.anomaly.enabled, cfg.concept.detector, cfg.to_mapping()["anomaly"]
    (False, 'adwin', False)
    """

    concept: ConceptDriftConfig = dataclasses.field(default_factory=ConceptDriftConfig)
    anomaly: AnomalyConfig = dataclasses.field(default_factory=AnomalyConfig)
    drift: DataDriftConfig = dataclasses.field(default_factory=DataDriftConfig)
    skew: SkewConfig = dataclasses.field(default_factory=SkewConfig)
    outliers: OutlierConfig = dataclasses.field(default_factory=OutlierConfig)
    max_pending: int = 100_000
    pending_ttl: dt.timedelta = dt.timedelta(days=1)
    stats_every: int = 500
    max_evidence_ids: int = 20

    def __post_init__(self) -> None:
        for name in ("max_pending", "stats_every"):
            value = getattr(self, name)
            if value < 1:
                raise InvalidParameterError("MonitorConfig", name, value, "must be >= 1")
        if self.max_evidence_ids < 0:
            raise InvalidParameterError("MonitorConfig", "max_evidence_ids",
                                        self.max_evidence_ids, "must be >= 0")
        if self.pending_ttl <= dt.timedelta(0):
            raise InvalidParameterError("MonitorConfig", "pending_ttl", self.pending_ttl,
                                        "must be positive")
        self.skew_monitor(None)

    def anomaly_monitor(self) -> AnomalyMonitor:
        """A fresh anomaly monitor (alerts carry ``max_evidence_ids`` ids at most)."""
        return self.anomaly.monitor(self.max_evidence_ids)

    def skew_monitor(self, signature: Mapping[str, str] | None,
                     training: Mapping[str, Any] | None = None) -> SkewMonitor:
        """A fresh skew monitor (``signature`` from the registry, else the configured one)."""
        d = self.drift
        return SkewMonitor(signature if signature else self.skew.signature,
                           d.null_reference(training),
                           reference_size=d.reference_size, window=d.window,
                           block=d.check_every, nulls_tolerance=self.skew.nulls_tolerance,
                           max_keys=self.max_evidence_ids, max_features=d.max_features)

    def to_mapping(self) -> dict[str, Any]:
        """The flat plain form (durations in seconds), readable by :func:`parse_monitor_config`."""
        return {key: _plain(_get(self, path)) for key, path in SETTINGS.items()}


# -- the plain form -------------------------------------------------------------------------
_Path = tuple[str | None, str]

SETTINGS: dict[str, _Path] = {
    "detector": ("concept", "detector"),
    "detector_params": ("concept", "params"),
    "drift_warm_up": ("concept", "warm_up"),
    "error_window": ("concept", "error_window"),
    "anomaly": ("anomaly", "enabled"),
    **{f"anomaly_{name}": ("anomaly", name) for name in (
        "n_trees", "height", "window_size", "seed", "q", "window", "alpha", "min_count",
        "warm_up", "cooldown")},
    "max_pending": (None, "max_pending"),
    "pending_ttl": (None, "pending_ttl"),
    "stats_every": (None, "stats_every"),
    "max_evidence_ids": (None, "max_evidence_ids"),
    "anomaly_learn_every": ("anomaly", "learn_every"),
    "anomaly_sample_every": ("anomaly", "sample_every"),
    "data_drift": ("drift", "inputs"),
    "prediction_drift": ("drift", "outputs"),
    "skew": ("skew", "enabled"),
    **{name: ("drift", name) for name in ("reference_size",)},
    "drift_window": ("drift", "window"),
    **{name: ("drift", name) for name in (
        "check_every", "psi_bins", "psi_threshold", "ks_alpha", "chi2_alpha",
        "new_category_share", "vanished_category_share")},
    "nulls_tolerance": ("skew", "nulls_tolerance"),
    **{name: ("drift", name) for name in ("max_categories", "max_features", "reference")},
    "signature": ("skew", "signature"),
    "training_reference": ("drift", "training_reference"),
    "outliers": ("outliers", "enabled"),
    **{f"outlier_{name}": ("outliers", name) for name in (
        "margin", "window", "alpha", "min_count", "cooldown", "base_rate", "batch",
        "batch_seconds")},
}
"""Flat key -> (section, setting): the wire form of ``MonitorConfigured.config``."""

_FLAT = {path: key for key, path in SETTINGS.items()}
_SECTIONS: dict[str, type[Any]] = {"concept": ConceptDriftConfig, "anomaly": AnomalyConfig,
                                   "drift": DataDriftConfig, "skew": SkewConfig,
                                   "outliers": OutlierConfig}
# parameter names of the detectors the sections build -> the section's setting
_ALIASES: dict[_Path, str] = {("concept", "window"): "error_window",
                              ("drift", "bins"): "psi_bins", ("drift", "psi"): "psi_threshold"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800, None: 1}

_T = TypeVar("_T")


def _get(config: MonitorConfig, path: _Path) -> Any:
    section, name = path
    return getattr(config if section is None else getattr(config, section), name)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list | frozenset | set):
        return [_plain(v) for v in value]
    return value


def parse_monitor_config(data: Mapping[str, Any], *, base: MonitorConfig | None = None,
                         model: str | None = None, source: str | None = None) -> MonitorConfig:
    """``base`` (default: the defaults) with the settings of ``data`` (flat or nested keys).

    ``data`` is a ``MonitorConfigured.config`` (then ``model`` names its model
    and ``base`` is the model's current configuration) or a configuration file
    read by the backtest (then ``source`` names the file). Durations take
    seconds or ``"<number><unit>"`` (ms, s, m, h, d, w); ``signature`` also
    takes a list of ``{"name", "type"}`` (as ``ModelVersionRegistered.signature``).

    Raises
    ------
    MonitorConfigError
        On an unknown key, a value of the wrong type or a value a detector
        refuses -- naming the setting as it was written, the value and the rule.
    """
    base = MonitorConfig() if base is None else base

    def bad(field: str, value: Any, rule: str) -> MonitorConfigError:
        return MonitorConfigError(field, value, rule, model, source=source)

    if not isinstance(data, Mapping):
        raise bad("", data, f"must be a mapping of monitor settings, not {type(data).__name__}")
    changes: dict[str | None, dict[str, Any]] = {}
    written: dict[_Path, str] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        if key == "quality" or key.startswith("quality."):
            continue  # the quality section: models/quality_config.py parses it
        if key in _SECTIONS and isinstance(value, Mapping):
            names = [f.name for f in dataclasses.fields(_SECTIONS[key])]
            items: list[tuple[str, _Path, Any]] = [
                (f"{key}.{sub}", (key, str(sub)), v) for sub, v in value.items()]
            for field, (_, sub), v in items:
                if sub not in names:
                    raise bad(field, v, "unknown setting; valid: "
                              + ", ".join(f"{key}.{n}" for n in names))
        else:
            path = SETTINGS.get(key)
            if path is None:
                raise bad(key, value, "unknown setting; valid settings: " + ", ".join(SETTINGS)
                          + " (or nested sections: " + ", ".join(_SECTIONS) + ")")
            items = [(key, path, value)]
        for field, path, v in items:
            changes.setdefault(path[0], {})[path[1]] = _coerce(field, path, _get(base, path), v,
                                                               bad)
            written[path] = field

    def build(section: str | None, old: _T, values: Mapping[str, Any]) -> _T:
        try:
            new: _T = dataclasses.replace(old, **values)  # type: ignore[type-var]
            return new
        except MonitorConfigError:
            raise
        except ModelsError as exc:
            parameter = getattr(exc, "parameter", None)
            rule = exc.rule if isinstance(exc, InvalidParameterError) else str(exc)
            raise bad(_field(section, parameter, written), getattr(exc, "value", None),
                      rule) from None
        except (TypeError, ValueError) as exc:
            raise bad(_field(section, None, written), None, str(exc)) from None

    sections: dict[str, Any] = {}
    for name in _SECTIONS:
        values = changes.get(name)
        if values:
            sections[name] = build(name, getattr(base, name), values)
    top = changes.get(None, {})
    if not sections and not top:
        return base
    return build(None, base, {**sections, **top})


def _field(section: str | None, parameter: str | None, written: Mapping[_Path, str]) -> str:
    """The setting an error of ``section`` is about, as the user wrote it."""
    if parameter is None:
        return next((f for (s, _), f in written.items() if s == section),
                    next(iter(written.values()), "config"))
    path = (section, _ALIASES.get((section, parameter), parameter))
    if path in _FLAT:
        return written.get(path) or _FLAT[path]
    if any(parameter.startswith(f"{name}.") for _, name in written):
        return parameter  # a part of a setting, e.g. reference.<column>.histogram
    # a detector's own hyperparameter (detector_params): the setting that carried it
    return next((f for (s, _), f in written.items() if s == section), parameter)


MAX_COUNT = 1_000_000
"""The largest integer a monitor setting takes (a window, a size, a count, a detector's
hyperparameter; seeds excepted). Each bounds the memory or the work of a version's
monitors, and a configuration is input from the log: ``drift_window=1e9`` would grow
until the worker runs out of memory."""

_UNBOUNDED: frozenset[_Path] = frozenset({("anomaly", "seed")})


def count_rule(value: int) -> str | None:
    """Why an integer setting is too large (``None``: it is not)."""
    if abs(value) > MAX_COUNT:
        return (f"must be at most {MAX_COUNT:,}: it bounds the memory and work of the "
                "monitors")
    return None


def _coerce(field: str, path: _Path, current: Any, value: Any,
            bad: Callable[[str, Any, str], MonitorConfigError]) -> Any:
    """``value`` checked (and converted) against the type of the setting's current value."""
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise bad(field, value, "must be true or false")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(field, value, "must be an integer")
        if path not in _UNBOUNDED and (rule := count_rule(value)) is not None:
            raise bad(field, value, rule)
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise bad(field, value, "must be a finite number")
        return float(value)
    if isinstance(current, str):
        if not isinstance(value, str):
            raise bad(field, value, "must be a string")
        return value
    if isinstance(current, dt.timedelta):
        return _duration(field, value, bad)
    if path == ("skew", "signature") and isinstance(value, list):
        try:
            return {str(c["name"]): str(c["type"]) for c in value}
        except (KeyError, TypeError):
            raise bad(field, value,
                      'a list signature needs {"name": ..., "type": ...} items') from None
    if path == ("drift", "reference") and isinstance(value, Mapping):
        columns = profile_columns(value)
        if not columns or not all(isinstance(c, Mapping) for c in columns.values()):
            raise bad(field, value,
                      "must be a profile_table() profile: {'columns': {name: column profile}}")
        return value
    if path == ("concept", "params") and value is None:
        return {}
    if value is not None and not isinstance(value, Mapping):
        raise bad(field, value, "must be a mapping (or null)")
    if path == ("concept", "params") and value is not None:
        for name, param in value.items():
            if isinstance(param, int) and not isinstance(param, bool) \
                    and (rule := count_rule(param)) is not None:
                raise bad(f"{field}.{name}", param, rule)
    return value


def _duration(field: str, value: Any,
              bad: Callable[[str, Any, str], MonitorConfigError]) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        return value
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)) is not None:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds is None:
        raise bad(field, value, "not a duration; write seconds (3600) or a number with a "
                  "unit: 500ms, 30s, 15m, 12h, 1d, 2w")
    return dt.timedelta(seconds=seconds)
