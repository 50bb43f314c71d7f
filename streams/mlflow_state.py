"""The MLflow endpoint's live state: the log folded in memory, plus the server's own writes at once.

:class:`MlflowState` owns a :class:`~modelog.models.mlflow_fold.MlflowFold`.
On :meth:`MlflowState.start` it reads the ``runs`` topic and the registry
(verified answers only, :class:`~modelog.streams.registry_agent.RegistryFollower`)
to their ends, then a background thread keeps following both, so what the
SDK, other servers or the registry worker write shows up within a poll.

**Read-your-writes.** Every write the server makes is queued, flushed until
the broker acknowledged it (``acks=all``) and *then* folded in at once, so an
MLflow client that reads back right after writing (``get_run`` after
``create_run``) sees its write without waiting for any projector; when the
same event comes back from the log, the fold ignores it (by event id). The
event path is never slowed: nothing waits on DuckDB. Registry commands go
through the registry's single writer (:meth:`Client.send_command`), and the
answer it returns is folded in the same way.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from modelog.config import Settings
from modelog.models import codec
from modelog.models.errors import EventDecodeError, EventValidationError
from modelog.models.events import Event
from modelog.models.mlflow_fold import MlflowFold
from modelog.streams.errors import (
    BufferFullError,
    DeliveryError,
    MlflowApiError,
    RegistryTimeoutError,
)

__all__ = ["MlflowState"]

log = logging.getLogger(__name__)


class MlflowState:
    """The fold the endpoint answers from, and the one door its writes go out by.

    Parameters
    ----------
    settings
        Broker, topics, data directory (artifacts).
    poll_interval
        Seconds the follower waits for new records per poll.
    """

    def __init__(self, settings: Settings, *, poll_interval: float = 0.2) -> None:
        from modelog.streams.sdk import connect

        self.settings = settings
        self.fold = MlflowFold()
        self.lock = threading.RLock()
        self.poll_interval = poll_interval
        self.client = connect(settings=settings, producer_name=f"mlflow-server@{_host()}")
        self.artifacts = self.client.artifacts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tail: Any = None
        self._registry: Any = None
        self._write_lock = threading.Lock()
        #: Held from "does the name exist / which id is next" to the write that creates it.
        self.creating = threading.Lock()
        self._registry_lock = threading.Lock()  # the follower's consumers are not thread-safe
        self._answered = threading.Condition(self.lock)
        self._waiting: dict[str, Event | None] = {}

    # -- following the log -------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> MlflowState:
        """Read the runs topic and the registry to their ends, then follow them in a thread."""
        from modelog.streams.logtail import LogTail
        from modelog.streams.registry_agent import RegistryFollower

        self._tail = LogTail(self.settings, self.client.topics.runs)
        self._registry = RegistryFollower(self.settings)
        records = self._tail.read_to_end(timeout)
        answers = self._registry.read_to_end(timeout)
        with self.lock:
            self._fold_records(records)
        self._take(answers)
        self._thread = threading.Thread(target=self._follow, name="mlflow-follower",
                                        daemon=True)
        self._thread.start()
        return self

    def _fold_records(self, records: list[Any]) -> None:
        for _, _, _, value in records:
            try:
                event = codec.decode(value)
            except EventDecodeError:
                continue  # the projector dead-letters it; nothing for MLflow to show
            self.fold.apply(event)

    def _take(self, answers: list[Any]) -> None:
        """Fold verified registry answers; wake the requests waiting for them."""
        if not answers:
            return
        with self._answered:
            for event in answers:
                self.fold.apply(event)
                command_id = getattr(event, "command_id", None)
                if command_id in self._waiting:
                    self._waiting[command_id] = event
            self._answered.notify_all()

    def _pump(self) -> None:
        """Take what arrived on the registry topics now (no waiting)."""
        with self._registry_lock:
            answers = self._registry.poll() if self._registry is not None else []
        self._take(answers)

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                records = self._tail.poll(self.poll_interval)
                if records:
                    with self.lock:
                        self._fold_records(records)
                self._pump()
            except Exception:  # a broker hiccup: librdkafka reconnects, try again
                log.exception("mlflow-server: following the log failed; retrying")
                self._stop.wait(1.0)

    def catch_up(self, timeout: float = 10.0) -> None:
        """Fold everything on the registry up to its end now (what others registered)."""
        with self._registry_lock:
            answers = self._registry.read_to_end(timeout) if self._registry is not None else []
        self._take(answers)

    def stop(self) -> None:
        """Stop following and close the producer (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        with self._registry_lock:
            for closable in (self._tail, self._registry):
                if closable is not None:
                    closable.close()
            self._tail = self._registry = None
        if not self.client.closed:
            self.client.close(timeout=10.0)

    # -- writing -----------------------------------------------------------------------
    def write(self, *events: Event) -> None:
        """Validate, send and await the broker's acknowledgement of ``events``; then fold them.

        Raises
        ------
        MlflowApiError
            ``INVALID_PARAMETER_VALUE`` when an event breaks modelog's event rules
            (the message names field, value and rule); ``TEMPORARILY_UNAVAILABLE``
            (503) when the broker did not acknowledge in time.
        """
        try:
            for event in events:
                codec.validate(event)
        except EventValidationError as exc:
            raise MlflowApiError("INVALID_PARAMETER_VALUE", str(exc)) from None
        with self._write_lock:
            try:
                for event in events:  # validated above: skip the client's second check
                    self.client._producer.send_event(event)
                self.client.flush()
            except (DeliveryError, BufferFullError) as exc:
                raise MlflowApiError(
                    "TEMPORARILY_UNAVAILABLE", f"the broker did not acknowledge the write ({exc}); "
                    "it stays queued and is retried -- read it back before writing it again",
                    503) from None
        with self.lock:
            for event in events:
                self.fold.apply(event)

    def command(self, command: Any, timeout: float = 30.0) -> Event:
        """Send a registry command to the single writer; return its verified answer, folded.

        The answer is read by the server's own registry follower (only the registry
        worker's answers to recorded commands count), so a command costs no new
        consumer.

        Raises
        ------
        RegistryTimeoutError
            No registry worker answered within ``timeout`` seconds.
        """
        codec.validate(command)
        cid = command.command_id
        with self.lock:
            self._waiting[cid] = None
        try:
            with self._write_lock:
                self.client._producer.send_event(command)
                self.client.flush(max(timeout, 10.0))
            deadline = time.monotonic() + timeout
            while True:
                self._pump()
                with self._answered:
                    answer = self._waiting[cid]
                    if answer is None and time.monotonic() < deadline:
                        self._answered.wait(0.02)
                        answer = self._waiting[cid]
                if answer is not None:
                    return answer
                if time.monotonic() > deadline:
                    raise RegistryTimeoutError(
                        f"no registry worker answered within {timeout:g} s: is `modelog worker` "
                        f"(or `modelog up`) running against {self.settings.bootstrap_servers}? "
                        f"The command {cid} stays on the log and is answered when one starts.")
        finally:
            with self.lock:
                self._waiting.pop(cid, None)

    def new(self, cls: type[Any], aggregate: str, **fields: Any) -> Any:
        """A new event of ``cls`` with the envelope filled in (not yet written)."""
        time = fields.pop("time", None) or codec.utcnow()
        return cls(id=self.client.new_id(), time=time, aggregate=aggregate,
                   producer=self.client.settings.producer_name or "mlflow-server", **fields)

    @contextmanager
    def reading(self) -> Iterator[MlflowFold]:
        """The fold, locked against the follower while a request reads it."""
        with self.lock:
            yield self.fold


def _host() -> str:
    import socket

    return socket.gethostname()
