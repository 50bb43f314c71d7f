"""The model registry as a fold over events, and the alias command decision.

The registry has no table of its own: its state is whatever the registry
events say. :func:`apply` folds one :class:`~modelog.models.events.ModelVersionRegistered`,
:class:`~modelog.models.events.AliasSet`, :class:`~modelog.models.events.AliasRemoved`,
:class:`~modelog.models.policy_events.TrafficPolicySet` (or a rejection) into an
immutable :class:`RegistryState` (its types: :mod:`modelog.models.registry_types`);
:func:`fold` and :func:`as_of` replay a whole log, so
"what was in production on March 3rd at 14:00, and why" is
``describe_alias(as_of(events, t), model, "production")``.

:func:`decide` turns an :class:`~modelog.models.events.AliasChangeRequested`
command into the event that answers it -- an ``AliasSet``, an ``AliasRemoved``
or an ``AliasChangeRejected`` carrying a reason that says what to do. It is a
pure function: the output id is derived from the command, and a command that
was already decided (it is in the state) yields the very same event again, so
a worker that re-processes commands after a crash emits nothing new.

:func:`apply` and :func:`fold` trust their input: what readers take from the log
goes through :mod:`modelog.models.registry_fold` (only answers to recorded commands count).

Everything here is pure: no Kafka, no clock, no I/O.

Examples
--------
>>> import datetime as dt
>>> from modelog.models.events import AliasChangeRequested, ModelVersionRegistered
>>> t0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
>>> def register(v, day):
...     return ModelVersionRegistered(
...         id=f"reg-{v}", time=t0 + dt.timedelta(days=day), aggregate="churn",
...         model="churn", model_version=v, flavor="sklearn",
...         artifact_uri=f"artifacts/{v}", artifact_digest="ab" * 8)
>>> state = fold([register(1, 0), register(2, 1)])
>>> next_version(state, "churn")
3
>>> cmd = AliasChangeRequested(
...     id="c-1", time=t0 + dt.timedelta(days=2), aggregate="churn", command_id="c-1",
...     model="churn", alias="production", model_version=2, actor="alice",
...     reason="better f1")
>>> ev = decide(state, cmd, now=cmd.time)
>>> type(ev).__name__, ev.model_version, ev.previous_version
('AliasSet', 2, None)
>>> state = apply(state, ev)
>>> info = describe_alias(state, "churn", "production")
>>> info.version, info.actor, info.reason
(2, 'alice', 'better f1')
>>> print(info)
churn@production -> v2 since 2026-03-03T00:00:00+00:00 by alice: better f1
>>> typo = AliasChangeRequested(
...     id="c-2", time=t0, aggregate="churn", command_id="c-2", model="churn",
...     alias="production", model_version=7, reason="oops")
>>> print(decide(state, typo, now=t0).reason)
version 7 of churn does not exist (versions: 1, 2); register it first
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import ClassVar

from modelog.models.errors import EventValidationError
from modelog.models.events import (
    AliasChangeRejected,
    AliasChangeRequested,
    AliasRemoved,
    AliasSet,
    Event,
    ModelVersionRegistered,
    ModelVersionRequested,
)
from modelog.models.ids import derived_id, epoch_ms
from modelog.models.policy_events import (
    TrafficPolicyRejected,
    TrafficPolicyRequested,
    TrafficPolicySet,
)
from modelog.models.processor import SnapshotByPickle
from modelog.models.registry_types import (
    DEFAULT_TRAFFIC,
    PRODUCER,
    AliasChange,
    AliasInfo,
    Decision,
    ModelState,
    RegistryState,
    TrafficPolicy,
    Unverified,
    VersionInfo,
)
from modelog.models.traffic import decide_traffic

__all__ = [
    "ANSWERS",
    "COMMANDS",
    "DEFAULT_TRAFFIC",
    "PRODUCER",
    "AliasChange",
    "AliasInfo",
    "Decision",
    "ModelState",
    "RegistryDecider",
    "RegistryEvent",
    "RegistryState",
    "TrafficPolicy",
    "Unverified",
    "VersionInfo",
    "apply",
    "as_of",
    "decide",
    "decide_registration",
    "decide_traffic",
    "describe_alias",
    "fold",
    "next_version",
    "rollback_target",
]

RegistryEvent = (ModelVersionRegistered | AliasSet | AliasRemoved | AliasChangeRejected
                 | TrafficPolicySet | TrafficPolicyRejected)
"""The answers of the registry worker: the only events the registry is folded from."""
_REGISTRY_EVENTS = (ModelVersionRegistered, AliasSet, AliasRemoved, AliasChangeRejected,
                    TrafficPolicySet, TrafficPolicyRejected)
ANSWERS = _REGISTRY_EVENTS
"""The registry event types (:data:`RegistryEvent`): written by the registry worker only."""


def _apply_to_model(m: ModelState, event: RegistryEvent) -> ModelState:
    seen = m.seen | {event.id}
    if isinstance(event, ModelVersionRegistered):
        if event.model_version in m.versions:
            # Versions are immutable: the first registration of a number wins.
            return replace(m, seen=seen)
        registrations = m.registrations
        if event.command_id is not None and event.command_id not in registrations:
            registrations = {**registrations, event.command_id: event}
        info = VersionInfo(
            model=event.model, version=event.model_version, run_id=event.run_id,
            flavor=event.flavor, artifact_uri=event.artifact_uri,
            artifact_digest=event.artifact_digest, signature=tuple(event.signature),
            description=event.description, online=event.online, registered=event.time,
            producer=event.producer, event_id=event.id,
        )
        return replace(m, versions={**m.versions, event.model_version: info}, seen=seen,
                       registrations=registrations)
    decided = m.decided
    if event.command_id is not None and event.command_id not in decided:
        decided = {**decided, event.command_id: event}
    if isinstance(event, AliasChangeRejected | TrafficPolicyRejected):
        return replace(m, decided=decided, seen=seen)
    if isinstance(event, TrafficPolicySet):
        traffic = TrafficPolicy(
            arms=tuple((a, float(w)) for a, w in event.arms.items()),
            shadows=tuple(event.shadows), since=event.time, actor=event.actor,
            reason=event.reason, command_id=event.command_id, event_id=event.id)
        return replace(m, traffic=traffic, decided=decided, seen=seen)
    aliases = dict(m.aliases)
    if isinstance(event, AliasSet):
        change = AliasChange(
            time=event.time, model=event.model, alias=event.alias, action="set",
            version=event.model_version, previous_version=event.previous_version,
            actor=event.actor, reason=event.reason, command_id=event.command_id,
            event_id=event.id,
        )
        aliases[event.alias] = AliasInfo(
            model=event.model, alias=event.alias, version=event.model_version,
            since=event.time, actor=event.actor, reason=event.reason,
            previous_version=event.previous_version, command_id=event.command_id,
            event_id=event.id,
        )
    else:
        change = AliasChange(
            time=event.time, model=event.model, alias=event.alias, action="removed",
            version=None, previous_version=event.previous_version, actor=event.actor,
            reason=event.reason, command_id=event.command_id, event_id=event.id,
        )
        aliases.pop(event.alias, None)
    return replace(m, aliases=aliases, history=(*m.history, change), decided=decided, seen=seen)


def apply(state: RegistryState, event: Event) -> RegistryState:
    """Fold one event into the registry state and return the new state.

    Registry events (``ModelVersionRegistered``, ``AliasSet``, ``AliasRemoved``,
    ``AliasChangeRejected``, ``TrafficPolicySet``, ``TrafficPolicyRejected``) change
    the state; every other event, and any event whose id was already applied,
    returns ``state`` unchanged. Re-registering an existing version number keeps
    the first registration.

    Examples
    --------
    >>> import datetime as dt
    >>> from modelog.models.events import AliasSet
    >>> ev = AliasSet(id="e-1", time=dt.datetime(2026, 3, 3, tzinfo=dt.timezone.utc),
    ...               aggregate="churn", model="churn", alias="shadow", model_version=4)
    >>> s1 = apply(RegistryState(), ev)
    >>> s1.aliases("churn")["shadow"].version
    4
    >>> apply(s1, ev) is s1
    True
    """
    if not isinstance(event, _REGISTRY_EVENTS):
        return state
    current = state.models.get(event.model) or ModelState(name=event.model)
    if event.id in current.seen:
        return state
    return replace(state, models={**state.models, event.model: _apply_to_model(current, event)})


def fold(events: Iterable[Event], state: RegistryState | None = None) -> RegistryState:
    """Replay ``events`` in log order, starting from ``state`` (default: empty)."""
    out = state if state is not None else RegistryState()
    for ev in events:
        out = apply(out, ev)
    return out


def as_of(events: Iterable[Event], time: dt.datetime) -> RegistryState:
    """The registry as it stood at ``time``: fold only the events with ``event.time <= time``.

    Raises
    ------
    EventValidationError
        ``time`` has no time zone (event times are UTC; say which instant you mean).
    """
    _require_aware("as_of", time)
    return fold(ev for ev in events if ev.time <= time)


def describe_alias(state: RegistryState, model: str, alias: str) -> AliasInfo | None:
    """Where ``model@alias`` points (version, since, who, why, previous), or ``None``."""
    return state.aliases(model).get(alias)


def rollback_target(state: RegistryState, model: str, alias: str = "production") -> int | None:
    """The version ``model@alias`` pointed at before its current one (``None``: there is none).

    It is the current holder's ``previous_version``; when the alias was set
    afresh (after a removal), the last other version it held in the history.

    Examples
    --------
    >>> import datetime as dt
    >>> from modelog.models.events import AliasSet
    >>> t = dt.datetime(2026, 3, 3, tzinfo=dt.timezone.utc)
    >>> ev = AliasSet(id="e", time=t, aggregate="m", model="m", alias="production",
    ...               model_version=3, previous_version=2)
    >>> rollback_target(apply(RegistryState(), ev), "m")
    2
    """
    current = state.aliases(model).get(alias)
    if current is None:
        return None
    if current.previous_version is not None:
        return current.previous_version
    for change in reversed(state.history(model)):
        if (change.alias == alias and change.action == "set"
                and change.version not in (None, current.version)):
            return change.version
    return None


def next_version(state: RegistryState, model: str) -> int:
    """The number the next registered version of ``model`` gets (1 for a new model)."""
    latest = (state.models.get(model) or ModelState(name=model)).latest_version
    return 1 if latest is None else latest + 1


def _require_aware(what: str, value: dt.datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise EventValidationError(
            what, "time", value, "must be timezone-aware (use datetime.now(timezone.utc))"
        )


def _versions_text(versions: Iterable[int]) -> str:
    ordered = sorted(versions)
    if len(ordered) > 10:
        return ", ".join(map(str, ordered[:3])) + ", ..., " + ", ".join(map(str, ordered[-3:]))
    return ", ".join(map(str, ordered))


def _rejection(state: RegistryState, command: AliasChangeRequested,
               require_reason_for: frozenset[str]) -> str | None:
    model = state.models.get(command.model)
    if model is None or not model.versions:
        known = sorted(name for name, m in state.models.items() if m.versions)
        hint = f" (known models: {', '.join(known[:10])})" if known else ""
        return (f"model {command.model} is not registered{hint}; "
                "register a version of it first")
    current = model.aliases.get(command.alias)
    held = current.version if current is not None else None
    wanted = command.model_version
    if wanted is not None and wanted not in model.versions:
        return (f"version {wanted} of {command.model} does not exist "
                f"(versions: {_versions_text(model.versions)}); register it first")
    if command.expected_version is not None and held != command.expected_version:
        now_at = f"points at version {held}" if held is not None else "is not set"
        return (f"alias {command.alias} of {command.model} {now_at}, not the expected "
                f"version {command.expected_version}; someone changed it meanwhile -- "
                "check the alias history, then retry with the current version as expected_version")
    if command.alias in require_reason_for and not command.reason.strip():
        verb = "setting" if wanted is not None else "removing"
        return (f"{verb} the {command.alias} alias of {command.model} needs a reason; "
                "retry with a reason (e.g. the evaluation or incident it answers)")
    if wanted is None and held is None:
        return (f"alias {command.alias} of {command.model} is not set; nothing to remove "
                f"(aliases: {', '.join(sorted(model.aliases)) or 'none'})")
    return None


def decide(
    state: RegistryState,
    command: AliasChangeRequested,
    *,
    now: dt.datetime,
    require_reason_for: frozenset[str] = frozenset({"production"}),
) -> Decision:
    """Decide an alias command against the registry state; return the event that answers it.

    The command is rejected (:class:`~modelog.models.events.AliasChangeRejected`
    with a reason saying what to do) when the model has no registered version,
    the requested version does not exist, ``expected_version`` is given and the
    alias does not point there (optimistic concurrency; ``None`` skips the
    check), the alias is in ``require_reason_for`` and the command has no
    reason, or it asks to remove an alias that is not set. Otherwise it yields
    an ``AliasSet`` (with ``previous_version``) or an ``AliasRemoved``.

    The output id is ``derived_id(ms(command.time), "alias", command.command_id)``,
    its time is ``now``, aggregate the model, producer :data:`PRODUCER`. A
    command whose outcome is already in ``state`` returns that same event.

    Parameters
    ----------
    state
        The registry folded from the log up to now.
    command
        The request.
    now
        Time of the decision (timezone-aware); becomes the output event's time.
    require_reason_for
        Aliases that can only change with a reason.

    Raises
    ------
    EventValidationError
        ``now`` has no time zone.

    Examples
    --------
    >>> import datetime as dt
    >>> from modelog.models.events import AliasChangeRequested
    >>> t = dt.datetime(2026, 3, 3, 14, tzinfo=dt.timezone.utc)
    >>> cmd = AliasChangeRequested(id="c", time=t, aggregate="churn", command_id="c",
    ...                            model="churn", alias="staging", model_version=1)
    >>> print(decide(RegistryState(), cmd, now=t).reason)
    model churn is not registered; register a version of it first
    """
    _require_aware("decide", now)
    model = state.models.get(command.model)
    prior = model.decided.get(command.command_id) if model is not None else None
    if isinstance(prior, AliasSet | AliasRemoved | AliasChangeRejected):
        return prior
    event_id = derived_id(epoch_ms(command.time), "alias", command.command_id)
    reason = _rejection(state, command, require_reason_for)
    if reason is not None:
        return AliasChangeRejected(
            id=event_id, time=now, aggregate=command.model, producer=PRODUCER,
            command_id=command.command_id, model=command.model, alias=command.alias,
            model_version=command.model_version, reason=reason,
        )
    assert model is not None  # _rejection refuses unknown models
    current = model.aliases.get(command.alias)
    previous = current.version if current is not None else None
    if command.model_version is None:
        return AliasRemoved(
            id=event_id, time=now, aggregate=command.model, producer=PRODUCER,
            model=command.model, alias=command.alias, previous_version=previous,
            actor=command.actor, reason=command.reason, command_id=command.command_id,
        )
    return AliasSet(
        id=event_id, time=now, aggregate=command.model, producer=PRODUCER,
        model=command.model, alias=command.alias, model_version=command.model_version,
        previous_version=previous, actor=command.actor, reason=command.reason,
        command_id=command.command_id,
    )


def decide_registration(
    state: RegistryState, command: ModelVersionRequested, *, now: dt.datetime
) -> ModelVersionRegistered:
    """Answer a registration command with the ``ModelVersionRegistered`` that numbers it.

    The version is :func:`next_version` of the model, so versions are dense
    and assigned by whoever folds the model's registry partition (the single
    writer). The output id is ``derived_id(ms(command.time), "register",
    command.command_id)``, its time ``now``, aggregate the model, producer
    :data:`PRODUCER`; every other field is copied from the command. A command
    already answered (its ``command_id`` is in ``state``) returns that same
    event, so a redelivered command registers nothing new.

    Raises
    ------
    EventValidationError
        ``now`` has no time zone.

    Examples
    --------
    >>> import datetime as dt
    >>> from modelog.models.events import ModelVersionRequested
    >>> t = dt.datetime(2026, 3, 3, 14, tzinfo=dt.timezone.utc)
    >>> cmd = ModelVersionRequested(
    ...     id="r-1", time=t, aggregate="churn", command_id="r-1", model="churn",
    ...     flavor="sklearn", artifact_uri="file:///a", artifact_digest="ab" * 32)
    >>> ev = decide_registration(RegistryState(), cmd, now=t)
    >>> ev.model_version, ev.command_id
    (1, 'r-1')
    >>> state = apply(RegistryState(), ev)
    >>> decide_registration(state, cmd, now=t) == ev
    True
    >>> again = ModelVersionRequested(
    ...     id="r-2", time=t, aggregate="churn", command_id="r-2", model="churn",
    ...     flavor="sklearn", artifact_uri="file:///b", artifact_digest="cd" * 32)
    >>> decide_registration(state, again, now=t).model_version
    2
    """
    _require_aware("decide_registration", now)
    model = state.models.get(command.model)
    if model is not None and command.command_id in model.registrations:
        return model.registrations[command.command_id]
    return ModelVersionRegistered(
        id=derived_id(epoch_ms(command.time), "register", command.command_id), time=now,
        aggregate=command.model, producer=PRODUCER, model=command.model,
        model_version=next_version(state, command.model), run_id=command.run_id,
        flavor=command.flavor, artifact_uri=command.artifact_uri,
        artifact_digest=command.artifact_digest, signature=list(command.signature),
        description=command.description, online=command.online,
        command_id=command.command_id, library_versions=dict(command.library_versions),
    )


COMMANDS = (ModelVersionRequested, AliasChangeRequested, TrafficPolicyRequested)
"""The command types the registry's single writer answers."""


class RegistryDecider(SnapshotByPickle):
    """The registry's single writer as a :class:`~modelog.models.processor.Processor`.

    A command (:data:`COMMANDS`) in, its answer out -- unless the answer is
    already folded in (a redelivered command yields nothing). Registry events
    (the answers, once the broker acknowledged them, and the whole registry
    topic at startup) are folded into :attr:`state` and yield nothing.

    Parameters
    ----------
    require_reason_for
        Aliases that change only with a reason (see :func:`decide`).
    clock
        Returns the decision time (timezone-aware). The edge passes the wall
        clock; tests pass a fixed one.

    Examples
    --------
    >>> import datetime as dt
    >>> from modelog.models.events import ModelVersionRequested
    >>> t = dt.datetime(2026, 3, 3, tzinfo=dt.timezone.utc)
    >>> decider = RegistryDecider(clock=lambda: t)
    >>> cmd = ModelVersionRequested(id="c-1", time=t, aggregate="churn", command_id="c-1",
    ...                             model="churn", flavor="sklearn")
    >>> [answer] = decider.process(cmd)
    >>> answer.model_version
    1
    >>> decider.process(answer)  # acknowledged: folded
    []
    >>> decider.process(cmd)  # redelivered: already answered
    []
    """

    not_state: ClassVar[tuple[str, ...]] = ("clock",)

    def __init__(self, *, require_reason_for: frozenset[str] = frozenset({"production"}),
                 clock: Callable[[], dt.datetime]) -> None:
        self.require_reason_for = require_reason_for
        self.clock = clock
        self.state = RegistryState()
        self.decided = 0

    def process(self, event: Event) -> list[Event]:
        """Answer a command, or fold a registry event; anything else yields nothing."""
        if isinstance(event, _REGISTRY_EVENTS):
            self.state = apply(self.state, event)
            return []
        if not isinstance(event, COMMANDS):
            return []
        now = self.clock()
        answer: Event
        if isinstance(event, ModelVersionRequested):
            answer = decide_registration(self.state, event, now=now)
        elif isinstance(event, TrafficPolicyRequested):
            answer = decide_traffic(self.state, event, now=now)
        else:
            answer = decide(self.state, event, now=now,
                            require_reason_for=self.require_reason_for)
        model = self.state.model(event.model)
        if model is not None and answer.id in model.seen:
            return []
        self.decided += 1
        return [answer]
