"""Errors of the Kafka-facing package: the broker, the SDK's producer, the services.

Event validation and decoding errors belong to the event model
(:mod:`modelog.models.errors`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelog.errors import ModelogError

if TYPE_CHECKING:
    from modelog.models.events import AliasChangeRejected

__all__ = [
    "AliasChangeRejectedError",
    "BenchmarkError",
    "BrokerUnavailableError",
    "BufferFullError",
    "ClientClosedError",
    "DeliveryError",
    "DeliveryWorkerError",
    "GitError",
    "GitUnusableError",
    "MlflowUnavailableError",
    "ModelNotFoundError",
    "RegistryAnswerEmitError",
    "RegistryTimeoutError",
    "RunNotActiveError",
    "StreamsError",
    "UnknownSubscriptionError",
]


class StreamsError(ModelogError):
    """Base class of errors from :mod:`modelog.streams`."""


class BrokerUnavailableError(StreamsError):
    """The Kafka broker could not be reached."""


class BufferFullError(StreamsError):
    """The SDK's bounded send buffer stayed full beyond the configured policy."""


class DeliveryError(StreamsError):
    """The broker did not acknowledge some events."""


class ClientClosedError(StreamsError):
    """The client was used after :meth:`close`."""


class RunNotActiveError(StreamsError):
    """A run was used before ``with`` entered it or after it ended."""


class RegistryTimeoutError(StreamsError, TimeoutError):
    """No registry worker answered a registry command in time."""


class AliasChangeRejectedError(StreamsError):
    """The registry refused an alias change; ``reason`` says why and what to do.

    Attributes
    ----------
    event
        The ``AliasChangeRejected`` event on the registry topic.
    reason
        Its reason.
    """

    def __init__(self, event: AliasChangeRejected) -> None:
        self.event = event
        self.reason = event.reason
        target = "removal" if event.model_version is None else f"-> v{event.model_version}"
        super().__init__(f"{event.model}@{event.alias} {target} rejected: {event.reason}")


class ModelNotFoundError(StreamsError, LookupError):
    """The registry has no such model, version or alias (the message lists what exists)."""


class DeliveryWorkerError(StreamsError):
    """The delivery worker cannot go on (ledger, broker or a lane failed)."""


class UnknownSubscriptionError(StreamsError, LookupError):
    """No active alert subscription has this id."""


class BenchmarkError(StreamsError):
    """A benchmark could not complete (data never arrived, a side failed)."""


class MlflowUnavailableError(BenchmarkError):
    """MLflow could not be installed or run for the tracking comparison; the reason says why."""


class GitError(StreamsError):
    """A git command failed while capturing a code version (e.g. not a repository)."""


class GitUnusableError(GitError):
    """git is not installed or does not answer in time."""


class RegistryAnswerEmitError(StreamsError, TypeError):
    """``client.emit`` was given a registry answer (only the registry worker writes those)."""


class RetrainerError(StreamsError):
    """The retrain runner cannot go on (broker, job table); restart it, jobs are resumed."""


class TrainerProcessError(StreamsError):
    """A trainer's process failed; ``str()`` is its traceback, chained under the job's error."""

    def __init__(self, traceback_text: str) -> None:
        super().__init__(traceback_text)
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return self.traceback_text


__all__ += ["RetrainerError", "TrainerProcessError"]


class MlflowApiError(StreamsError):
    """An MLflow REST request refused, as MLflow would: ``error_code``, HTTP ``status``, message."""

    def __init__(self, error_code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.status = status


__all__ += ["MlflowApiError"]


class TrafficPolicyRejectedError(StreamsError):
    """The registry refused a traffic policy; ``reason`` says why and what to do.

    ``event`` is the ``TrafficPolicyRejected`` on the registry topic.
    """

    def __init__(self, event: Any) -> None:
        self.event = event
        self.reason: str = event.reason
        super().__init__(f"traffic policy of {event.model} rejected: {event.reason}")


class NoServingVersionError(ModelNotFoundError):
    """A predictor's model has no version to answer with (no production alias, or none of
    its traffic policy's arms is set); the message says what to set."""


__all__ += ["NoServingVersionError", "TrafficPolicyRejectedError"]


class ReplayError(StreamsError):
    """A ``modelog replay`` request that cannot be served: a bad filter or time (the message
    names the option, the value and the rule), or a target topic that already holds records."""


__all__ += ["ReplayError"]
