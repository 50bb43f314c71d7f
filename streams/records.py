"""A record a processor decided to write: what pure cores hand to the Kafka edge.

Pure processors (:class:`~modelog.streams.worker.RecordRouter`,
:class:`~modelog.streams.registry_agent.RegistryProcessor`) return
:class:`Outgoing` values; the edge (a Faust agent, a batch loop) produces them
unchanged. Dead-letter copies are built by
:func:`~modelog.streams.deadletter.dead_letter_copy`.

Examples
--------
>>> out = Outgoing("acme.monitoring", b"churn", b"{}")
>>> out.topic, out.headers, out.event
('acme.monitoring', [], None)
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["Outgoing"]


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """A record to write: topic, key, value and headers.

    ``event`` is the decided event when the caller needs it after the broker
    acknowledged the record (e.g. the registry folds its own answers); ``None``
    for dead letters and fire-and-forget outputs.
    """

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = dataclasses.field(default_factory=list)
    event: Any = None
