"""The projector's reader process: consumes, decodes and dead-letters off the writer's GIL.

:class:`ReaderProcess` runs in a fresh interpreter that consumes the topics,
builds :class:`~modelog.store.ledger.Batch` es, copies invalid records to the
dead-letter topic and hands whole batches to :class:`~modelog.streams.projector.Projector`
(Arrow IPC through a socket pair). Also the consumer and dead-letter helpers
both sides use.

May import ``modelog.config``, ``modelog.models``, ``modelog.store`` and ``modelog.streams``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from modelog.config import Settings
from modelog.store.errors import ProjectorError
from modelog.store.ledger import (
    LEDGER_SCHEMA,
    Batch,
    InvalidRecord,
    build_batch,
    read_table,
    table_bytes,
)
from modelog.streams.errors import DeliveryError
from modelog.streams.kafka import (
    ErrorPolicy,
    Outgoing,
    dead_letter_copy,
    new_consumer,
    new_producer,
    produce_and_wait,
)

__all__ = ["CONSUMER_NAME", "ReaderProcess", "dead_letter", "projector_consumer",
           "projector_dead_letter_producer"]

log = logging.getLogger("modelog.streams.projector")

CONSUMER_NAME = "projector"


# -- consuming (shared by the projector and its reader process) -------------------------
def projector_consumer(settings: Settings) -> Any:
    """The projector's consumer: assigned partitions, positions kept in DuckDB."""
    return new_consumer(settings, client_id="modelog-projector",
                        group=f"{settings.topic_prefix}projector", fetch="bulk")


def projector_dead_letter_producer(settings: Settings) -> Any:
    return new_producer(settings, client_id="modelog-projector-dlq", linger_ms=5)


def dead_letter(producer: Any, dead_letter_topic: str, invalid: Sequence[InvalidRecord]) -> None:
    """Copy ``invalid`` records unchanged to the dead-letter topic and wait for delivery.

    Raises
    ------
    ProjectorError
        When a copy was not delivered: the batch must then not be committed.
    """
    copies: list[Outgoing] = []
    for bad in invalid:
        log.warning("projector: %s[%d]@%d -> dead letter: %s", bad.topic, bad.partition,
                    bad.offset, bad.reason)
        copies.append(dead_letter_copy(dead_letter_topic, bad.key, bad.value or b"", bad.reason,
                                       topic=bad.topic, partition=bad.partition,
                                       offset=bad.offset, consumer=CONSUMER_NAME))
    try:
        produce_and_wait(producer, copies, what="the batch was not committed and will be "
                                                "retried when the projector restarts")
    except DeliveryError as exc:
        raise ProjectorError(f"could not write to {dead_letter_topic}: {exc}") from None


class ReaderProcess:
    """A child process that consumes, decodes and dead-letters for :meth:`Projector.project`.

    Decoding is CPU-bound Python: in its own process it holds no GIL that
    DuckDB's writes need. Commands go down the pipe (``assign``, ``reset``,
    ``stop``), batches come up: each a pickled :class:`Batch` without its
    events, then the events as an Arrow IPC stream. The pipe's buffers hold a
    batch or two, so the child is at most that far ahead of the writer. A ``reset``
    (the cluster changed) starts a new epoch: batches consumed before it are
    dropped unwritten. The child exits when the parent goes away.
    """

    def __init__(self, settings: Settings, dead_letter_topic: str, batch_size: int,
                 batch_timeout: float, start_timeout: float = 60.0) -> None:
        # A fresh interpreter (never fork librdkafka's or DuckDB's threads), started
        # without multiprocessing's re-import of the caller's __main__ module.
        ours, theirs = socket.socketpair()
        for sock in (ours, theirs):  # a batch is megabytes: move it in few system calls
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _PIPE_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _PIPE_BUFFER)
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _READER_ENTRY, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            )
        self._conn = Connection(ours.detach())
        self._epoch = 0
        self._conn.send((settings, dead_letter_topic, batch_size, batch_timeout))
        if not self._conn.poll(start_timeout):
            self.close()
            raise ProjectorError(f"the projector's reader process did not start within "
                                 f"{start_timeout:.0f} s; is the machine overloaded?")
        self._expect("ready")

    def _expect(self, kind: str) -> Any:
        try:
            msg = self._conn.recv()
        except (EOFError, OSError):
            raise ProjectorError(
                f"the projector's reader process exited (code {self._process.poll()}); "
                "see its log above, then restart the projector"
            ) from None
        if msg[0] == "error":
            raise ProjectorError(f"the projector's reader process failed: {msg[1]}")
        if msg[0] != kind:  # pragma: no cover - protocol bug
            raise ProjectorError(f"the reader process sent {msg[0]!r}, expected {kind!r}")
        return msg

    def assign(self, partitions: list[tuple[str, int, int]]) -> None:
        """Start consuming ``(topic, partition, offset)`` (``OFFSET_BEGINNING`` allowed)."""
        self._conn.send(("assign", partitions))

    def reset(self) -> None:
        """Stop consuming everything; batches already consumed are dropped."""
        self._epoch += 1
        self._conn.send(("reset", self._epoch))

    def receive(self, timeout: float) -> Batch | None:
        """The next batch of the current epoch, or ``None`` after ``timeout`` seconds."""
        if not self._conn.poll(timeout):
            return None
        _kind, epoch, batch = self._expect("batch")
        events = read_table(self._conn.recv_bytes())
        return dataclasses.replace(batch, events=events) if epoch == self._epoch else None

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child (it finishes the batch it is on) and wait for it."""
        with contextlib.suppress(OSError):
            self._conn.send(("stop",))
        deadline = time.monotonic() + timeout
        while self._process.poll() is None and time.monotonic() < deadline:
            try:  # unblock a child that is sending
                if self._conn.poll(0.05):
                    self._conn.recv_bytes()
            except (EOFError, OSError):
                break
        try:
            self._process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._conn.close()


_PIPE_BUFFER = 8 * 1024 * 1024
_EMPTY_LEDGER = LEDGER_SCHEMA.empty_table()


_READER_ENTRY = "from modelog.streams.projector_reader import _reader_entry; _reader_entry()"


def _reader_entry() -> None:
    """Entry point of the reader process: its socket's fd is ``sys.argv[1]``."""
    conn = Connection(int(sys.argv[1]))
    try:
        args = conn.recv()
    except EOFError:
        return
    _reader_main(conn, *args)


def _reader_main(conn: Any, settings: Settings, dead_letter_topic: str, batch_size: int,
                 batch_timeout: float) -> None:
    """Body of the reader process (see :class:`_ReaderProcess`)."""
    from confluent_kafka import KafkaException, TopicPartition

    # Ctrl-C and SIGTERM (to the process group) are the parent's to handle: it stops us
    # in order, after its last write; if it dies instead, our pipe closes and we exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    consumer = projector_consumer(settings)
    producer = projector_dead_letter_producer(settings)
    errors = ErrorPolicy("projector", ProjectorError)
    # Warm up before reporting ready: pyarrow imports pandas on its first conversion
    # (~0.3-1 s), which would otherwise delay the first batch.
    build_batch([], dead_letter_topic)
    # A batch is ~10^5 short-lived objects without cycles: the default thresholds
    # would scan them (and every module object) again and again, ~10% of the
    # reader's time. Modules go to the permanent generation; collect rarely.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    epoch, assigned = 0, False
    try:
        conn.send(("ready",))
        while True:
            while conn.poll(0 if assigned else 0.1):
                command = conn.recv()
                if command[0] == "stop":
                    return
                if command[0] == "assign":
                    consumer.incremental_assign(
                        [TopicPartition(t, p, o) for t, p, o in command[1]])
                    assigned = True
                elif command[0] == "reset":
                    consumer.unassign()
                    epoch, assigned = command[1], False
            if not assigned:
                continue
            try:
                messages = consumer.consume(num_messages=batch_size, timeout=batch_timeout)
            except KafkaException as exc:
                raise ProjectorError(f"consuming from {settings.bootstrap_servers} failed: "
                                     f"{exc}") from None
            good = errors.records(messages)
            if good:
                batch = build_batch(good, dead_letter_topic)
                dead_letter(producer, dead_letter_topic, batch.invalid)
                # the events follow as Arrow IPC: pickling a table costs ~5x more
                events = table_bytes(batch.events)
                conn.send(("batch", epoch, dataclasses.replace(batch, events=_EMPTY_LEDGER)))
                conn.send_bytes(events)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the projector went away
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", str(exc)))
    finally:
        with contextlib.suppress(Exception):
            consumer.close()
        producer.flush(5)
        gc.unfreeze()  # let the interpreter free the modules' objects at exit
