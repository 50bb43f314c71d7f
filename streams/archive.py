"""The durable archive of the log, and restoring a fresh broker from it.

The embedded broker keeps everything in memory: when it restarts, the log is
gone, but every event it carried is still in the projector's DuckDB ledger
(``events``). :func:`restore_to_broker` writes those events back into the
empty topics of a fresh broker -- in their original per-partition order, keyed
by their aggregate, byte-for-byte in the current schema version -- so the
registry worker numbers the next version after the last one, runs keep their
history and monitors keep their configuration. Consumers see the same event
ids again and ignore them as duplicates (the projector dedupes by id).

Serving traffic (predictions and labels) is not restored by default: it is the
bulk of the log and only feeds the live monitors, which start fresh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from modelog.config import Settings
from modelog.models import codec
from modelog.models.events import CATALOGUE
from modelog.store.errors import NoDataError, StoreError
from modelog.store.reader import Reader
from modelog.streams.kafka import new_consumer, new_producer
from modelog.streams.topics import Topics

__all__ = ["DEFAULT_STREAMS", "RestoreReport", "restore_to_broker"]

DEFAULT_STREAMS: tuple[str, ...] = ("datasets", "runs", "registry", "registry_commands",
                                    "monitoring", "subscriptions")
"""Stream families restored by default (everything but serving traffic). The registry
commands come along: a registry answer counts only with its command
(:mod:`modelog.models.registry_fold`), and the registry worker, re-reading them, finds
each one answered already."""

_CHUNK = 5_000


@dataclasses.dataclass(frozen=True)
class RestoreReport:
    """What :func:`restore_to_broker` did, per topic."""

    restored: dict[str, int]
    skipped: dict[str, str]

    @property
    def total(self) -> int:
        return sum(self.restored.values())


def _high_watermarks(settings: Settings, topics: Sequence[str]) -> dict[str, int]:
    from confluent_kafka import TopicPartition

    consumer = new_consumer(settings, client_id="modelog-restore-probe")
    try:
        md = consumer.list_topics(timeout=10).topics
        out: dict[str, int] = {}
        for name in topics:
            parts = md[name].partitions if name in md else {}
            out[name] = sum(
                consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                for p in parts
            )
        return out
    finally:
        consumer.close()


def restore_to_broker(
    settings: Settings,
    *,
    streams: Sequence[str] = DEFAULT_STREAMS,
    progress: Callable[[str, int], Any] | None = None,
) -> RestoreReport:
    """Re-publish archived events into the broker's *empty* topics.

    Topics that already hold records are left alone (the broker was not reset,
    or was restored before), so calling this on every start is safe.

    Parameters
    ----------
    settings
        Broker and data directory (the DuckDB ledger is read from there).
    streams
        Stream families to restore (see :data:`DEFAULT_STREAMS`).
    progress
        Called with ``(topic, events restored so far)``.

    Raises
    ------
    StoreError
        When the broker does not acknowledge every restored event.
    """
    topics = Topics.from_settings(settings)
    wanted = {topics.name(s): s for s in streams}
    types_by_stream: dict[str, list[str]] = {}
    for name, cls in CATALOGUE.items():
        types_by_stream.setdefault(cls.stream, []).append(name)
    try:
        reader = Reader(settings)
        reader.query("select 1 from events limit 0")
    except NoDataError:
        return RestoreReport({}, {t: "no archive yet" for t in wanted})
    marks = _high_watermarks(settings, list(wanted))
    restored: dict[str, int] = {}
    skipped: dict[str, str] = {}
    producer = new_producer(settings, client_id="modelog-restore", linger_ms=20,
                            extra={"compression.type": "lz4"})
    failures: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for topic, stream in wanted.items():
        if marks.get(topic, 0) > 0:
            skipped[topic] = f"already holds {marks[topic]} records"
            continue
        types = types_by_stream.get(stream, [])
        if not types:
            continue
        placeholders = ", ".join("?" for _ in types)
        count = 0
        offset = 0
        while True:
            rows = reader.query(
                f"select aggregate, payload from events where type in ({placeholders}) "
                f"order by topic, partition, \"offset\", time, id limit {_CHUNK} offset {offset}",
                types,
            ).to_pylist()
            if not rows:
                break
            for row in rows:
                event = codec.decode(str(row["payload"]).encode())
                producer.produce(topic, codec.encode(event), key=str(row["aggregate"]).encode(),
                                 on_delivery=on_delivery)
                producer.poll(0)
                count += 1
            offset += len(rows)
            if progress is not None:
                progress(topic, count)
        restored[topic] = count
    remaining = producer.flush(60)
    if remaining or failures:
        raise StoreError(
            f"restoring the archive into {settings.bootstrap_servers} failed "
            f"({remaining} unacknowledged, {len(failures)} errors, first: "
            f"{failures[0] if failures else 'timeout'}); run `modelog archive restore` again "
            "once the broker is healthy."
        )
    return RestoreReport(restored, skipped)
