"""Reading a topic without a consumer group: :class:`LogTail`.

Used to fold the registry topic (the registry worker, the monitoring loop), by
the SDK to wait for the answer to a command, and by alert delivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from modelog.config import Settings
from modelog.models import codec
from modelog.models.errors import EventDecodeError
from modelog.models.events import Event
from modelog.streams.errors import BrokerUnavailableError
from modelog.streams.kafka import new_consumer

__all__ = ["LogTail", "RawRecord", "decode_records"]

RawRecord = tuple[int, int, bytes | None, bytes]
"""``(partition, offset, key, value)`` of a record read by :class:`LogTail`."""


class LogTail:
    """Read every partition of ``topic`` with ``assign()``: no group, no commits, instant.

    Parameters
    ----------
    settings
        Broker and security settings.
    topic
        The topic to read.
    from_end
        Start at the current end (the high watermarks now) instead of the beginning:
        what the SDK does *before* sending a command, so the answer cannot be missed.
    timeout
        Seconds to wait for the broker's metadata.

    Raises
    ------
    BrokerUnavailableError
        The broker does not answer, or the topic does not exist.
    """

    def __init__(self, settings: Settings, topic: str, *, from_end: bool = False,
                 timeout: float = 10.0) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        self.topic = topic
        self.timeout = timeout
        # small topics, waiting readers: answer fast
        self._consumer = new_consumer(settings, client_id="modelog-tail", fetch="tail")
        try:
            meta = self._consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise BrokerUnavailableError(
                    f"topic {topic} does not exist on {settings.bootstrap_servers}; "
                    "create modelog's topics with `modelog.connect()` or `modelog up`"
                )
            self.partitions = sorted(meta.partitions)
            self.next_offsets = ({p: hw for p, hw in self.high_watermarks().items()}
                                 if from_end else dict.fromkeys(self.partitions, 0))
        except KafkaException as exc:
            self._consumer.close()
            raise BrokerUnavailableError(
                f"cannot read {topic} from {settings.bootstrap_servers} ({exc}); is the "
                "broker running?"
            ) from None
        except BaseException:
            self._consumer.close()
            raise
        self._consumer.assign([TopicPartition(topic, p, off)
                               for p, off in self.next_offsets.items()])

    def high_watermarks(self) -> dict[int, int]:
        """The offset after the last record of each partition, now."""
        from confluent_kafka import TopicPartition

        return {p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                        timeout=self.timeout)[1]
                for p in self.partitions}

    def poll(self, timeout: float = 0.2, max_records: int = 500) -> list[RawRecord]:
        """Records that arrived (waiting up to ``timeout`` s for the first)."""
        out: list[RawRecord] = []
        for msg in self._consumer.consume(max_records, timeout):
            if msg.error() is not None:
                continue  # partition EOF and transient errors: librdkafka retries
            part, off = msg.partition(), msg.offset()
            if part is None or off is None:
                continue
            self.next_offsets[part] = off + 1
            out.append((part, off, msg.key(), msg.value() or b""))
        return out

    def read_to_end(self, timeout: float = 30.0) -> list[RawRecord]:
        """Every record from the current position up to the high watermarks taken now.

        Raises
        ------
        BrokerUnavailableError
            The end was not reached within ``timeout`` seconds.
        """
        import time

        ends = self.high_watermarks()
        deadline = time.monotonic() + timeout
        out: list[RawRecord] = []
        while True:
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(
                    f"could not read {self.topic} up to its end within {timeout:.0f} s; "
                    "is the broker overloaded or unreachable?"
                )
            reached = all(self.next_offsets[p] >= end for p, end in ends.items())
            # Some brokers (Tansu) report the high watermark of a multi-record batch
            # as its first offset + 1: past the reported end, read until a poll is empty.
            got = self.poll(0.05 if reached else 0.2)
            out += got
            if reached and not got:
                return out

    def close(self) -> None:
        """Close the consumer (idempotent)."""
        consumer, self._consumer = self._consumer, None  # type: ignore[assignment]
        if consumer is not None:
            consumer.close()

    def __enter__(self) -> LogTail:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def decode_records(records: Sequence[RawRecord]) -> list[Event]:
    """The events among ``records``, in order; records that do not decode are skipped."""
    out: list[Event] = []
    for _, _, _, value in records:
        try:
            out.append(codec.decode(value))
        except EventDecodeError:
            continue  # the registry topic is written by modelog only; nothing to fold
    return out
