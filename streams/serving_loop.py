"""The monitoring data plane: a batch consumer whose per-partition state is rebuilt from the log.

Faust hands every record to an agent one at a time (a message object, an event,
acks and commit bookkeeping per record): a bare counting agent tops out at a
few thousand events/s per worker, below what monitoring must sustain. So the
monitoring worker hosts this loop instead, as a service of its Faust app
(:func:`modelog.streams.worker.build_app`):

* one consumer-group member (``<topic prefix>worker``) subscribes to the
  serving topic and the monitoring topic (``MonitorConfigured``) with the
  *range* assignor: both topics are keyed by model with the same partition
  count, so partition ``p`` of both lands on the same worker and no
  repartition is ever needed;
* records are consumed in batches (up to ``batch_size`` or what arrived within
  ``batch_within`` seconds), routed by the pure
  :class:`~modelog.streams.worker.RecordRouter` of their partition, the derived
  records are produced (idempotent producer, ``acks=all``) and flushed, and
  only then the positions are committed: at least once, and every derived
  event has a deterministic id, so a batch processed twice publishes
  duplicates that consumers drop by id;
* **state follows the partition.** Each partition has its own router (join,
  detectors, retrain cooldowns, online learners). When the group assigns a
  partition to this worker -- at start, after a restart, or because a worker
  joined or left -- :class:`PartitionRouters` says whether the state held for
  it is current (its next offsets equal the committed ones). If not, the state
  is rebuilt by replaying the partition from the log's beginning up to the
  committed positions *silently* (nothing is published: the previous owner
  already did), so detectors continue exactly where the previous owner left
  them. Online learners restore their latest checkpoint first and skip what it
  covers.

Every ``snapshot_every`` seconds, right after a commit or while idle (one
partition at a time, so the loop pauses for one partition's pickling; only
partitions that moved; less often when pickling would take more than
:data:`SNAPSHOT_SHARE` of the loop's time), and for all of them on a clean stop, the state of each
owned partition is saved with the positions it ends at
(:class:`~modelog.store.partition_state.PartitionSnapshots`, signed with the
worker key, in ``<data dir>/worker-state/<group>``): a worker on the same data
directory that takes the partition over restores it and replays only the
records after it, so a restart after ``kill -9`` costs a few seconds of replay,
not the whole retained history. Without a usable snapshot (another machine, a
snapshot ahead of the commits, a bad signature) the partition is replayed from
the beginning.
"""

from __future__ import annotations

import gc
import heapq
import logging
import pickle
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from modelog.config import Settings
from modelog.models.events import Event
from modelog.store.partition_state import PartitionSnapshots
from modelog.store.worker_key import worker_key
from modelog.streams.kafka import new_consumer, new_producer
from modelog.streams.topics import Topics

__all__ = ["PartitionRouters", "Position", "ServingLoop", "collect_less_often"]

_log = logging.getLogger("modelog.worker")

Position = dict[str, int]
"""Next offset to process, per topic name, of one partition."""

SNAPSHOT_SHARE = 0.02
"""Most of the serving loop's time that state snapshots may take: a snapshot that took
``t`` seconds is followed by the next one ``t / SNAPSHOT_SHARE`` seconds later at the
earliest (else every ``snapshot_every`` seconds)."""

Record = tuple[int, str, int, int, bytes | None, bytes | None]
"""A consumed record: ``(log time, topic, partition, offset, key, value)``."""


class PartitionRouters:
    """One :class:`~modelog.streams.worker.RecordRouter` per partition, with its positions.

    Pure bookkeeping: no Kafka here. ``factory`` makes a fresh router; every
    router gets all registry events seen so far (:meth:`observe_registry`),
    also the ones created later.

    Examples
    --------
    >>> from modelog.models.monitor import ServingMonitor
    >>> from modelog.streams.worker import RecordRouter
    >>> topics = Topics("acme.")
    >>> routers = PartitionRouters(lambda: RecordRouter(topics, ServingMonitor()))
    >>> routers.is_current(0, {"acme.serving": 0})
    False
    >>> _ = routers.fresh(0)
    >>> routers.advance(0, "acme.serving", 41)
    >>> routers.is_current(0, {"acme.serving": 42}), routers.is_current(0, {"acme.serving": 50})
    (True, False)
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.routers: dict[int, Any] = {}
        self.positions: dict[int, Position] = {}
        self.registry: list[Event] = []
        self.rebuilds = 0

    def observe_registry(self, events: Sequence[Event]) -> list[Any]:
        """Feed new registry events to every router; the records they publish."""
        if not events:
            return []
        self.registry.extend(events)
        out: list[Any] = []
        for router in self.routers.values():
            out += router.observe_registry(events)
        return out

    def restored(self, partition: int, state: bytes, positions: Position) -> Any:
        """A router for ``partition`` continuing from a snapshot that ends at ``positions``."""
        router = self.factory()
        router.restore(state)
        router.observe_registry(self.registry)  # only what the snapshot had not seen
        self.routers[partition] = router
        self.positions[partition] = dict(positions)
        self.rebuilds += 1
        return router

    def fresh(self, partition: int) -> Any:
        """A new router for ``partition`` (replacing any state held), knowing the registry."""
        router = self.factory()
        router.observe_registry(self.registry)
        self.routers[partition] = router
        self.positions[partition] = {}
        self.rebuilds += 1
        return router

    def is_current(self, partition: int, committed: Position) -> bool:
        """Whether the state held for ``partition`` ends exactly at the ``committed`` positions.

        A topic missing from ``committed`` counts as offset 0 (nothing committed).
        """
        if partition not in self.routers:
            return False
        held = self.positions[partition]
        return all(held.get(topic, 0) == offset for topic, offset in committed.items())

    def advance(self, partition: int, topic: str, offset: int) -> None:
        """Record that the record at ``offset`` of ``topic`` was processed."""
        self.positions[partition][topic] = offset + 1

    def keep_only(self, partitions: Iterable[int]) -> None:
        """Drop the state of partitions this worker no longer owns (frees memory)."""
        keep = set(partitions)
        for p in [p for p in self.routers if p not in keep]:
            del self.routers[p]
            del self.positions[p]


class ServingLoop:
    """The batch consumer of the serving and monitoring topics (the thin Kafka edge).

    Parameters
    ----------
    settings
        Broker, topic prefix and security.
    make_router
        Builds a fresh :class:`~modelog.streams.worker.RecordRouter` (per partition).
    group
        Consumer group id, shared by every worker of one deployment.
    batch_size, batch_within
        Records per batch, and seconds to wait for a batch to fill.
    session_timeout
        Consumer-group session timeout in seconds. A worker killed without
        leaving the group (``kill -9``, a crash) keeps its partitions until it
        expires, so it bounds the failover: with the embedded broker, ``1``
        gives a replacement its partitions about a second after it joins
        (``modelog bench --failover``); brokers may impose a minimum (Apache
        Kafka's ``group.min.session.timeout.ms`` is 6 s).
    """

    def __init__(self, settings: Settings, make_router: Callable[[], Any], *, group: str,
                 batch_size: int = 5_000, batch_within: float = 0.2,
                 session_timeout: float = 10.0, snapshot_every: float | None = 2.0) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.group = group
        self.batch_size = batch_size
        self.batch_within = batch_within
        self.session_timeout = session_timeout
        self.routers = PartitionRouters(make_router)
        self.records = 0
        self.published = 0
        self.replayed = 0
        self.registry_refused = 0
        self._pending: set[int] = set()
        self._owned: set[int] = set()
        self._stop = threading.Event()
        self.started = threading.Event()
        #: Seconds between state snapshots of the owned partitions (``None``: never).
        self.snapshot_every = snapshot_every
        self.restored = 0
        self._next_snapshot = 0.0
        self._snapshot_cursor = -1
        self._saved: dict[int, Position] = {}  # positions of each partition's last snapshot
        self._in_sync = True  # the last commit succeeded: held positions == committed ones
        self._snapshots: PartitionSnapshots | None = None
        if snapshot_every is not None:
            self._snapshots = PartitionSnapshots(
                settings.data_dir / "worker-state" / group, key=worker_key(settings.data_dir))

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch."""
        self._stop.set()

    def run(self) -> None:
        """Consume, route, publish and commit until :meth:`stop` (blocking; run it in a thread).

        The registry reaches the routers only verified
        (:class:`~modelog.streams.registry_agent.RegistryFollower`): a record
        that is not the registry worker's answer to a recorded command is
        counted in :attr:`registry_refused` and logged (the registry worker
        dead-letters it), never fed to the monitor. The runs' training datasets and
        the datasets' profiles come with it
        (:class:`~modelog.streams.lifecycle_follower.LifecycleFollower`).
        """
        from modelog.streams.lifecycle_follower import LifecycleFollower

        consumer = new_consumer(self.settings, client_id="modelog-worker", group=self.group,
                                extra={
                                    "partition.assignment.strategy": "range",
                                    "session.timeout.ms": int(self.session_timeout * 1000),
                                    # a fifth of the session (librdkafka needs it
                                    # below); short sessions make a fast failover
                                    "heartbeat.interval.ms": max(
                                        100, int(self.session_timeout * 200)),
                                    "fetch.wait.max.ms": 50,
                                })
        producer = new_producer(self.settings, client_id="modelog-worker", linger_ms=5,
                                extra={"compression.type": "lz4"})
        registry = LifecycleFollower(self.settings)  # + training datasets and profiles
        try:
            self.routers.observe_registry(self._verified(registry, registry.read_to_end()))
            consumer.subscribe([self.topics.serving, self.topics.monitoring],
                               on_assign=self._on_assign, on_revoke=self._on_revoke)
            self.started.set()
            while not self._stop.is_set():
                msgs = consumer.consume(self.batch_size, self.batch_within)
                self._publish(producer, self.routers.observe_registry(
                    self._verified(registry, registry.poll())))
                if self._pending:
                    self._rebuild(consumer)
                committed = self._route(consumer, producer, msgs)
                if committed:
                    self._flush(producer)
                    self._in_sync = _commit(consumer, committed)
                if self._in_sync:  # also when idle: what changed since its last snapshot
                    self._maybe_snapshot()
            if self._in_sync:  # a clean stop: a restart continues exactly from here
                self._maybe_snapshot(every=True)
        finally:
            registry.close()
            try:
                self._flush(producer)
            finally:
                consumer.close()

    def _verified(self, follower: Any, accepted: Sequence[Event]) -> Sequence[Event]:
        """``accepted``, after counting and logging what ``follower`` refused."""
        for refused in follower.fold.take_unverified():
            self.registry_refused += 1
            _log.warning("ignoring a registry record that is not a registry fact: %s", refused)
        return accepted

    # -- rebalancing -------------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        owned = {tp.partition for tp in partitions if tp.topic == self.topics.serving}
        self._owned = owned
        self._pending = set(owned)
        self.routers.keep_only(owned)
        _log.info("assigned serving partitions %s", sorted(owned))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._owned = set()
        _log.info("revoked %s partitions", len(partitions))

    def _rebuild(self, consumer: Any) -> None:
        """Make the state of every newly assigned partition current (replay if needed)."""
        from confluent_kafka import TopicPartition

        pending, self._pending = sorted(self._pending), set()
        names = (self.topics.serving, self.topics.monitoring)
        tps = [TopicPartition(name, p) for p in pending for name in names]
        committed: dict[int, Position] = {p: {} for p in pending}
        for tp in consumer.committed(tps, timeout=30):
            committed[tp.partition][tp.topic] = max(tp.offset, 0)
        for p in pending:
            if self.routers.is_current(p, committed[p]):
                continue
            started = time.monotonic()
            starts: Position = {}
            saved = self._snapshots.load(p) if self._snapshots is not None else None
            if saved is not None and all(
                    saved[0].get(t, 0) <= committed[p].get(t, 0) for t in saved[0]):
                starts = saved[0]  # not ahead of the commits: replay only the tail
                router = self.routers.restored(p, saved[1], starts)
                self.restored += 1
            else:
                router = self.routers.fresh(p)
            n = 0
            for topic, part, offset, key, value in self._history(p, committed[p], starts):
                router.route(key, value, topic, part, offset)  # silent: already published
                self.routers.advance(p, topic, offset)
                n += 1
            for topic, end in committed[p].items():
                self.routers.positions[p][topic] = end
            self.replayed += n
            _log.info("partition %s: state rebuilt from %s%s records in %.1f s", p,
                      "a snapshot and " if starts else "", n, time.monotonic() - started)

    def _maybe_snapshot(self, every: bool = False) -> None:
        """After a commit (or idle): save the state of the next owned partition, in turn.

        One partition at a time, so each pause is one partition's pickling and every
        partition is saved every ``snapshot_every`` seconds; only partitions that moved
        since their last snapshot. ``every=True`` (a clean stop) saves all of those now.
        """
        now = time.monotonic()
        if self._snapshots is None or self.snapshot_every is None or (
                now < self._next_snapshot and not every):
            return
        owned = sorted(p for p in self._owned & set(self.routers.routers)
                       if self._saved.get(p) != self.routers.positions[p])
        if not owned:
            return
        later = [p for p in owned if p > self._snapshot_cursor]
        for p in owned if every else [later[0] if later else owned[0]]:
            self._snapshot_cursor = p
            try:
                self._snapshots.save(p, self.routers.positions[p],
                                     self.routers.routers[p].snapshot())
                self._saved[p] = dict(self.routers.positions[p])
            except (OSError, pickle.PicklingError, TypeError, AttributeError,
                    RecursionError) as exc:
                _log.warning("partition %s: state snapshot not saved (%s); a takeover "
                             "replays the partition from the beginning", p, exc)
                self._snapshots.discard(p)
        took = time.monotonic() - now
        # every partition each snapshot_every seconds, unless that would spend more than
        # SNAPSHOT_SHARE of the loop's time pickling (large state under a heavy load)
        self._next_snapshot = now + max(self.snapshot_every / max(len(self._owned), 1),
                                        took / SNAPSHOT_SHARE)

    def _history(self, partition: int, ends: Position, starts: Position | None = None,
                 ) -> Iterator[tuple[str, int, int, bytes | None, bytes]]:
        """Records of ``partition`` from ``starts`` (default: the beginning) before ``ends``,
        both topics merged by log time."""
        starts = starts or {}
        streams = [_read_range(self.settings, topic, partition, end, starts.get(topic, 0))
                   for topic, end in ends.items() if end > starts.get(topic, 0)]
        yield from (rec[1:] for rec in heapq.merge(*streams))

    # -- the batch path ----------------------------------------------------------------------

    def _route(self, consumer: Any, producer: Any,
               msgs: Sequence[Any]) -> dict[tuple[str, int], int]:
        """Route one batch; the positions to commit afterwards."""
        committed: dict[tuple[str, int], int] = {}
        routers = self.routers
        serving = self.topics.serving
        for part, records, ends in _by_partition(msgs):
            router = routers.routers.get(part)
            if router is None:  # not seen in an assignment callback: make it current
                self._pending.add(part)
                self._rebuild(consumer)
                router = routers.routers[part]
            router.prepare([(r[5], r[3]) for r in records if r[1] == serving])
            self._publish(producer, router.route_records(records, part))
            position = routers.positions[part]
            for topic, end in ends.items():
                committed[(topic, part)] = position[topic] = end
            self.records += len(records)
        return committed

    def _publish(self, producer: Any, records: Sequence[Any]) -> None:
        if not records:
            return
        for rec in records:
            while True:
                try:
                    producer.produce(rec.topic, rec.value, rec.key, headers=rec.headers or None)
                    break
                except BufferError:  # local queue full: let librdkafka send, then retry
                    producer.poll(0.05)
            self.published += 1
        producer.poll(0)

    def _flush(self, producer: Any) -> None:
        from modelog.streams.errors import DeliveryError

        remaining = producer.flush(60)
        if remaining:
            raise DeliveryError(
                f"{remaining} derived events were not acknowledged within 60 s; the batch "
                "will be processed again after a restart (ids are deterministic); check "
                "the broker"
            )


def _by_partition(msgs: Sequence[Any]) -> list[tuple[int, list[Record], dict[str, int]]]:
    """The good records of a batch per partition: ``(partition, records, ends)``.

    Per partition, the serving and monitoring records are merged by log time
    (each topic's own order is kept; a tie goes to the topic whose name sorts
    first), as the rebuild does, so that a configuration published before some
    predictions applies to them however the fetches interleaved. ``ends`` is the
    position after each topic's last record.
    """
    lanes: dict[tuple[str, int], list[Record]] = {}
    for msg in msgs:
        if msg.error() is None:  # partition EOF and transient errors: librdkafka retries
            topic, part = msg.topic(), msg.partition()
            lane = lanes.get((topic, part))
            if lane is None:
                lane = lanes[(topic, part)] = []
            lane.append((msg.timestamp()[1], topic, part, msg.offset(), msg.key(), msg.value()))
    by_partition: dict[int, list[list[Record]]] = {}
    for (_, part), lane in lanes.items():
        by_partition.setdefault(part, []).append(lane)
    return [(part, group[0] if len(group) == 1 else list(heapq.merge(*group)),
             {lane[0][1]: lane[-1][3] + 1 for lane in group})
            for part, group in by_partition.items()]


def collect_less_often() -> None:
    """Run Python's cyclic garbage collector ~100x less often from now on, in this process.

    For the process of a worker (:func:`~modelog.streams.worker.run_worker` calls it):
    it changes the whole interpreter's collector, so a library caller decides itself.

    The loop allocates a few objects per record (decoded and derived events,
    tuples) that reference counting frees, while the detectors' state holds
    millions of long-lived objects. At the default gen-0 threshold (700
    allocations) the collector ran ~900 times per 80,000 predictions and took
    ~9 % of the loop, rescanning that state. Everything alive now is frozen
    out of the collector's scans, and a young collection waits for 50,000
    allocations.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _commit(consumer: Any, committed: dict[tuple[str, int], int]) -> bool:
    """Commit ``committed``; whether the broker took it."""
    from confluent_kafka import KafkaException, TopicPartition

    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in committed.items()],
                        asynchronous=False)
    except KafkaException as exc:  # a rebalance took the partition: its new owner redoes it
        _log.warning("commit failed (%s); the batch may be processed again", exc)
        return False
    return True


def _read_range(settings: Settings, topic: str, partition: int, end: int,
                start: int = 0) -> Iterator[tuple[int, str, int, int, bytes | None, bytes]]:
    """``(timestamp, topic, partition, offset, key, value)`` of records in [start, end)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer = new_consumer(settings, client_id="modelog-replay")
    try:
        consumer.assign([TopicPartition(topic, partition, start or OFFSET_BEGINNING)])
        idle = 0
        while True:
            msgs = consumer.consume(10_000, 1.0)
            if not msgs:
                idle += 1
                if idle > 30:
                    raise TimeoutError(f"{topic}[{partition}] stopped before offset {end}")
                continue
            idle = 0
            for msg in msgs:
                if msg.error() is not None:
                    continue
                offset = msg.offset()
                if offset is None:
                    continue
                if offset >= end:
                    return
                yield (msg.timestamp()[1], topic, partition, offset, msg.key(),
                       msg.value() or b"")
                if offset + 1 >= end:
                    return
    finally:
        consumer.close()

