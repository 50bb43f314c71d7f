"""The SDK's promotion/rollback policy calls (set_promotion_policy, promotion_policy, ...).

:class:`RolloutCalls` is a mixin of :class:`~modelog.streams.sdk.Client`. A
model's promotion policy is a :class:`~modelog.models.policy_events.PromotionPolicySet`
on the monitoring topic, keyed by the model (the worker's rollout processor of
that model's partition folds it); it is validated by the one parser,
:func:`~modelog.models.rollout_policy.parse_promotion_policy`, *before* it is
sent. The policy in force is read from the ledger (the projector's ``events``
table): visible once projected.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

from typing import Any

from modelog.config import Settings
from modelog.models import codec
from modelog.models.errors import PromotionPolicyError
from modelog.models.ids import UuidV7
from modelog.models.policy_events import PromotionPolicySet
from modelog.models.rollout_policy import PromotionPolicy, parse_promotion_policy
from modelog.models.validation import check_name
from modelog.store.artifacts import ArtifactStore
from modelog.streams.producer import EventProducer
from modelog.streams.topics import Topics

__all__ = ["RolloutCalls"]

_POLICY_SETS = (
    "SELECT CAST(payload AS VARCHAR) AS p FROM events WHERE type = 'PromotionPolicySet' "
    "AND aggregate = ? ORDER BY time, \"offset\"")


class RolloutCalls:
    """The promotion/rollback policy calls of :class:`~modelog.streams.sdk.Client` (a mixin).

    Uses the client's settings, topics, artifact store, id generator and producer.
    """

    settings: Settings
    topics: Topics
    artifacts: ArtifactStore
    new_id: UuidV7
    _producer: EventProducer
    _name: str

    def set_promotion_policy(self, model: str, *, reason: str = "",
                             **policy: Any) -> PromotionPolicySet:
        """Turn on ``model``'s gated promotion and automatic rollback, with these settings.

        Keys are those of :class:`~modelog.models.rollout_policy.PromotionPolicy`:
        ``challenger`` (alias, default ``candidate``), ``alpha``, ``min_pairs``,
        ``min_effect``, ``promote``, ``rollback``, ``rollback_min``,
        ``rollback_window``, ``max_error``, ``cooldown_s``, ``report_every``;
        values may be text (``"0.01"``, ``"off"``). Keys left out keep their
        defaults (a later call replaces the whole policy).

        Returns the event sent (flushed).

        Raises
        ------
        PromotionPolicyError
            A key or value is invalid (model, key, value and rule named), or no
            key at all (use :meth:`reset_promotion_policy`); nothing is sent.

        Examples
        --------
        >>> import modelog
        >>> client = modelog.connect()                                    # doctest: +SKIP
        >>> client.set_promotion_policy("churn", alpha=0.01, min_pairs=1000,
        ...                             cooldown_s=3600, max_error=0.3)   # doctest: +SKIP
        """
        check_name(model, "PromotionPolicySet", "model")
        if not policy:
            raise PromotionPolicyError(model, "policy", {}, "give at least one key; to turn "
                                       "automatic decisions off, reset the policy")
        parsed = parse_promotion_policy(model, policy)
        assert parsed is not None
        params = parsed.as_params()
        return self._send_promotion_policy(model, {k: params[k] for k in policy}, reason)

    def reset_promotion_policy(self, model: str, *, reason: str = "") -> PromotionPolicySet:
        """Turn ``model``'s automatic promotion and rollback off (an empty policy).

        Comparisons of challengers with production are still reported.
        """
        check_name(model, "PromotionPolicySet", "model")
        return self._send_promotion_policy(model, {}, reason)

    def _send_promotion_policy(self, model: str, data: dict[str, Any],
                               reason: str) -> PromotionPolicySet:
        from modelog.streams.registry_client import default_actor

        event = PromotionPolicySet(
            id=self.new_id(), time=codec.utcnow(), aggregate=model,
            producer=self.settings.producer_name, model=model, policy=data,
            actor=default_actor(), reason=reason)
        codec.validate(event)
        self._producer.send_event(event)
        self._producer.flush(30.0)
        return event

    def promotion_policy_set(self, model: str) -> PromotionPolicySet | None:
        """The ``PromotionPolicySet`` in force for ``model`` (the last valid one in the
        ledger; the worker refuses an invalid one and keeps the one before); ``None``: never
        set.

        Raises
        ------
        modelog.store.errors.NoDataError
            Nothing was projected yet (run ``modelog project`` or ``modelog up``).
        """
        return self._promotion_in_force(model)[0]

    def promotion_policy(self, model: str) -> PromotionPolicy | None:
        """The promotion policy in force for ``model``; ``None``: automatic decisions are off.

        Raises
        ------
        modelog.store.errors.NoDataError
            Nothing was projected yet (run ``modelog project`` or ``modelog up``).
        """
        return self._promotion_in_force(model)[1]

    def _promotion_in_force(
            self, model: str) -> tuple[PromotionPolicySet | None, PromotionPolicy | None]:
        from modelog.store.reader import Reader

        last: PromotionPolicySet | None = None
        policy: PromotionPolicy | None = None
        for row in Reader(self.settings).query(_POLICY_SETS, [model]).to_pylist():
            event = codec.decode(row["p"])
            if not isinstance(event, PromotionPolicySet):
                continue
            try:
                policy = parse_promotion_policy(model, event.policy)
            except PromotionPolicyError:
                continue
            last = event
        return last, policy
