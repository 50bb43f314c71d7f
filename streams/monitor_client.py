"""The SDK's monitor configuration calls (configure_monitor, monitor_config, reset_monitor).

:class:`MonitorCalls` is a mixin of :class:`~modelog.streams.sdk.Client`.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

from modelog.config import Settings
from modelog.models.ids import UuidV7
from modelog.store.artifacts import ArtifactStore
from modelog.streams.producer import EventProducer
from modelog.streams.topics import Topics

__all__ = ["MonitorCalls"]


class MonitorCalls:
    """The monitor configuration calls (configure_monitor, monitor_config, reset_monitor) of :class:`~modelog.streams.sdk.Client` (a mixin).

    Uses the client's settings, topics, artifact store, id generator and producer.
    """

    settings: Settings
    topics: Topics
    artifacts: ArtifactStore
    new_id: UuidV7
    _producer: EventProducer
    _name: str
