"""Traffic policies: the registry's decision on a traffic command, and routing a request.

A model's traffic policy says how predictors split its requests between
aliases: ``arms`` by weight (A/B; a request goes to one arm), sticky per
routing key, and ``shadows`` that score the same inputs off the request path.
Setting one is a command (:class:`~modelog.models.policy_events.TrafficPolicyRequested`)
that the registry's single writer answers with :func:`decide_traffic`:
:class:`~modelog.models.policy_events.TrafficPolicySet` or
:class:`~modelog.models.policy_events.TrafficPolicyRejected` with a reason that
says what to do. The reason depends only on the model's own registry state, so
every reader that re-checks the decision (:mod:`modelog.models.registry_fold`)
derives the same answer.

:func:`choose_arm` routes one request: a stable hash of the model and the
routing key picks the arm (the same key always gets the same arm while the
policy stands); without a key the caller's uniform draw does.
:func:`parse_arms` reads ``alias=weight`` words (the CLI's syntax).

Pure: imports only :mod:`modelog.errors` and :mod:`modelog.models`.

Examples
--------
>>> import datetime as dt
>>> from modelog.models.events import AliasSet
>>> from modelog.models.policy_events import TrafficPolicyRequested
>>> from modelog.models.registry_types import ModelState, RegistryState, VersionInfo
>>> t = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
>>> v1 = VersionInfo("churn", 1, None, "sklearn", "", "", (), "", False, t, "", "r1")
>>> prod = AliasSet(id="a", time=t, aggregate="churn", model="churn", alias="production",
...                 model_version=1)
>>> from modelog.models.registry import apply
>>> state = apply(RegistryState(models={"churn": ModelState("churn", versions={1: v1})}), prod)
>>> cmd = TrafficPolicyRequested(id="c", time=t, aggregate="churn", command_id="c",
...                              model="churn", arms={"production": 0.9, "candidate": 0.1})
>>> print(decide_traffic(state, cmd, now=t).reason)  # doctest: +NORMALIZE_WHITESPACE
alias candidate of churn is not set (aliases: production); set it first
(modelog registry alias set churn candidate VERSION)
>>> import msgspec
>>> ok = msgspec.structs.replace(cmd, arms={"production": 1.0}, shadows=["production"])
>>> print(decide_traffic(state, ok, now=t).reason)  # doctest: +NORMALIZE_WHITESPACE
alias production is both an arm and a shadow; a shadow is scored beside the arm that
answers, so list it in one place only
>>> choose_arm((("production", 0.9), ("candidate", 0.1)), "churn", "user-42")
'production'
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from modelog.models.errors import EventValidationError
from modelog.models.ids import derived_id, epoch_ms
from modelog.models.policy_events import (
    TrafficPolicyRejected,
    TrafficPolicyRequested,
    TrafficPolicySet,
)
from modelog.models.registry_types import PRODUCER, TrafficDecision

if TYPE_CHECKING:
    from modelog.models.registry_types import RegistryState

__all__ = ["choose_arm", "decide_traffic", "key_point", "parse_arms", "traffic_rejection"]


def traffic_rejection(state: RegistryState, command: TrafficPolicyRequested) -> str | None:
    """Why ``command`` cannot be the model's traffic policy now, or ``None``.

    Refused: an unregistered model; no arm; a negative, infinite or NaN weight;
    weights without a positive sum; an alias (arm or shadow) that is not set on
    the model now; an alias listed twice, or both as an arm and a shadow.
    """
    model = state.model(command.model)
    if model is None or not model.versions:
        return (f"model {command.model} is not registered; register a version of it and "
                "point an alias at it before routing its traffic")
    if not command.arms:
        return ("a traffic policy needs at least one arm with a positive weight "
                "(e.g. production=1)")
    for alias, weight in command.arms.items():
        if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
            return (f"the weight of arm {alias} is {weight!r}; weights must be finite numbers "
                    ">= 0 (e.g. production=0.9 candidate=0.1)")
    total = sum(command.arms.values())
    if total <= 0:
        return (f"the arm weights sum to {total:g}; they must sum to a positive total "
                "(e.g. production=0.9 candidate=0.1)")
    if len(set(command.shadows)) != len(command.shadows):
        return "a shadow alias is listed twice; list each shadow once"
    for alias in command.shadows:
        if alias in command.arms:
            return (f"alias {alias} is both an arm and a shadow; a shadow is scored beside the "
                    "arm that answers, so list it in one place only")
    aliases = ", ".join(sorted(model.aliases)) or "none"
    for alias in (*command.arms, *command.shadows):
        if alias not in model.aliases:
            return (f"alias {alias} of {command.model} is not set (aliases: {aliases}); set it "
                    f"first (modelog registry alias set {command.model} {alias} VERSION)")
    return None


def decide_traffic(state: RegistryState, command: TrafficPolicyRequested, *,
                   now: dt.datetime) -> TrafficDecision:
    """Answer a traffic command: ``TrafficPolicySet`` or ``TrafficPolicyRejected`` (why).

    The output id is ``derived_id(ms(command.time), "traffic", command.command_id)``,
    its time ``now``, aggregate the model, producer
    :data:`~modelog.models.registry_types.PRODUCER`. A command already answered
    (its ``command_id`` is in ``state``) returns that same event.

    Raises
    ------
    EventValidationError
        ``now`` has no time zone.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise EventValidationError("decide_traffic", "time", now,
                                   "must be timezone-aware (use datetime.now(timezone.utc))")
    model = state.model(command.model)
    prior = model.decided.get(command.command_id) if model is not None else None
    if isinstance(prior, TrafficPolicySet | TrafficPolicyRejected):
        return prior
    event_id = derived_id(epoch_ms(command.time), "traffic", command.command_id)
    reason = traffic_rejection(state, command)
    if reason is not None:
        return TrafficPolicyRejected(
            id=event_id, time=now, aggregate=command.model, producer=PRODUCER,
            command_id=command.command_id, model=command.model, reason=reason)
    return TrafficPolicySet(
        id=event_id, time=now, aggregate=command.model, producer=PRODUCER,
        command_id=command.command_id, model=command.model,
        arms={a: float(w) for a, w in command.arms.items()}, shadows=list(command.shadows),
        actor=command.actor, reason=command.reason)


_SCALE = float(2**64)


def key_point(model: str, key: str) -> float:
    """A stable point in ``[0, 1)`` for a routing key of a model (BLAKE2b of both).

    Examples
    --------
    >>> key_point("churn", "user-42") == key_point("churn", "user-42")
    True
    """
    h = hashlib.blake2b(f"{model}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / _SCALE


def choose_arm(arms: Sequence[tuple[str, float]], model: str, key: str | None,
               draw: float = 0.0) -> str:
    """The arm a request goes to: by ``key`` (sticky) or, without one, by ``draw`` in [0, 1).

    Arms with weight 0 are never chosen; ``arms`` must have a positive total.

    Examples
    --------
    >>> arms = (("production", 0.5), ("candidate", 0.5))
    >>> choose_arm(arms, "m", None, 0.25), choose_arm(arms, "m", None, 0.75)
    ('production', 'candidate')
    """
    point = key_point(model, key) if key is not None else draw
    total = 0.0
    for _, w in arms:
        total += w
    target = point * total
    acc = 0.0
    chosen = arms[0][0]
    for alias, w in arms:
        if w > 0:
            chosen = alias
            acc += w
            if target < acc:
                return alias
    return chosen


def parse_arms(words: Iterable[str]) -> dict[str, float]:
    """``["production=0.9", "candidate=0.1"]`` -> ``{"production": 0.9, "candidate": 0.1}``.

    Raises
    ------
    EventValidationError
        A word is not ``alias=weight`` with a number, or an alias repeats.

    Examples
    --------
    >>> parse_arms(["production=0.9", "candidate=0.1"])
    {'production': 0.9, 'candidate': 0.1}
    >>> parse_arms(["production"])
    Traceback (most recent call last):
    ...
    modelog.models.errors.EventValidationError: invalid TrafficPolicyRequested: field 'arms' ...
    >>> parse_arms(["production=1", "candidate=-0.5"])
    Traceback (most recent call last):
    ...
    modelog.models.errors.EventValidationError: invalid TrafficPolicyRequested: field \
'arms.candidate' = '-0.5' breaks the rule: must be a number from 0 to 1,000,000, e.g. 0.9...
    """
    out: dict[str, float] = {}
    for word in words:
        alias, sep, weight = word.partition("=")
        alias = alias.strip()
        if not sep or not alias:
            raise EventValidationError("TrafficPolicyRequested", "arms", word,
                                       "must be ALIAS=WEIGHT, e.g. production=0.9")
        try:
            value = float(weight)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not 0.0 <= value <= 1_000_000.0:
            raise EventValidationError("TrafficPolicyRequested", f"arms.{alias}", weight,
                                       "must be a number from 0 to 1,000,000, e.g. 0.9")
        if alias in out:
            raise EventValidationError("TrafficPolicyRequested", "arms", alias,
                                       "each alias may appear once")
        out[alias] = value
    return out
