"""The registry worker: the single writer that answers registry commands.

Registering a version, moving an alias and setting a traffic policy are
*commands* (:class:`~modelog.models.events.ModelVersionRequested`,
:class:`~modelog.models.events.AliasChangeRequested`,
:class:`~modelog.models.policy_events.TrafficPolicyRequested`) on the
``registry-commands`` topic. Their answers (``ModelVersionRegistered``,
``AliasSet``, ``AliasRemoved``, ``AliasChangeRejected``, ``TrafficPolicySet``,
``TrafficPolicyRejected``) are decided by the pure functions of
:mod:`modelog.models.registry` and :mod:`modelog.models.traffic` against the registry state
and written to the ``registry`` topic. Both topics are keyed by the model name
and have the same partition count, so whoever consumes command partition *p*
is the only writer of the models of registry partition *p*: version numbers
are dense and alias changes are serialized per model.

The pieces:

* :class:`RegistryRouter` -- raw command record in, records to write out (the
  answer, or a dead-letter copy of a malformed record); the decision is the
  pure :class:`~modelog.models.registry.RegistryDecider`, which keeps the
  :class:`~modelog.models.registry.RegistryState` in memory. What it folds
  from the registry topic goes through the verified fold first
  (:class:`~modelog.models.registry_fold.RegistryFold`): only its own answers
  to recorded commands count, and a forged record is dead-lettered with the
  reason.
* :class:`RegistryFollower` -- follows the registry *and* the commands topic
  and returns only verified answers (registry topic first, then the commands
  up to their end, so every legitimate answer read has its command): what the
  registry worker, the monitoring loop and the SDK's registry reads use.
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
>>> proc = RegistryRouter(Topics("acme."))
>>> cmd = ModelVersionRequested(
...     id="c-1", time=dt.datetime(2026, 3, 3, tzinfo=dt.timezone.utc), aggregate="churn",
...     command_id="c-1", model="churn", flavor="sklearn")
>>> [out] = proc.route(b"churn", codec.encode(cmd), "acme.registry-commands", 0, 0)
>>> out.topic, out.key, out.event.model_version
('acme.registry', b'churn', 1)
>>> proc.observe(out.event)
>>> proc.route(b"churn", codec.encode(cmd), "acme.registry-commands", 0, 1)  # redelivered
[]
>>> [bad] = proc.route(b"churn", b"{oops", "acme.registry-commands", 0, 2)
>>> bad.topic, bad.value
('acme.dead-letter', b'{oops')
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from modelog.config import Settings
from modelog.models import codec
from modelog.models.errors import EventDecodeError
from modelog.models.events import Event
from modelog.models.registry import (
    ANSWERS,
    COMMANDS,
    RegistryDecider,
    RegistryEvent,
    RegistryState,
)
from modelog.models.registry_fold import RegistryFold
from modelog.streams.errors import StreamsError
from modelog.streams.kafka import Outgoing, dead_letter_copy, decode_or_dead_letter, new_producer
from modelog.streams.logtail import LogTail, RawRecord, decode_records
from modelog.streams.topics import Topics

__all__ = [
    "CONSUMER_NAME",
    "LogTail",
    "RawRecord",
    "RecordSource",
    "RegistryFollower",
    "RegistryRouter",
    "RegistryService",
    "decode_records",
    "register_agents",
]

CONSUMER_NAME = "registry"
"""The consumer name written in dead-letter headers."""


class RegistryRouter:
    """The registry's record edge: raw command records in, records to write out.

    Decodes each record of the ``registry-commands`` topic; a record that does
    not decode, is not a command, or is not keyed by its model goes to the
    dead-letter topic with the reason. Commands go to the pure
    :class:`~modelog.models.registry.RegistryDecider`, whose answer is encoded
    for the ``registry`` topic, keyed by the model.

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
    decider
        The :class:`~modelog.models.registry.RegistryDecider` (its ``state`` is
        the registry folded from the log plus every answer :meth:`observe` saw).
    """

    def __init__(
        self,
        topics: Topics,
        *,
        require_reason_for: frozenset[str] = frozenset({"production"}),
        clock: Callable[[], Any] = codec.utcnow,
    ) -> None:
        self.topics = topics
        self.decider = RegistryDecider(require_reason_for=require_reason_for, clock=clock)
        self.verifier = RegistryFold(require_reason_for=require_reason_for)
        self.dead_lettered = 0

    @property
    def state(self) -> RegistryState:
        """The registry as folded so far."""
        return self.decider.state

    @property
    def decided(self) -> int:
        """Commands answered so far."""
        return self.decider.decided

    def observe(self, event: Event, source: object = None) -> None:
        """Fold an event of either registry topic (or an answer once it is acknowledged).

        It is verified first (:attr:`verifier`): only answers to recorded
        commands that repeat the decision reach the decider.
        """
        self.accept(self.verifier.feed(event, source))

    def accept(self, answers: list[RegistryEvent]) -> None:
        """Fold answers the verifier accepted into the decider."""
        for answer in answers:
            self.decider.process(answer)

    def dead_letters(self) -> list[Outgoing]:
        """Dead-letter copies of the registry records the verifier refused since the last call."""
        out: list[Outgoing] = []
        for refused in self.verifier.take_unverified():
            src = refused.source
            if isinstance(src, RecordSource):
                out.append(self._dead_letter(src.key, src.value,
                                             f"not a registry fact: {refused.reason}",
                                             src.topic, src.partition, src.offset))
        return out

    def route(
        self, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int
    ) -> list[Outgoing]:
        """The records to write for one command record: its answer, a dead letter, or nothing.

        Nothing is returned when the answer is already in the state (a
        redelivered command). The answer is not folded into the state here:
        call :meth:`observe` with ``record.event`` once the broker acknowledged it.
        """
        decoded = decode_or_dead_letter(value, key, topic=topic, partition=partition,
                                        offset=offset, dead_letter_topic=self.topics.dead_letter,
                                        consumer=CONSUMER_NAME)
        if isinstance(decoded, Outgoing):
            self.dead_lettered += 1
            return [decoded]
        raw = value or b""
        if not isinstance(decoded, COMMANDS):
            reason = (f"{decoded.type_name()} does not belong on the registry-commands topic; "
                      "the registry worker reads only ModelVersionRequested, "
                      "AliasChangeRequested and TrafficPolicyRequested")
            return [self._dead_letter(key, raw, reason, topic, partition, offset)]
        if key is not None and key != decoded.model.encode():
            reason = (f"key {key!r} is not the model name {decoded.model!r}: registry commands "
                      "must be keyed by their model, so one worker owns each model")
            return [self._dead_letter(key, raw, reason, topic, partition, offset)]
        self.accept(self.verifier.command(decoded))
        return [Outgoing(self.topics.registry, answer.aggregate.encode(), codec.encode(answer),
                         event=answer) for answer in self.decider.process(decoded)]

    def _dead_letter(self, key: bytes | None, value: bytes, reason: str, topic: str,
                     partition: int, offset: int) -> Outgoing:
        self.dead_lettered += 1
        return dead_letter_copy(self.topics.dead_letter, key, value, reason, topic=topic,
                                partition=partition, offset=offset, consumer=CONSUMER_NAME)


@dataclasses.dataclass(frozen=True, slots=True)
class RecordSource:
    """Where a registry record was read (to dead-letter it unchanged)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class RegistryFollower:
    """Follows the ``registry`` and ``registry-commands`` topics; returns verified answers only.

    Every record goes through a :class:`~modelog.models.registry_fold.RegistryFold`
    (:attr:`fold`): an answer counts only as the registry worker's decision of
    a recorded command. The registry topic is always read *before* the
    commands topic, so once the commands are read to their end every
    legitimate answer read has its command; what is still waiting then is
    refused (:meth:`~modelog.models.registry_fold.RegistryFold.settle`).
    Refused records collect in ``fold.unverified`` (with a :class:`RecordSource`).

    Parameters
    ----------
    settings
        Broker, topic prefix and security.
    fold
        The verified fold to feed (default: a new one).
    on_other
        Called with every other event decoded from the registry topic (e.g.
        ``OnlineModelCheckpointed``, which is not a registry answer: the
        caller checks it its own way). Default: such events are skipped.
    """

    def __init__(self, settings: Settings, fold: RegistryFold | None = None, *,
                 on_other: Callable[[Event], None] | None = None) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.fold = fold if fold is not None else RegistryFold()
        self.on_other = on_other
        self.undecodable = 0
        self._tails: tuple[LogTail, LogTail] | None = None

    def _open(self) -> tuple[LogTail, LogTail]:
        if self._tails is None:
            registry = LogTail(self.settings, self.topics.registry)
            try:
                self._tails = (registry, LogTail(self.settings, self.topics.registry_commands))
            except BaseException:
                registry.close()
                raise
        return self._tails

    def read_to_end(self, timeout: float = 30.0) -> list[RegistryEvent]:
        """Read both topics up to their ends now; the answers newly accepted, in fold order."""
        registry, commands = self._open()
        out = self._feed(registry, registry.read_to_end(timeout))
        out += self._feed(commands, commands.read_to_end(timeout))
        return out + self.fold.settle()

    def poll(self) -> list[RegistryEvent]:
        """What arrived on both topics (no waiting); the answers newly accepted.

        When an answer waits for its command, the commands topic is read to its
        end (rare: the worker writes answers after their commands).
        """
        registry, commands = self._open()
        out = self._feed(registry, registry.poll(0.0))
        out += self._feed(commands, commands.poll(0.0))
        if self.fold.pending:
            out += self._feed(commands, commands.read_to_end()) + self.fold.settle()
        return out

    def _feed(self, tail: LogTail, records: list[RawRecord]) -> list[RegistryEvent]:
        is_commands = tail.topic == self.topics.registry_commands
        out: list[RegistryEvent] = []
        for partition, offset, key, value in records:
            try:
                event = codec.decode(value)
            except EventDecodeError:
                self.undecodable += 1
                continue
            if isinstance(event, COMMANDS) != is_commands:
                continue  # a command is recorded only from the commands topic
            if not is_commands and self.on_other is not None and not isinstance(event, ANSWERS):
                self.on_other(event)
                continue
            out += self.fold.feed(event, RecordSource(tail.topic, partition, offset, key, value))
        return out

    def close(self) -> None:
        """Close both readers (idempotent)."""
        tails, self._tails = self._tails, None
        for tail in tails or ():
            tail.close()

    def __enter__(self) -> RegistryFollower:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _Follower:
    """Keeps a router's state caught up with both registry topics (lazily connected)."""

    def __init__(self, settings: Settings, processor: RegistryRouter) -> None:
        self.processor = processor
        self.follower = RegistryFollower(settings, processor.verifier)

    def catch_up(self) -> list[Outgoing]:
        """Fold what is new (verified); the dead letters of the refused records."""
        self.processor.accept(self.follower.read_to_end())
        return self.processor.dead_letters()

    def poll(self) -> list[Outgoing]:
        """Like :meth:`catch_up`, without waiting for the ends (for an idle loop)."""
        self.processor.accept(self.follower.poll())
        return self.processor.dead_letters()

    def close(self) -> None:
        self.follower.close()


# -- the Faust edge -------------------------------------------------------------------
def register_agents(app: Any, settings: Settings, *, batch_size: int = 100,
                    batch_within: float = 0.05, idle_check: float = 2.0) -> None:
    """Add the registry agent to a Faust app (idempotent: a second call adds nothing).

    The agent reads the ``registry-commands`` topic as raw bytes in batches;
    before each batch it folds what is new on the ``registry`` topic (the
    whole topic the first time; verified, refused records are dead-lettered),
    then decides each command, sends the answer
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
    idle_check
        Seconds between reads of the registry topic between commands (records
        there that are not the worker's answers are dead-lettered then).

    Notes
    -----
    The processor is at ``app.modelog_registry``.
    """
    if getattr(app, "modelog_registry", None) is not None:
        return
    topics = Topics.from_settings(settings)
    processor = RegistryRouter(topics)
    follower = _Follower(settings, processor)
    app.modelog_registry = processor

    def raw_topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")

    commands = raw_topic(topics.registry_commands)
    outputs = {topics.registry: raw_topic(topics.registry),
               topics.dead_letter: raw_topic(topics.dead_letter)}

    lock = asyncio.Lock()  # the follower and the processor serve one task at a time

    async def send(records: list[Outgoing]) -> None:
        for rec in records:
            pending = await outputs[rec.topic].send(
                key=rec.key, value=rec.value, headers=rec.headers or None, force=True)
            await pending  # acknowledged before the command counts as done
            if rec.event is not None:
                processor.observe(rec.event)

    @app.agent(commands, name=f"{topics.prefix}registry")  # type: ignore[untyped-decorator]
    async def registry_agent(stream: Any) -> None:
        async for batch in stream.take_events(batch_size, within=batch_within):
            async with lock:
                await send(await asyncio.to_thread(follower.catch_up))
                for item in batch:
                    msg = item.message
                    await send(processor.route(msg.key, msg.value, msg.topic, msg.partition,
                                               msg.offset))

    @app.timer(interval=idle_check)  # type: ignore[untyped-decorator]
    async def _watch_registry() -> None:  # dead-letter forged records between commands too
        async with lock:
            await send(await asyncio.to_thread(follower.poll))

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
        self.processor = RegistryRouter(Topics.from_settings(self.settings))
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
        early = follower.catch_up()
        commands = LogTail(self.settings, self.processor.topics.registry_commands)
        producer = new_producer(self.settings, client_id="modelog-registry", linger_ms=0)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(follower, commands, producer, early),
            name="modelog-registry", daemon=True)
        self._thread.start()
        return self

    def _run(self, follower: _Follower, commands: LogTail, producer: Any,
             early: list[Outgoing]) -> None:
        topic = self.processor.topics.registry_commands
        try:
            self._send(producer, early)
            while not self._stop.is_set():
                batch = commands.poll(self.poll_interval)
                if not batch:  # idle: still watch the registry topic for forged records
                    self._send(producer, follower.poll())
                    continue
                self._send(producer, follower.catch_up())
                for partition, offset, key, value in batch:
                    for rec in self.processor.route(key, value, topic, partition, offset):
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

    @staticmethod
    def _send(producer: Any, records: list[Outgoing]) -> None:
        for rec in records:
            producer.produce(rec.topic, rec.value, rec.key, headers=rec.headers or None)
        if records and producer.flush(30.0):
            raise StreamsError("the broker did not acknowledge registry dead letters within "
                               "30 s; the registry service stopped")

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
