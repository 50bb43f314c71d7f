"""The SDK's serving calls: ``predictor``, ``set_traffic``, ``traffic``.

:class:`PredictorCalls` is a mixin of :class:`~modelog.streams.sdk.Client`.
``client.predictor("churn")`` returns a :class:`~modelog.streams.serving.Predictor`
that routes each request by the model's traffic policy and logs what answered;
``client.set_traffic`` sends a ``TrafficPolicyRequested`` command and waits for
the registry worker's answer, like ``set_alias``.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modelog.config import Settings
from modelog.models import codec
from modelog.models.ids import UuidV7
from modelog.models.policy_events import (
    TrafficPolicyRejected,
    TrafficPolicyRequested,
    TrafficPolicySet,
)
from modelog.models.registry_types import TrafficPolicy
from modelog.models.validation import check_name
from modelog.store.artifacts import ArtifactStore
from modelog.streams.errors import TrafficPolicyRejectedError
from modelog.streams.producer import EventProducer
from modelog.streams.topics import Topics

if TYPE_CHECKING:
    from modelog.models.events import Event
    from modelog.models.registry import RegistryState
    from modelog.streams.serving import Predictor

__all__ = ["PredictorCalls"]


class PredictorCalls:
    """The serving calls (predictor, set_traffic, traffic) of :class:`~modelog.streams.sdk.Client`
    (a mixin).

    Uses the client's settings, topics, artifact store, id generator and producer,
    and the registry calls (:class:`~modelog.streams.registry_client.RegistryCalls`).
    """

    settings: Settings
    topics: Topics
    artifacts: ArtifactStore
    new_id: UuidV7
    _producer: EventProducer
    _name: str

    if TYPE_CHECKING:
        def send_command(self, command: Any, timeout: float = 30.0) -> Event: ...
        def registry(self, name: str | None = None, *,
                     as_of: dt.datetime | None = None) -> RegistryState: ...

    def predictor(self, model: str, **options: Any) -> Predictor:
        """A predictor of ``model``: routes by its traffic policy, logs every prediction.

        ``options`` go to :class:`~modelog.streams.serving.Predictor`
        (``follow``, ``shadow_workers``, ``code_version``, ``load_options``...).
        It reads the registry now and follows it in the background; close it
        (or use it as a context manager) when done.

        Raises
        ------
        EventValidationError
            ``model`` is not a valid model name.
        """
        from modelog.streams.serving import Predictor

        check_name(model, "PredictionMade", "model")
        return Predictor(self, model, **options)  # type: ignore[arg-type]

    def set_traffic(
        self, model: str, arms: Mapping[str, float], *, shadows: Sequence[str] = (),
        reason: str = "", actor: str | None = None, timeout: float = 30.0,
    ) -> TrafficPolicySet:
        """Route ``model``'s requests: ``arms`` alias -> weight, ``shadows`` scored aside.

        Sends a ``TrafficPolicyRequested`` command and waits for the registry
        worker's answer. ``{"production": 1}`` with no shadow is the default.

        Raises
        ------
        TrafficPolicyRejectedError
            The registry refused (an alias not set on the model, weights without
            a positive sum, an alias both arm and shadow...); ``.reason`` says why.
        RegistryTimeoutError
            No registry worker answered within ``timeout`` seconds.
        EventValidationError
            A bad model or alias name, or a weight that is not a number in range.
        """
        from modelog.streams.registry_client import default_actor

        check_name(model, "TrafficPolicyRequested", "model")
        command_id = self.new_id()
        command = TrafficPolicyRequested(
            id=command_id, time=codec.utcnow(), aggregate=model, producer=self._name,
            command_id=command_id, model=model, arms=dict(arms), shadows=list(shadows),
            actor=actor or default_actor(), reason=reason)
        answer = self.send_command(command, timeout)
        if isinstance(answer, TrafficPolicyRejected):
            raise TrafficPolicyRejectedError(answer)
        assert isinstance(answer, TrafficPolicySet)
        return answer

    def traffic(self, model: str) -> TrafficPolicy:
        """The traffic policy of ``model`` in force now (``production=1`` until one is set)."""
        return self.registry(model).traffic(model)
