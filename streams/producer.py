"""The transport under the SDK: a buffered, idempotent Kafka producer.

The application thread does the least possible work: :meth:`EventProducer.send`
appends ``(topic, key, payload, encoder)`` to a bounded in-memory buffer and
returns. A background sender thread drains the buffer in chunks, encodes each
payload (``encoder(payload) -> bytes``, by default
:func:`modelog.models.codec.encode`) and hands whole chunks to librdkafka
with ``produce_batch``; librdkafka batches, compresses (lz4) and delivers them
with ``enable.idempotence`` and ``acks=all`` (no duplicates, per-partition
order kept across retries).

Nothing is lost silently:

* when the buffer is full the ``on_full`` policy applies -- ``"block"`` (wait
  up to ``block_timeout`` seconds, then raise :class:`BufferFullError`),
  ``"drop"`` (discard the new event, count it in ``stats.dropped``, warn once)
  or ``"raise"`` (raise :class:`BufferFullError` at once);
* events the broker rejects, or that cannot be encoded, are counted and
  reported by the next :meth:`~EventProducer.flush` / :meth:`~EventProducer.close`
  as a :class:`DeliveryError` naming the first error;
* an unreachable broker fails the constructor with
  :class:`BrokerUnavailableError`.

Only delivery *failures* produce callbacks (``delivery.report.only.error``):
acknowledged events are counted from librdkafka's queue length, which keeps
the per-event cost at a few hundred nanoseconds.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Literal, Self

from modelog.config import Settings
from modelog.models import codec
from modelog.models.events import Event
from modelog.models.validation import MAX_EVENT_BYTES, SIZE_RULE
from modelog.streams.errors import (
    BrokerUnavailableError,
    BufferFullError,
    ClientClosedError,
    DeliveryError,
)
from modelog.streams.kafka import new_producer
from modelog.streams.topics import Topics

__all__ = ["ClosingContext", "EventProducer", "OnFull", "ProducerStats"]

log = logging.getLogger(__name__)

OnFull = Literal["block", "drop", "raise"]
Encoder = Callable[[Any], bytes]
_Item = tuple[str, bytes, Any, Encoder]
_ON_FULL = ("block", "drop", "raise")
BROKER_HINT = "start one with `modelog broker`/`modelog up`, or set MODELOG_BROKER"


@dataclasses.dataclass(frozen=True)
class ProducerStats:
    """Counters of an :class:`EventProducer` at one instant.

    Attributes
    ----------
    sent
        Events accepted by :meth:`EventProducer.send` (queued), including
        those not yet delivered.
    acked
        Events the broker acknowledged.
    failed
        Events that could not be encoded or were rejected by the broker.
    dropped
        Events discarded because the buffer was full (``on_full="drop"``).
    buffered
        Events accepted but not yet acknowledged nor failed.
    """

    sent: int
    acked: int
    failed: int
    dropped: int
    buffered: int


class ClosingContext:
    """Mixin: ``with obj:`` returns ``obj`` and calls ``obj.close()`` on the way out."""

    def close(self, timeout: float = 30.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventProducer(ClosingContext):
    """Send encoded events to Kafka from a background thread.

    Parameters
    ----------
    settings
        Broker address and security settings (``settings.kafka_config()``).
    buffer_size
        Events the in-memory buffer holds before ``on_full`` applies.
    on_full
        ``"block"``, ``"drop"`` or ``"raise"`` (see the module docstring).
    block_timeout
        Seconds ``send`` waits for room under ``on_full="block"``.
    connect_timeout
        Seconds to wait for the broker's metadata when starting.
    linger_ms
        How long librdkafka waits to fill a batch.
    chunk_size
        Events the sender thread moves per step (it yields the GIL between steps).
    config
        Extra librdkafka settings, applied last.

    Raises
    ------
    BrokerUnavailableError
        When the broker does not answer within ``connect_timeout``.

    Examples
    --------
    >>> from modelog.streams.broker import EmbeddedBroker
    >>> with EmbeddedBroker() as broker:                          # doctest: +SKIP
    ...     with EventProducer(Settings(broker=broker.bootstrap_servers)) as p:
    ...         p.send("demo", b"key", b"raw bytes", encoder=bytes)
    ...         p.flush()
    ...         p.stats.acked
    1
    """

    def __init__(
        self,
        settings: Settings,
        *,
        buffer_size: int = 100_000,
        on_full: OnFull = "block",
        block_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        linger_ms: float = 10.0,
        chunk_size: int = 2_000,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size={buffer_size} must be at least 1")
        if on_full not in _ON_FULL:
            raise ValueError(f"on_full={on_full!r} must be one of {', '.join(_ON_FULL)}")
        from confluent_kafka import KafkaError, KafkaException

        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.buffer_size = buffer_size
        self.on_full: OnFull = on_full
        self.block_timeout = block_timeout
        self._chunk = chunk_size
        # Above this many buffered events a blocking send() helps the sender thread.
        self._high_water = min(buffer_size, 2 * chunk_size) if on_full == "block" else buffer_size
        self._paused = 0
        self._queue_full = KafkaError._QUEUE_FULL
        self._buf: deque[_Item] = deque()
        self._pending: list[tuple[str, dict[str, Any]]] = []  # encoded, refused by a full queue
        self._lock = threading.RLock()  # held while moving events buffer -> librdkafka
        self._err_lock = threading.Lock()
        self._produced = 0
        self._local_failed = 0
        self._delivery_failed = 0
        self._failed_reported = 0
        self._dropped = 0
        self._warned_drop = False
        self._first_error: str | None = None
        self._last_broker_error: str | None = None
        self._closed = False

        self._producer = new_producer(settings, client_id="modelog-sdk", linger_ms=linger_ms,
                                      bulk=True, extra={
                                          "on_delivery": self._on_delivery,
                                          "error_cb": self._on_error,
                                          "logger": logging.getLogger("modelog.rdkafka"),
                                          **(config or {}),
                                      })
        try:
            self._producer.list_topics(timeout=connect_timeout)
        except KafkaException as exc:
            raise BrokerUnavailableError(
                f"cannot reach the Kafka broker at {settings.bootstrap_servers} within "
                f"{connect_timeout:g}s ({exc.args[0] if exc.args else exc}); {BROKER_HINT}."
            ) from None

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modelog-sender", daemon=True)
        self._thread.start()
        ref = weakref.ref(self)

        def _close_at_exit() -> None:
            producer = ref()
            if producer is not None and not producer._closed:
                try:
                    producer.close(timeout=10.0)
                except Exception as exc:
                    log.error("modelog: events were lost at exit: %s", exc)

        self._atexit = _close_at_exit
        atexit.register(_close_at_exit)

    # -- application side --------------------------------------------------
    def send(self, topic: str, key: bytes, payload: Any, encoder: Encoder = codec.encode) -> None:
        """Queue one event: ``encoder(payload)`` is called later, off the caller's path.

        ``payload`` must not be mutated afterwards (pass a copy or an immutable
        value). May block, drop or raise per ``on_full`` when the buffer is full.
        """
        if self._closed:
            raise ClientClosedError(
                "this producer is closed; create a new client with modelog.connect()"
            )
        if len(self._buf) >= self._high_water and not self._make_room():
            return
        self._buf.append((topic, key, payload, encoder))

    def send_event(self, event: Event) -> None:
        """Queue an already validated event on its topic, keyed by its aggregate."""
        self.send(self.topics.for_event(event), event.aggregate.encode(), event, codec.encode)

    def _help(self) -> bool:
        """Drain one chunk on the caller's thread if the sender is not busy doing it."""
        if self._paused or not self._lock.acquire(blocking=False):
            return False
        try:
            self._drain(self._chunk)
        finally:
            self._lock.release()
        return True

    def _make_room(self) -> bool:
        """Above the high-water mark: help, or apply ``on_full``; ``False`` means drop."""
        if self.on_full == "block":
            # Sending a chunk ourselves beats waiting: the sender thread is not
            # keeping up, and two threads contending for the GIL are slower than one.
            self._help()
            deadline = time.monotonic() + self.block_timeout
            while len(self._buf) >= self.buffer_size:
                if self._closed:
                    raise ClientClosedError("the producer was closed while send() waited")
                if time.monotonic() >= deadline:
                    break
                if not self._help():
                    time.sleep(0.0005)
            else:
                return True
        elif len(self._buf) < self.buffer_size:
            return True
        elif self.on_full == "drop":
            self._dropped += 1
            if not self._warned_drop:
                self._warned_drop = True
                log.warning(
                    "modelog send buffer full (%d events): dropping new events (on_full='drop'); "
                    "stats.dropped counts them. Raise buffer_size or check the broker at %s.",
                    self.buffer_size, self.settings.bootstrap_servers,
                )
            return False
        raise BufferFullError(
            f"the send buffer is full ({self.buffer_size} events"
            + (f", waited {self.block_timeout:g}s" if self.on_full == "block" else "")
            + f"): the broker at {self.settings.bootstrap_servers} is not keeping up or is "
            "unreachable. Raise buffer_size or block_timeout, use on_full='drop' to shed "
            "load, or check the broker."
        )

    # -- sender side -------------------------------------------------------
    def _run(self) -> None:
        poll = self._producer.poll
        while not self._stop.is_set():
            if self._buf or self._pending:
                if self._drain(self._chunk) == 0 and (self._buf or self._pending):
                    poll(0.05)  # librdkafka's queue is full: let it deliver
                else:
                    poll(0)
            else:
                poll(0.005)

    def _drain(self, max_items: int) -> int:
        """Move up to ``max_items`` events to librdkafka; return how many it took."""
        with self._lock:
            moved = 0
            if self._pending:
                retry, self._pending = self._pending, []
                moved += self._produce_runs(retry)
                if self._pending:
                    return moved
            buf = self._buf
            n = min(len(buf), max_items)
            if n == 0:
                return moved
            popleft = buf.popleft
            batches: dict[str, list[dict[str, Any]]] = {}
            last_topic = ""
            msgs: list[dict[str, Any]] = []
            for _ in range(n):
                topic, key, payload, encoder = popleft()
                try:
                    value = encoder(payload)
                except Exception as exc:
                    self._record_failure(local=True, error=f"cannot encode an event for "
                                         f"{topic}: {type(exc).__name__}: {exc}")
                    continue
                if len(value) > MAX_EVENT_BYTES:  # the broker would refuse it
                    self._record_failure(local=True, error=f"an event for {topic} encodes to "
                                         f"{len(value):,} bytes, not sent: {SIZE_RULE}")
                    continue
                if topic != last_topic:  # events mostly come in runs of one topic
                    last_topic = topic
                    msgs = batches.setdefault(topic, [])
                msgs.append({"key": key, "value": value})
            for topic, msgs in batches.items():
                moved += self._produce(topic, msgs)
            return moved

    def _produce_runs(self, items: list[tuple[str, dict[str, Any]]]) -> int:
        moved = 0
        start = 0
        for i in range(1, len(items) + 1):
            if i == len(items) or items[i][0] != items[start][0]:
                moved += self._produce(items[start][0], [m for _, m in items[start:i]])
                start = i
        return moved

    def _produce(self, topic: str, msgs: list[dict[str, Any]]) -> int:
        try:
            queued: int = self._producer.produce_batch(topic, msgs)
        except BufferError:
            queued = 0
            for m in msgs:
                m["_error"] = None  # all refused: retry
        self._produced += queued
        if queued < len(msgs):
            for m in msgs:
                if "_error" not in m:
                    continue
                err = m.pop("_error")
                if err is None or err.code() == self._queue_full:
                    self._pending.append((topic, m))
                else:
                    self._record_failure(local=True, error=f"{err.str()} (topic {topic})")
        return queued

    def _record_failure(self, *, local: bool, error: str) -> None:
        with self._err_lock:
            if local:
                self._local_failed += 1
            else:
                self._delivery_failed += 1
            if self._first_error is None:
                self._first_error = error

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._record_failure(local=False, error=f"{err.str()} (topic {msg.topic()})")

    def _on_error(self, err: Any) -> None:
        self._last_broker_error = err.str()
        log.debug("librdkafka: %s", err.str())

    # -- control -----------------------------------------------------------
    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the sender for the ``with`` block (events accumulate in the buffer).

        Meant for tests of the ``on_full`` policies and for maintenance windows;
        ``flush`` from the same thread still works inside the block.
        """
        with self._lock:
            self._paused += 1
            try:
                yield
            finally:
                self._paused -= 1

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every event sent so far is acknowledged by the broker.

        Raises
        ------
        DeliveryError
            When some events were rejected, or not acknowledged within
            ``timeout`` seconds (those stay queued and are retried).
        ClientClosedError
            After :meth:`close`.
        """
        if self._closed:
            raise ClientClosedError("this producer is closed; nothing left to flush")
        self._flush(timeout)

    def _flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            while (self._buf or self._pending) and time.monotonic() < deadline:
                if self._drain(self._chunk * 5) == 0 and (self._buf or self._pending):
                    self._producer.poll(0.05)
            in_flight = self._producer.flush(max(0.0, deadline - time.monotonic()))
            with self._lock:
                unsent = len(self._buf) + len(self._pending)
            # another thread may have queued events meanwhile: drain them too, until the
            # deadline, rather than report them as not acknowledged
            if not (unsent or in_flight) or time.monotonic() >= deadline:
                break
        with self._err_lock:
            failed = self._local_failed + self._delivery_failed
            new_failures = failed - self._failed_reported
            self._failed_reported = failed
            first = self._first_error
        if unsent or in_flight:
            cause = f"; last broker error: {self._last_broker_error}" if (
                self._last_broker_error) else ""
            raise DeliveryError(
                f"{unsent + in_flight} events were not acknowledged by the broker at "
                f"{self.settings.bootstrap_servers} within {timeout:g}s"
                f" ({failed} failed in total{cause}). They stay queued: check the broker, "
                "then call flush() again."
            )
        if new_failures:
            s = self.stats
            raise DeliveryError(
                f"{new_failures} events were not delivered (first error: {first}); "
                f"sent={s.sent} acked={s.acked} failed={s.failed}. Fix the cause and "
                "re-send them; the others were delivered."
            )

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then stop the sender thread. Calling it again does nothing.

        Raises :class:`DeliveryError` like :meth:`flush` if events could not be
        delivered; the producer is closed either way.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._atexit)
        self._stop.set()
        self._thread.join(timeout)
        self._flush(timeout)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def stats(self) -> ProducerStats:
        """A snapshot of the counters."""
        with self._lock:
            produced = self._produced
            waiting = len(self._buf) + len(self._pending)
            dropped = self._dropped
            with self._err_lock:
                local, delivery = self._local_failed, self._delivery_failed
        in_flight = len(self._producer)
        return ProducerStats(
            sent=produced + local + waiting,
            acked=max(0, produced - delivery - in_flight),
            failed=local + delivery,
            dropped=dropped,
            buffered=waiting + in_flight,
        )
