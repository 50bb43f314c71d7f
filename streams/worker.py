"""The monitoring worker: a Faust app hosting the monitoring data plane and the registry agents.

* :class:`RecordRouter` is the pure decision per raw record of one partition:
  it decodes each record with :func:`modelog.models.codec.decode`; records
  that do not decode, or are not ``PredictionMade`` / ``LabelObserved``, are
  copied unchanged (same key and value bytes) to the dead-letter topic with
  the reason and their source in the headers; the others feed the
  :class:`~modelog.models.monitor.ServingMonitor` (plus the retrain trigger,
  the online learners and the :class:`~modelog.models.quality_monitor.QualityMonitor`),
  whose derived events are encoded for the monitoring topic, keyed by their
  aggregate. ``MonitorConfigured`` events of the monitoring topic (keyed by
  model like the serving topic: same partition, same worker, no repartition)
  override the :class:`MonitorConfig` of a model at run time; a configuration
  the monitor rejects is dead-lettered with the reason while the previous one
  stays in force; ``RetrainPolicySet`` events set a model's retrain policy in
  the trigger the same way. Registry events (``ModelVersionRegistered``
  signatures, online registrations, checkpoints) are fed before each batch.
* The :class:`~modelog.models.rollout.RolloutProcessor` gets the serving events,
  the alias moves of the registry and ``PromotionPolicySet`` events (an invalid
  one is dead-lettered the same way); its ``ComparisonReported`` and
  ``RolloutDecided`` go to the monitoring topic, the ``AliasChangeRequested``
  of each decision to the registry-commands topic.
* :class:`~modelog.streams.serving_loop.ServingLoop` moves the bytes: a batch
  consumer in the consumer group ``<app id>.monitor``, hosted as a service of
  the Faust app (per-record Faust agents are an order of magnitude too slow
  for the serving stream). Derived records are flushed before the positions
  are committed.
* State follows the partition: when a partition is assigned to a worker (first
  start, restart, another worker joining or leaving), its router is rebuilt by
  replaying the partition silently up to the committed positions, so detectors
  continue exactly where they were. Every derived event has a deterministic
  id, so anything published twice (after a crash between flush and commit)
  is a duplicate that consumers drop by id. ``run_worker(..., rebuild=True)``
  uses a new group and republishes everything from the beginning.
* Registry commands are handled by Faust agents
  (:func:`modelog.streams.registry_agent.register_agents`).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modelog.config import Settings
from modelog.models import codec
from modelog.models.deadletter import DeadLetter
from modelog.models.early_labels import EarlyLabels
from modelog.models.errors import MonitorConfigError
from modelog.models.events import (
    DatasetVersionCreated,
    Event,
    ModelVersionRegistered,
    MonitorConfigured,
    OnlineModelCheckpointed,
    RunDatasetUsed,
)
from modelog.models.monitor import ServingMonitor
from modelog.models.monitor_config import MonitorConfig
from modelog.models.serving_path import (
    decode_usable,
    process_serving,
    serve_decoded,
    unusable,
)
from modelog.streams.kafka import (
    Outgoing,
    dead_letter_copy,
    decode_or_dead_letter,
    faust_credentials,
)
from modelog.streams.topics import Topics, ensure_topics

if TYPE_CHECKING:
    from modelog.streams.serving_loop import Record

__all__ = [
    "CONSUMER_NAME",
    "RecordRouter",
    "build_app",
    "run_worker",
    "standard_router",
]

_log = logging.getLogger("modelog.worker")

CONSUMER_NAME = "worker"
"""The consumer name written in dead-letter headers."""


class RecordRouter:
    """Decide, for each raw serving record, what to publish (pure: no Kafka here).

    Examples
    --------
    >>> router = RecordRouter(Topics("acme."), ServingMonitor())
    >>> [out] = router.route(b"churn", b"{not json", "acme.serving", 0, 7)
    >>> out.topic, out.key, out.value
    ('acme.dead-letter', b'churn', b'{not json')
    >>> dict(out.headers)["modelog-source-offset"]
    b'7'
    """

    def __init__(self, topics: Topics, monitor: ServingMonitor,
                 consumer: str = CONSUMER_NAME, *, online: Any = None,
                 retrain: Any = None, rollout: Any = None, quality: Any = None) -> None:
        self.topics = topics
        self.monitor = monitor
        self.consumer = consumer
        #: Optional :class:`~modelog.models.online_models.OnlineModelProcessor`.
        self.online = online
        #: Optional :class:`~modelog.models.retrain.RetrainTrigger`.
        self.retrain = retrain
        #: Optional :class:`~modelog.models.rollout.RolloutProcessor` (comparison, promotion).
        self.rollout = rollout
        #: Optional :class:`~modelog.models.quality_monitor.QualityMonitor`.
        self.quality = quality
        self.records = 0
        self.dead_lettered = 0
        self.published = 0
        self.registry_errors = 0
        self.configs_applied = 0
        self.configs_rejected = 0
        self.monitoring_skipped = 0
        #: Serving records a processor failed on (dead-lettered with the reason, logged).
        self.failed = 0
        self._resumed = False
        self._registry_seen: set[str] = set()
        self._decoded: dict[int, Event] = {}
        #: Labels that came before their prediction (see :mod:`modelog.models.early_labels`).
        self.early = EarlyLabels(ttl=monitor.config.pending_ttl)
        #: Id of the last event processed per topic (serving: any decoded event; monitoring:
        #: configurations and policies): where a refilled broker's offsets put this state
        #: (:mod:`modelog.streams.archive`).
        self.last_ids: dict[str, str] = {}

    _COUNTERS = ("records", "dead_lettered", "published", "registry_errors", "configs_applied",
                 "configs_rejected", "monitoring_skipped", "failed")

    def snapshot(self) -> bytes:
        """The state of this partition's processors and counters (local state, never sent)."""
        return pickle.dumps({
            "monitor": self.monitor.snapshot(),
            "retrain": None if self.retrain is None else self.retrain.snapshot(),
            "online": None if self.online is None else self.online.snapshot(),
            "rollout": None if self.rollout is None else self.rollout.snapshot(),
            "quality": None if self.quality is None else self.quality.snapshot(),
            "counters": {name: getattr(self, name) for name in self._COUNTERS},
            "resumed": self._resumed,
            "registry_seen": self._registry_seen,
            "last_ids": self.last_ids,
            "early": self.early,
        }, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, data: bytes) -> None:
        """Continue from a :meth:`snapshot` this worker's deployment took."""
        state = pickle.loads(data)  # a verified local snapshot (store.partition_state)
        self.monitor.restore(state["monitor"])
        if self.retrain is not None and state["retrain"] is not None:
            self.retrain.restore(state["retrain"])
        if self.online is not None and state["online"] is not None:
            self.online.restore(state["online"])
        if self.rollout is not None and state.get("rollout") is not None:
            self.rollout.restore(state["rollout"])
        if self.quality is not None and state.get("quality") is not None:
            self.quality.restore(state["quality"])
        for name, value in state["counters"].items():
            setattr(self, name, value)
        self._resumed = state["resumed"]
        self._registry_seen = set(state["registry_seen"])
        self.last_ids = dict(state.get("last_ids", {}))
        if state.get("early") is not None:
            self.early = state["early"]

    def observe_registry(self, events: Sequence[Event]) -> list[Outgoing]:
        """Feed registry events to the monitor (signatures) and the online learner.

        The first call restores the latest checkpoints before anything else.
        A registration whose artifact cannot be loaded is logged and skipped.
        Events seen before (by id) are skipped, so feeding the registry again
        after :meth:`restore` changes nothing it already knew.
        """
        events = [e for e in events if e.id not in self._registry_seen]
        self._registry_seen.update(e.id for e in events)
        for event in events:
            if isinstance(event, ModelVersionRegistered | RunDatasetUsed | DatasetVersionCreated):
                self.monitor.observe_registry(event)  # signatures, training references
            elif self.rollout is not None:
                self.rollout.process(event)  # alias moves and answered commands
        if self.online is None:
            return []
        from modelog.models.errors import OnlineModelError

        if not self._resumed:
            self._resumed = True
            self.online.resume([e for e in events if isinstance(e, OnlineModelCheckpointed)])
        out: list[Event] = []
        for event in events:
            if isinstance(event, ModelVersionRegistered):
                try:
                    out.extend(self.online.process(event))
                except OnlineModelError as exc:
                    self.registry_errors += 1
                    _log.warning("online model not started: %s", exc)
        return [self._outgoing(e) for e in out]

    def prepare(self, records: Sequence[tuple[bytes | None, int]]) -> None:
        """Look ahead at a batch of serving records ``(value, offset)`` before routing them.

        The records are decoded once (:meth:`route` reuses the result) and the
        monitor scores the anomaly inputs of their predictions at once
        (:meth:`ServingMonitor.prescore`); what :meth:`route` returns is the
        same with or without this call.
        """
        decoded = decode_usable(records)  # route() dead-letters the others with the reason
        self._decoded = decoded
        try:
            self.monitor.prescore(decoded.values())
        except Exception:  # an optimisation only: route() scores one by one instead
            _log.exception("scoring a batch ahead failed; its inputs are scored one by one")

    def _outgoing(self, event: Event) -> Outgoing:
        self.published += 1
        return Outgoing(self.topics.for_event(event), event.aggregate.encode(),
                        codec.encode(event))

    def route(self, key: bytes | None, value: bytes | None, topic: str, partition: int,
              offset: int) -> list[Outgoing]:
        """The records to write for one consumed record (in order).

        Records of the monitoring topic other than ``MonitorConfigured`` and
        ``RetrainPolicySet`` (to the retrain trigger) are skipped; an invalid
        configuration or policy is dead-lettered with the reason.
        """
        self.records += 1
        raw = value if value is not None else b""
        if topic == self.topics.monitoring:
            return self._on_monitoring(key, raw, topic, partition, offset)
        event = self._decoded.pop(offset, None) if self._decoded else None
        if event is None:
            decoded = self._decode(key, raw, topic, partition, offset)
            if isinstance(decoded, Outgoing):
                return [decoded]
            event = decoded
            self.last_ids[topic] = event.id
            reason = unusable(event)
            if reason is not None:
                return [self._dead_letter(key, raw, reason, topic, partition, offset)]
        else:
            self.last_ids[topic] = event.id
        try:
            return self._process(event, partition, offset)
        except Exception as exc:  # a record no processor can take must not stop the partition
            return [self._failed(event, exc, key, raw, topic, partition, offset)]

    def route_records(self, records: Sequence[Record], partition: int) -> list[Outgoing]:
        """:meth:`route` of each of ``records`` of ``partition``, in order: what to write.

        ``records`` are ``(timestamp, topic, partition, offset, key, value)``. What
        is returned is what :meth:`route` returns record by record; the runs of
        serving records decoded by :meth:`prepare` go through the compiled loop
        (:func:`~modelog.models.serving_path.serve_decoded`), the others through
        :meth:`route`.
        """
        out: list[Outgoing] = []
        serving = self.topics.serving
        derived: list[Event] = []
        i, n = 0, len(records)
        while i < n:
            if self._decoded:
                j, last, exc = serve_decoded(
                    records, i, serving, self._decoded, partition, self.monitor, self.early,
                    self.retrain, self.online, self.rollout, self.quality, derived)
                if last is not None:  # records i to j - 1 were taken
                    self.records += j - i
                    self.last_ids[serving] = last.id
                    if derived:
                        out.extend([self._outgoing(e) for e in derived])
                        derived.clear()
                    if exc is not None:
                        _, topic, _, offset, key, value = records[j - 1]
                        out.append(self._failed(last, exc, key, value or b"", topic,
                                                partition, offset))
                    i = j
                    continue
            _, topic, _, offset, key, value = records[i]
            out.extend(self.route(key, value, topic, partition, offset))
            i += 1
        return out

    def _failed(self, event: Event, exc: Exception, key: bytes | None, raw: bytes, topic: str,
                partition: int, offset: int) -> Outgoing:
        """The dead letter of a serving record a processor failed on (logged, counted)."""
        _log.error("could not process %s %s at %s[%s]@%s", event.type_name(), event.id,
                   topic, partition, offset, exc_info=exc)
        self.failed += 1
        reason = (f"the monitoring worker failed on this {event.type_name()} "
                  f"({type(exc).__name__}: {exc}); later records were processed")
        return self._dead_letter(key, raw, reason, topic, partition, offset)

    def _process(self, event: Event, partition: int, offset: int) -> list[Outgoing]:
        """The derived records of a decoded, usable serving event (see
        :func:`~modelog.models.serving_path.process_serving`: a label whose prediction
        has not come yet is held in :attr:`early`)."""
        derived = process_serving(event, partition, offset, self.monitor, self.early,
                                  self.retrain, self.online, self.rollout, self.quality)
        if not derived:
            return []
        return [self._outgoing(d) for d in derived]

    def _on_monitoring(self, key: bytes | None, raw: bytes, topic: str, partition: int,
                       offset: int) -> list[Outgoing]:
        if (b"MonitorConfigured" not in raw and b"RetrainPolicySet" not in raw
                and b"PromotionPolicySet" not in raw):  # alerts, stats
            self.monitoring_skipped += 1
            return []
        event = self._decode(key, raw, topic, partition, offset)
        if isinstance(event, Outgoing):
            self.configs_rejected += 1
            _log.warning("monitor configuration not applied: %s",
                         DeadLetter.from_headers(event.headers).reason)
            return [event]
        from modelog.models.policy_events import PromotionPolicySet, RetrainPolicySet

        self.last_ids[topic] = event.id  # configuration: what a refilled broker must not redo
        if isinstance(event, RetrainPolicySet):
            return self._on_retrain_policy(event, key, raw, topic, partition, offset)
        if isinstance(event, PromotionPolicySet):
            return self._on_promotion_policy(event, key, raw, topic, partition, offset)
        if not isinstance(event, MonitorConfigured):
            self.monitoring_skipped += 1
            return []
        try:
            quality = None if self.quality is None else self.quality.parse(event)
            self.monitor.configure(event)
        except MonitorConfigError as exc:
            self.configs_rejected += 1
            _log.warning("monitor configuration not applied: %s", exc)
            return [self._dead_letter(key, raw, str(exc), topic, partition, offset)]
        if quality is not None:
            self.quality.apply(event.model, quality)
        self.configs_applied += 1
        return []

    def _on_retrain_policy(self, event: Event, key: bytes | None, raw: bytes, topic: str,
                           partition: int, offset: int) -> list[Outgoing]:
        """Apply a model's ``RetrainPolicySet`` to the retrain trigger; an invalid one is
        dead-lettered with the reason and the previous policy stays in force."""
        from modelog.models.errors import RetrainPolicyError

        if self.retrain is None:
            self.monitoring_skipped += 1
            return []
        try:
            self.retrain.configure(event)
        except RetrainPolicyError as exc:
            self.configs_rejected += 1
            _log.warning("retrain policy not applied: %s", exc)
            return [self._dead_letter(key, raw, str(exc), topic, partition, offset)]
        self.configs_applied += 1
        return []

    def _on_promotion_policy(self, event: Event, key: bytes | None, raw: bytes, topic: str,
                             partition: int, offset: int) -> list[Outgoing]:
        """Apply a model's ``PromotionPolicySet`` to the rollout processor; an invalid one is
        dead-lettered with the reason and the previous policy stays in force."""
        from modelog.models.errors import PromotionPolicyError

        if self.rollout is None:
            self.monitoring_skipped += 1
            return []
        try:
            self.rollout.process(event)
        except PromotionPolicyError as exc:
            self.configs_rejected += 1
            _log.warning("promotion policy not applied: %s", exc)
            return [self._dead_letter(key, raw, str(exc), topic, partition, offset)]
        self.configs_applied += 1
        return []

    def _decode(self, key: bytes | None, raw: bytes, topic: str, partition: int,
                offset: int) -> Event | Outgoing:
        decoded = decode_or_dead_letter(raw, key, topic=topic, partition=partition,
                                        offset=offset, dead_letter_topic=self.topics.dead_letter,
                                        consumer=self.consumer)
        if isinstance(decoded, Outgoing):
            self.dead_lettered += 1
        return decoded

    def _dead_letter(self, key: bytes | None, value: bytes, reason: str, topic: str,
                     partition: int, offset: int) -> Outgoing:
        self.dead_lettered += 1
        return dead_letter_copy(self.topics.dead_letter, key, value, reason, topic=topic,
                                partition=partition, offset=offset, consumer=self.consumer)


def standard_router(topics: Topics, monitor_config: MonitorConfig | None = None, *,
                    online: Any = None) -> RecordRouter:
    """The router a worker runs: every processor on (serving monitor, retrain trigger,
    comparison and rollout, quality monitors, and ``online`` learners when given)."""
    from modelog.models.quality_monitor import QualityMonitor
    from modelog.models.retrain import RetrainTrigger
    from modelog.models.rollout import RolloutProcessor

    return RecordRouter(topics, ServingMonitor(monitor_config), online=online,
                        retrain=RetrainTrigger(), rollout=RolloutProcessor(),
                        quality=QualityMonitor())


def build_app(
    settings: Settings,
    *,
    app_id: str | None = None,
    monitor_config: MonitorConfig | None = None,
    session_timeout: float = 10.0,
    batch_size: int = 5_000,
    batch_within: float = 0.2,
    web_port: int | None = None,
    monitor_session_timeout: float | None = None,
    hosted: bool = True,
) -> Any:
    """Build the Faust app of the monitoring worker (does not start it).

    Parameters
    ----------
    settings
        Broker, topic prefix, partitions, data directory and security.
    app_id
        Faust app id and consumer group; default ``f"{settings.topic_prefix}worker"``.
    monitor_config
        Detectors and bounds of the :class:`ServingMonitor`.
    session_timeout
        Consumer session timeout in seconds; lower means a faster start and
        rebalance (tests use 6).
    batch_size, batch_within
        The monitoring loop processes up to ``batch_size`` records, or what
        arrived within ``batch_within`` seconds, at a time.
    web_port
        Serve Faust's web interface on this port; ``None`` disables it.
    monitor_session_timeout
        Session timeout of the monitoring consumer (default ``session_timeout``).
        A worker killed without leaving the group keeps its partitions until it
        expires, so it bounds the failover (``modelog up`` gives 1 s with the
        embedded broker; Apache Kafka accepts no less than 6 s by default).
    hosted
        ``True``: the app starts the monitoring data plane as one of its services,
        after the registry agents' group has settled. ``False``: the caller
        starts ``app.modelog_serving_service`` itself, e.g. as a service of
        ``faust.Worker(app, app.modelog_serving_service)``, which runs it at
        once (what :func:`run_worker` does: monitoring resumes sooner).

    Returns
    -------
    faust.App
        The app; its monitoring data plane (:class:`~modelog.streams.serving_loop.ServingLoop`,
        consumer group ``<app id>.monitor``) is ``app.modelog_serving``.
    """
    import faust
    import mode

    from modelog.models.online_models import OnlineModelProcessor
    from modelog.store.artifacts import ArtifactStore
    from modelog.store.worker_key import worker_key
    from modelog.streams.serving_loop import ServingLoop

    topics = Topics.from_settings(settings)
    artifacts = ArtifactStore.from_settings(settings)

    def make_router() -> RecordRouter:
        online = OnlineModelProcessor(artifacts, allow_pickle=settings.online_allow_pickle,
                                      checkpoint_key=worker_key(settings.data_dir))
        return standard_router(topics, monitor_config, online=online)

    app = faust.App(
        app_id or f"{settings.topic_prefix}worker",
        broker=f"kafka://{settings.bootstrap_servers}",
        broker_credentials=faust_credentials(settings),
        store="memory://",
        autodiscover=False,
        broker_session_timeout=session_timeout,
        broker_heartbeat_interval=max(0.5, session_timeout / 5),
        consumer_auto_offset_reset="earliest",
        web_enabled=web_port is not None,
        web_port=web_port or 6066,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        datadir=str(settings.data_dir / "faust"),
    )
    group = f"{app_id or settings.topic_prefix + 'worker'}.monitor"
    serving = ServingLoop(settings, make_router, group=group, batch_size=batch_size,
                          batch_within=batch_within,
                          session_timeout=monitor_session_timeout or session_timeout)
    app.modelog_serving = serving  # type: ignore[attr-defined]

    class ServingMonitorService(mode.Service):
        """Runs the batch data plane in a thread for the life of the worker."""

        async def on_stop(self) -> None:
            serving.stop()

        @mode.Service.task
        async def _consume(self) -> None:
            await asyncio.get_running_loop().run_in_executor(None, serving.run)

    if hosted:
        app.service(ServingMonitorService)
    else:
        app.modelog_serving_service = ServingMonitorService(  # type: ignore[attr-defined]
            loop=app.loop, beacon=app.beacon)

    # Registry commands (alias changes, registrations): one writer per model partition.
    from modelog.streams.registry_agent import register_agents

    register_agents(app, settings)
    return app


def run_worker(
    settings: Settings,
    *,
    app_id: str | None = None,
    monitor_config: MonitorConfig | None = None,
    session_timeout: float = 10.0,
    rebuild: bool = False,
    loglevel: str = "warning",
    web_port: int | None = None,
    monitor_session_timeout: float | None = None,
) -> None:
    """Create the topics, then run the monitoring worker until interrupted (blocking).

    ``rebuild=True`` consumes under a new group id, replaying the serving log
    from the beginning so the in-memory state is rebuilt exactly (alerts
    published again have the same ids). The monitoring data plane starts with
    the process, not after the registry agents' group settled, and
    ``monitor_session_timeout`` (see :func:`build_app`) bounds how long a
    predecessor killed without leaving holds its partitions.
    """
    import faust

    from modelog.streams.serving_loop import collect_less_often

    ensure_topics(settings)
    group = app_id or f"{settings.topic_prefix}worker"
    if rebuild:
        group = f"{group}-rebuild-{int(time.time())}"
    app = build_app(settings, app_id=group, monitor_config=monitor_config,
                    session_timeout=session_timeout, web_port=web_port,
                    monitor_session_timeout=monitor_session_timeout, hosted=False)
    worker = faust.Worker(app, app.modelog_serving_service, loglevel=loglevel, quiet=True)
    collect_less_often()  # this process is the worker's: see the function
    worker.execute_from_commandline()
