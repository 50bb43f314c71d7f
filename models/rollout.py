"""Comparison on the same traffic, gated promotion and automatic rollback (a pure processor).

:class:`RolloutProcessor` follows :mod:`modelog.models.processor`'s protocol.
It folds

* registry events (``AliasSet`` / ``AliasRemoved`` / ``AliasChangeRejected``):
  which version holds ``production``, which held it before and since when, and
  which alias commands were already answered;
* ``PredictionMade`` / ``LabelObserved``: a shadow prediction
  (``shadow=True``, ``paired_with`` the served prediction's id) is paired with
  the served one and scored when the served prediction's label arrives; a
  served prediction counts for its A/B arm (its ``alias``) and for its
  version's recent record (the baseline a later rollback compares with);
* ``PromotionPolicySet``: the model's policy (:func:`parse_promotion_policy`;
  ``{}`` turns automatic decisions off, comparisons are reported anyway).

It emits

* ``ComparisonReported`` every ``report_every`` new labelled pairs of a
  (production version, challenger version) pair -- McNemar or the paired t-test
  of :mod:`modelog.models.comparison` -- and per A/B arm (two-proportion z or
  Welch t against the production arm);
* ``RolloutDecided(promote)`` when the policy's ``challenger`` alias beats
  production with ``p < alpha``, an effect above ``min_effect``, on at least
  ``min_pairs`` labelled pairs (or observations of its A/B arm);
* after ``production`` moved from a version to another (by the policy or by
  hand), ``RolloutDecided(rollback)`` when the new production does worse than
  the previous version's recorded baseline (its last ``rollback_window``
  labelled served predictions) by the unpaired test at ``alpha`` on at least
  ``rollback_min`` labelled predictions, or its error exceeds ``max_error``
  (error rate for classes, MAE for numbers); the new production is watched
  for its first ``rollback_window`` labelled predictions;
* with each decision, the ``AliasChangeRequested`` that moves ``production``
  (``expected_version`` guards it; ``actor`` ``policy:promotion`` or
  ``policy:rollback``; ``reason`` the evidence in words).

Ids are derived (:func:`~modelog.models.ids.derived_id`) from the label that
completed the evidence, the decision's command id from the decision's id: a
replay or a duplicate yields the same ids, and the registry answers a known
command id with its earlier answer. A decision whose command the registry
already answered, or while ``production`` is no longer where the evidence
found it, is not emitted again; at most one promotion per ``cooldown_s`` (counted
from the last decision, a rollback included), while a rollback is never held back; a
version that was rolled back is never promoted again automatically.

Pure: imports :mod:`modelog.models` and the standard library only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import OrderedDict, deque
from typing import Any

from mypy_extensions import mypyc_attr

from modelog.models.comparison import (
    ComparisonResult,
    Moments,
    PairedErrors,
    PairedTally,
    mcnemar,
    paired_t,
    two_proportion,
    welch_t,
)
from modelog.models.errors import ComparisonError
from modelog.models.event_base import Window
from modelog.models.events import (
    AliasChangeRejected,
    AliasChangeRequested,
    AliasRemoved,
    AliasSet,
    Event,
    LabelObserved,
    PredictionMade,
)
from modelog.models.ids import derived_id, epoch_ms
from modelog.models.monitor_state import prediction_error
from modelog.models.policy_events import (
    ComparisonReported,
    PromotionPolicySet,
    RolloutDecided,
    TrafficPolicySet,
)
from modelog.models.processor import SnapshotByPickle
from modelog.models.rollout_policy import (
    POLICY_KEYS,
    PRODUCTION,
    PromotionPolicy,
    parse_promotion_policy,
)

__all__ = ["PENDING_S", "POLICY_KEYS", "PRODUCTION", "PromotionPolicy", "RolloutProcessor",
           "parse_promotion_policy", "spent_alpha"]

PROMOTE_ACTOR = "policy:promotion"
ROLLBACK_ACTOR = "policy:rollback"


# -- state ---------------------------------------------------------------------------------

@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass
class _Pair:
    """Paired outcomes of (served version, shadow version) of one model."""

    challenger_alias: str | None
    baseline_alias: str | None
    tally: PairedTally = dataclasses.field(default_factory=PairedTally)
    errors: PairedErrors = dataclasses.field(default_factory=PairedErrors)
    classification: bool | None = None
    start: dt.datetime | None = None
    unreported: int = 0
    looks: int = 0

    @property
    def n(self) -> int:
        return self.tally.n if self.classification else self.errors.n


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass
class _Arm:
    """Outcomes of one served (alias, version) arm: error count or absolute errors."""

    errors: Moments = dataclasses.field(default_factory=Moments)
    classification: bool | None = None
    start: dt.datetime | None = None
    unreported: int = 0
    looks: int = 0


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass
class _Watch:
    """A new production version watched against its predecessor's baseline.

    The baseline is read when the test runs (the previous version's recent record),
    not when production moved: a worker replaying the partition after the
    registry (which it reads first) gets the same baseline as the live one.
    """

    version: int
    previous: int
    classification: bool | None = None
    outcomes: Moments = dataclasses.field(default_factory=Moments)
    start: dt.datetime | None = None
    unreported: int = 0
    looks: int = 0


_Labelled = tuple[int, "str | None", tuple[float, bool], str, dt.datetime, Any, set[int]]
"""A labelled served prediction: version, alias, error, label id, time, value, paired."""


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass
class _Model:
    production: int | None = None
    served: OrderedDict[str, tuple[int, str | None, Any]] = dataclasses.field(
        default_factory=OrderedDict)
    shadows: OrderedDict[str, list[tuple[int, str | None, Any]]] = dataclasses.field(
        default_factory=OrderedDict)
    pairs: dict[tuple[int, int], _Pair] = dataclasses.field(default_factory=dict)
    arms: dict[tuple[str, int], _Arm] = dataclasses.field(default_factory=dict)
    recent: dict[int, deque[tuple[float, bool]]] = dataclasses.field(default_factory=dict)
    watch: _Watch | None = None
    last_decision: dt.datetime | None = None
    #: The command of the last decision, until the registry answers it (or it expires).
    pending: tuple[str, dt.datetime] | None = None
    rolled_back: set[int] = dataclasses.field(default_factory=set)
    #: Served predictions already labelled, for shadows scored after the label arrived
    #: (shadow scoring runs off the request path and may lag): the served entry, its
    #: error, the label (id, time, value) and the shadow versions already paired with it.
    #: Kept only once the model has been shadowed (a traffic policy named shadows, or a
    #: shadow prediction arrived): plain values, so that the state snapshots stay cheap.
    labelled: OrderedDict[str, _Labelled] = dataclasses.field(default_factory=OrderedDict)
    #: Whether shadow predictions may come (a traffic policy with shadows, or one seen).
    shadowed: bool = False


PENDING_S = 600.0
"""Seconds (of event time) a decision's command may wait for the registry's answer."""
_DEFAULT_POLICY = PromotionPolicy()  # frozen: shared by every model without a policy


def spent_alpha(alpha: float, look: int) -> float:
    """The level of the ``look``-th test (from 1) of the same evidence: ``alpha * 6 / (pi k)^2``.

    The levels of all looks add up to ``alpha`` (Bonferroni over the looks), so
    testing again at every report keeps the chance of a false promotion or
    rollback under ``alpha``.

    Examples
    --------
    >>> round(spent_alpha(0.05, 1), 5), round(sum(spent_alpha(0.05, k) for k in range(1, 10**5)), 4)
    (0.0304, 0.05)
    """
    return alpha * 6.0 / (math.pi * look) ** 2


def _unpaired(baseline: Moments, challenger: Moments,
              classification: bool | None) -> ComparisonResult | None:
    """The unpaired test of two sets of errors (0/1 errors: two proportions; else Welch)."""
    if classification is None:
        return None
    try:
        if classification:
            return two_proportion(baseline.n, round(baseline.n * (1 - baseline.mean)),
                                  challenger.n, round(challenger.n * (1 - challenger.mean)))
        return welch_t(baseline, challenger)
    except ComparisonError:  # too few observations yet
        return None


def _advantage(result: ComparisonResult) -> str:
    metric = "accuracy" if result.metric == "accuracy" else "MAE"
    return (f"{metric} {result.challenger_value:.4g} vs {result.baseline_value:.4g}, effect "
            f"{result.effect:+.4g} [{result.ci_low:+.4g}, {result.ci_high:+.4g}] at "
            f"{result.confidence:.0%}, {result.test} p={result.p_value:.3g}, n={result.pairs}")


class RolloutProcessor(SnapshotByPickle):
    """Compare challengers with production, promote winners, roll back losers (pure).

    Parameters
    ----------
    max_pending
        Served predictions awaiting a label kept per model (the oldest are dropped).
    """

    def __init__(self, max_pending: int = 100_000) -> None:
        self.max_pending = max_pending
        self.models: dict[str, _Model] = {}
        self.policies: dict[str, PromotionPolicy | None] = {}
        #: Command ids the registry answered (AliasSet or AliasChangeRejected).
        self.answered: set[str] = set()
        self.decisions = 0
        self.orphan_labels = 0

    def _model(self, name: str) -> _Model:
        state = self.models.get(name)
        if state is None:
            state = self.models[name] = _Model()
        return state

    def policy(self, model: str) -> PromotionPolicy | None:
        """The model's policy in force (``None``: no automatic decisions)."""
        return self.policies.get(model)

    # -- input ---------------------------------------------------------------------------

    def process(self, event: Event) -> list[Event]:
        """Fold one event; the ``ComparisonReported``, ``RolloutDecided`` and commands it causes.

        Raises
        ------
        PromotionPolicyError
            A ``PromotionPolicySet`` with a bad policy (the previous one stays).
        """
        if type(event) is PredictionMade:  # a pointer test: events are not subclassed
            return self._on_prediction(event)
        if type(event) is LabelObserved:
            return self._on_label(event)
        elif isinstance(event, PromotionPolicySet):
            self.policies[event.model] = parse_promotion_policy(event.model, event.policy)
        elif isinstance(event, AliasSet | AliasRemoved | AliasChangeRejected):
            self._on_registry(event)
        elif isinstance(event, TrafficPolicySet):
            state = self._model(event.model)
            state.shadowed = state.shadowed or bool(event.shadows)
        return []

    def _on_registry(self, event: AliasSet | AliasRemoved | AliasChangeRejected) -> None:
        if event.command_id is not None:
            self.answered.add(event.command_id)
            state_ = self.models.get(event.model)
            if state_ is not None and state_.pending and state_.pending[0] == event.command_id:
                state_.pending = None
        if isinstance(event, AliasChangeRejected) or event.alias != PRODUCTION:
            return
        state = self._model(event.model)
        if isinstance(event, AliasRemoved):
            state.production, state.watch = None, None
            return
        state.production, state.pending = event.model_version, None
        if event.actor.startswith("policy:") and (
                state.last_decision is None or event.time > state.last_decision):
            state.last_decision = event.time
        previous = event.previous_version
        if event.actor == ROLLBACK_ACTOR and previous is not None:
            state.rolled_back.add(previous)
        if previous is None or previous == event.model_version or event.actor == ROLLBACK_ACTOR:
            state.watch = None
            return
        state.watch = _Watch(event.model_version, previous)

    def _on_prediction(self, event: PredictionMade) -> list[Event]:
        state = self._model(event.model)
        entry = (event.model_version, event.alias, event.output)
        if event.shadow:  # kept until its served prediction's label (either may come first)
            state.shadowed = True
            if event.paired_with is None:
                return []
            done = state.labelled.get(event.paired_with)
            if done is not None:  # the label came first: pair now
                return self._late_pair(state, event, done)
            entries = state.shadows.setdefault(event.paired_with, [])
            if all(version != event.model_version for version, _, _ in entries):
                entries.append(entry)  # a repeat of the same version's shadow is ignored
            while len(state.shadows) > self.max_pending:
                state.shadows.popitem(last=False)
            return []
        if event.prediction_id in state.served:
            return []  # a repeat: the first one counts
        state.served[event.prediction_id] = entry
        while len(state.served) > self.max_pending:
            state.served.popitem(last=False)
        return []

    def _late_pair(self, state: _Model, event: PredictionMade, done: _Labelled) -> list[Event]:
        version, alias, error, label_id, label_time, value, paired = done
        if event.model_version in paired or event.model_version == version:
            return []
        paired.add(event.model_version)
        label = LabelObserved(id=label_id, time=label_time, aggregate=event.aggregate,
                              prediction_id=event.paired_with or "", model=event.model,
                              label=value)
        s_error = prediction_error(event.output, label.label)
        if s_error is None:
            return []
        return self._on_pair(state, label, (version, alias, error),
                             (event.model_version, event.alias, s_error),
                             self.policies.get(event.model))

    def _on_label(self, event: LabelObserved) -> list[Event]:
        state = self.models.get(event.model)
        served = None if state is None else state.served.pop(event.prediction_id, None)
        if state is None or served is None:
            self.orphan_labels += 1
            return []
        version, alias, output = served
        policy = self.policies.get(event.model)
        out: list[Event] = []
        error = prediction_error(output, event.label)
        if error is not None:
            out += self._on_served(state, event, version, alias, error, policy)
        if not state.shadowed and not state.shadows:  # no shadow may pair with it
            return out
        paired: set[int] = set()
        for s_version, s_alias, s_output in state.shadows.pop(event.prediction_id, []):
            s_error = prediction_error(s_output, event.label)
            paired.add(s_version)
            if error is None or s_error is None or s_version == version:
                continue
            out += self._on_pair(state, event, (version, alias, error),
                                 (s_version, s_alias, s_error), policy)
        if error is not None and state.shadowed:
            state.labelled[event.prediction_id] = (version, alias, error, event.id, event.time,
                                                   event.label, paired)
            while len(state.labelled) > self.max_pending:
                state.labelled.popitem(last=False)
        return out

    # -- served predictions: A/B arms, baselines, the rollback watch --------------------

    def _on_served(self, state: _Model, event: LabelObserved, version: int, alias: str | None,
                   error: tuple[float, bool], policy: PromotionPolicy | None) -> list[Event]:
        value, classification = error
        window = (policy or _DEFAULT_POLICY).rollback_window
        recent = state.recent.get(version)
        if recent is None:
            recent = state.recent[version] = deque(maxlen=window)
        recent.append((value, classification))
        out: list[Event] = []
        if alias is not None:
            arm = state.arms.setdefault((alias, version), _Arm())
            arm.errors.add(value)
            arm.classification = classification
            arm.start = arm.start or event.time
            arm.unreported += 1
            out += self._maybe_report_arm(state, event, alias, version, policy)
        watch = state.watch
        if watch is not None and version == watch.version and watch.outcomes.n < window:
            watch.outcomes.add(value)
            watch.classification = classification
            watch.start = watch.start or event.time
            watch.unreported += 1
            out += self._maybe_check_rollback(state, event, watch, policy)
        return out

    def _maybe_report_arm(self, state: _Model, event: LabelObserved, alias: str, version: int,
                          policy: PromotionPolicy | None) -> list[Event]:
        every = (policy or _DEFAULT_POLICY).report_every
        arm = state.arms[(alias, version)]
        production = state.production
        base = None if production is None else state.arms.get((PRODUCTION, production))
        if (alias == PRODUCTION or base is None or arm.unreported < every
                or base.classification != arm.classification):
            return []
        arm.unreported = 0
        result = _unpaired(base.errors, arm.errors, arm.classification)
        if result is None or production is None:
            return []
        report = self._report(event, result, production, version, PRODUCTION, alias, arm.start,
                              arm.errors.n)
        out: list[Event] = [report]
        if policy is not None and alias == policy.challenger and arm.errors.n >= policy.min_pairs:
            arm.looks += 1
            out += self._maybe_promote(state, event, policy, result, production, version, report,
                                       arm.looks)
        return out

    def _maybe_check_rollback(self, state: _Model, event: LabelObserved, watch: _Watch,
                              policy: PromotionPolicy | None) -> list[Event]:
        p = policy or _DEFAULT_POLICY
        n = watch.outcomes.n
        if watch.unreported < p.report_every and n != p.rollback_min:
            return []
        watch.unreported = 0
        recent = state.recent.get(watch.previous, deque())
        baseline = Moments.of(err for err, kind in recent if kind == watch.classification)
        result = _unpaired(baseline, watch.outcomes, watch.classification)
        out: list[Event] = []
        report = None
        if result is not None:
            report = self._report(event, result, watch.previous, watch.version, None, PRODUCTION,
                                  watch.start, n)
            out.append(report)
        if policy is None or not policy.rollback or n < policy.rollback_min:
            return out
        reason = None
        watch.looks += 1
        level = spent_alpha(policy.alpha, watch.looks)
        if (result is not None and result.p_value < level
                and result.effect < -policy.min_effect):
            reason = (f"production v{watch.version} does worse than v{watch.previous}'s baseline "
                      f"of {baseline.n} predictions: {_advantage(result)} "
                      f"(level {level:.3g}: alpha {policy.alpha} spent over {watch.looks} looks)")
        elif policy.max_error is not None and watch.outcomes.mean > policy.max_error:
            what = "error rate" if watch.classification else "MAE"
            reason = (f"production v{watch.version}'s {what} {watch.outcomes.mean:.4g} over {n} "
                      f"labelled predictions exceeds the alarm threshold {policy.max_error:g}")
        if reason is None:
            return out
        return out + self._decide(state, event, policy, "rollback", watch.version,
                                  watch.previous, report, reason)

    # -- shadow pairs ----------------------------------------------------------------------

    def _on_pair(self, state: _Model, event: LabelObserved,
                 served: tuple[int, str | None, tuple[float, bool]],
                 shadow: tuple[int, str | None, tuple[float, bool]],
                 policy: PromotionPolicy | None) -> list[Event]:
        (b_version, b_alias, (b_err, b_cls)), (c_version, c_alias, (c_err, c_cls)) = served, shadow
        if b_cls != c_cls:
            return []
        pair = state.pairs.get((b_version, c_version))
        if pair is None:
            pair = state.pairs[(b_version, c_version)] = _Pair(c_alias, b_alias)
        pair.challenger_alias = c_alias or pair.challenger_alias
        pair.classification = b_cls
        pair.start = pair.start or event.time
        if b_cls:
            pair.tally.add(b_err == 0.0, c_err == 0.0)
        else:
            pair.errors.add(b_err, c_err)
        pair.unreported += 1
        p = policy or _DEFAULT_POLICY
        if pair.unreported < p.report_every and pair.n != p.min_pairs:
            return []
        pair.unreported = 0
        try:
            result = mcnemar(pair.tally) if b_cls else paired_t(pair.errors)
        except ComparisonError:
            return []
        report = self._report(event, result, b_version, c_version, pair.baseline_alias,
                              pair.challenger_alias, pair.start, pair.n)
        out: list[Event] = [report]
        if policy is None or pair.n < policy.min_pairs:
            return out
        pair.looks += 1
        level = spent_alpha(policy.alpha, pair.looks)
        watch = state.watch
        if (watch is not None and b_version == watch.version and c_version == watch.previous
                and policy.rollback and result.p_value < level
                and result.effect > policy.min_effect):
            reason = (f"v{watch.previous} (previous production, scored in shadow) beats "
                      f"production v{watch.version} on the same requests: {_advantage(result)} "
                      f"(level {level:.3g}: alpha {policy.alpha} spent over {pair.looks} looks)")
            return out + self._decide(state, event, policy, "rollback", b_version, c_version,
                                      report, reason)
        if pair.challenger_alias == policy.challenger:
            out += self._maybe_promote(state, event, policy, result, b_version, c_version, report,
                                       pair.looks)
        return out

    # -- decisions -------------------------------------------------------------------------

    def _maybe_promote(self, state: _Model, event: LabelObserved, policy: PromotionPolicy,
                       result: ComparisonResult, baseline: int, challenger: int,
                       report: ComparisonReported, look: int) -> list[Event]:
        level = spent_alpha(policy.alpha, look)
        if (not policy.promote or challenger in state.rolled_back
                or result.p_value >= level or result.effect <= policy.min_effect):
            return []
        reason = (f"{policy.challenger} v{challenger} beats production v{baseline} on the same "
                  f"traffic: {_advantage(result)} (level {level:.3g}: alpha {policy.alpha} spent "
                  f"over {look} looks; min_pairs {policy.min_pairs})")
        return self._decide(state, event, policy, "promote", baseline, challenger, report, reason)

    def _decide(self, state: _Model, event: LabelObserved, policy: PromotionPolicy,
                action: str, from_version: int, to_version: int,
                report: ComparisonReported | None, reason: str) -> list[Event]:
        if state.production != from_version:
            return []  # production moved since (or is unknown): the evidence is stale
        # The cooldown spaces promotions (also after a rollback). A rollback protects
        # production and is never held back: the version it leaves is never promoted again
        # automatically, so it cannot flap. A later-stamped decision (a skewed clock) does
        # not hold every later one back.
        if action == "promote" and state.last_decision is not None and 0.0 <= (
                event.time - state.last_decision).total_seconds() < policy.cooldown_s:
            return []
        if state.pending is not None and (
                event.time - state.pending[1]).total_seconds() < PENDING_S:
            return []  # the last decision's command awaits the registry's answer
        ms = epoch_ms(event.time)
        decision_id = derived_id(ms, "rollout", event.model, action, str(from_version),
                                 str(to_version), event.id)
        command_id = derived_id(ms, "rollout-command", decision_id)
        state.last_decision = event.time
        if command_id in self.answered:
            return []  # the registry already answered this very decision
        self.decisions += 1
        state.pending = (command_id, event.time)
        decided = RolloutDecided(
            id=decision_id, time=event.time, aggregate=event.model, model=event.model,
            action="promote" if action == "promote" else "rollback",
            from_version=from_version, to_version=to_version,
            evidence_id=None if report is None else report.id, reason=reason,
            policy=policy.as_params(), command_id=command_id)
        command = AliasChangeRequested(
            id=derived_id(ms, "rollout-command-event", decision_id), time=event.time,
            aggregate=event.model, command_id=command_id, model=event.model, alias=PRODUCTION,
            model_version=to_version, expected_version=from_version,
            actor=PROMOTE_ACTOR if action == "promote" else ROLLBACK_ACTOR, reason=reason)
        return [decided, command]

    def _report(self, event: LabelObserved, result: ComparisonResult, baseline: int,
                challenger: int, baseline_alias: str | None, challenger_alias: str | None,
                start: dt.datetime | None, size: int) -> ComparisonReported:
        return ComparisonReported(
            id=derived_id(epoch_ms(event.time), "comparison", event.model, str(baseline),
                          str(challenger), result.test, str(result.pairs), event.id),
            time=event.time, aggregate=event.model, model=event.model,
            baseline_version=baseline, challenger_version=challenger,
            baseline_alias=baseline_alias, challenger_alias=challenger_alias,
            metric=result.metric, higher_is_better=result.higher_is_better, test=result.test,
            pairs=result.pairs, baseline_value=result.baseline_value,
            challenger_value=result.challenger_value, effect=result.effect,
            ci_low=result.ci_low, ci_high=result.ci_high, confidence=result.confidence,
            p_value=result.p_value, window=Window(start=start, end=event.time, size=size))
