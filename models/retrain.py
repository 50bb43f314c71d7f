"""When to retrain a model: a policy over monitoring events (pure, replayable).

:class:`RetrainTrigger` reads a model's monitoring events in log order and
answers, for each, with the :class:`~modelog.models.events.RetrainRequested`
it causes (a list of at most one). It is a
:class:`~modelog.models.processor.Processor`: its state can be snapshotted and
restored. A :class:`RetrainPolicy` says what fires a request:

* ``on_concept_drift``: a ``DriftDetected(kind="concept")``;
* ``data_drift_sustained``: data (or prediction) drift still unresolved after
  that many ``DriftDetected(kind="data"|"prediction")`` checks (an ``int``) or
  for that long (a ``timedelta``, measured on the model's later events);
  ``DriftResolved`` of every drifting feature ends it;
* ``metric_floor``: ``metric_sustained`` consecutive ``MonitorStatsReported``
  of a version whose ``stats[metric_name]`` is worse than the floor (above it
  when ``higher_is_better`` is false, as for ``rolling_error``);
* ``schedule``: that much event time passed since the last request (or since
  the model's first event).

Time is event time only, so replaying the log gives the same requests, with
the same deterministic ids (:func:`~modelog.models.ids.derived_id` of the
trigger's time, the model and the trigger's id). After a request, nothing
fires for ``cooldown``: one drift reported ten times gives one request; a
sustained condition (data drift, metric) that still holds fires on its next
check after the cooldown, a concept drift inside it is dropped (counted as
``suppressed``). ``RetrainRequested`` events in the input are ignored, so the
trigger may read the topic it writes to.

A :class:`RetrainPolicy` given to the trigger is the default of every model;
a :class:`~modelog.models.policy_events.RetrainPolicySet` of the monitoring
topic overrides it for its model (``{}`` resets), checked by the one parser,
:func:`parse_retrain_policy` (which the SDK and the CLI run before sending).
Each request's ``policy`` holds the policy in force (its gate keys included,
for the retrain runner) and the trigger that fired.

The request's data window ends at the trigger's time and starts
``window_margin`` before the drift started (drift triggers), or at the end of
the previous request's window (metric and schedule triggers; ``None`` -- all
the data -- for a model's first request).

Examples
--------
>>> import datetime as dt
>>> from modelog.models.events import DriftDetected
>>> t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
>>> def drift(i, minutes):
...     return DriftDetected(id=f"d{i}", time=t0 + dt.timedelta(minutes=minutes),
...                          aggregate="churn", model="churn", model_version=2,
...                          kind="concept", detector="adwin", statistic=0.4)
>>> trigger = RetrainTrigger(RetrainPolicy(cooldown=dt.timedelta(hours=1)))
>>> [request] = trigger.process(drift(1, 0))
>>> request.model, request.model_version, request.trigger_id, request.window.end == t0
('churn', 2, 'd1', True)
>>> print(request.reason)
concept drift detected by adwin (statistic 0.4) on churn v2
>>> trigger.process(drift(2, 30))                   # inside the cooldown
[]
>>> [r.trigger_id for r in trigger.process(drift(3, 90))]  # after it
['d3']

This module owns the retrain policy and its evaluation; it imports only
:mod:`modelog.models`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from typing import Literal

from mypy_extensions import mypyc_attr

from modelog.models.errors import InvalidParameterError, RetrainPolicyError
from modelog.models.events import (
    DriftDetected,
    DriftResolved,
    Event,
    MonitorStatsReported,
    RetrainRequested,
    Scalar,
    Window,
)
from modelog.models.ids import derived_id, epoch_ms
from modelog.models.pickled import FrozenState
from modelog.models.policy_events import RetrainPolicySet
from modelog.models.processor import SnapshotByPickle
from modelog.models.retrain_job import METRICS

__all__ = ["POLICY_KEYS", "PRODUCER", "RetrainPolicy", "RetrainTrigger", "parse_retrain_policy"]

PRODUCER = "modelog-retrain"
"""The ``producer`` of the requests."""

Trigger = Literal["concept_drift", "data_drift", "metric_floor", "schedule"]


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True, kw_only=True)
class RetrainPolicy(FrozenState):
    """What makes a model ask for retraining.

    Parameters
    ----------
    on_concept_drift
        Request on every concept drift (outside the cooldown).
    data_drift_sustained
        Request when data drift lasted this many checks (``int``) or this long
        (``timedelta``); ``None``: never on data drift.
    metric_floor
        The worst acceptable value of ``metric_name``; ``None``: no metric rule.
    metric_name
        The ``MonitorStatsReported.stats`` key to watch.
    higher_is_better
        ``False`` (errors, losses): worse means above the floor.
    metric_sustained
        Consecutive reports worse than the floor needed.
    schedule
        Request when this much time passed since the last request.
    cooldown
        No request within this time after one.
    window_margin
        How much data before a drift started the training window includes.
    min_labelled_rows
        The runner's job needs this many labelled predictions (``None``: the
        runner's ``--min-rows``).
    gate_metric
        The gate's metric, ``accuracy``, ``f1`` or ``mae`` (``None``: the runner's
        ``--metric``, else chosen from the labels).
    gate_margin
        How much better than production a candidate must be (``None``: ``--margin``).
    gate_min_rows
        Fewest holdout rows for the gate to pass (``None``: ``--min-holdout-rows``).

    Examples
    --------
    >>> RetrainPolicy(metric_floor=0.3, schedule=dt.timedelta(days=7)).as_params()["schedule_s"]
    604800.0
    >>> RetrainPolicy(metric_sustained=0)
    Traceback (most recent call last):
    ...
    modelog.models.errors.InvalidParameterError: RetrainPolicy: parameter 'metric_sustained' = 0 \
is invalid: must be >= 1. Fix the configuration and create the monitor again.
    """

    on_concept_drift: bool = True
    data_drift_sustained: int | dt.timedelta | None = None
    metric_floor: float | None = None
    metric_name: str = "rolling_error"
    higher_is_better: bool = False
    metric_sustained: int = 3
    schedule: dt.timedelta | None = None
    cooldown: dt.timedelta = dt.timedelta(hours=1)
    window_margin: dt.timedelta = dt.timedelta(hours=1)
    min_labelled_rows: int | None = None
    gate_metric: str | None = None
    gate_margin: float | None = None
    gate_min_rows: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, value: object, rule: str) -> InvalidParameterError:
            return InvalidParameterError("RetrainPolicy", name, value, rule)

        sustained = self.data_drift_sustained
        if isinstance(sustained, bool) or (isinstance(sustained, int) and sustained < 1):
            raise bad("data_drift_sustained", sustained, "must be a count >= 1 or a timedelta")
        if isinstance(sustained, dt.timedelta) and sustained <= dt.timedelta(0):
            raise bad("data_drift_sustained", sustained, "must be a positive duration")
        if self.metric_sustained < 1:
            raise bad("metric_sustained", self.metric_sustained, "must be >= 1")
        if self.schedule is not None and self.schedule <= dt.timedelta(0):
            raise bad("schedule", self.schedule, "must be a positive duration or None")
        if self.cooldown < dt.timedelta(0):
            raise bad("cooldown", self.cooldown, "must not be negative")
        if self.window_margin < dt.timedelta(0):
            raise bad("window_margin", self.window_margin, "must not be negative")
        if self.gate_metric is not None and self.gate_metric not in METRICS:
            raise bad("gate_metric", self.gate_metric, f"must be one of {', '.join(METRICS)}")
        if self.gate_margin is not None and not self.gate_margin >= 0:
            raise bad("gate_margin", self.gate_margin, "must not be negative")
        for name in ("min_labelled_rows", "gate_min_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise bad(name, value, "must be >= 1")

    def as_params(self) -> dict[str, Scalar]:
        """The policy as flat scalars (durations in seconds), as a request carries it."""
        sustained = self.data_drift_sustained
        return {
            "on_concept_drift": self.on_concept_drift,
            "data_drift_checks": sustained if isinstance(sustained, int) else None,
            "data_drift_s": (sustained.total_seconds()
                             if isinstance(sustained, dt.timedelta) else None),
            "metric_floor": self.metric_floor,
            "metric_name": self.metric_name,
            "higher_is_better": self.higher_is_better,
            "metric_sustained": self.metric_sustained,
            "schedule_s": None if self.schedule is None else self.schedule.total_seconds(),
            "cooldown_s": self.cooldown.total_seconds(),
            "window_margin_s": self.window_margin.total_seconds(),
            "min_labelled_rows": self.min_labelled_rows,
            "gate_metric": self.gate_metric,
            "gate_margin": self.gate_margin,
            "gate_min_rows": self.gate_min_rows,
        }


# key -> (kind, may be None, lower bound, bound excluded); the keys of RetrainPolicy.as_params
_RULES: dict[str, tuple[str, bool, float | None, bool]] = {
    "on_concept_drift": ("bool", False, None, False),
    "data_drift_checks": ("count", True, 1, False),
    "data_drift_s": ("seconds", True, 0, True),
    "metric_floor": ("number", True, None, False),
    "metric_name": ("text", False, None, False),
    "higher_is_better": ("bool", False, None, False),
    "metric_sustained": ("count", False, 1, False),
    "schedule_s": ("seconds", True, 0, True),
    "cooldown_s": ("seconds", False, 0, False),
    "window_margin_s": ("seconds", False, 0, False),
    "min_labelled_rows": ("count", True, 1, False),
    "gate_metric": ("metric", True, None, False),
    "gate_margin": ("number", True, 0, False),
    "gate_min_rows": ("count", True, 1, False),
}
POLICY_KEYS: tuple[str, ...] = tuple(_RULES)
"""The keys a ``RetrainPolicySet.policy`` may hold (those of :meth:`RetrainPolicy.as_params`)."""

_MAX_SECONDS = 100 * 365 * 86_400.0
_MAX_COUNT = 1_000_000_000
_KINDS = {"bool": "a boolean (true/false)", "count": "a whole number",
          "seconds": "a duration in seconds", "number": "a number",
          "text": "a non-empty name", "metric": f"one of {', '.join(METRICS)}"}


def _check(model: str, key: str, value: object) -> Scalar:
    """``value`` of policy ``key`` checked against its rule (a float that is whole passes as
    a count: JSON does not tell 3 from 3.0)."""
    kind, nullable, low, excluded = _RULES[key]

    def bad(rule: str) -> RetrainPolicyError:
        return RetrainPolicyError(model, key, value, rule)

    if value is None:
        if nullable:
            return None
        raise bad(f"must be {_KINDS[kind]}, not none")
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("must be a boolean (true/false)")
        return value
    if kind in ("text", "metric"):
        if not isinstance(value, str) or not value.strip() or len(value) > 128:
            raise bad(f"must be {_KINDS[kind]} (at most 128 characters)")
        if kind == "metric" and value not in METRICS:
            raise bad(f"must be one of {', '.join(METRICS)} (or none: the runner's default)")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad(f"must be {_KINDS[kind]}" + (" or none" if nullable else ""))
    number: int | float = value
    if kind == "count":
        if not float(value).is_integer():
            raise bad("must be a whole number")
        number = int(value)
        if number > _MAX_COUNT:
            raise bad(f"must be at most {_MAX_COUNT:,}")
    if kind == "seconds":
        number = float(value)
        if number > _MAX_SECONDS:
            raise bad("must be at most 100 years")
    if low is not None and (number <= low if excluded else number < low):
        raise bad(f"must be {'>' if excluded else '>='} {low:g}")
    return number


def parse_retrain_policy(model: str, data: Mapping[str, object],
                         defaults: RetrainPolicy | None = None) -> RetrainPolicy:
    """The policy a ``RetrainPolicySet.policy`` sets for ``model`` over ``defaults``.

    ``data`` holds some of :data:`POLICY_KEYS` (durations in seconds); keys left
    out keep the value of ``defaults`` (``{}``: ``defaults`` themselves).
    ``data_drift_checks`` and ``data_drift_s`` are the two ways of one rule:
    setting one replaces the other.

    Raises
    ------
    RetrainPolicyError
        An unknown key (the message lists the valid ones) or a value that breaks
        its rule; the error names the model, the key, the value and the rule.

    Examples
    --------
    >>> p = parse_retrain_policy("churn", {"cooldown_s": 600, "gate_metric": "f1",
    ...                                    "data_drift_checks": 3})
    >>> p.cooldown, p.gate_metric, p.data_drift_sustained, p.on_concept_drift
    (datetime.timedelta(seconds=600), 'f1', 3, True)
    >>> parse_retrain_policy("churn", {"cooldown_s": -1})
    Traceback (most recent call last):
    ...
    modelog.models.errors.RetrainPolicyError: retrain policy of 'churn': cooldown_s = -1 is \
invalid: must be >= 0. Fix it and set the policy again (`modelog policy retrain set`), or reset \
it (`modelog policy retrain reset`).
    """
    base = defaults or RetrainPolicy()
    unknown = sorted(str(k) for k in data if k not in _RULES)
    if unknown:
        raise RetrainPolicyError(model, unknown[0], data[unknown[0]],
                                 f"unknown key; the valid keys are {', '.join(POLICY_KEYS)}")
    v = {k: _check(model, k, value) for k, value in data.items()}
    if v.get("data_drift_checks") is not None and v.get("data_drift_s") is not None:
        raise RetrainPolicyError(model, "data_drift_s", v["data_drift_s"],
                                 "set data_drift_checks or data_drift_s, not both")
    changes: dict[str, object] = {}
    durations = {"schedule_s": "schedule", "cooldown_s": "cooldown",
                 "window_margin_s": "window_margin"}
    for key, value in v.items():
        if key in durations:
            changes[durations[key]] = (None if value is None
                                       else dt.timedelta(seconds=float(value)))
        elif key not in ("data_drift_checks", "data_drift_s"):
            changes[key] = value
    if "data_drift_checks" in v or "data_drift_s" in v:
        checks, seconds = v.get("data_drift_checks"), v.get("data_drift_s")
        changes["data_drift_sustained"] = (
            checks if checks is not None
            else dt.timedelta(seconds=float(seconds)) if seconds is not None else None)
    try:
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
    except InvalidParameterError as exc:  # a rule checked only by RetrainPolicy itself
        raise RetrainPolicyError(model, exc.parameter, exc.value, exc.rule) from None


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass
class _DataDrift:
    features: set[tuple[str, str | None]] = dataclasses.field(default_factory=set)
    start: dt.datetime | None = None
    checks: int = 0


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass
class _ModelState:
    first_time: dt.datetime
    version: int | None = None
    last_request: dt.datetime | None = None
    last_window_end: dt.datetime | None = None
    data: _DataDrift = dataclasses.field(default_factory=_DataDrift)
    # per version: (consecutive reports worse than the floor, start of the first one)
    breaches: dict[int | None, tuple[int, dt.datetime]] = dataclasses.field(default_factory=dict)
    requests: int = 0
    suppressed: int = 0


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class _Fire(FrozenState):
    trigger: Trigger
    reason: str
    start: dt.datetime | None
    size: int = 0


class RetrainTrigger(SnapshotByPickle):
    """Turn monitoring events into retrain requests according to a policy.

    Parameters
    ----------
    policy
        The rules (:class:`RetrainPolicy`): the defaults of every model.

    A :class:`~modelog.models.policy_events.RetrainPolicySet` overrides the
    defaults for its model (keys left out keep them; ``{}`` resets the model
    to them); :meth:`configure` applies one, :meth:`policy_for` says what is in
    force. State is per model, a pure function of the events processed so far
    (policies included, carried over with :meth:`snapshot` and :meth:`restore`).
    """

    def __init__(self, policy: RetrainPolicy | None = None) -> None:
        self.policy = policy or RetrainPolicy()
        self._models: dict[str, _ModelState] = {}
        self._policies: dict[str, RetrainPolicy] = {}

    def configure(self, event: RetrainPolicySet) -> RetrainPolicy:
        """Apply a model's :class:`RetrainPolicySet`; return the policy now in force.

        Raises
        ------
        RetrainPolicyError
            The policy is invalid; the previous one stays in force.
        """
        if not event.policy:
            self._policies.pop(event.model, None)
            return self.policy
        policy = parse_retrain_policy(event.model, event.policy, self.policy)
        self._policies[event.model] = policy
        return policy

    def policy_for(self, model: str) -> RetrainPolicy:
        """The policy in force for ``model`` (its override, else the defaults)."""
        return self._policies.get(model, self.policy)

    def process(self, event: Event) -> list[Event]:
        """Take one monitoring event; return the request it triggers (a list of at most one).

        A ``RetrainPolicySet`` is applied (:meth:`configure`, which raises on an
        invalid one) and triggers nothing.
        """
        if isinstance(event, RetrainPolicySet):
            self.configure(event)
            return []
        request = self._process(event)
        return [] if request is None else [request]

    def _process(self, event: Event) -> RetrainRequested | None:
        model = getattr(event, "model", None)
        if isinstance(event, RetrainRequested) or not isinstance(model, str):
            return None
        state = self._models.get(model)
        if state is None:
            state = self._models[model] = _ModelState(first_time=event.time)
        version = getattr(event, "model_version", None)
        if isinstance(version, int):
            state.version = version
        p = self.policy_for(model)
        fire = self._evaluate(state, event, p)
        if fire is None:
            return None
        # a request stamped later than this event (a skewed clock) does not hold retrains back
        if state.last_request is not None and \
                dt.timedelta(0) <= event.time - state.last_request < p.cooldown:
            state.suppressed += 1
            return None
        return self._request(model, state, event, fire, p)

    def counters(self, model: str) -> dict[str, int]:
        """Requests made and triggers suppressed by the cooldown for ``model``."""
        s = self._models.get(model)
        return {"requests": s.requests if s else 0, "suppressed": s.suppressed if s else 0}

    # -- rules ---------------------------------------------------------------------
    def _evaluate(self, state: _ModelState, ev: Event, p: RetrainPolicy) -> _Fire | None:
        if isinstance(ev, DriftDetected) and ev.kind == "concept":
            if not p.on_concept_drift:
                return None
            return _Fire("concept_drift",
                         f"concept drift detected by {ev.detector} (statistic "
                         f"{ev.statistic:.3g}) on {ev.model}{_v(ev.model_version)}",
                         (ev.window.start or ev.time) - p.window_margin, ev.window.size)
        if isinstance(ev, DriftDetected | DriftResolved) and ev.kind != "concept":
            self._track_data_drift(state, ev)
        if isinstance(ev, MonitorStatsReported):
            fired = self._metric_rule(state, ev, p)
            if fired is not None:
                return fired
        fired = self._data_rule(state, ev, p)
        if fired is not None:
            return fired
        if p.schedule is not None:
            anchor = state.last_request or state.first_time
            if ev.time - anchor >= p.schedule:
                return _Fire("schedule", f"scheduled retrain: {_human(ev.time - anchor)} since "
                             f"{'the last request' if state.last_request else 'first seen'}",
                             state.last_window_end)
        return None

    def _track_data_drift(self, state: _ModelState, ev: DriftDetected | DriftResolved) -> None:
        d = state.data
        key = (ev.kind, ev.feature)
        if isinstance(ev, DriftDetected):
            if not d.features:
                d.start = ev.window.start or ev.time
            d.features.add(key)
            d.checks += 1
        else:
            d.features.discard(key)
            if not d.features:
                state.data = _DataDrift()

    def _data_rule(self, state: _ModelState, ev: Event, p: RetrainPolicy) -> _Fire | None:
        sustained = p.data_drift_sustained
        d = state.data
        if sustained is None or not d.features or d.start is None:
            return None
        if isinstance(sustained, int):
            if d.checks < sustained:
                return None
            how = f"in {d.checks} consecutive checks"
        else:
            if ev.time - d.start < sustained:
                return None
            how = f"for {_human(ev.time - d.start)}"
        features = ", ".join(sorted(f or kind for kind, f in d.features))
        return _Fire("data_drift", f"data drift on {features} sustained {how}",
                     d.start - p.window_margin, d.checks)

    def _metric_rule(self, state: _ModelState, ev: MonitorStatsReported,
                     p: RetrainPolicy) -> _Fire | None:
        value = ev.stats.get(p.metric_name)
        if p.metric_floor is None or value is None:
            return None
        worse = value < p.metric_floor if p.higher_is_better else value > p.metric_floor
        if not worse:
            state.breaches.pop(ev.model_version, None)
            return None
        count, start = state.breaches.get(ev.model_version, (0, ev.window.start or ev.time))
        state.breaches[ev.model_version] = (count + 1, start)
        if count + 1 < p.metric_sustained:
            return None
        side = "below" if p.higher_is_better else "above"
        return _Fire("metric_floor",
                     f"{p.metric_name} = {value:.4g} {side} the floor {p.metric_floor:.4g} in "
                     f"{count + 1} consecutive reports of {ev.model}{_v(ev.model_version)}",
                     state.last_window_end, count + 1)

    # -- output ----------------------------------------------------------------------
    def _request(self, model: str, state: _ModelState, ev: Event, fire: _Fire,
                 p: RetrainPolicy) -> RetrainRequested:
        state.last_request = ev.time
        state.last_window_end = ev.time
        state.requests += 1
        if fire.trigger == "data_drift":
            state.data.checks, state.data.start = 0, ev.time
        elif fire.trigger == "metric_floor":
            state.breaches.clear()
        return RetrainRequested(
            id=derived_id(epoch_ms(ev.time), "retrain", model, ev.id),
            time=ev.time, aggregate=model, producer=PRODUCER, model=model,
            model_version=state.version, reason=fire.reason, trigger_id=ev.id,
            window=Window(start=fire.start, end=ev.time, size=fire.size),
            policy={**p.as_params(), "trigger": fire.trigger},
        )


def _v(version: int | None) -> str:
    return "" if version is None else f" v{version}"


def _human(delta: dt.timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 86_400:
        return f"{seconds / 86_400:.3g} days"
    if seconds >= 3_600:
        return f"{seconds / 3_600:.3g} hours"
    return f"{seconds / 60:.3g} minutes"

