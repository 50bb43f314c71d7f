"""The dead-letter convention: what a dead-lettered record's headers say.

A record that cannot be processed (malformed JSON, unknown type, invalid
fields) is copied *unchanged* to the dead-letter topic, with headers saying why
and where it came from, and the consumer carries on. The key is kept, so the
original record can be repaired and re-produced. Pure: the headers are written
by the Kafka edge (:func:`modelog.streams.kafka.dead_letter_copy`) and read by
the projector into the ``dead_letters`` table.

Examples
--------
>>> hs = dead_letter_headers("unknown event type 'Foo'", "modelog.serving", 3, 42, "worker")
>>> info = DeadLetter.from_headers(hs)
>>> info.reason, info.source_topic, info.source_offset
("unknown event type 'Foo'", 'modelog.serving', 42)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = ["DeadLetter", "Headers", "dead_letter_headers"]

Headers = list[tuple[str, bytes]]


def dead_letter_headers(
    reason: str, topic: str, partition: int, offset: int, consumer: str
) -> Headers:
    """Headers to put on a dead-lettered copy of a record.

    """
    return [
        ("modelog-error", reason[:4000].encode()),
        ("modelog-source-topic", topic.encode()),
        ("modelog-source-partition", str(partition).encode()),
        ("modelog-source-offset", str(offset).encode()),
        ("modelog-consumer", consumer.encode()),
    ]


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """What the dead-letter headers say."""

    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    consumer: str

    @classmethod
    def from_headers(cls, headers: Sequence[tuple[str, bytes | None]] | None) -> DeadLetter:
        """Read the headers :func:`dead_letter_headers` wrote (missing ones get defaults)."""
        h = {k: (v or b"").decode(errors="replace") for k, v in (headers or [])}

        def as_int(key: str) -> int:
            try:
                return int(h.get(key, "-1"))
            except ValueError:
                return -1

        return cls(
            reason=h.get("modelog-error", "unknown"),
            source_topic=h.get("modelog-source-topic", ""),
            source_partition=as_int("modelog-source-partition"),
            source_offset=as_int("modelog-source-offset"),
            consumer=h.get("modelog-consumer", ""),
        )
