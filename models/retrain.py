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
from typing import Literal

from modelog.models.errors import InvalidParameterError
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
from modelog.models.processor import SnapshotByPickle

__all__ = ["PRODUCER", "RetrainPolicy", "RetrainTrigger"]

PRODUCER = "modelog-retrain"
"""The ``producer`` of the requests."""

Trigger = Literal["concept_drift", "data_drift", "metric_floor", "schedule"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetrainPolicy:
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
        }


@dataclasses.dataclass
class _DataDrift:
    features: set[tuple[str, str | None]] = dataclasses.field(default_factory=set)
    start: dt.datetime | None = None
    checks: int = 0


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


@dataclasses.dataclass(frozen=True)
class _Fire:
    trigger: Trigger
    reason: str
    start: dt.datetime | None
    size: int = 0


class RetrainTrigger(SnapshotByPickle):
    """Turn monitoring events into retrain requests according to a policy.

    Parameters
    ----------
    policy
        The rules (:class:`RetrainPolicy`).

    State is per model, a pure function of the events processed so far
    (carried over with :meth:`snapshot` and :meth:`restore`).
    """

    def __init__(self, policy: RetrainPolicy | None = None) -> None:
        self.policy = policy or RetrainPolicy()
        self._models: dict[str, _ModelState] = {}

    def process(self, event: Event) -> list[Event]:
        """Take one monitoring event; return the request it triggers (a list of at most one)."""
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
        fire = self._evaluate(state, event)
        if fire is None:
            return None
        p = self.policy
        if state.last_request is not None and event.time - state.last_request < p.cooldown:
            state.suppressed += 1
            return None
        return self._request(model, state, event, fire)

    def counters(self, model: str) -> dict[str, int]:
        """Requests made and triggers suppressed by the cooldown for ``model``."""
        s = self._models.get(model)
        return {"requests": s.requests if s else 0, "suppressed": s.suppressed if s else 0}

    # -- rules ---------------------------------------------------------------------
    def _evaluate(self, state: _ModelState, ev: Event) -> _Fire | None:
        p = self.policy
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
            fired = self._metric_rule(state, ev)
            if fired is not None:
                return fired
        fired = self._data_rule(state, ev)
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

    def _data_rule(self, state: _ModelState, ev: Event) -> _Fire | None:
        sustained = self.policy.data_drift_sustained
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
                     d.start - self.policy.window_margin, d.checks)

    def _metric_rule(self, state: _ModelState, ev: MonitorStatsReported) -> _Fire | None:
        p = self.policy
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
    def _request(self, model: str, state: _ModelState, ev: Event, fire: _Fire) -> RetrainRequested:
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
            policy={**self.policy.as_params(), "trigger": fire.trigger},
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

