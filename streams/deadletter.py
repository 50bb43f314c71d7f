"""The dead-letter convention shared by every consumer.

A record that cannot be processed (malformed JSON, unknown type, invalid
fields) is copied *unchanged* to the dead-letter topic, with headers saying
why and where it came from, and the consumer carries on. The key is kept, so
the original record can be repaired and re-produced.

Examples
--------
>>> hs = dead_letter_headers("unknown event type 'Foo'", "modelog.serving", 3, 42, "worker")
>>> DeadLetter.from_headers(hs).reason
"unknown event type 'Foo'"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from modelog.streams.records import Outgoing

__all__ = ["DeadLetter", "dead_letter_copy", "dead_letter_headers"]

Headers = list[tuple[str, bytes]]


def dead_letter_headers(
    reason: str, topic: str, partition: int, offset: int, consumer: str
) -> Headers:
    """Headers to put on a dead-lettered copy of a record."""
    return [
        ("modelog-error", reason[:4000].encode()),
        ("modelog-source-topic", topic.encode()),
        ("modelog-source-partition", str(partition).encode()),
        ("modelog-source-offset", str(offset).encode()),
        ("modelog-consumer", consumer.encode()),
    ]


def dead_letter_copy(
    dead_letter_topic: str, key: bytes | None, value: bytes, reason: str, *,
    topic: str, partition: int, offset: int, consumer: str,
) -> Outgoing:
    """The unchanged copy of a bad record for the dead-letter topic, with the headers.

    Examples
    --------
    >>> out = dead_letter_copy("acme.dead-letter", b"k", b"{oops", "not JSON",
    ...                        topic="acme.serving", partition=1, offset=9, consumer="worker")
    >>> out.topic, out.key, out.value, DeadLetter.from_headers(out.headers).source_offset
    ('acme.dead-letter', b'k', b'{oops', 9)
    """
    return Outgoing(dead_letter_topic, key, value,
                    dead_letter_headers(reason, topic, partition, offset, consumer))


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
