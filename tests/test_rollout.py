"""The rollout processor (models/rollout.py): comparisons, gated promotion, automatic rollback.

Pure: events in, events out, no broker.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator

import pytest

from modelog.models.errors import PromotionPolicyError
from modelog.models.events import (
    AliasChangeRejected,
    AliasChangeRequested,
    AliasSet,
    Event,
    LabelObserved,
    PredictionMade,
)
from modelog.models.ids import derived_id, epoch_ms
from modelog.models.policy_events import ComparisonReported, PromotionPolicySet, RolloutDecided
from modelog.models.processor import Processor
from modelog.models.rollout import RolloutProcessor
from modelog.models.rollout_policy import PromotionPolicy, parse_promotion_policy

T0 = dt.datetime(2026, 3, 3, tzinfo=dt.UTC)
M = "churn"


def alias_set(version: int, previous: int | None = None, *, actor: str = "alice",
              command_id: str | None = None, at: int = 0) -> AliasSet:
    return AliasSet(id=f"a-{version}-{previous}-{at}", time=T0 + dt.timedelta(seconds=at),
                    aggregate=M, model=M, alias="production", model_version=version,
                    previous_version=previous, actor=actor, reason="r", command_id=command_id)


def policy(**values: object) -> PromotionPolicySet:
    return PromotionPolicySet(id=f"pol-{sorted(values.items())}", time=T0, aggregate=M, model=M,
                              policy=values)  # type: ignore[arg-type]


def traffic(n: int, served: tuple[int, float], shadow: tuple[int, float] | None = None, *,
            seed: int = 1, start: int = 0, served_alias: str = "production",
            regression: bool = False) -> Iterator[Event]:
    """``n`` requests: the served version's prediction, maybe a shadow's, then the label.

    Each version is right with its given probability (classes), or has errors of
    that scale (numbers); request ``i`` happens at ``T0 + start + i`` seconds.
    """
    rng = random.Random(seed)
    for i in range(start, start + n):
        t = T0 + dt.timedelta(seconds=i)
        label: float | int = rng.random() if regression else rng.randint(0, 1)

        def out(quality: float, label: float | int = label) -> float | int:
            if regression:
                return float(label) + rng.gauss(0.0, quality)
            return label if rng.random() < quality else 1 - int(label)

        pid = f"p{i}"
        yield PredictionMade(id=pid, time=t, aggregate=M, prediction_id=pid, model=M,
                             model_version=served[0], inputs={"x": i}, output=out(served[1]),
                             alias=served_alias)
        if shadow is not None:
            yield PredictionMade(id=f"s{i}", time=t, aggregate=M, prediction_id=f"s{i}", model=M,
                                 model_version=shadow[0], inputs={"x": i},
                                 output=out(shadow[1]), alias="candidate", shadow=True,
                                 paired_with=pid)
        yield LabelObserved(id=f"l{i}", time=t, aggregate=M, prediction_id=pid, model=M,
                            label=label)


def of(events: list[Event], kind: type[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, kind)]


def test_it_is_a_processor() -> None:
    assert isinstance(RolloutProcessor(), Processor)


def test_a_clearly_better_shadow_is_promoted_once_with_its_evidence() -> None:
    p = RolloutProcessor()
    p.process_many([alias_set(1), policy(min_pairs=200, report_every=50)])
    out = p.process_many(traffic(600, (1, 0.7), (2, 0.9)))
    reports = of(out, ComparisonReported)
    assert [r.pairs for r in reports][:4] == [50, 100, 150, 200]
    assert all(r.test.startswith("mcnemar") and r.baseline_version == 1
               and r.challenger_version == 2 and r.challenger_alias == "candidate"
               for r in reports)
    [decision] = of(out, RolloutDecided)
    [command] = of(out, AliasChangeRequested)
    assert isinstance(decision, RolloutDecided) and isinstance(command, AliasChangeRequested)
    assert (decision.action, decision.from_version, decision.to_version) == ("promote", 1, 2)
    evidence = next(r for r in reports if r.id == decision.evidence_id)
    assert isinstance(evidence, ComparisonReported)
    assert evidence.pairs >= 200 and evidence.p_value < 0.05 and evidence.effect > 0
    assert evidence.ci_low > 0
    assert "beats production v1" in decision.reason and "mcnemar" in decision.reason
    assert command.command_id == derived_id(epoch_ms(decision.time), "rollout-command",
                                            decision.id)
    assert (command.alias, command.model_version, command.expected_version) == (
        "production", 2, 1)
    assert command.actor == "policy:promotion" and command.reason == decision.reason
    assert decision.policy["min_pairs"] == 200


@pytest.mark.parametrize(("settings", "quality"), [
    ({"min_pairs": 200}, (0.8, 0.8)),      # no difference: never significant
    ({"min_pairs": 1000}, (0.7, 0.9)),     # clearly better, but too few pairs
    ({"min_pairs": 200, "min_effect": 0.5}, (0.7, 0.9)),  # better, not by the effect asked
    ({"min_pairs": 200, "promote": False}, (0.7, 0.9)),
    ({}, (0.7, 0.9)),                      # no policy: comparisons only
])
def test_no_promotion_without_enough_evidence(settings: dict[str, object],
                                              quality: tuple[float, float]) -> None:
    p = RolloutProcessor()
    p.process_many([alias_set(1), policy(**settings)])
    out = p.process_many(traffic(600, (1, quality[0]), (2, quality[1]), seed=6))
    assert of(out, ComparisonReported)  # reported every 100 pairs by default
    assert not of(out, RolloutDecided) and not of(out, AliasChangeRequested)


def test_regression_shadow_uses_the_paired_t_test_on_absolute_errors() -> None:
    p = RolloutProcessor()
    p.process_many([alias_set(3), policy(min_pairs=100)])
    out = p.process_many(traffic(300, (3, 0.5), (4, 0.2), regression=True))
    reports = of(out, ComparisonReported)
    assert reports and all(isinstance(r, ComparisonReported) and r.test == "paired-t"
                           and r.metric == "mae" and not r.higher_is_better for r in reports)
    [decision] = of(out, RolloutDecided)
    assert isinstance(decision, RolloutDecided) and decision.to_version == 4


def test_a_worse_promotion_is_rolled_back_at_once_whatever_the_cooldown() -> None:
    """The cooldown spaces promotions; it does not keep a bad production in place (found end
    to end: a promotion's hour-long default cooldown held the rollback of the next, broken
    production back for an hour)."""
    p2 = RolloutProcessor()
    p2.process_many([alias_set(1), policy(rollback_min=100, report_every=50, cooldown_s=3600)])
    baseline = p2.process_many(traffic(500, (1, 0.9), seed=2))  # v1's record as production
    assert not of(baseline, RolloutDecided)
    p2.process(alias_set(2, 1, actor="policy:promotion", at=500))
    out = p2.process_many(traffic(500, (2, 0.6), seed=3, start=600))  # within the hour
    [decision] = of(out, RolloutDecided)  # one: its command awaits the registry's answer
    [command] = of(out, AliasChangeRequested)
    assert isinstance(decision, RolloutDecided) and isinstance(command, AliasChangeRequested)
    assert (decision.action, decision.from_version, decision.to_version) == ("rollback", 2, 1)
    assert (command.model_version, command.expected_version, command.actor) == (
        1, 2, "policy:rollback")
    assert "does worse than v1's baseline" in decision.reason
    # the registry's answer ends the watch: nothing more is decided
    p2.process(alias_set(1, 2, actor="policy:rollback", command_id=command.command_id, at=1100))
    assert not of(p2.process_many(traffic(300, (1, 0.6), seed=4, start=1200)), RolloutDecided)
    evidence = next(e for e in out if e.id == decision.evidence_id)
    assert isinstance(evidence, ComparisonReported) and evidence.test == "two-proportion-z"
    assert evidence.effect < 0 and evidence.baseline_version == 1


def test_the_cooldown_still_spaces_promotions_also_after_a_rollback() -> None:
    for last_actor in ("policy:promotion", "policy:rollback"):
        p = RolloutProcessor()
        p.process_many([alias_set(1), policy(min_pairs=200, report_every=50, cooldown_s=3600)])
        p.process(alias_set(1, 3, actor=last_actor, at=10))  # its last decision, at 10 s
        held = p.process_many(traffic(600, (1, 0.7), (2, 0.9), start=20))  # within the hour
        assert of(held, ComparisonReported) and not of(held, RolloutDecided), last_actor
        later = p.process_many(traffic(600, (1, 0.7), (2, 0.9), seed=5, start=3_700))
        [decision] = of(later, RolloutDecided)
        assert isinstance(decision, RolloutDecided) and decision.action == "promote"


def test_an_error_rate_alarm_rolls_back_without_a_baseline() -> None:
    p = RolloutProcessor()
    p.process_many([alias_set(1), policy(rollback_min=100, max_error=0.3, cooldown_s=0)])
    p.process(alias_set(2, 1, at=0))  # a move by hand, nothing recorded of v1
    out = p.process_many(traffic(300, (2, 0.5), seed=4))
    [decision] = of(out, RolloutDecided)
    assert isinstance(decision, RolloutDecided)
    assert decision.action == "rollback" and "exceeds the alarm threshold 0.3" in decision.reason


def test_a_rolled_back_version_is_not_promoted_again() -> None:
    p = RolloutProcessor()
    p.process_many([alias_set(1), policy(min_pairs=100, cooldown_s=0),
                    alias_set(2, 1, actor="policy:promotion", at=1),
                    alias_set(1, 2, actor="policy:rollback", at=2)])
    out = p.process_many(traffic(400, (1, 0.6), (2, 0.95), start=10))
    assert of(out, ComparisonReported) and not of(out, RolloutDecided)


def test_ab_arms_are_compared_unpaired_and_the_challenger_arm_can_win() -> None:
    p = RolloutProcessor()
    p.process_many([alias_set(1), policy(min_pairs=300, report_every=100)])
    events = list(traffic(800, (1, 0.7), seed=8)) + list(
        traffic(800, (2, 0.9), seed=9, start=800, served_alias="candidate"))
    events.sort(key=lambda e: (e.time, isinstance(e, LabelObserved)))
    out = p.process_many(events)
    reports = [r for r in of(out, ComparisonReported) if isinstance(r, ComparisonReported)]
    assert reports and {r.test for r in reports} == {"two-proportion-z"}
    [decision] = of(out, RolloutDecided)
    assert isinstance(decision, RolloutDecided) and decision.to_version == 2


def test_same_input_same_ids_across_snapshot_restore_and_duplicates() -> None:
    setup = [alias_set(1), policy(min_pairs=200, report_every=50)]
    events = list(traffic(600, (1, 0.7), (2, 0.9)))
    whole = RolloutProcessor()
    whole.process_many(setup)
    expected = whole.process_many(events)
    first = RolloutProcessor()
    first.process_many(setup)
    head = first.process_many(events[:700])
    second = RolloutProcessor()
    second.restore(first.snapshot())
    tail = second.process_many(events[700:])
    assert [e.id for e in head + tail] == [e.id for e in expected]
    # a duplicate of every record: repeats of served predictions and labels change nothing
    doubled = RolloutProcessor()
    doubled.process_many(setup)
    out = doubled.process_many(e for e in events for _ in range(2))
    assert [e.id for e in out] == [e.id for e in expected]


def test_a_decision_the_registry_answered_is_never_emitted_again() -> None:
    setup = [alias_set(1), policy(min_pairs=200, report_every=50)]
    events = list(traffic(600, (1, 0.7), (2, 0.9)))
    live = RolloutProcessor()
    live.process_many(setup)
    [command] = of(live.process_many(events), AliasChangeRequested)
    assert isinstance(command, AliasChangeRequested)
    # a restart that replays everything after the registry answered (rejected here,
    # so production did not move and only the answer tells it)
    answer = AliasChangeRejected(id="rej", time=T0, aggregate=M, command_id=command.command_id,
                                 model=M, alias="production", model_version=2, reason="stale")
    replay = RolloutProcessor()
    replay.process_many([*setup, answer])
    out = replay.process_many(events)
    assert of(out, ComparisonReported) and not of(out, RolloutDecided)
    # the registry moved production by that command: the evidence is stale on replay
    moved = RolloutProcessor()
    moved.process_many([*setup, alias_set(2, 1, actor="policy:promotion",
                                          command_id=command.command_id)])
    assert not of(moved.process_many(events), RolloutDecided)


def test_policy_parsing_names_the_field_value_and_rule() -> None:
    assert parse_promotion_policy(M, {}) is None
    parsed = parse_promotion_policy(M, {"challenger": "shadow", "cooldown_s": "60",
                                        "max_error": "", "rollback": "no"})
    assert parsed == PromotionPolicy(challenger="shadow", cooldown_s=60.0, rollback=False)
    for bad, message in [({"alphaa": 0.1}, "alphaa = 0.1 is invalid: unknown key"),
                         ({"min_pairs": 1.5}, "min_pairs = 1.5 is invalid: must be an integer"),
                         ({"min_pairs": "x"}, "min_pairs = 'x' is invalid: must be a number"),
                         ({"rollback": "maybe"}, "must be true or false"),
                         ({"challenger": "production"}, "other than production"),
                         ({"cooldown_s": -1}, "cooldown_s = -1 is invalid")]:
        with pytest.raises(PromotionPolicyError, match=message):
            parse_promotion_policy(M, bad)
    p = RolloutProcessor()
    p.process(policy(alpha=0.01))
    with pytest.raises(PromotionPolicyError, match="alpha"):
        p.process(policy(alpha=7))
    assert p.policy(M) == PromotionPolicy(alpha=0.01)  # the previous policy stays


def test_the_worker_router_feeds_policy_registry_and_traffic_and_snapshots_it() -> None:
    from modelog.models import codec
    from modelog.models.deadletter import DeadLetter
    from modelog.models.monitor import ServingMonitor
    from modelog.streams.topics import Topics
    from modelog.streams.worker import RecordRouter

    topics = Topics("acme.")

    def router() -> RecordRouter:
        return RecordRouter(topics, ServingMonitor(), rollout=RolloutProcessor())

    def feed(r: RecordRouter, events: list[Event], offset: int = 0) -> list[Event]:
        out = []
        for i, e in enumerate(events):
            topic = topics.monitoring if isinstance(e, PromotionPolicySet) else topics.serving
            out += r.route(M.encode(), codec.encode(e), topic, 0, offset + i)
        return [codec.decode(o.value) for o in out if o.topic != topics.dead_letter]

    r = router()
    bad = r.route(M.encode(), codec.encode(policy(alpha=3)), topics.monitoring, 0, 0)
    assert [o.topic for o in bad] == [topics.dead_letter]
    assert "alpha = 3 is invalid" in DeadLetter.from_headers(bad[0].headers).reason
    r.observe_registry([alias_set(1)])
    events: list[Event] = [policy(min_pairs=200, report_every=50),
                           *traffic(600, (1, 0.7), (2, 0.9))]
    head = feed(r, events[:900])
    resumed = router()
    resumed.restore(r.snapshot())
    tail = feed(resumed, events[900:], 900)
    whole = router()
    whole.observe_registry([alias_set(1)])
    expected = feed(whole, events)
    assert [e.id for e in head + tail] == [e.id for e in expected]
    [command] = [e for e in expected if isinstance(e, AliasChangeRequested)]
    assert topics.for_event(command) == topics.registry_commands
    assert any(isinstance(e, RolloutDecided) for e in expected)


def test_a_previous_production_scored_in_shadow_wins_the_rollback_on_pairs() -> None:
    p = RolloutProcessor()
    p.process_many([alias_set(1), policy(min_pairs=100, cooldown_s=0),
                    alias_set(2, 1, actor="policy:promotion", at=1)])
    out = p.process_many(traffic(300, (2, 0.6), (1, 0.9), start=10))  # v1 shadows v2 now
    [decision] = of(out, RolloutDecided)
    assert isinstance(decision, RolloutDecided)
    assert (decision.action, decision.from_version, decision.to_version) == ("rollback", 2, 1)
    assert "previous production, scored in shadow" in decision.reason


def test_a_replay_that_reads_the_registry_first_decides_the_same_rollback() -> None:
    setup: list[Event] = [alias_set(1), policy(rollback_min=100, cooldown_s=0)]
    before = list(traffic(500, (1, 0.9), seed=2))
    moved = alias_set(2, 1, actor="alice", at=500)
    after = list(traffic(300, (2, 0.6), seed=3, start=600))
    live = RolloutProcessor()
    live.process_many([*setup, *before, moved])
    [decision] = of(live.process_many(after), RolloutDecided)
    # a fresh worker: the whole registry first, then the partition from its start
    replay = RolloutProcessor()
    replay.process_many([*setup, moved])
    assert [d.id for d in of(replay.process_many(before + after), RolloutDecided)] == [
        decision.id]
    # once the registry answered that command, the replay decides nothing
    assert isinstance(decision, RolloutDecided) and decision.command_id is not None
    answered = RolloutProcessor()
    answered.process_many([*setup, moved, alias_set(1, 2, actor="policy:rollback",
                                                     command_id=decision.command_id, at=900)])
    assert not of(answered.process_many(before + after), RolloutDecided)


def test_the_cli_refuses_a_bad_policy_before_connecting() -> None:
    from typer.testing import CliRunner

    from modelog.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["--broker", "127.0.0.1:1", "policy", "promotion", "set", M,
                                 "alpha=2", "min_pairs=300"])
    assert result.exit_code == 1
    assert "alpha = '2' is invalid: must be in (0, 1)" in result.output
    result = runner.invoke(app, ["--broker", "127.0.0.1:1", "policy", "promotion", "set", M,
                                 "alpha"])
    assert result.exit_code == 1 and "write KEY=VALUE" in result.output


def _traffic_policy(shadows: list[str]) -> Event:
    from modelog.models.policy_events import TrafficPolicySet

    return TrafficPolicySet(id=f"tp-{shadows}", time=T0, aggregate=M, model=M,
                            arms={"production": 1.0}, shadows=shadows)


def _shadows_last(events: Iterator[Event]) -> list[Event]:
    """Each request's shadow prediction moved after its label (shadow scoring lagged)."""
    out: list[Event] = []
    held: PredictionMade | None = None
    for event in events:
        if isinstance(event, PredictionMade) and event.shadow:
            held = event
            continue
        out.append(event)
        if isinstance(event, LabelObserved) and held is not None:
            out.append(held)
            held = None
    return out


@pytest.mark.parametrize("announced", [True, False], ids=["traffic-policy", "first-shadow"])
def test_a_shadow_scored_after_its_label_still_pairs(announced: bool) -> None:
    in_order, late = RolloutProcessor(), RolloutProcessor()
    setup: list[Event] = [alias_set(1), policy(min_pairs=200, report_every=50)]
    if announced:
        setup.append(_traffic_policy(["candidate"]))
    in_order.process_many(setup)
    late.process_many(setup)
    expected = of(in_order.process_many(traffic(400, (1, 0.7), (2, 0.9))), ComparisonReported)
    got = of(late.process_many(_shadows_last(traffic(400, (1, 0.7), (2, 0.9)))),
             ComparisonReported)
    assert len(expected) >= 4
    if announced:  # every late shadow pairs: the same reports, to the id
        assert got == expected
    else:  # the first request's shadow (after its label) comes before any sign of shadows
        assert [r.pairs for r in got] == [r.pairs for r in expected][:len(got)]
        assert len(got) >= len(expected) - 1


def test_labels_are_kept_for_late_shadows_only_when_the_model_is_shadowed() -> None:
    """Without shadows nothing is held per label, so the snapshot stays small."""
    plain, shadowed = RolloutProcessor(), RolloutProcessor()
    plain.process_many([alias_set(1)])
    shadowed.process_many([alias_set(1), _traffic_policy(["candidate"])])
    plain.process_many(traffic(5_000, (1, 0.8)))
    shadowed.process_many(traffic(5_000, (1, 0.8)))
    assert len(plain.models[M].labelled) == 0
    assert len(shadowed.models[M].labelled) == 5_000
    assert len(plain.snapshot()) < len(shadowed.snapshot()) / 5
    restored = RolloutProcessor()
    restored.restore(shadowed.snapshot())
    assert restored.models[M].shadowed and len(restored.models[M].labelled) == 5_000
