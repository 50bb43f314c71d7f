"""The alert delivery worker: follow subscriptions and alerts, POST, record, report.

:class:`DeliveryWorker` follows the subscriptions and monitoring topics and
POSTs every alert that :func:`~modelog.models.alerts.matches` a subscription to
its webhook (:class:`~modelog.streams.webhooks.WebhookSender`), then reports the
outcome as an :class:`~modelog.models.events.AlertDelivered` event.
:func:`run_delivery` (``modelog deliver``) and :func:`deliver_once` run it;
subscribing is :mod:`modelog.streams.subscriptions`. What an alert is and the
delivery policy live in :mod:`modelog.models.alerts`, the ledger in
:mod:`modelog.store.outbox`. This is the Kafka-facing part: it may import
:mod:`modelog.store`, :mod:`modelog.models` and :mod:`modelog.streams`.

Exactly once *in effect*
------------------------
The worker keeps a local SQLite ledger (``<data_dir>/delivery.sqlite``). When a
POST ends (accepted, or given up after ``max_attempts``) one SQLite transaction
records the ``(subscription_id, alert_id)`` delivery, the ``AlertDelivered``
event to report (a transactional outbox) *and* the consumer positions, which
never pass a record whose deliveries are not all recorded. So:

* a restart never POSTs again a delivery the ledger recorded, and never skips
  an alert whose deliveries were not recorded;
* a crash *after* the receiver accepted a POST but *before* the transaction
  committed repeats that one POST on restart. HTTP has no two-phase commit, so
  this gap cannot be closed on the sending side: every request carries the
  alert's id in ``Modelog-Event-Id``, the idempotency key receivers dedupe on;
* ``AlertDelivered`` ids are derived from ``(alert time, subscription, alert)``
  so re-sending the outbox after a crash yields the same event id.

Alerts are the monitoring events :data:`~modelog.models.alerts.ALERT_TYPES`;
``MonitorStatsReported`` and ``MonitorConfigured`` are not alerts. Records that
are not valid events are copied unchanged to the dead-letter topic (consumer
``delivery``) and delivery carries on.

Ordering and slow receivers: deliveries run on a small pool of lanes; a
subscription always uses the same lane, so its alerts arrive in log order (per
monitoring partition, i.e. per model), and a slow or failing receiver only
delays the subscriptions sharing its lane.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from modelog.config import Settings
from modelog.errors import ConfigurationError
from modelog.models import codec
from modelog.models.alerts import Alert, Outcome, SubscriptionBook, delivered_event, is_alert
from modelog.models.deadletter import DeadLetter
from modelog.models.events import AlertSubscriptionCreated, AlertSubscriptionRemoved, Event
from modelog.store.errors import DeliveryLedgerError
from modelog.store.outbox import LEDGER_FILE, DeliveryLedger
from modelog.streams.errors import DeliveryError, DeliveryWorkerError
from modelog.streams.kafka import (
    ErrorPolicy,
    Outgoing,
    decode_or_dead_letter,
    new_consumer,
    new_producer,
    produce_and_wait,
    resume_offset,
)
from modelog.streams.signals import stop_on_signal
from modelog.streams.topics import Topics, ensure_topics
from modelog.streams.webhooks import WebhookSender

__all__ = [
    "CONSUMER_NAME",
    "DeliveryStats",
    "DeliveryWorker",
    "deliver_once",
    "run_delivery",
    "stop_on_signal",
]

log = logging.getLogger(__name__)

CONSUMER_NAME = "delivery"
"""Name recorded in the dead-letter headers of records this worker rejects."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _ledger_failures(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Report a failure of the ledger as the worker's (:class:`DeliveryWorkerError`)."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except DeliveryLedgerError as exc:
            raise DeliveryWorkerError(str(exc)) from exc

    return wrapper


# -- the worker ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DeliveryStats:
    """Counters of a worker since it started."""

    records: int
    delivered: int
    failed: int
    dead_lettered: int
    pending: int


@dataclasses.dataclass(frozen=True)
class _Job:
    subscription_id: str
    alert: Alert
    tp: tuple[str, int]
    offset: int


def _record_time(msg: Any) -> dt.datetime | None:
    """When a record was written to the log (its timestamp), if the broker says."""
    kind, ms = msg.timestamp()
    if kind == 0 or ms is None or ms < 0:  # TIMESTAMP_NOT_AVAILABLE
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


class DeliveryWorker:
    """Follow subscriptions and alerts; deliver every matching alert to its webhooks.

    Parameters
    ----------
    settings
        Broker, topic prefix and data directory (the ledger is
        ``<data_dir>/delivery.sqlite``; one worker per data directory);
        ``webhook_allow_private`` (may webhooks reach non-public addresses,
        checked before every request) and ``secret_key`` (decrypts the
        subscriptions' signing secrets: a subscription whose secret does not
        decrypt has its deliveries recorded failed, with the reason).
    http_timeout, max_attempts, backoff
        See :class:`WebhookSender`.
    replay
        Also deliver alerts raised before the subscription was created (raised:
        their record's timestamp, when the worker wrote them; not their event
        time, so alerts about late or backfilled traffic are delivered).
    lanes
        Delivery threads; a subscription always uses the same lane.
    batch_size
        Records read per poll.
    max_pending
        Deliveries queued before the worker stops reading alerts.

    Use :meth:`start` (or ``with``), then :meth:`poll_once` in a loop, or
    :meth:`run`; :func:`run_delivery` and :func:`deliver_once` wrap both.
    """

    def __init__(
        self, settings: Settings, *, http_timeout: float = 5.0, max_attempts: int = 8,
        backoff: tuple[float, float] = (0.5, 30.0), replay: bool = False, lanes: int = 4,
        batch_size: int = 500, max_pending: int = 1000,
    ) -> None:
        if lanes < 1 or batch_size < 1 or max_pending < 1:
            raise ConfigurationError("lanes, batch_size and max_pending must be at least 1")
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.sender = WebhookSender(http_timeout, max_attempts, backoff,
                                    allow_private=settings.webhook_allow_private,
                                    secret_key=settings.secret_key)
        self.replay = replay
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.ledger_path = settings.data_dir / LEDGER_FILE
        self._n_lanes = lanes
        self._stop = threading.Event()
        self._errors = ErrorPolicy("delivery worker", DeliveryWorkerError)
        self._state = threading.Lock()
        self._pending: dict[tuple[str, int], dict[int, int]] = {}
        self._read_to: dict[tuple[str, int], int] = {}
        self._inflight: set[tuple[str, str]] = set()
        self._subs_next: dict[int, int] = {}
        self._failure: BaseException | None = None
        self._counts = {"records": 0, "delivered": 0, "failed": 0, "dead_lettered": 0}
        self._ledger: DeliveryLedger | None = None
        self._lanes: list[ThreadPoolExecutor] = []
        self._alerts: Any = None
        self._subs: Any = None
        self._producer: Any = None
        self._cluster_id: str | None = None
        self.book = SubscriptionBook()

    # -- life cycle --------------------------------------------------------------
    @property
    def ledger(self) -> DeliveryLedger:
        if self._ledger is None:
            raise DeliveryWorkerError("the delivery worker is not started; call start() first")
        return self._ledger

    @_ledger_failures
    def start(self) -> DeliveryWorker:
        """Open the ledger, re-send unacknowledged reports and assign the partitions."""
        from confluent_kafka import KafkaException

        self._ledger = DeliveryLedger(self.ledger_path)
        self.book = self._ledger.book()
        ensure_topics(self.settings)
        group = f"{self.settings.topic_prefix}delivery"
        fast = {"fetch.wait.max.ms": 50}
        self._alerts = new_consumer(self.settings, client_id="modelog-delivery", group=group,
                                    extra=fast)
        self._subs = new_consumer(self.settings, client_id="modelog-delivery-subscriptions",
                                  group=group, extra=fast)
        self._producer = new_producer(self.settings, client_id="modelog-delivery-producer",
                                      linger_ms=5, bulk=True,
                                      extra={"delivery.report.only.error": False})
        try:
            self._assign()
        except KafkaException as exc:
            self.close()
            raise DeliveryWorkerError(
                f"cannot read topics from {self.settings.bootstrap_servers} ({exc}); is the "
                "broker running?"
            ) from None
        for event_id, topic, key, value in self._ledger.outbox():
            self._produce_report(event_id, topic, key, value)
        self._lanes = [ThreadPoolExecutor(1, thread_name_prefix=f"modelog-delivery-{i}")
                       for i in range(self._n_lanes)]
        log.info("delivery: %d active subscriptions, ledger %s", len(self.book),
                 self.ledger_path)
        return self

    def _assign(self) -> None:
        from confluent_kafka import TopicPartition

        metadata = self._alerts.list_topics(timeout=10)
        self._cluster_id = metadata.cluster_id
        stored = self.ledger.positions()
        restarts: dict[tuple[str, int], int] = {}
        for topic, consumer in ((self.topics.monitoring, self._alerts),
                                (self.topics.subscriptions, self._subs)):
            tmeta = metadata.topics.get(topic)
            if tmeta is None or tmeta.error is not None:
                raise DeliveryWorkerError(f"topic {topic} is missing on the broker")
            assignment = []
            for partition in sorted(tmeta.partitions):
                tp = (topic, partition)
                # the ledger skips recorded deliveries when a partition starts over
                offset = resume_offset(consumer, self.settings, tp, stored.get(tp),
                                       self._cluster_id, service="delivery") or 0
                if offset == 0 and tp in stored:
                    restarts[tp] = 0
                assignment.append(TopicPartition(topic, partition, offset))
                if topic == self.topics.monitoring:
                    self._read_to[tp] = offset
                else:
                    self._subs_next[partition] = offset
            consumer.assign(assignment)
        if restarts:
            self.ledger.save_positions(restarts, self._cluster_id, reset=True)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the lanes (in-flight POSTs finish and are recorded), flush reports, close."""
        self._stop.set()
        for lane in self._lanes:
            lane.shutdown(wait=True, cancel_futures=True)
        self._lanes = []
        self.sender.close()
        if self._producer is not None:
            remaining = self._producer.flush(timeout)
            if remaining:
                log.warning("delivery: %d AlertDelivered reports not acknowledged; they stay "
                            "in the outbox and are sent at the next start", remaining)
            self._producer = None
        for consumer in (self._alerts, self._subs):
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.close()
        self._alerts = self._subs = None
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def __enter__(self) -> DeliveryWorker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------
    @_ledger_failures
    def poll_once(self, timeout: float = 0.2) -> int:
        """Read a batch of alerts (after catching up on subscriptions) and queue deliveries.

        Returns the number of alert-topic records read.

        Raises
        ------
        DeliveryWorkerError
            A lane or the ledger failed.
        """
        if self._failure is not None:
            raise DeliveryWorkerError(f"a delivery lane failed: {self._failure}; restart "
                                      "the delivery worker") from self._failure
        self._producer.poll(0)
        if self.pending >= self.max_pending:
            self._stop.wait(min(timeout, 0.05))
            return 0
        messages = self._errors.records(self._alerts.consume(self.batch_size, timeout))
        self.catch_up_subscriptions()
        if not messages:
            return 0
        decoded: list[tuple[tuple[str, int], int, Event | None, dt.datetime | None]] = []
        invalid: list[Outgoing] = []
        for msg in messages:
            tp = (msg.topic(), msg.partition())
            event = self._decode(msg, invalid)
            decoded.append((tp, msg.offset(), event, _record_time(msg)))
        self._dead_letter(invalid)
        jobs: list[_Job] = []
        with self._state:
            for tp, offset, event, raised in decoded:
                self._read_to[tp] = max(self._read_to.get(tp, 0), offset + 1)
                if event is None or not is_alert(event):
                    continue
                for sub in self.book.matching(event, replay=self.replay, raised=raised):
                    key = (sub.subscription_id, event.id)
                    if key in self._inflight or self.ledger.is_recorded(*key):
                        continue
                    self._inflight.add(key)
                    slots = self._pending.setdefault(tp, {})
                    slots[offset] = slots.get(offset, 0) + 1
                    jobs.append(_Job(sub.subscription_id, event, tp, offset))
            positions = self._positions()
            self._counts["records"] += len(messages)
        self.ledger.save_positions(positions, self._cluster_id)
        for job in jobs:
            lane = self._lanes[zlib.crc32(job.subscription_id.encode()) % len(self._lanes)]
            lane.submit(self._run_job, job)
        return len(messages)

    @_ledger_failures
    def catch_up_subscriptions(self, timeout: float = 10.0) -> None:
        """Read the subscriptions topic up to its current end into the book and ledger."""
        from confluent_kafka import TopicPartition

        topic = self.topics.subscriptions
        ends = {p: self._subs.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout,
                                                    cached=False)[1]
                for p in self._subs_next}
        deadline = time.monotonic() + timeout
        while (missing := sum(max(0, end - self._subs_next[p]) for p, end in ends.items())):
            if time.monotonic() > deadline:
                log.warning("delivery: could not read %s to its end within %.0f s", topic,
                            timeout)
                return
            # asking for exactly what is missing returns as soon as it arrived
            messages = self._errors.records(self._subs.consume(min(missing, 500), 0.2))
            invalid: list[Outgoing] = []
            events: list[Event] = []
            for msg in messages:
                event = self._decode(msg, invalid)
                if isinstance(event, AlertSubscriptionCreated | AlertSubscriptionRemoved):
                    events.append(event)
                    self.book.apply(event)
            self._dead_letter(invalid)
            for msg in messages:
                self._subs_next[msg.partition()] = max(self._subs_next[msg.partition()],
                                                       msg.offset() + 1)
            if messages:
                self.ledger.add_book_events(
                    events, {(topic, p): o for p, o in self._subs_next.items()},
                    self._cluster_id)

    def _decode(self, msg: Any, invalid: list[Outgoing]) -> Event | None:
        """The event ``msg`` holds; else ``None``, with its dead-letter copy in ``invalid``."""
        decoded = decode_or_dead_letter(msg.value(), msg.key(), topic=msg.topic(),
                                        partition=msg.partition(), offset=msg.offset(),
                                        dead_letter_topic=self.topics.dead_letter,
                                        consumer=CONSUMER_NAME)
        if isinstance(decoded, Outgoing):
            invalid.append(decoded)
            return None
        return decoded

    def _dead_letter(self, copies: Sequence[Outgoing]) -> None:
        """Copy records unchanged to the dead-letter topic; wait until the broker has them."""
        if not copies:
            return
        try:
            produce_and_wait(self._producer, copies, what="restart the delivery worker")
        except DeliveryError as exc:
            raise DeliveryWorkerError(
                f"could not dead-letter to {self.topics.dead_letter}: {exc}") from None
        with self._state:
            self._counts["dead_lettered"] += len(copies)
        for copy in copies:
            info = DeadLetter.from_headers(copy.headers)
            log.warning("delivery: dead-lettered %s[%d]@%d: %s", info.source_topic,
                        info.source_partition, info.source_offset, info.reason)

    # -- delivering (lane threads) ------------------------------------------------------
    def _positions(self) -> dict[tuple[str, int], int]:
        """Next offset to read per alert partition: no record with pending work is passed.

        Call with ``self._state`` held.
        """
        out = {}
        for tp, read_to in self._read_to.items():
            waiting = [o for o, n in self._pending.get(tp, {}).items() if n > 0]
            out[tp] = min(waiting) if waiting else read_to
        return out

    def _run_job(self, job: _Job) -> None:
        try:
            if self._stop.is_set():
                return  # abandoned: not recorded, the position stays before it
            sub = self.book.get(job.subscription_id)
            outcome: Outcome | None = None
            if sub is not None and not self.ledger.is_recorded(job.subscription_id,
                                                               job.alert.id):
                outcome = self.sender.send(sub, job.alert, self._stop)
                if outcome is None:
                    return
            self._finish(job, outcome)
        except BaseException as exc:
            log.exception("delivery: lane failed on %s -> %s", job.alert.id,
                          job.subscription_id)
            self._failure = exc

    def _finish(self, job: _Job, outcome: Outcome | None) -> None:
        with self._state:
            slots = self._pending[job.tp]
            slots[job.offset] -= 1
            if slots[job.offset] <= 0:
                del slots[job.offset]
            self._inflight.discard((job.subscription_id, job.alert.id))
            positions = self._positions()
        if outcome is None:  # unsubscribed meanwhile, or already recorded
            self.ledger.save_positions(positions, self._cluster_id)
            return
        report = delivered_event(job.subscription_id, job.alert, outcome,
                                 producer=self.settings.producer_name)
        topic = self.topics.for_event(report)
        self.ledger.record(report, topic, positions, self._cluster_id)
        with self._state:
            self._counts["delivered" if outcome.ok else "failed"] += 1
        if not outcome.ok:
            log.warning("delivery: gave up on %s -> %s: %s", job.alert.id, job.subscription_id,
                        outcome.error)
        self._produce_report(report.id, topic, report.aggregate.encode(), codec.encode(report))

    def _produce_report(self, event_id: str, topic: str, key: bytes, value: bytes) -> None:
        ledger = self.ledger

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is None:
                ledger.sent(event_id)
            else:
                log.warning("delivery: report %s not acknowledged (%s); it stays in the "
                            "outbox and is sent at the next start", event_id, err)

        self._producer.produce(topic, key=key, value=value, on_delivery=on_delivery)

    # -- state -----------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Deliveries queued or in progress."""
        with self._state:
            return sum(sum(s.values()) for s in self._pending.values())

    def monitoring_ends(self) -> dict[tuple[str, int], int]:
        """High watermarks of the alert partitions, now."""
        from confluent_kafka import TopicPartition

        return {tp: self._alerts.get_watermark_offsets(TopicPartition(*tp), timeout=10,
                                                       cached=False)[1]
                for tp in list(self._read_to)}

    def reached(self, ends: dict[tuple[str, int], int]) -> bool:
        """Whether every record below ``ends`` was read and all its deliveries ended."""
        with self._state:
            positions = self._positions()
        return all(positions.get(tp, 0) >= end for tp, end in ends.items())

    @_ledger_failures
    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the broker acknowledged the reports produced so far."""
        if self._producer is not None and self._producer.flush(timeout):
            raise DeliveryError(f"AlertDelivered reports not acknowledged within {timeout} s; "
                                "they stay in the outbox")

    def stats(self) -> DeliveryStats:
        """Counters since :meth:`start`."""
        pending = self.pending
        with self._state:
            return DeliveryStats(pending=pending, **self._counts)

    def run(self, stop: threading.Event | None = None) -> None:
        """Deliver until ``stop`` is set (or SIGTERM/Ctrl-C in the main thread), then close."""
        stop = stop or threading.Event()
        started = threading.Event()
        try:
            with stop_on_signal(stop, started):
                if self._ledger is None:
                    self.start()
                started.set()
                while not stop.is_set():
                    self.poll_once(0.2)
        except KeyboardInterrupt:
            log.info("delivery: interrupted, stopping")
        finally:
            self.close()


# -- entry points -------------------------------------------------------------------------
def run_delivery(settings: Settings, stop: threading.Event | None = None,
                 **options: Any) -> None:
    """Run the delivery worker until ``stop`` is set, SIGTERM or Ctrl-C (``modelog deliver``).

    ``options`` are :class:`DeliveryWorker` keyword arguments.
    """
    DeliveryWorker(settings, **options).run(stop)


def deliver_once(settings: Settings, *, timeout: float = 60.0, **options: Any) -> DeliveryStats:
    """Deliver every alert on the log now, wait until each delivery ended, and stop.

    ``options`` are :class:`DeliveryWorker` keyword arguments.

    Raises
    ------
    DeliveryWorkerError
        When the deliveries did not end within ``timeout`` seconds.
    """
    with DeliveryWorker(settings, **options) as worker:
        worker.catch_up_subscriptions()
        ends = worker.monitoring_ends()
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise DeliveryWorkerError(
                    f"deliveries did not end within {timeout} s ({worker.pending} pending); "
                    "raise the timeout or check the receivers"
                )
            read = worker.poll_once(0.1)
            # Done when the end was reached, nothing is pending and a poll found nothing
            # more: some brokers (Tansu) under-report the high watermark of a
            # multi-record batch (its first offset + 1), so the end alone is not enough.
            if read == 0 and worker.pending == 0 and worker.reached(ends):
                break
        worker.flush()
        return worker.stats()


if __name__ == "__main__":  # pragma: no cover - `python -m modelog.streams.delivery`
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run_delivery(Settings.from_env())
