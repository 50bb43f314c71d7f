"""The SDK's retrain policy calls (set_retrain_policy, reset_retrain_policy, retrain_policy).

:class:`PolicyCalls` is a mixin of :class:`~modelog.streams.sdk.Client`. A
model's retrain policy is a :class:`~modelog.models.policy_events.RetrainPolicySet`
on the monitoring topic, keyed by the model (the worker's retrain trigger of
that model's partition folds it); it is validated by the one parser,
:func:`~modelog.models.retrain.parse_retrain_policy`, *before* it is sent.
The policy in force is read from the ledger (the projector's ``events``
table), like the registry's history: visible once projected.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from modelog.config import Settings
from modelog.models import codec
from modelog.models.errors import RetrainPolicyError
from modelog.models.event_base import Event
from modelog.models.ids import UuidV7
from modelog.models.policy_events import RetrainPolicySet
from modelog.models.retrain import RetrainPolicy, parse_retrain_policy
from modelog.models.retrain_input import policy_input
from modelog.models.validation import check_name
from modelog.store.artifacts import ArtifactStore
from modelog.streams.producer import EventProducer
from modelog.streams.topics import Topics

__all__ = ["PolicyCalls"]

P = TypeVar("P", bound=Event)

_POLICY_SETS = (
    "SELECT CAST(payload AS VARCHAR) AS p FROM events WHERE type = ? AND aggregate = ? "
    "ORDER BY time, \"offset\"")


class PolicyCalls:
    """The retrain policy calls of :class:`~modelog.streams.sdk.Client` (a mixin).

    Uses the client's settings, topics, artifact store, id generator and producer.
    """

    settings: Settings
    topics: Topics
    artifacts: ArtifactStore
    new_id: UuidV7
    _producer: EventProducer
    _name: str

    def set_retrain_policy(self, model: str, *, reason: str = "",
                           **policy: Any) -> RetrainPolicySet:
        """Set ``model``'s retrain policy: when it asks for a retrain, how its candidate is gated.

        Keys are those of :meth:`~modelog.models.retrain.RetrainPolicy.as_params`
        (``on_concept_drift``, ``data_drift_checks``/``data_drift_s``,
        ``metric_floor``, ``metric_name``, ``higher_is_better``,
        ``metric_sustained``, ``schedule_s``, ``cooldown_s``, ``window_margin_s``,
        ``min_labelled_rows``, ``gate_metric``, ``gate_margin``,
        ``gate_min_rows``); durations may also be given as ``timedelta`` and as
        ``cooldown``, ``schedule``, ``window_margin`` and ``data_drift_sustained``
        (a count of checks or a duration). Keys left out keep the deployment's
        defaults (a later call replaces the whole policy); ``None`` switches a rule
        off or leaves a gate setting to the runner.

        Returns the event sent (flushed).

        Raises
        ------
        RetrainPolicyError
            A key or value is invalid (model, key, value and rule named); nothing
            is sent.

        Examples
        --------
        >>> import datetime as dt, modelog
        >>> client = modelog.connect()                                    # doctest: +SKIP
        >>> client.set_retrain_policy("churn", cooldown=dt.timedelta(hours=6),
        ...                           data_drift_sustained=3, gate_metric="f1",
        ...                           gate_margin=0.01)                   # doctest: +SKIP
        """
        check_name(model, "RetrainPolicySet", "model")
        data = policy_input(model, policy)
        parse_retrain_policy(model, data)
        return self._send_policy(RetrainPolicySet, model, data, reason)

    def reset_retrain_policy(self, model: str, *, reason: str = "") -> RetrainPolicySet:
        """Reset ``model``'s retrain policy to the deployment's defaults (an empty policy)."""
        check_name(model, "RetrainPolicySet", "model")
        return self._send_policy(RetrainPolicySet, model, {}, reason)

    def _send_policy(self, kind: Callable[..., P], model: str, data: dict[str, Any],
                     reason: str) -> P:
        """Send a model's ``*PolicySet`` (``kind``) with ``data`` already checked; flushed."""
        from modelog.streams.registry_client import default_actor

        event = kind(
            id=self.new_id(), time=codec.utcnow(), aggregate=model,
            producer=self.settings.producer_name, model=model, policy=data,
            actor=default_actor(), reason=reason)
        codec.validate(event)
        self._producer.send_event(event)
        self._producer.flush(30.0)
        return event

    def retrain_policy_set(self, model: str) -> RetrainPolicySet | None:
        """The ``RetrainPolicySet`` in force for ``model``: the last valid one in the ledger
        (an invalid one is refused by the worker, which keeps the one before it); ``None``:
        never set.

        Raises
        ------
        modelog.store.errors.NoDataError
            Nothing was projected yet (run ``modelog project`` or ``modelog up``).
        """
        return self._policy_in_force(model)[0]

    def retrain_policy(self, model: str) -> RetrainPolicy:
        """The retrain policy in force for ``model``: its last valid ``RetrainPolicySet``
        over the defaults, as the worker's trigger applies it (a gate setting left
        ``None`` is the runner's option).

        Raises
        ------
        modelog.store.errors.NoDataError
            Nothing was projected yet (run ``modelog project`` or ``modelog up``).
        """
        return self._policy_in_force(model)[1]

    def _policy_sets(self, kind: type[P], model: str) -> list[P]:
        """The ``kind`` events of ``model`` in the ledger, in log order (a model's policy
        history: fold it with the policy's parser, skipping the invalid ones)."""
        from modelog.store.reader import Reader

        rows = Reader(self.settings).query(_POLICY_SETS, [kind.__name__, model]).to_pylist()
        events = (codec.decode(row["p"]) for row in rows)
        return [e for e in events if isinstance(e, kind)]

    def _policy_in_force(self, model: str) -> tuple[RetrainPolicySet | None, RetrainPolicy]:
        last: RetrainPolicySet | None = None
        policy = RetrainPolicy()
        for event in self._policy_sets(RetrainPolicySet, model):
            try:
                policy = parse_retrain_policy(model, event.policy)
            except RetrainPolicyError:
                continue
            last = event
        return last, policy
