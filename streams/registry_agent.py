"""The registry worker: the single writer that answers registry commands.

Registering a version and moving an alias are *commands*
(:class:`~modelog.models.events.ModelVersionRequested`,
:class:`~modelog.models.events.AliasChangeRequested`) on the
``registry-commands`` topic. Their answers (``ModelVersionRegistered``,
``AliasSet``, ``AliasRemoved``, ``AliasChangeRejected``) are decided by the
pure functions of :mod:`modelog.models.registry` against the registry state
and written to the ``registry`` topic. Both topics are keyed by the model name
and have the same partition count, so whoever consumes command partition *p*
is the only writer of the models of registry partition *p*: version numbers
are dense and alias changes are serialized per model.

The pieces:

* :class:`RegistryProcessor` -- pure: raw command record in, records to write
  out (the answer, or a dead-letter copy of a malformed record); it keeps the
  :class:`~modelog.models.registry.RegistryState` in memory.
* :class:`~modelog.streams.logtail.LogTail` (re-exported here) -- reads a
  topic with ``assign()`` (no consumer group), from the beginning or from its
  current end; used to fold the registry topic and, by the SDK, to wait for
  the answer to a command.
* :func:`register_agents` -- the Faust agent (what ``modelog worker`` runs).
  Before each batch of commands it catches up with the registry topic, so the
  state is rebuilt from the whole log at startup and stays right after a
  rebalance; each answer is sent and acknowledged before the command's offset
  can be committed.
* :class:`RegistryService` -- the same processor in a thread of this process,
  without Faust or a consumer group: for notebooks, scripts and tests. Run
  either it or a Faust worker against a deployment, not both.

Redelivery is harmless: a command already answered gets the same event back
from the decision functions, and an answer already on the log is not written
again.

Examples
--------
>>> import datetime as dt
>>> from modelog.models import codec
>>> from modelog.models.events import ModelVersionRequested
>>> from modelog.streams.topics import Topics
>>> proc = RegistryProcessor(Topics("acme."))
>>> cmd = ModelVersionRequested(
...     id="c-1", time=dt.datetime(2026, 3, 3, tzinfo=dt.timezone.utc), aggregate="churn",
...     command_id="c-1", model="churn", flavor="sklearn")
>>> [out] = proc.process(b"churn", codec.encode(cmd), "acme.registry-commands", 0, 0)
>>> out.topic, out.key, out.event.model_version
('acme.registry', b'churn', 1)
>>> proc.observe(out.event)
>>> proc.process(b"churn", codec.encode(cmd), "acme.registry-commands", 0, 1)  # redelivered
[]
>>> [bad] = proc.process(b"churn", b"{oops", "acme.registry-commands", 0, 2)
>>> bad.topic, bad.value
('acme.dead-letter', b'{oops')
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from modelog.config import Settings
from modelog.models import codec
from modelog.models.errors import EventDecodeError
from modelog.models.events import AliasChangeRequested, Event, ModelVersionRequested
from modelog.models.registry import (
    RegistryState,
    apply,
    decide,
    decide_registration,
)
from modelog.streams.errors import StreamsError
from modelog.streams.kafka import Outgoing, dead_letter_copy, new_producer
from modelog.streams.logtail import LogTail, RawRecord, decode_records
from modelog.streams.topics import Topics

__all__ = [
    "CONSUMER_NAME",
    "LogTail",
    "RawRecord",
    "RegistryProcessor",
    "RegistryService",
    "decode_records",
    "register_agents",
]

CONSUMER_NAME = "registry"
"""The consumer name written in dead-letter headers."""


class RegistryProcessor:
    """Decide each raw registry command record (pure: no Kafka, no clock unless asked).

    Parameters
    ----------
    topics
        Topic names (registry and dead-letter topics are written).
    require_reason_for
        Aliases that change only with a reason (see :func:`~modelog.models.registry.decide`).
    clock
        Returns the decision time (timezone-aware); default :func:`codec.utcnow`.

    Attributes
    ----------
    state
        The registry folded from the log plus every answer :meth:`observe` saw.
    """

    def __init__(
        self,
        topics: Topics,
        *,
        require_reason_for: frozenset[str] = frozenset({"production"}),
        clock: Callable[[], Any] = codec.utcnow,
    ) -> None:
        self.topics = topics
        self.require_reason_for = require_reason_for
        self.clock = clock
        self.state = RegistryState()
        self.decided = 0
        self.dead_lettered = 0

    def observe(self, event: Event) -> None:
        """Fold an event of the registry topic (or an answer once it is acknowledged)."""
        self.state = apply(self.state, event)

    def process(
        self, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int
    ) -> list[Outgoing]:
        """The records to write for one command record: its answer, a dead letter, or nothing.

        Nothing is returned when the answer is already in the state (a
        redelivered command). The answer is not folded into the state here:
        call :meth:`observe` with ``record.event`` once the broker acknowledged it.
        """
        raw = value if value is not None else b""
        try:
            command = codec.decode(raw)
        except EventDecodeError as exc:
            return [self._dead_letter(key, raw, exc.reason, topic, partition, offset)]
        if not isinstance(command, ModelVersionRequested | AliasChangeRequested):
            reason = (f"{command.type_name()} does not belong on the registry-commands topic; "
                      "the registry worker reads only ModelVersionRequested and "
                      "AliasChangeRequested")
            return [self._dead_letter(key, raw, reason, topic, partition, offset)]
        if key is not None and key != command.model.encode():
            reason = (f"key {key!r} is not the model name {command.model!r}: registry commands "
                      "must be keyed by their model, so one worker owns each model")
            return [self._dead_letter(key, raw, reason, topic, partition, offset)]
        now = self.clock()
        answer: Event
        if isinstance(command, ModelVersionRequested):
            answer = decide_registration(self.state, command, now=now)
        else:
            answer = decide(self.state, command, now=now,
                            require_reason_for=self.require_reason_for)
        model = self.state.model(command.model)
        if model is not None and answer.id in model.seen:
            return []
        self.decided += 1
        return [Outgoing(self.topics.registry, command.model.encode(), codec.encode(answer),
                         event=answer)]

    def _dead_letter(self, key: bytes | None, value: bytes, reason: str, topic: str,
                     partition: int, offset: int) -> Outgoing:
        self.dead_lettered += 1
        return dead_letter_copy(self.topics.dead_letter, key, value, reason, topic=topic,
                                partition=partition, offset=offset, consumer=CONSUMER_NAME)


class _Follower:
    """Keeps a processor's state caught up with the registry topic (lazily connected)."""

    def __init__(self, settings: Settings, processor: RegistryProcessor) -> None:
        self.settings = settings
        self.processor = processor
        self._tail: LogTail | None = None

    def catch_up(self) -> None:
        if self._tail is None:
            self._tail = LogTail(self.settings, Topics.from_settings(self.settings).registry)
        for event in decode_records(self._tail.read_to_end()):
            self.processor.observe(event)

    def close(self) -> None:
        if self._tail is not None:
            self._tail.close()
            self._tail = None


# -- the Faust edge -------------------------------------------------------------------
def register_agents(app: Any, settings: Settings, *, batch_size: int = 100,
                    batch_within: float = 0.05) -> None:
    """Add the registry agent to a Faust app (idempotent: a second call adds nothing).

    The agent reads the ``registry-commands`` topic as raw bytes in batches;
    before each batch it folds what is new on the ``registry`` topic (the
    whole topic the first time), then decides each command, sends the answer
    keyed by the model and waits for the broker's acknowledgement before
    folding it and moving on, so a command's offset is committed only after
    its answer is durable. Malformed records go to the dead-letter topic.

    Parameters
    ----------
    app
        A ``faust.App`` (e.g. :func:`modelog.streams.worker.build_app`'s).
    settings
        Topic prefix and broker settings.
    batch_size, batch_within
        Up to ``batch_size`` commands, or what arrived within ``batch_within`` s.

    Notes
    -----
    The processor is at ``app.modelog_registry``.
    """
    if getattr(app, "modelog_registry", None) is not None:
        return
    topics = Topics.from_settings(settings)
    processor = RegistryProcessor(topics)
    follower = _Follower(settings, processor)
    app.modelog_registry = processor

    def raw_topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")

    commands = raw_topic(topics.registry_commands)
    outputs = {topics.registry: raw_topic(topics.registry),
               topics.dead_letter: raw_topic(topics.dead_letter)}

    @app.agent(commands, name=f"{topics.prefix}registry")  # type: ignore[untyped-decorator]
    async def registry_agent(stream: Any) -> None:
        async for batch in stream.take_events(batch_size, within=batch_within):
            await asyncio.to_thread(follower.catch_up)
            for item in batch:
                msg = item.message
                for rec in processor.process(msg.key, msg.value, msg.topic, msg.partition,
                                             msg.offset):
                    pending = await outputs[rec.topic].send(
                        key=rec.key, value=rec.value, headers=rec.headers or None, force=True)
                    await pending  # acknowledged before the command counts as done
                    if rec.event is not None:
                        processor.observe(rec.event)

    @app.on_before_shutdown.connect  # type: ignore[untyped-decorator]
    async def _close_follower(sender: Any, **kwargs: Any) -> None:
        follower.close()


# -- the thread edge ------------------------------------------------------------------
class RegistryService:
    """The registry worker in a background thread of this process (no Faust, no group).

    It reads every command partition from the beginning (commands already
    answered produce nothing), so it needs no stored position. Meant for
    notebooks, scripts and tests; ``modelog worker`` / ``modelog up`` run the
    Faust agent instead. Do not run both against the same deployment: each
    assumes it is the only writer of the registry.

    Parameters
    ----------
    settings
        Deployment settings; default ``Settings.from_env()``.
    poll_interval
        Seconds to wait for commands per loop.

    Examples
    --------
    >>> with RegistryService(settings) as registry:                  # doctest: +SKIP
    ...     client.register_model("churn", model)
    1
    """

    def __init__(self, settings: Settings | None = None, *, poll_interval: float = 0.1) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self.poll_interval = poll_interval
        self.processor = RegistryProcessor(Topics.from_settings(self.settings))
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RegistryService:
        """Connect and start the thread; raises ``BrokerUnavailableError`` if no broker answers."""
        from modelog.streams.topics import ensure_topics

        if self._thread is not None:
            return self
        ensure_topics(self.settings)
        follower = _Follower(self.settings, self.processor)
        follower.catch_up()
        commands = LogTail(self.settings, self.processor.topics.registry_commands)
        producer = new_producer(self.settings, client_id="modelog-registry", linger_ms=0)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(follower, commands, producer),
            name="modelog-registry", daemon=True)
        self._thread.start()
        return self

    def _run(self, follower: _Follower, commands: LogTail, producer: Any) -> None:
        topic = self.processor.topics.registry_commands
        try:
            while not self._stop.is_set():
                batch = commands.poll(self.poll_interval)
                if not batch:
                    continue
                follower.catch_up()
                for partition, offset, key, value in batch:
                    for rec in self.processor.process(key, value, topic, partition, offset):
                        producer.produce(rec.topic, rec.value, rec.key,
                                         headers=rec.headers or None)
                        if producer.flush(30.0):
                            raise StreamsError(
                                f"the broker did not acknowledge a registry answer on "
                                f"{rec.topic} within 30 s; the registry service stopped")
                        if rec.event is not None:
                            self.processor.observe(rec.event)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
        finally:
            commands.close()
            follower.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; re-raises an error that stopped it (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout)
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> RegistryService:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
