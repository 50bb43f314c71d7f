"""The registry fold and the alias command decision (pure: no broker)."""

from __future__ import annotations

import datetime as dt

import pytest

from modelog.models.errors import EventValidationError
from modelog.models.events import (
    AliasChangeRejected,
    AliasChangeRequested,
    AliasRemoved,
    AliasSet,
    Event,
    LabelObserved,
    ModelVersionRegistered,
)
from modelog.models.ids import derived_id
from modelog.models.processor import Processor
from modelog.models.registry import (
    PRODUCER,
    RegistryDecider,
    RegistryState,
    apply,
    as_of,
    decide,
    describe_alias,
    fold,
    next_version,
)

T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def register(version: int, hours: float, model: str = "churn") -> ModelVersionRegistered:
    return ModelVersionRegistered(
        id=f"reg-{model}-{version}", time=at(hours), aggregate=model, producer="trainer",
        model=model, model_version=version, run_id=f"run-{version}", flavor="sklearn",
        artifact_uri=f"file:///artifacts/{model}/{version}", artifact_digest="ab" * 16,
    )


def command(cid: str, hours: float, alias: str, version: int | None, *,
            expected: int | None = None, reason: str = "ok", actor: str = "alice",
            model: str = "churn") -> AliasChangeRequested:
    return AliasChangeRequested(
        id=f"cmd-{cid}", time=at(hours), aggregate=model, command_id=cid, model=model,
        alias=alias, model_version=version, expected_version=expected, actor=actor,
        reason=reason,
    )


def run(state: RegistryState, log: list[Event], cmd: AliasChangeRequested
        ) -> tuple[RegistryState, Event]:
    """Decide ``cmd`` at its own time, append the outcome to ``log`` and fold it."""
    out = decide(state, cmd, now=cmd.time)
    log.append(out)
    return apply(state, out), out


@pytest.fixture
def registered() -> tuple[RegistryState, list[Event]]:
    log: list[Event] = [register(1, 0), register(2, 24), register(3, 48)]
    return fold(log), log


def test_fold_collects_versions_and_ignores_other_events() -> None:
    label = LabelObserved(id="l-1", time=at(1), aggregate="churn", prediction_id="p",
                          model="churn", label=1)
    state = fold([register(1, 0), label, register(2, 1), register(1, 5, model="fraud")])
    assert sorted(state.models) == ["churn", "fraud"]
    v2 = state.versions("churn")[2]
    assert (v2.run_id, v2.flavor, v2.registered, v2.producer) == ("run-2", "sklearn", at(1),
                                                                  "trainer")
    assert v2.artifact_uri.endswith("/churn/2")
    assert next_version(state, "churn") == 3
    assert next_version(state, "fraud") == 2
    assert next_version(state, "unknown") == 1
    assert state.model("unknown") is None


def test_promotion_sets_alias_with_who_and_why(registered: tuple[RegistryState, list[Event]]
                                               ) -> None:
    state, log = registered
    state, out = run(state, log, command("c1", 50, "production", 2, reason="f1 0.91 > 0.88"))
    assert isinstance(out, AliasSet)
    assert (out.model_version, out.previous_version, out.actor, out.reason) == (
        2, None, "alice", "f1 0.91 > 0.88")
    assert (out.aggregate, out.producer, out.command_id, out.time) == (
        "churn", PRODUCER, "c1", at(50))
    info = describe_alias(state, "churn", "production")
    assert info is not None
    assert (info.version, info.since, info.actor, info.reason, info.previous_version) == (
        2, at(50), "alice", "f1 0.91 > 0.88", None)
    assert "churn@production -> v2" in str(info)


def test_promotion_then_rollback_records_previous_versions(
        registered: tuple[RegistryState, list[Event]]) -> None:
    state, log = registered
    state, _ = run(state, log, command("c1", 50, "production", 2))
    state, up = run(state, log, command("c2", 60, "production", 3, expected=2,
                                        reason="v3 wins the A/B test"))
    state, back = run(state, log, command("c3", 70, "production", 2, expected=3,
                                          actor="bob", reason="incident 42: v3 latency"))
    assert isinstance(up, AliasSet) and up.previous_version == 2
    assert isinstance(back, AliasSet)
    assert (back.model_version, back.previous_version) == (2, 3)
    info = describe_alias(state, "churn", "production")
    assert info is not None
    assert (info.version, info.previous_version, info.actor) == (2, 3, "bob")
    assert str(info).endswith("incident 42: v3 latency (was v3)")
    history = state.history("churn")
    assert [(h.action, h.version, h.previous_version) for h in history] == [
        ("set", 2, None), ("set", 3, 2), ("set", 2, 3)]


def test_shadow_and_challenger_aliases_are_independent(
        registered: tuple[RegistryState, list[Event]]) -> None:
    state, log = registered
    state, _ = run(state, log, command("c1", 50, "production", 1))
    # No reason needed outside the production-like set.
    state, shadow = run(state, log, command("c2", 51, "shadow", 3, reason=""))
    state, challenger = run(state, log, command("c3", 52, "challenger", 2, reason=""))
    assert isinstance(shadow, AliasSet) and isinstance(challenger, AliasSet)
    assert {a: i.version for a, i in state.aliases("churn").items()} == {
        "production": 1, "shadow": 3, "challenger": 2}


def test_expected_version_conflict_is_rejected(
        registered: tuple[RegistryState, list[Event]]) -> None:
    state, log = registered
    state, _ = run(state, log, command("c1", 50, "production", 2))
    out = decide(state, command("c2", 51, "production", 3, expected=1), now=at(51))
    assert isinstance(out, AliasChangeRejected)
    assert "points at version 2, not the expected version 1" in out.reason
    assert "retry" in out.reason
    unset = decide(state, command("c3", 51, "staging", 3, expected=1), now=at(51))
    assert isinstance(unset, AliasChangeRejected)
    assert "staging of churn is not set, not the expected version 1" in unset.reason
    # expected_version=None skips the check
    ok = decide(state, command("c4", 51, "production", 3), now=at(51))
    assert isinstance(ok, AliasSet) and ok.previous_version == 2


def test_unknown_version_and_unknown_model_are_rejected(
        registered: tuple[RegistryState, list[Event]]) -> None:
    state, _ = registered
    out = decide(state, command("c1", 50, "production", 7), now=at(50))
    assert isinstance(out, AliasChangeRejected)
    assert out.reason == "version 7 of churn does not exist (versions: 1, 2, 3); register it first"
    assert (out.model, out.alias, out.model_version, out.command_id) == (
        "churn", "production", 7, "c1")
    other = decide(state, command("c2", 50, "production", 1, model="fraud"), now=at(50))
    assert isinstance(other, AliasChangeRejected)
    assert other.reason == ("model fraud is not registered (known models: churn); "
                            "register a version of it first")
    assert other.aggregate == "fraud"


def test_production_requires_reason(registered: tuple[RegistryState, list[Event]]) -> None:
    state, _ = registered
    out = decide(state, command("c1", 50, "production", 1, reason="  "), now=at(50))
    assert isinstance(out, AliasChangeRejected)
    assert "needs a reason" in out.reason
    custom = frozenset({"production", "champion"})
    champ = decide(state, command("c2", 50, "champion", 1, reason=""), now=at(50),
                   require_reason_for=custom)
    assert isinstance(champ, AliasChangeRejected)
    relaxed = decide(state, command("c3", 50, "production", 1, reason=""), now=at(50),
                     require_reason_for=frozenset())
    assert isinstance(relaxed, AliasSet)


def test_removal(registered: tuple[RegistryState, list[Event]]) -> None:
    state, log = registered
    missing = decide(state, command("c0", 49, "staging", None), now=at(49))
    assert isinstance(missing, AliasChangeRejected)
    assert "staging of churn is not set; nothing to remove" in missing.reason
    state, _ = run(state, log, command("c1", 50, "staging", 3))
    state, removed = run(state, log, command("c2", 51, "staging", None, expected=3,
                                             reason="v3 retired"))
    assert isinstance(removed, AliasRemoved)
    assert (removed.previous_version, removed.reason, removed.command_id) == (3, "v3 retired", "c2")
    assert describe_alias(state, "churn", "staging") is None
    assert [h.action for h in state.history("churn")] == ["set", "removed"]
    no_reason = decide(state, command("c3", 52, "production", None, reason=""), now=at(52))
    assert isinstance(no_reason, AliasChangeRejected)


def test_as_of_answers_at_several_times(registered: tuple[RegistryState, list[Event]]) -> None:
    state, log = registered
    state, _ = run(state, log, command("c1", 50, "production", 2, reason="launch"))
    state, _ = run(state, log, command("c2", 60, "production", 3, reason="retrained"))
    state, _ = run(state, log, command("c3", 70, "production", 2, reason="rollback"))

    before = as_of(log, T0 - dt.timedelta(days=1))
    assert before.models == {}
    assert describe_alias(before, "churn", "production") is None
    assert next_version(before, "churn") == 1

    mid = as_of(log, at(30))
    assert sorted(mid.versions("churn")) == [1, 2]
    assert describe_alias(mid, "churn", "production") is None

    expectations = {50: (2, "launch", None), 65: (3, "retrained", 2), 70: (2, "rollback", 3),
                    1000: (2, "rollback", 3)}
    for hours, (version, reason, previous) in expectations.items():
        info = describe_alias(as_of(log, at(hours)), "churn", "production")
        assert info is not None
        assert (info.version, info.reason, info.previous_version) == (version, reason, previous)
    with pytest.raises(EventValidationError, match="timezone-aware"):
        as_of(log, dt.datetime(2026, 3, 3, 14, 0))


def test_duplicates_are_ignored(registered: tuple[RegistryState, list[Event]]) -> None:
    state, log = registered
    state, out = run(state, log, command("c1", 50, "production", 2))
    again = apply(state, out)
    assert again is state
    assert len(state.history("churn")) == 1
    replayed = fold(log + log)
    assert replayed.history("churn") == state.history("churn")
    assert replayed.versions("churn") == state.versions("churn")
    # A second registration of an existing number (new id) keeps the first.
    clash = ModelVersionRegistered(
        id="other", time=at(80), aggregate="churn", model="churn", model_version=2,
        flavor="torch", artifact_uri="x", artifact_digest="cd" * 16)
    assert apply(state, clash).versions("churn")[2].flavor == "sklearn"


def test_decided_ids_are_deterministic_and_redelivery_is_idempotent(
        registered: tuple[RegistryState, list[Event]]) -> None:
    state, _ = registered
    cmd = command("c1", 50, "production", 2, expected=None)
    first = decide(state, cmd, now=at(50))
    second = decide(state, cmd, now=at(99))
    ms = (cmd.time - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
    assert first.id == second.id == derived_id(ms, "alias", "c1")
    other = decide(state, command("c2", 50, "production", 2), now=at(50))
    assert other.id != first.id
    # Once the outcome is in the state, the same command yields the same event,
    # even though expected_version would now conflict.
    guarded = command("c3", 51, "production", 3, expected=2)
    state = apply(state, first)
    out = decide(state, guarded, now=at(51))
    assert isinstance(out, AliasSet)
    state = apply(state, out)
    redelivered = decide(state, guarded, now=at(120))
    assert redelivered == out
    # Rejections are remembered too.
    bad = command("c4", 52, "production", 9)
    rejected = decide(state, bad, now=at(52))
    state = apply(state, rejected)
    state = apply(state, register(9, 53))
    assert decide(state, bad, now=at(54)) == rejected


def test_naive_now_is_refused(registered: tuple[RegistryState, list[Event]]) -> None:
    state, _ = registered
    with pytest.raises(EventValidationError, match="time"):
        decide(state, command("c1", 50, "production", 1), now=dt.datetime(2026, 3, 3))


def _decide_all(decider: RegistryDecider, commands: list[Event]) -> list[Event]:
    """Answer each command and fold its answer, as the edge does after the broker's ack."""
    answers: list[Event] = []
    for cmd in commands:
        for answer in decider.process(cmd):
            answers.append(answer)
            assert decider.process(answer) == []
    return answers


def test_decider_snapshot_restored_mid_stream_gives_the_same_answers() -> None:
    log: list[Event] = [register(1, 0), register(2, 24), register(3, 48)]
    commands: list[Event] = [
        command("a", 50, "production", 1), command("b", 51, "challenger", 2),
        command("c", 52, "production", 3, expected=1), command("d", 53, "production", 9),
        command("e", 54, "challenger", None), command("b", 51, "challenger", 2),
    ]
    whole = RegistryDecider(clock=lambda: at(60))
    assert whole.process_many(log) == []
    expected = _decide_all(whole, commands)
    assert isinstance(whole, Processor)
    assert [type(e).__name__ for e in expected] == [
        "AliasSet", "AliasSet", "AliasSet", "AliasChangeRejected", "AliasRemoved"]

    first = RegistryDecider(clock=lambda: at(60))
    first.process_many(log)
    head = _decide_all(first, commands[:3])
    resumed = RegistryDecider(clock=lambda: at(60))
    resumed.restore(first.snapshot())
    assert resumed.clock() == at(60)  # collaborators are not part of the snapshot
    assert head + _decide_all(resumed, commands[3:]) == expected
    assert resumed.state == whole.state


def test_decider_ignores_events_that_are_not_registry_facts() -> None:
    decider = RegistryDecider(clock=lambda: at(1))
    assert decider.process(command("x", 0, "production", 1)) != []  # a rejection
    before = decider.state
    label = LabelObserved(id="l-1", time=at(0), aggregate="churn", prediction_id="p",
                          model="churn", label=1)
    assert decider.process(label) == [] and decider.state == before
