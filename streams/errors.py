"""Errors of the Kafka-facing package: the broker, the SDK's producer, the services.

Event validation and decoding errors belong to the event model
(:mod:`modelog.models.errors`).
"""

from __future__ import annotations

from modelog.errors import ModelogError

__all__ = [
    "BrokerUnavailableError",
    "BufferFullError",
    "ClientClosedError",
    "DeliveryError",
    "StreamsError",
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
