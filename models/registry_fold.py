"""The verified registry fold: only the registry worker's answers to recorded commands count.

Anyone who can write to the ``registry`` topic could append an ``AliasSet``
(or a ``ModelVersionRegistered``) and every plain :func:`~modelog.models.registry.fold`
would take it -- without the checks of the single writer. A ``producer``
string proves nothing (anyone can write it), and the broker gives no identity
readers could check. What every reader *can* check is the decision itself:
the registry's answers are a pure, deterministic function of the commands and
of the registry folded so far (:func:`~modelog.models.registry.decide`,
:func:`~modelog.models.registry.decide_registration`: ids derived from the
command, version numbers from the state; only the answer's ``time`` is the
worker's clock). So a reader accepts a registry event only when

1. it names (``command_id``) a command of the same model that is on the
   ``registry-commands`` topic (or in the ledger), and
2. it is *exactly* what the decision function yields for that command against
   the state this reader folded so far -- every field but ``time`` (and, for an
   ``AliasChangeRejected``, its ``reason`` text, whose "known models" hint
   depends on other partitions; a rejection changes nothing but "decided").

Everything else is refused with the reason (:class:`~modelog.models.registry.Unverified`):
the registry worker dead-letters it, the other readers count it. A forged
answer to a real command fails (2) unless it is what the worker decides anyway;
a forged command goes through the worker's checks like any other. A refused
event never changes the state, so it cannot shift later version numbers or
block later answers.

Two topics, one order. The worker writes an answer only after it read the
command from the log, so a reader that reads the registry topic and *then*
the commands topic up to its end holds the command of every legitimate answer
it read. Until then (a follower polling both topics) an answer whose command
was not read yet is *held*, with every later answer of the same model (a
model's answers depend on each other); the command releases them.
:meth:`RegistryFold.settle` -- called by the edge once it has read the
commands topic to its end after the held answers -- refuses what still has no
command. ``max_pending`` bounds what is held in any case.

Limits. Who may write *commands* is the broker's business (ACLs on
``registry-commands``): a command goes through the worker's checks whoever sent
it. A forged answer that reuses the id the worker will derive and is written
*before* the worker's answer is refused here, but a ledger that keeps the
first record of an id then lacks the real answer: a denial, not a forgery
(broker ACLs on ``registry`` prevent it). The DuckDB tables check in SQL what
SQL can (:mod:`modelog.store.derivations`); :mod:`modelog.store.registry`
re-checks the rest with this fold.

Everything here is pure: no Kafka, no clock, no I/O.

Examples
--------
>>> import datetime as dt
>>> from modelog.models.events import AliasChangeRequested, AliasSet, ModelVersionRequested
>>> t = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
>>> reg = ModelVersionRequested(id="c-1", time=t, aggregate="churn", command_id="c-1",
...                             model="churn", flavor="sklearn")
>>> log = answered([(reg, t)])
>>> [type(e).__name__ for e in log]
['ModelVersionRequested', 'ModelVersionRegistered']
>>> forged = AliasSet(id="x", time=t, aggregate="churn", model="churn",
...                   alias="production", model_version=1, command_id="nope")
>>> state = verified_state([*log, forged])
>>> dict(state.aliases("churn")), sorted(state.versions("churn"))
({}, [1])
>>> print(state.unverified[0])  # doctest: +ELLIPSIS
AliasSet x: it answers command nope of churn, which is not on the registry-commands topic...
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import replace

import msgspec

from modelog.models.events import (
    AliasChangeRejected,
    AliasChangeRequested,
    Event,
    ModelVersionRegistered,
    ModelVersionRequested,
)
from modelog.models.policy_events import TrafficPolicyRejected, TrafficPolicyRequested
from modelog.models.registry import (
    ANSWERS,
    COMMANDS,
    ModelState,
    RegistryEvent,
    RegistryState,
    Unverified,
    apply,
    as_of,
    decide,
    decide_registration,
    decide_traffic,
    fold,
)

__all__ = [
    "Command",
    "RegistryFold",
    "answered",
    "check_answer",
    "expected_answer",
    "verified_state",
    "verify_log",
]

Command = ModelVersionRequested | AliasChangeRequested | TrafficPolicyRequested
"""A registry command (what :data:`~modelog.models.registry.COMMANDS` holds)."""

_DEFAULT_REASONS = frozenset({"production"})


def expected_answer(state: RegistryState, command: Command, *, now: dt.datetime,
                    require_reason_for: frozenset[str] = _DEFAULT_REASONS) -> RegistryEvent:
    """The registry worker's answer to ``command`` against ``state``, timed ``now``."""
    if isinstance(command, ModelVersionRequested):
        return decide_registration(state, command, now=now)
    if isinstance(command, TrafficPolicyRequested):
        return decide_traffic(state, command, now=now)
    return decide(state, command, now=now, require_reason_for=require_reason_for)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_answer(state: RegistryState, answer: RegistryEvent, command: Command | None, *,
                 require_reason_for: frozenset[str] = _DEFAULT_REASONS) -> str | None:
    """``None`` when ``answer`` is the registry's decision of ``command``; else why it is not.

    Examples
    --------
    >>> import datetime as dt
    >>> from modelog.models.events import ModelVersionRequested
    >>> t = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
    >>> cmd = ModelVersionRequested(id="c", time=t, aggregate="m", command_id="c", model="m",
    ...                             flavor="sklearn")
    >>> real = expected_answer(RegistryState(), cmd, now=t)
    >>> check_answer(RegistryState(), real, cmd) is None
    True
    >>> print(check_answer(RegistryState(), msgspec.structs.replace(real, model_version=7), cmd))
    it is not the registry's decision of command c: model_version is 7, the registry decides 1
    """
    cid = answer.command_id
    if cid is None:
        return ("it names no command (command_id is empty): registry facts are only the "
                "registry worker's answers to commands; use client.register_model / "
                "client.set_alias / client.set_traffic")
    if command is None:
        return (f"it answers command {cid} of {answer.model}, which is not on the "
                "registry-commands topic: registry facts are only the registry worker's "
                "answers to recorded commands; use client.register_model / client.set_alias / "
                "client.set_traffic")
    expected: RegistryEvent = expected_answer(state, command, now=answer.time,
                                              require_reason_for=require_reason_for)
    # a rejection changes nothing but "decided": its wording may differ
    if (isinstance(expected, AliasChangeRejected | TrafficPolicyRejected)
            and type(answer) is type(expected)):
        expected = msgspec.structs.replace(expected, reason=answer.reason)
    expected = msgspec.structs.replace(expected, time=answer.time)
    if expected == answer:
        return None
    if type(expected) is not type(answer):
        return (f"it is not the registry's decision of command {cid}: the registry answers it "
                f"with {expected.type_name()}, not {answer.type_name()}")
    model = state.model(answer.model)
    if model is not None and expected.id != answer.id and expected.id in model.seen:
        return f"command {cid} was answered already (by {expected.id})"
    diffs = [f"{name} is {_show(getattr(answer, name))}, the registry decides "
             f"{_show(getattr(expected, name))}"
             for name in answer.__struct_fields__
             if getattr(answer, name) != getattr(expected, name)]
    return f"it is not the registry's decision of command {cid}: " + "; ".join(diffs)


def _accepted_copy(model: ModelState, event: RegistryEvent) -> bool:
    """Whether ``event`` equals the accepted answer with its id (known by its command)."""
    cid = event.command_id
    if cid is None:
        return False
    held = (model.registrations.get(cid) if isinstance(event, ModelVersionRegistered)
            else model.decided.get(cid))
    return held == event


class RegistryFold:
    """The registry folded from commands and answers, accepting only verified answers.

    Feed every event of both topics (or of the ledger) with :meth:`feed`, in
    each topic's order; each call returns the answers it accepted (in fold
    order). Refused answers collect in :attr:`unverified` until
    :meth:`take_unverified`; :attr:`refused` counts them all.

    Parameters
    ----------
    require_reason_for
        As for :func:`~modelog.models.registry.decide` (the worker's setting).
    max_pending
        Answers held at most while their command is awaited; beyond, the oldest
        is refused.
    keep_unverified
        Refused answers kept for :meth:`take_unverified` (the oldest are dropped
        beyond; :attr:`refused` still counts them).
    """

    def __init__(self, *, require_reason_for: frozenset[str] = _DEFAULT_REASONS,
                 max_pending: int = 10_000, keep_unverified: int = 1_000) -> None:
        self.require_reason_for = require_reason_for
        self.max_pending = max_pending
        self.keep_unverified = keep_unverified
        self.state = RegistryState()
        self.commands: dict[tuple[str, str], Command] = {}
        self.pending: dict[str, list[tuple[RegistryEvent, object]]] = {}
        self.unverified: list[Unverified] = []
        self.refused = 0

    @property
    def held(self) -> int:
        """Answers held while their command (or an earlier one of the model) is awaited."""
        return sum(len(v) for v in self.pending.values())

    def feed(self, event: Event, source: object = None) -> list[RegistryEvent]:
        """Take a command or an answer (anything else is ignored); the answers accepted now."""
        if isinstance(event, COMMANDS):
            return self.command(event)
        if isinstance(event, ANSWERS):
            return self.answer(event, source)
        return []

    def command(self, command: Command) -> list[RegistryEvent]:
        """Record a command (the first of a ``(model, command_id)`` counts); answers it releases."""
        self.commands.setdefault((command.model, command.command_id), command)
        return self._drain(command.model, settle=False) if command.model in self.pending else []

    def answer(self, event: RegistryEvent, source: object = None) -> list[RegistryEvent]:
        """Verify an answer: accepted (returned), held for its command, or refused."""
        if event.model in self.pending:  # behind a held answer of its model: keep the order
            self.pending[event.model].append((event, source))
            out = self._drain(event.model, settle=False)
        else:
            done = self._try(event, source, settle=False)
            if done is None:
                self.pending[event.model] = [(event, source)]
            out = done or []
        return out + self._bound()

    def settle(self) -> list[RegistryEvent]:
        """Refuse held answers whose command is still unknown (call it after reading the
        commands topic to its end); the answers accepted behind them."""
        out: list[RegistryEvent] = []
        for model in list(self.pending):
            out += self._drain(model, settle=True)
        return out

    def take_unverified(self) -> list[Unverified]:
        """The refused answers not taken yet (and forget them)."""
        out, self.unverified = self.unverified, []
        return out

    def _drain(self, model: str, *, settle: bool) -> list[RegistryEvent]:
        held = self.pending.pop(model, [])
        out: list[RegistryEvent] = []
        for i, (event, source) in enumerate(held):
            done = self._try(event, source, settle=settle)
            if done is None:
                self.pending[model] = held[i:]
                break
            out += done
        return out

    def _try(self, event: RegistryEvent, source: object, *,
             settle: bool) -> list[RegistryEvent] | None:
        model = self.state.model(event.model)
        if model is not None and event.id in model.seen:
            if _accepted_copy(model, event):
                return []  # a redelivered copy of an accepted answer
            self._refuse(event, f"it reuses the id of the accepted answer {event.id} with "
                                "other content", source)
            return []
        cid = event.command_id
        command = self.commands.get((event.model, cid)) if cid is not None else None
        if command is None and cid is not None and not settle:
            return None
        reason = check_answer(self.state, event, command,
                              require_reason_for=self.require_reason_for)
        if reason is None:
            self.state = apply(self.state, event)
            return [event]
        self._refuse(event, reason, source)
        return []

    def _refuse(self, event: RegistryEvent, reason: str, source: object) -> None:
        self.refused += 1
        self.unverified.append(Unverified(event, reason, source))
        del self.unverified[:-self.keep_unverified or None]

    def _bound(self) -> list[RegistryEvent]:
        out: list[RegistryEvent] = []
        while self.held > self.max_pending:
            model = next(iter(self.pending))
            (event, source), *rest = self.pending.pop(model)
            self._refuse(event, f"its command {event.command_id} did not arrive within "
                                f"{self.max_pending} later answers", source)
            if rest:
                self.pending[model] = rest
                out += self._drain(model, settle=False)
        return out


def verify_log(events: Iterable[Event], *,
               require_reason_for: frozenset[str] = _DEFAULT_REASONS,
               ) -> tuple[list[RegistryEvent], list[Unverified]]:
    """A whole log (commands and answers, each topic in order): the accepted answers, the refused.

    The commands may come anywhere (before or after their answers): the log
    is complete, so what has no command at the end is refused.
    """
    verifier = RegistryFold(require_reason_for=require_reason_for, keep_unverified=10_000_000,
                            max_pending=10_000_000)
    accepted: list[RegistryEvent] = []
    for event in events:
        accepted += verifier.feed(event)
    accepted += verifier.settle()
    return accepted, verifier.take_unverified()


def verified_state(events: Iterable[Event], as_of_time: dt.datetime | None = None, *,
                   require_reason_for: frozenset[str] = _DEFAULT_REASONS) -> RegistryState:
    """The registry a complete log says, now or at ``as_of_time``; refused records in
    ``unverified``.

    The whole log is verified first (a decision depends on what came before),
    then the accepted answers at or before ``as_of_time`` are folded.

    Raises
    ------
    modelog.models.errors.EventValidationError
        ``as_of_time`` has no time zone.
    """
    accepted, refused = verify_log(events, require_reason_for=require_reason_for)
    state = fold(accepted) if as_of_time is None else as_of(accepted, as_of_time)
    return replace(state, unverified=tuple(refused))


def answered(commands: Iterable[tuple[Command, dt.datetime]], *,
             require_reason_for: frozenset[str] = _DEFAULT_REASONS) -> list[Event]:
    """A legitimate registry log: each command followed by the worker's answer decided at
    its time (for tests, demos and fixtures that write the ledger directly)."""
    state = RegistryState()
    out: list[Event] = []
    for command, now in commands:
        answer = expected_answer(state, command, now=now, require_reason_for=require_reason_for)
        model = state.model(command.model)
        if model is not None and answer.id in model.seen:
            out.append(command)
            continue
        state = apply(state, answer)
        out += [command, answer]
    return out
