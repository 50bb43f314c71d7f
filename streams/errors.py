"""Errors raised by the streams package (event model, SDK, processors)."""

from __future__ import annotations

from typing import Any

from modelog.errors import ModelogError

__all__ = [
    "BrokerUnavailableError",
    "BufferFullError",
    "ClientClosedError",
    "DeliveryError",
    "EventDecodeError",
    "EventValidationError",
    "StreamsError",
    "UnknownEventTypeError",
]


class StreamsError(ModelogError):
    """Base class of errors from :mod:`modelog.streams`."""


class EventValidationError(StreamsError, ValueError):
    """An event failed validation before leaving the application.

    Attributes
    ----------
    event_type, field, value, rule
        Which event, which field (a path such as ``inputs.age``), the offending
        value and the rule it broke.
    """

    def __init__(self, event_type: str, field: str, value: Any, rule: str) -> None:
        self.event_type = event_type
        self.field = field
        self.value = value
        self.rule = rule
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(
            f"invalid {event_type}: field {field!r} = {shown} breaks the rule: {rule}. "
            "Fix the value before logging; nothing was sent."
        )


class EventDecodeError(StreamsError):
    """A record on a topic is not a valid modelog event (it goes to the dead-letter topic)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class UnknownEventTypeError(EventDecodeError):
    """A record names an event type this version of modelog does not know."""


class BrokerUnavailableError(StreamsError):
    """The Kafka broker could not be reached."""


class BufferFullError(StreamsError):
    """The SDK's bounded send buffer stayed full beyond the configured policy."""


class DeliveryError(StreamsError):
    """The broker did not acknowledge some events."""


class ClientClosedError(StreamsError):
    """The client was used after :meth:`close`."""
