"""A retrain job's pure parts: its plan, its ids, the trainer rules and the gate.

* :func:`plan_job` turns a :class:`~modelog.models.events.RetrainRequested` and
  the runner's :class:`JobPolicy` into a :class:`RetrainPlan` (window, minimum
  labelled rows, holdout share, metric, margin);
* :func:`registration_command_id` / :func:`alias_command_id` derive the ids of
  the registry commands from the request id, so a re-run job (crash, restart,
  redelivery) sends the *same* commands and the registry answers with the
  version it already assigned: one candidate per request;
* trainers are the operator's code only: :func:`trainer_table` builds the
  ``model -> package.module:function`` table from the runner's own
  configuration (``--trainer`` options, ``MODELOG_TRAINERS``, the
  ``modelog.trainers`` entry points) and :func:`resolve_trainer` looks a model
  up in it. Nothing in an event ever names code;
* :func:`score` computes a metric on a holdout and :func:`decide_gate` says
  whether a candidate beats production by the margin on enough rows.

Examples
--------
>>> table = trainer_table(["churn=my_pkg.train:fit"], "fraud=other.train:fit_fraud")
>>> sorted(table), table["churn"].target, table["fraud"].source
(['churn', 'fraud'], 'my_pkg.train:fit', 'MODELOG_TRAINERS')
>>> resolve_trainer(table, "ltv")
Traceback (most recent call last):
...
modelog.models.errors.TrainerNotConfiguredError: no trainer named 'ltv' configured on this \
runner (configured: churn, fraud); start the runner with --trainer ltv=package.module:function, \
add it to MODELOG_TRAINERS or declare it in the 'modelog.trainers' entry-point group
>>> gate = decide_gate("accuracy", candidate=0.91, production=0.72, rows=500, min_rows=100,
...                    margin=0.01)
>>> gate.passed, gate.reason
(True, 'candidate accuracy 0.91 beats production 0.72 by 0.19 (margin 0.01) on 500 holdout rows')

This module imports only :mod:`modelog.models` (pure: no I/O).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modelog.models.errors import (
    RetrainJobError,
    TrainerConfigError,
    TrainerNotConfiguredError,
)
from modelog.models.events import NAME_PATTERN, RetrainRequested, Scalar
from modelog.models.ids import derived_id, id_time_ms

__all__ = [
    "CANDIDATE_ALIAS",
    "ENTRY_POINT_GROUP",
    "METRICS",
    "GateDecision",
    "JobPolicy",
    "RetrainPlan",
    "TrainerContext",
    "TrainerRef",
    "alias_command_id",
    "backoff_delays",
    "choose_metric",
    "decide_gate",
    "parse_trainer",
    "plan_job",
    "registration_command_id",
    "resolve_trainer",
    "score",
    "trainer_table",
    "unpack_result",
]

ENTRY_POINT_GROUP = "modelog.trainers"
"""Entry-point group in which installed packages declare trainers (``model = module:fn``)."""

METRICS = {"accuracy": True, "f1": True, "mae": False}
"""Gate metrics and whether higher is better."""

CANDIDATE_ALIAS = "candidate"
"""The alias a candidate that passed the gate gets (never ``production``)."""

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_FUNCTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_MODEL = re.compile(NAME_PATTERN)


# -- the plan --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class JobPolicy:
    """The runner's defaults for every job (a request's ``policy`` may override some).

    Parameters
    ----------
    min_labelled_rows
        Fewer labelled predictions in the window: the job fails, nothing is trained.
    holdout_share
        Share of the labelled traffic, the most recent, kept out of training.
    min_holdout_rows
        The gate passes only on at least this many holdout rows.
    metric
        ``accuracy``, ``f1`` or ``mae``; ``None``: ``accuracy`` for
        classification labels, ``mae`` for continuous ones.
    margin
        How much better than production the candidate must be.
    """

    min_labelled_rows: int = 200
    holdout_share: float = 0.2
    min_holdout_rows: int = 50
    metric: str | None = None
    margin: float = 0.0

    def __post_init__(self) -> None:
        if self.min_labelled_rows < 1 or self.min_holdout_rows < 1:
            raise RetrainJobError("min_labelled_rows and min_holdout_rows must be at least 1")
        if not 0.0 < self.holdout_share < 1.0:
            raise RetrainJobError(f"holdout_share={self.holdout_share!r} must be in (0, 1)")
        if self.metric is not None:
            _higher_is_better(self.metric)
        if self.margin < 0:
            raise RetrainJobError(f"margin={self.margin!r} must not be negative")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetrainPlan:
    """What one job does, decided before anything runs."""

    request_id: str
    model: str
    reason: str
    trigger_id: str | None
    start: dt.datetime | None
    end: dt.datetime | None
    policy: JobPolicy

    def params(self) -> dict[str, Scalar]:
        """The plan as run parameters."""
        p = self.policy
        return {
            "request_id": self.request_id, "trigger_id": self.trigger_id,
            "window_start": None if self.start is None else self.start.isoformat(),
            "window_end": None if self.end is None else self.end.isoformat(),
            "min_labelled_rows": p.min_labelled_rows, "holdout_share": p.holdout_share,
            "min_holdout_rows": p.min_holdout_rows, "metric": p.metric or "auto",
            "margin": p.margin,
        }


# request policy key -> (JobPolicy field, type); later keys win (a model's retrain policy
# names the gate's keys gate_*, `modelog retrain` the runner's own names)
_OVERRIDES: dict[str, tuple[str, type]] = {
    "min_labelled_rows": ("min_labelled_rows", int), "holdout_share": ("holdout_share", float),
    "min_holdout_rows": ("min_holdout_rows", int), "metric": ("metric", str),
    "margin": ("margin", float), "gate_min_rows": ("min_holdout_rows", int),
    "gate_metric": ("metric", str), "gate_margin": ("margin", float)}


def plan_job(request: RetrainRequested, policy: JobPolicy | None = None) -> RetrainPlan:
    """The plan of the job answering ``request``.

    The request's ``policy`` may set ``min_labelled_rows``, ``holdout_share``,
    ``min_holdout_rows``, ``metric`` and ``margin``, the gate's also as the model's
    retrain policy names them (``gate_min_rows``, ``gate_metric``, ``gate_margin``,
    which win); they override the runner's defaults. Scalars only; a ``None``
    keeps the default, any other key is ignored, and nothing in it can name code.

    Examples
    --------
    >>> import datetime as dt
    >>> from modelog.models.events import RetrainRequested
    >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    >>> req = RetrainRequested(id="r-1", time=t, aggregate="churn", model="churn",
    ...                        reason="drift", policy={"min_labelled_rows": 50})
    >>> plan = plan_job(req)
    >>> plan.model, plan.policy.min_labelled_rows, plan.policy.holdout_share
    ('churn', 50, 0.2)
    >>> import msgspec
    >>> gated = plan_job(msgspec.structs.replace(req, policy={
    ...     "gate_metric": "f1", "gate_margin": 0.05, "gate_min_rows": 30, "margin": 0.5}))
    >>> gated.policy.metric, gated.policy.margin, gated.policy.min_holdout_rows
    ('f1', 0.05, 30)
    """
    base = policy or JobPolicy()
    changes: dict[str, Any] = {}
    for key, (field, kind) in _OVERRIDES.items():
        value = request.policy.get(key)
        if value is None or isinstance(value, bool):
            continue
        try:
            changes[field] = kind(value)
        except (TypeError, ValueError):
            raise RetrainJobError(f"the request's policy sets {key}={value!r}, which is not "
                                  f"a {kind.__name__}") from None
    return RetrainPlan(request_id=request.id, model=request.model, reason=request.reason,
                       trigger_id=request.trigger_id, start=request.window.start,
                       end=request.window.end,
                       policy=dataclasses.replace(base, **changes) if changes else base)


def backoff_delays(retries: int, base: float = 1.0, cap: float = 30.0) -> list[float]:
    """Seconds to wait before each retry of a transient failure: doubling from ``base``,
    at most ``cap`` each (bounded: ``retries`` waits, then the job is recorded failed).

    Examples
    --------
    >>> backoff_delays(5, base=1.0, cap=6.0)
    [1.0, 2.0, 4.0, 6.0, 6.0]
    >>> backoff_delays(0)
    []
    """
    if retries < 0 or base < 0 or cap < 0:
        raise RetrainJobError("retries, base and cap of a backoff must not be negative")
    return [min(cap, base * 2.0 ** i) for i in range(retries)]


def registration_command_id(request_id: str) -> str:
    """The id of the registration command of the job answering ``request_id``.

    Examples
    --------
    >>> registration_command_id("0190-req") == registration_command_id("0190-req")
    True
    """
    return derived_id(_ms(request_id), "retrain-register", request_id)


def alias_command_id(request_id: str) -> str:
    """The id of the ``candidate`` alias command of the job answering ``request_id``."""
    return derived_id(_ms(request_id), "retrain-alias", request_id)


def _ms(event_id: str) -> int:
    try:
        return id_time_ms(event_id)
    except (ValueError, TypeError, IndexError):
        return 0


# -- trainers ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainerRef:
    """A configured trainer: ``module:function``, and where the runner found it."""

    model: str
    module: str
    function: str
    source: str

    @property
    def target(self) -> str:
        return f"{self.module}:{self.function}"


def parse_trainer(spec: str, source: str = "--trainer") -> TrainerRef:
    """Parse ``model=package.module:function``.

    Raises
    ------
    TrainerConfigError
        ``spec`` does not have that shape.
    """
    model, sep, target = spec.strip().partition("=")
    module, colon, function = target.strip().partition(":")
    model, module, function = model.strip(), module.strip(), function.strip()
    if not (sep and colon and _MODEL.fullmatch(model) and _MODULE.fullmatch(module)
            and _FUNCTION.fullmatch(function)):
        raise TrainerConfigError(
            f"{source}: {spec!r} is not a trainer mapping; write model=package.module:function "
            "(e.g. churn=my_pkg.train:fit)")
    return TrainerRef(model, module, function, source)


def trainer_table(cli: Sequence[str] = (), env: str | None = None,
                  entry_points: Iterable[tuple[str, str]] = ()) -> dict[str, TrainerRef]:
    """The runner's trainers: ``--trainer`` options win over ``MODELOG_TRAINERS`` (comma-
    separated), which win over the ``modelog.trainers`` entry points (``(name, value)``).
    """
    table: dict[str, TrainerRef] = {}
    for name, value in entry_points:
        ref = parse_trainer(f"{name}={value}", f"entry point {ENTRY_POINT_GROUP}:{name}")
        table[ref.model] = ref
    for item in (env or "").split(","):
        if item.strip():
            ref = parse_trainer(item, "MODELOG_TRAINERS")
            table[ref.model] = ref
    for item in cli:
        ref = parse_trainer(item, "--trainer")
        table[ref.model] = ref
    return table


def resolve_trainer(table: Mapping[str, TrainerRef], model: str) -> TrainerRef:
    """The trainer configured for ``model``.

    Raises
    ------
    TrainerNotConfiguredError
        None is; the message says how to configure one.
    """
    try:
        return table[model]
    except KeyError:
        known = ", ".join(sorted(table)) or "none"
        raise TrainerNotConfiguredError(
            f"no trainer named {model!r} configured on this runner (configured: {known}); "
            f"start the runner with --trainer {model}=package.module:function, add it to "
            f"MODELOG_TRAINERS or declare it in the {ENTRY_POINT_GROUP!r} entry-point group"
        ) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainerContext:
    """What a trainer is told besides its data (``fit(data, context)``)."""

    model: str
    request_id: str
    reason: str
    features: list[str]
    target: str
    start: dt.datetime | None
    end: dt.datetime | None
    production_version: int | None
    rows: int


def unpack_result(result: Any) -> tuple[Any, dict[str, float]]:
    """A trainer's return value as ``(model, metrics)``.

    A trainer returns the fitted model, ``(model, metrics)`` or
    ``{"model": model, "metrics": {...}}``; metrics are name -> number.

    Raises
    ------
    RetrainJobError
        Nothing (``None``) was returned, or the metrics are not numbers.
    """
    model: Any = result
    metrics: Mapping[str, Any] = {}
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mapping):
        model, metrics = result
    elif isinstance(result, Mapping) and "model" in result:
        model, metrics = result["model"], result.get("metrics") or {}
    if model is None:
        raise RetrainJobError("the trainer returned None, not a fitted model; return the "
                              "model (or (model, metrics))")
    out: dict[str, float] = {}
    for key, value in dict(metrics).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RetrainJobError(f"the trainer's metric {key!r} = {value!r} is not a number")
        out[str(key)] = float(value)
    return model, out


# -- metrics and the gate ------------------------------------------------------------------
def _norm(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if hasattr(value, "item"):  # numpy scalars
        return _norm(value.item())
    return value


def choose_metric(labels: Sequence[Any], configured: str | None = None) -> str:
    """``configured``, else ``mae`` for continuous labels and ``accuracy`` otherwise.

    Examples
    --------
    >>> choose_metric([0, 1, 1]), choose_metric([0.5, 1.25]), choose_metric(["a"], "f1")
    ('accuracy', 'mae', 'f1')
    """
    if configured is not None:
        return configured
    continuous = any(isinstance(v, float) and not v.is_integer() for v in labels)
    return "mae" if continuous else "accuracy"


def score(metric: str, predictions: Sequence[Any], labels: Sequence[Any]) -> float:
    """``metric`` of ``predictions`` against ``labels``.

    ``f1`` is the binary F1 of the positive class when the labels are 0/1 (or
    booleans), else the macro average over the classes.

    Raises
    ------
    RetrainJobError
        No rows, lengths differ, or labels of the wrong type for the metric.

    Examples
    --------
    >>> score("accuracy", [1, 0, 1, 1], [1, 0, 0, 1]), score("mae", [1.0, 2.0], [1.5, 2.5])
    (0.75, 0.5)
    >>> round(score("f1", [1, 0, 1, 1], [1, 0, 0, 1]), 3)
    0.8
    """
    if len(predictions) != len(labels) or not labels:
        raise RetrainJobError(f"cannot compute {metric} on {len(labels)} labels and "
                              f"{len(predictions)} predictions")
    preds = [_norm(p) for p in predictions]
    truth = [_norm(v) for v in labels]
    if metric == "accuracy":
        return float(sum(p == t for p, t in zip(preds, truth, strict=True)) / len(truth))
    if metric == "mae":
        try:
            return float(sum(abs(float(p) - float(t))
                             for p, t in zip(preds, truth, strict=True)) / len(truth))
        except (TypeError, ValueError):
            raise RetrainJobError("mae needs numeric labels and predictions; the labels are "
                                  f"like {truth[0]!r}: configure the metric accuracy or f1"
                                  ) from None
    if metric == "f1":
        classes = sorted(set(truth) | set(preds), key=repr)
        positive = [1] if set(truth) <= {0, 1} else classes
        f1s = []
        for c in positive:
            tp = sum(p == c and t == c for p, t in zip(preds, truth, strict=True))
            fp = sum(p == c and t != c for p, t in zip(preds, truth, strict=True))
            fn = sum(p != c and t == c for p, t in zip(preds, truth, strict=True))
            f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
        return sum(f1s) / len(f1s)
    _higher_is_better(metric)
    raise AssertionError(metric)  # pragma: no cover -- every metric is handled above


def _higher_is_better(metric: str) -> bool:
    """Whether higher values of ``metric`` are better; an unknown metric raises."""
    try:
        return METRICS[metric]
    except KeyError:
        raise RetrainJobError(f"metric {metric!r} is not one of {', '.join(METRICS)}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class GateDecision:
    """Whether a candidate may get the ``candidate`` alias, with the numbers."""

    passed: bool
    reason: str
    metric: str
    candidate: float
    production: float | None
    rows: int
    margin: float


def decide_gate(metric: str, *, candidate: float, production: float | None, rows: int,
                min_rows: int, margin: float = 0.0) -> GateDecision:
    """Pass only when ``candidate`` beats ``production`` by more than ``margin`` on
    at least ``min_rows`` holdout rows (no production version: enough rows suffice).

    Examples
    --------
    >>> decide_gate("mae", candidate=2.0, production=1.5, rows=900, min_rows=100).reason
    'candidate mae 2 is not better than production 1.5 by the margin 0 on 900 holdout rows'
    >>> decide_gate("accuracy", candidate=0.9, production=0.5, rows=20, min_rows=100).reason
    'only 20 holdout rows, the gate needs 100'
    """
    higher = _higher_is_better(metric)

    def decision(passed: bool, reason: str) -> GateDecision:
        return GateDecision(passed=passed, reason=reason, metric=metric, candidate=candidate,
                            production=production, rows=rows, margin=margin)

    if rows < min_rows:
        return decision(False, f"only {rows} holdout rows, the gate needs {min_rows}")
    if production is None:
        return decision(True, f"candidate {metric} {candidate:.4g} on {rows} holdout rows; "
                              "no production version to compare with")
    gain = candidate - production if higher else production - candidate
    if gain > margin:
        return decision(True, f"candidate {metric} {candidate:.4g} beats production "
                              f"{production:.4g} by {gain:.4g} (margin {margin:g}) on {rows} "
                              "holdout rows")
    return decision(False, f"candidate {metric} {candidate:.4g} is not better than production "
                           f"{production:.4g} by the margin {margin:g} on {rows} holdout rows")
