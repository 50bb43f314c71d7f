"""The one module that builds Kafka clients and applies modelog's error policy.

Every consumer, producer and admin client of modelog is made here, from
:meth:`modelog.config.Settings.kafka_config` (librdkafka's dialect: servers and
security), so a setting reaches every client alike. The module also owns what
every consumer of modelog does the same way:

* **the consumer error policy** (:class:`ErrorPolicy`): partition-end markers
  are skipped, a fatal error stops the service with what to do, and transient
  errors (a broker gone away) are logged once, then at most once a minute while
  they last;
* **decode or dead-letter** (:func:`decode_or_dead_letter`): a record that is not
  a valid modelog event is copied unchanged, with the reason and its source in
  the headers (:mod:`modelog.models.deadletter`), to the dead-letter topic, and
  processing continues;
* **writing and waiting** (:func:`produce_and_wait`): the records a batch decided,
  flushed before the consumer's positions may be committed;
* **resuming from a stored position** (:func:`resume_offset`): positions are
  kept with the effects (in DuckDB, in SQLite), together with the broker's
  cluster id; a different cluster, or a position past the end of the log, starts
  the partition over (event ids make the replay harmless).

It may import ``modelog.config``, ``modelog.models``, ``modelog.store.positions``
and ``modelog.streams.errors``.

Examples
--------
>>> from modelog.config import Settings
>>> conf = producer_config(Settings(broker="k:9092"), client_id="modelog-test")
>>> conf["bootstrap.servers"], conf["enable.idempotence"], conf["acks"], conf["client.id"]
('k:9092', True, 'all', 'modelog-test')
>>> consumer_config(Settings(broker="k:9092"), client_id="c", group="g")["enable.auto.commit"]
False
>>> from modelog.models.deadletter import DeadLetter
>>> out = dead_letter_copy("acme.dead-letter", b"k", b"{oops", "not JSON",
...                        topic="acme.serving", partition=1, offset=9, consumer="worker")
>>> out.topic, out.key, out.value, DeadLetter.from_headers(out.headers).source_offset
('acme.dead-letter', b'k', b'{oops', 9)
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from modelog.config import Settings
from modelog.models import codec
from modelog.models.deadletter import dead_letter_headers
from modelog.models.errors import EventDecodeError
from modelog.models.events import Event
from modelog.store.positions import StoredPosition
from modelog.streams.errors import DeliveryError, StreamsError

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

__all__ = [
    "ErrorPolicy",
    "Outgoing",
    "consumer_config",
    "dead_letter_copy",
    "decode_or_dead_letter",
    "faust_credentials",
    "new_admin",
    "new_consumer",
    "new_producer",
    "offset_in_log",
    "produce_and_wait",
    "producer_config",
    "resume_offset",
]

log = logging.getLogger("modelog.kafka")


class _RateLimit(logging.Filter):
    """Lets a kind of log line through once, then once per ``every`` seconds with a count.

    librdkafka retries a lost broker every few milliseconds and reports each
    attempt; an operator needs to hear it once, then now and then while it lasts.
    Lines are grouped by their text with digits removed (offsets, ports, times).
    """

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self.every = every
        self._last: dict[str, float] = {}
        self._muted: dict[str, int] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        kind = "".join(ch for ch in record.getMessage() if not ch.isdigit())[:200]
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.every:
                self._muted[kind] = self._muted.get(kind, 0) + 1
                return False
            self._last[kind] = now
            muted = self._muted.pop(kind, 0)
        if muted:
            record.msg = f"{record.msg} ({muted} more like this since the last report)"
        return True


client_log = logging.getLogger("modelog.kafka.client")
"""Where librdkafka's own log lines go (rate-limited: see :class:`_RateLimit`)."""
client_log.addFilter(_RateLimit())


def _on_client_error(err: Any) -> None:
    """librdkafka's client-level errors (e.g. every broker down): logged, rate-limited."""
    client_log.warning("Kafka client: %s -- if this lasts, check that the broker is running "
                       "and reachable (MODELOG_BROKER)", err)


def _common(settings: Settings, client_id: str) -> dict[str, Any]:
    """What every client gets: servers and security, its id, quiet logs, reconnect backoff."""
    return {
        **settings.kafka_config(),
        "client.id": client_id,
        "logger": client_log,
        "error_cb": _on_client_error,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 5_000,
    }

Headers = list[tuple[str, bytes]]
Fetch = Literal["default", "bulk", "tail"]


# -- client configuration ---------------------------------------------------------------
def consumer_config(
    settings: Settings, *, client_id: str, group: str | None = None,
    fetch: Fetch = "default", reset: Literal["earliest", "latest", "error"] = "earliest",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A consumer's librdkafka settings: positions are never committed behind modelog's back.

    Parameters
    ----------
    client_id
        Names the service in the broker's logs and metrics.
    group
        The consumer group; ``None`` gives a fresh private one (assigned readers).
    fetch
        ``"bulk"`` for the projector's large batches, ``"tail"`` for small
        topics read by someone waiting (answers fast), else librdkafka's defaults.
    reset
        Where a partition without a valid position starts.
    extra
        librdkafka settings (or callbacks) of the caller's own, applied last.
    """
    conf: dict[str, Any] = {
        **_common(settings, client_id),
        "group.id": group or f"{settings.topic_prefix}{client_id}-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": reset,
    }
    if fetch == "bulk":
        conf.update({"fetch.max.bytes": 64 * 1024 * 1024,
                     "max.partition.fetch.bytes": 16 * 1024 * 1024,
                     "queued.min.messages": 200_000})
    elif fetch == "tail":
        conf["fetch.wait.max.ms"] = 20
    conf.update(extra or {})
    return conf


def producer_config(
    settings: Settings, *, client_id: str = "modelog-sdk", linger_ms: float = 10.0,
    bulk: bool = False, extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A producer's librdkafka settings: idempotent, ``acks=all``, keys hashed like Java's.

    ``bulk=True`` is the SDK's and the benchmarks' high-volume profile (lz4,
    large buffers, only failed deliveries reported). ``extra`` holds librdkafka
    settings (or callbacks) of the caller's own, applied last.
    """
    conf: dict[str, Any] = {
        **_common(settings, client_id),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": linger_ms,
        # murmur2 is what the Java client, aiokafka and Faust use: a key lands
        # on the same partition whoever produces it.
        "partitioner": "murmur2_random",
    }
    if bulk:
        conf.update({
            "compression.type": "lz4",
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "delivery.report.only.error": True,
        })
    conf.update(extra or {})
    return conf


def new_consumer(settings: Settings, **options: Any) -> Consumer:
    """A confluent-kafka ``Consumer`` with :func:`consumer_config` ``(settings, **options)``."""
    from confluent_kafka import Consumer

    return Consumer(consumer_config(settings, **options))


def new_producer(settings: Settings, **options: Any) -> Producer:
    """A confluent-kafka ``Producer`` with :func:`producer_config` ``(settings, **options)``."""
    from confluent_kafka import Producer

    return Producer(producer_config(settings, **options))


def new_admin(settings: Settings) -> AdminClient:
    """A confluent-kafka ``AdminClient`` for the same broker and security settings."""
    from confluent_kafka.admin import AdminClient

    return AdminClient(_common(settings, "modelog-admin"))


def faust_credentials(settings: Settings) -> Any:
    """The same security settings as Faust broker credentials (``None`` for PLAINTEXT)."""
    import faust

    protocol = settings.security_protocol.upper()
    context: ssl.SSLContext | None = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ssl_cafile)
        if settings.ssl_certfile:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username, password=settings.sasl_password,
            mechanism=settings.sasl_mechanism or "PLAIN", ssl_context=context,
        )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return None


# -- the consumer error policy ----------------------------------------------------------
class ErrorPolicy:
    """What a consumer does with the errors librdkafka reports among its messages.

    Parameters
    ----------
    service
        Names the consumer in log lines.
    fatal
        The exception class a fatal error raises (the service's own error).
    every
        Seconds between two log lines about the same kind of transient error.

    Transient errors (a broker gone away, a leader moving) are retried by
    librdkafka; they are logged once with what to do, then at most once per
    ``every`` seconds with how many occurred meanwhile.
    """

    def __init__(self, service: str, fatal: type[Exception] = StreamsError, *,
                 every: float = 60.0) -> None:
        self.service = service
        self.fatal = fatal
        self.every = every
        self._last: dict[str, float] = {}
        self._muted: dict[str, int] = {}

    def records(self, messages: Sequence[Any]) -> list[Any]:
        """The records among consumed ``messages`` (errors handled as the policy says)."""
        good = []
        for msg in messages:
            err = msg.error()
            if err is None:
                good.append(msg)
            else:
                self.error(err)
        return good

    def error(self, err: Any) -> None:
        """Handle one error of librdkafka's (a ``KafkaError``)."""
        from confluent_kafka import KafkaError

        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise self.fatal(f"the Kafka client of the {self.service} failed: {err}; "
                             f"restart the {self.service}")
        self.transient(str(err.name()), str(err))

    def transient(self, kind: str, detail: str) -> None:
        """Log a transient problem once, then at a bounded rate while it lasts."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._muted[kind] = self._muted.get(kind, 0) + 1
            return
        muted = self._muted.pop(kind, 0)
        self._last[kind] = now
        more = f" ({muted} more since the last report)" if muted else ""
        log.warning("%s: Kafka client: %s%s; retrying -- if this lasts, check that the "
                    "broker is running and reachable (MODELOG_BROKER)", self.service, detail,
                    more)


# -- dead letters -----------------------------------------------------------------------
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
    headers: Headers = dataclasses.field(default_factory=list)
    event: Any = None


def dead_letter_copy(
    dead_letter_topic: str, key: bytes | None, value: bytes, reason: str, *,
    topic: str, partition: int, offset: int, consumer: str,
) -> Outgoing:
    """The unchanged copy of a bad record for the dead-letter topic, with the headers."""
    return Outgoing(dead_letter_topic, key, value,
                    dead_letter_headers(reason, topic, partition, offset, consumer))


def decode_or_dead_letter(
    value: bytes | None, key: bytes | None, *, topic: str, partition: int, offset: int,
    dead_letter_topic: str, consumer: str,
) -> Event | Outgoing:
    """The event a record holds, or its dead-letter copy saying why it is not one.

    Examples
    --------
    >>> from modelog.models.deadletter import DeadLetter
    >>> bad = decode_or_dead_letter(b"{oops", b"k", topic="t", partition=0, offset=3,
    ...                             dead_letter_topic="dlq", consumer="worker")
    >>> bad.topic, DeadLetter.from_headers(bad.headers).reason[:40]
    ('dlq', 'not a modelog event: JSON is malformed: ')
    """
    try:
        if value is None:
            raise EventDecodeError("empty record (no value): not a modelog event")
        return codec.decode(value)
    except EventDecodeError as exc:
        return dead_letter_copy(dead_letter_topic, key, value or b"", exc.reason, topic=topic,
                                partition=partition, offset=offset, consumer=consumer)


# -- writing ----------------------------------------------------------------------------
def produce_and_wait(producer: Producer, records: Sequence[Outgoing], *, what: str,
                     timeout: float = 30.0) -> None:
    """Write ``records`` and wait until the broker acknowledged every one of them.

    Raises
    ------
    DeliveryError
        Some record was not acknowledged within ``timeout`` seconds; ``what``
        says in the message what the caller will do about it (e.g. "the batch
        was not committed and is retried").
    """
    if not records:
        return
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for rec in records:
        headers: Any = rec.headers or None
        while True:
            try:
                producer.produce(rec.topic, key=rec.key, value=rec.value,
                                 headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
    remaining = producer.flush(timeout)
    if remaining or failures:
        raise DeliveryError(
            f"the broker did not acknowledge {remaining or len(failures)} of {len(records)} "
            f"record(s) ({failures[:1] or f'none within {timeout:g} s'}); {what}"
        )


# -- resuming ---------------------------------------------------------------------------
def resume_offset(
    consumer: Consumer, settings: Settings, tp: tuple[str, int], stored: StoredPosition | None,
    cluster_id: str | None, *, service: str,
) -> int | None:
    """Where to resume ``tp`` from a stored position; ``None`` means from the beginning.

    The beginning when nothing is stored, when the position was stored against
    another cluster (the embedded broker forgets its log on restart), or when it
    lies past the end of the log -- checked by reading the record before it,
    since some brokers (Tansu) under-report the end of a multi-record batch.
    """
    from confluent_kafka import TopicPartition

    if stored is None:
        return None
    if stored.cluster_id != cluster_id:
        log.warning("%s: %s[%d] was read from cluster %s, the broker is now %s; reading it "
                    "again from the beginning (event ids deduplicate)", service, tp[0], tp[1],
                    stored.cluster_id, cluster_id)
        return None
    _low, high = consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10)
    if stored.next_offset > high and not offset_in_log(settings, tp[0], tp[1],
                                                       stored.next_offset - 1):
        log.warning("%s: %s[%d] stored position %d is beyond the partition's end %d (the "
                    "broker lost its log?); reading it again from the beginning", service,
                    tp[0], tp[1], stored.next_offset, high)
        return None
    return stored.next_offset


def offset_in_log(settings: Settings, topic: str, partition: int, offset: int,
                  timeout: float = 5.0) -> bool:
    """Whether ``offset`` is a record of ``topic[partition]`` now (read it to know).

    A stored position beyond the reported high watermark normally means the
    broker lost its log. But some brokers (Tansu) report a multi-record
    batch's high watermark as its first offset + 1, so before starting over a
    consumer checks that the record before its position is still there.
    """
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    # An offset out of range is an answer, not a reset.
    consumer = new_consumer(settings, client_id="modelog-probe", fetch="tail", reset="error")
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF or not err.retriable():
                    return False  # at the end, or out of range: not in the log
                continue
            return bool(msg.offset() == offset)
        return False
    except KafkaException:
        return False
    finally:
        consumer.close()
