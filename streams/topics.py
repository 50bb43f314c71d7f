"""Topic names and their declared configuration.

Each event type lives on the topic of its ``stream`` (see
:mod:`modelog.models.events`); the Kafka key is the event's ``aggregate``.
Records that cannot be processed go to the dead-letter topic with the reason
in the ``modelog-error`` header and their original bytes as the value.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from modelog.config import Settings
from modelog.models.events import CATALOGUE, Event
from modelog.streams.errors import BrokerUnavailableError

__all__ = ["DLQ_HEADERS", "STREAMS", "TopicSpec", "Topics", "ensure_topics"]

STREAMS: tuple[str, ...] = (
    "datasets",
    "runs",
    "registry",
    "registry_commands",
    "serving",
    "monitoring",
    "subscriptions",
)
"""Every stream family an event type can belong to."""

DLQ_HEADERS = (
    "modelog-error",
    "modelog-source-topic",
    "modelog-source-partition",
    "modelog-source-offset",
    "modelog-consumer",
)
"""Headers a dead-lettered record carries."""


@dataclasses.dataclass(frozen=True)
class TopicSpec:
    """A topic to create: name, partitions, replication and configs."""

    name: str
    partitions: int
    replication: int
    config: dict[str, str]


class Topics:
    """Topic names under a prefix.

    Examples
    --------
    >>> t = Topics("modelog.")
    >>> t.serving, t.dead_letter
    ('modelog.serving', 'modelog.dead-letter')
    >>> from modelog.models.events import PredictionMade
    >>> t.for_event(PredictionMade)
    'modelog.serving'
    """

    def __init__(self, prefix: str = "modelog.") -> None:
        self.prefix = prefix
        # the names, computed once: the worker asks for them per record
        self._names = {s: self.name(s) for s in (*STREAMS, "dead-letter")}
        self.datasets = self._names["datasets"]
        self.runs = self._names["runs"]
        self.registry = self._names["registry"]
        self.registry_commands = self._names["registry_commands"]
        self.serving = self._names["serving"]
        self.monitoring = self._names["monitoring"]
        self.subscriptions = self._names["subscriptions"]
        self.dead_letter = self._names["dead-letter"]

    def name(self, stream: str) -> str:
        """The topic name of a stream family."""
        return f"{self.prefix}{stream.replace('_', '-')}"

    def for_event(self, event: Event | type[Event]) -> str:
        """The topic an event (or event type) is written to."""
        name = self._names.get(event.stream)
        return self.name(event.stream) if name is None else name

    def event_topics(self) -> list[str]:
        """All topics that carry events (not the dead-letter topic)."""
        return [self.name(s) for s in STREAMS]

    def all(self) -> list[str]:
        """Every topic modelog uses."""
        return [*self.event_topics(), self.dead_letter]

    def specs(self, settings: Settings) -> list[TopicSpec]:
        """What to create: event topics keep everything forever (the log is the truth)."""
        keep = {"retention.ms": "-1", "cleanup.policy": "delete"}
        specs = [
            TopicSpec(self.name(s), settings.partitions, settings.replication, dict(keep))
            for s in STREAMS
        ]
        specs.append(TopicSpec(self.dead_letter, 1, settings.replication, dict(keep)))
        return specs

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls(settings.topic_prefix)


assert {c.stream for c in CATALOGUE.values()} <= set(STREAMS)


def ensure_topics(settings: Settings, timeout: float = 15.0) -> list[str]:
    """Create modelog's topics if missing; return the names that were created.

    Raises :class:`BrokerUnavailableError` when the broker does not answer.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    from modelog.streams.kafka import new_admin

    admin = new_admin(settings)
    deadline = time.monotonic() + timeout
    existing: set[str] | None = None
    while existing is None:  # short calls, so that a signal handler runs between them
        try:
            existing = set(admin.list_topics(timeout=min(1.0, timeout)).topics)
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise BrokerUnavailableError(
                    f"cannot reach the Kafka broker at {settings.bootstrap_servers} ({exc}). "
                    "Start one with `modelog broker` (or `modelog up`), or point "
                    "MODELOG_BROKER at a running cluster."
                ) from None
    wanted = [s for s in Topics.from_settings(settings).specs(settings) if s.name not in existing]
    if not wanted:
        return []
    futures: dict[str, Any] = admin.create_topics(
        [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication,
                     config=s.config)
            for s in wanted
        ],
        operation_timeout=timeout,
    )
    created: list[str] = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=max(0.1, deadline - time.monotonic()))
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc) or "already exists" in str(exc):
                continue
            raise BrokerUnavailableError(
                f"could not create topic {name} on {settings.bootstrap_servers}: {exc}"
            ) from None
    # Wait until metadata shows them, so producers and consumers see every partition.
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout).topics
        if all(s.name in md and len(md[s.name].partitions) == s.partitions for s in wanted):
            break
        time.sleep(0.1)
    return created
