"""The projector: follows every topic and projects it, exactly once, into DuckDB.

This module is the Kafka side of projection. It reads every event topic plus
the dead-letter topic with a plain assigned consumer (no group join), turns each
batch of records into a :class:`~modelog.store.ledger.Batch`
(:func:`~modelog.store.ledger.build_batch`, pure), copies records that do not
decode unchanged to the dead-letter topic -- flushed before the batch commits --
and hands the batch to the :class:`~modelog.store.recorder.Recorder`, which
writes the events, what derives from them and the positions in ONE DuckDB
transaction. Positions live with the rows, so a crash anywhere resumes exactly
where the last committed batch ended (offsets are also committed to Kafka
under the group ``<prefix>projector``, for lag monitoring only).

The embedded broker forgets everything on restart while DuckDB remembers. The
projector stores the cluster id with each position; a different cluster id, or
a position beyond the partition's end, restarts that partition from the
beginning (event ids make the replay harmless) with a warning
(:func:`modelog.streams.kafka.resume_offset`).

Throughput: :meth:`Projector.project` (what :meth:`Projector.run` uses) reads
and decodes in a child process while this one writes the previous batch:
decoding is GIL-bound Python and DuckDB's Python binding needs the GIL between
its tasks, so threads would serialize. :meth:`Projector.project_once` does the
same synchronously in this process.

Where the time goes (``modelog bench``, CPU per event, 2 cores shared with the
broker): the reader process ~6.5 µs -- consuming ~1.5, decoding and validating
~1.8, the canonical re-encode ~0.7, the rest building Arrow columns and
shipping them -- and the writer ~7 µs: appending to the ledger (its primary
key included) ~0.8, deriving ``predictions`` ~1.3, and the commit ~4.4. The
reader warms up (pyarrow's lazy pandas import) before it reports ready and
keeps the garbage collector away from its short-lived objects. Building the
``predictions`` rows in the reader instead was tried: it cost the reader more
than it saved the writer.

May import ``modelog.config``, ``modelog.models``, ``modelog.store`` and ``modelog.streams``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb

from modelog.config import Settings
from modelog.store.errors import ProjectorError
from modelog.store.ledger import (
    Batch,
    build_batch,
)
from modelog.store.query_server import PROJECTOR_RUNTIME_FILE
from modelog.store.recorder import Recorder
from modelog.streams.kafka import (
    ErrorPolicy,
    resume_offset,
)
from modelog.streams.projector_reader import (
    ReaderProcess,
    dead_letter,
    projector_consumer,
    projector_dead_letter_producer,
)
from modelog.streams.signals import stop_on_signal
from modelog.streams.topics import Topics, ensure_topics

__all__ = ["Projector", "ProjectorProgress"]

log = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class ProjectorProgress:
    """Counts reported to the progress callback after each batch (or rebuild step).

    Attributes
    ----------
    phase
        ``"project"`` or ``"rebuild"``.
    records
        Records consumed so far (``project``) or events re-derived (``rebuild``).
    events
        Distinct events appended to the ledger so far (duplicates not counted).
    dead_lettered
        Records this projector copied to the dead-letter topic so far.
    batches
        Batches committed so far.
    last_batch
        Records in the latest batch.
    """

    phase: str
    records: int
    events: int
    dead_lettered: int
    batches: int
    last_batch: int


ProgressCallback = Callable[[ProjectorProgress], None]


class Projector:
    """Project every modelog topic into the DuckDB file of ``settings``, exactly once.

    Parameters
    ----------
    settings
        Broker, topic prefix and data directory (the file is ``settings.duckdb_path``).
    batch_size
        Most records per DuckDB transaction.
    batch_timeout
        Seconds to wait for a batch to fill.
    discovery_interval
        Seconds between checks for new topics and partitions (and a new cluster).
    serve
        Start the read-only query server and write ``projector.json``.
    progress
        Called with a :class:`ProjectorProgress` after every batch.
    max_query_rows, query_timeout
        Limits of the query server.
    db_threads
        DuckDB worker threads (``None``: DuckDB's default, one per core). One
        leaves the other cores to the reader process of :meth:`project`; the
        query server's queries share them.

    Nothing is opened by the constructor: :meth:`start` (called by :meth:`run`
    and :meth:`project_once`) connects; :meth:`rebuild` needs only the file.

    Examples
    --------
    >>> from pathlib import Path
    >>> from modelog.config import Settings
    >>> p = Projector(Settings(data_dir=Path("/tmp/modelog-doc")), batch_size=5_000)
    >>> p.batch_size
    5000
    """

    def __init__(
        self,
        settings: Settings,
        *,
        batch_size: int = 10_000,
        batch_timeout: float = 0.2,
        discovery_interval: float = 5.0,
        serve: bool = True,
        progress: ProgressCallback | None = None,
        max_query_rows: int = 1_000_000,
        query_timeout: float = 60.0,
        db_threads: int | None = 1,
    ) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.discovery_interval = discovery_interval
        self.serve = serve
        self.progress = progress
        self.max_query_rows = max_query_rows
        self.query_timeout = query_timeout
        self.db_threads = db_threads
        self.recorder = Recorder(settings.duckdb_path, db_threads=db_threads)
        self._consumer: Any = None
        self._producer: Any = None
        self._errors = ErrorPolicy("projector", ProjectorError)
        self._assigned: set[tuple[str, int]] = set()
        self._cluster_id: str | None = None
        self._next_discovery = 0.0
        self._records = 0
        self._events = 0
        self._dead_lettered = 0
        self._batches = 0
        self._kafka_offsets: dict[tuple[str, int], int] = {}  # written, not yet committed
        self._reader: ReaderProcess | None = None

    # -- lifecycle ---------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.settings.duckdb_path

    @property
    def runtime_file(self) -> Path:
        return self.settings.data_dir / PROJECTOR_RUNTIME_FILE

    @property
    def query_url(self) -> str | None:
        """URL of the query server, while it runs."""
        return self.recorder.query_url

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The writer connection (opens the file on first use)."""
        return self.recorder.connection

    def start(self) -> Projector:
        """Open DuckDB, create topics, assign partitions and start the query server."""
        if self._consumer is not None:
            return self
        self.recorder.connection  # noqa: B018 - open the file first: it may be locked
        ensure_topics(self.settings)
        self._consumer = projector_consumer(self.settings)
        self._producer = projector_dead_letter_producer(self.settings)
        self._sync_assignment()
        if self.serve:
            self.recorder.serve(self.settings.query_bind, self.runtime_file,
                                max_rows=self.max_query_rows, timeout=self.query_timeout,
                                token=self.settings.query_token)
        return self

    def close(self) -> None:
        """Stop serving and the reader process, remove ``projector.json``, close the
        consumer and the file."""
        self._stop_reader()
        self.recorder.stop_serving()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None
        self._assigned = set()
        self.recorder.close()

    def __enter__(self) -> Projector:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- partitions --------------------------------------------------------
    def _sync_assignment(self) -> None:
        """Assign partitions not yet followed; start over when the cluster changed."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            metadata = self._consumer.list_topics(timeout=10)
        except KafkaException as exc:
            self._errors.transient("metadata", f"cannot read broker metadata ({exc})")
            return
        cluster_id = metadata.cluster_id
        if self._cluster_id is not None and cluster_id != self._cluster_id and self._assigned:
            log.warning(
                "projector: the broker's cluster id changed (%s -> %s); its log was replaced, "
                "re-reading every partition from the beginning (event ids deduplicate)",
                self._cluster_id, cluster_id,
            )
            if self._reader is not None:
                self._reader.reset()
            else:
                self._consumer.unassign()
            self._assigned = set()
        self._cluster_id = cluster_id
        stored = self.recorder.stored_positions()
        new: list[Any] = []
        restarted: list[tuple[str, int]] = []
        for topic in self.topics.all():
            tmeta = metadata.topics.get(topic)
            if tmeta is None or tmeta.error is not None:
                continue
            for partition in sorted(tmeta.partitions):
                tp = (topic, partition)
                if tp in self._assigned:
                    continue
                start = resume_offset(self._consumer, self.settings, tp, stored.get(tp),
                                      cluster_id, service="projector")
                if start is None:
                    restarted.append(tp)
                    new.append(TopicPartition(topic, partition, self._low_watermark(tp)))
                else:
                    new.append(TopicPartition(topic, partition, start))
                self._assigned.add(tp)
        if restarted:
            self.recorder.restart(restarted, cluster_id)
        if new and self._reader is not None:
            self._reader.assign([(tp.topic, tp.partition, tp.offset) for tp in new])
        elif new:
            self._consumer.incremental_assign(new)
            log.info("projector: following %d new partitions", len(new))

    def _low_watermark(self, tp: tuple[str, int]) -> int:
        """The first offset of ``tp``, to start reading it from the beginning.

        An actual offset starts fetching at once; librdkafka resolves the logical
        ``OFFSET_BEGINNING`` on a ~0.5 s timer first.
        """
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        try:
            low, _high = self._consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10)
        except KafkaException:
            return int(OFFSET_BEGINNING)
        return int(low)

    # -- projecting --------------------------------------------------------
    def project_once(self, max_records: int | None = None, timeout: float | None = None) -> int:
        """Consume one batch and commit it; return the number of records consumed.

        Synchronous and in this process: when it returns, the batch is in
        DuckDB. :meth:`project` is the fast, pipelined loop.

        Parameters
        ----------
        max_records
            Most records to consume (default ``batch_size``).
        timeout
            Seconds to wait for records (default ``batch_timeout``).
        """
        from confluent_kafka import KafkaException

        self.start()
        if self._reader is not None:
            self._stop_reader()
        self._maybe_sync_assignment()
        try:
            messages = self._consumer.consume(
                num_messages=max_records or self.batch_size,
                timeout=self.batch_timeout if timeout is None else timeout,
            )
        except KafkaException as exc:
            raise ProjectorError(f"consuming from {self.settings.bootstrap_servers} failed: "
                                 f"{exc}") from None
        good = self._errors.records(messages)
        if not good:
            return 0
        batch = build_batch(good, self.topics.dead_letter)
        dead_letter(self._producer, self.topics.dead_letter, batch.invalid)
        self._write(batch)
        self._commit_kafka_offsets()
        return batch.records

    def start_reader(self) -> Projector:
        """Start the reader process :meth:`project` uses (it needs ~1 s to import).

        :meth:`project` starts it when needed; call this first to start it ahead.
        """
        self._ensure_reader()
        return self

    def _ensure_reader(self) -> ReaderProcess:
        self.start()
        if self._reader is None:
            reader = ReaderProcess(self.settings, self.topics.dead_letter, self.batch_size,
                                    self.batch_timeout)
            self._consumer.unassign()  # from now on the reader process fetches ...
            handover = self._handover()
            if handover:  # ... from where the last written batch ended
                reader.assign(handover)
            self._reader = reader
        return self._reader

    def _handover(self) -> list[tuple[str, int, int]]:
        """The followed partitions with their stored positions (where to go on reading)."""
        from confluent_kafka import OFFSET_BEGINNING

        stored = self.recorder.stored_positions()
        return [(t, p, stored[(t, p)].next_offset if (t, p) in stored else OFFSET_BEGINNING)
                for t, p in sorted(self._assigned)]

    def project(self, stop: threading.Event) -> None:
        """Project until ``stop`` is set, decoding the next batch while this one is written.

        A reader process (:meth:`start_reader`) consumes, validates, decodes and
        dead-letters, off this process's GIL, and hands over whole batches
        (Arrow tables plus their positions) through a pipe that holds a batch
        or two, so it runs at most that far ahead (backpressure). This
        process writes them in order, each in one transaction with its
        positions: the guarantees of :meth:`project_once` hold, and on return
        every batch received is written. The projector stays open
        (:meth:`run` closes it); the reader process stops.

        Raises
        ------
        ProjectorError
            When consuming, dead-lettering or writing failed; nothing after the
            last written batch counts as projected, a restart resumes there.
        """
        reader = self._ensure_reader()
        try:
            while not stop.is_set():
                self._maybe_sync_assignment()
                batch = reader.receive(self.batch_timeout)
                if batch is None:
                    continue
                self._dead_lettered += len(batch.invalid)  # already on the dead-letter topic
                self._write(batch)
                self._commit_kafka_offsets()
        finally:
            self._stop_reader()

    def _stop_reader(self) -> None:
        from confluent_kafka import TopicPartition

        if self._reader is not None:
            self._reader.close()
            self._reader = None
            if self._consumer is not None:  # this process reads on, from the stored positions
                handover = self._handover()
                if handover:
                    self._consumer.assign([TopicPartition(*tp) for tp in handover])

    def _maybe_sync_assignment(self) -> None:
        now = time.monotonic()
        if now >= self._next_discovery:
            self._sync_assignment()
            self._next_discovery = now + self.discovery_interval

    def _write(self, batch: Batch) -> None:
        """Write one batch and its positions in a single transaction, then report progress."""
        added = self.recorder.write(batch, self._cluster_id)
        for tp, offset in batch.positions.items():
            self._kafka_offsets[tp] = max(offset, self._kafka_offsets.get(tp, 0))
        self._records += batch.records
        self._events += added
        self._batches += 1
        if self.progress is not None:
            self.progress(ProjectorProgress(
                "project", self._records, self._events, self._dead_lettered, self._batches,
                batch.records,
            ))

    def _commit_kafka_offsets(self) -> None:
        """Commit the written positions to Kafka too (for lag monitoring only)."""
        from confluent_kafka import KafkaException, TopicPartition

        offsets, self._kafka_offsets = self._kafka_offsets, {}
        if offsets and self._consumer is not None:
            with contextlib.suppress(KafkaException):
                self._consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    asynchronous=True,
                )

    def run(self, stop: threading.Event | None = None) -> None:
        """Project with :meth:`project` until ``stop`` is set (or SIGTERM/Ctrl-C in the
        main thread), then close."""
        stop = stop or threading.Event()
        started = threading.Event()
        try:
            with stop_on_signal(stop, started):
                self.start()
                started.set()
                log.info("projector: projecting into %s, queries on %s", self.db_path,
                         self.query_url)
                self.project(stop)
        except KeyboardInterrupt:
            log.info("projector: interrupted, stopping")
        finally:
            self.close()

    def rebuild(self) -> int:
        """Drop the derived tables and views and re-derive them from the ``events`` ledger.

        Needs no broker. Returns the number of events in the ledger.
        """
        n = self.recorder.rebuild()
        if self.progress is not None:
            self.progress(ProjectorProgress("rebuild", n, n, 0, 1, n))
        return n

    def stats(self) -> dict[str, int]:
        """Counters since this projector started."""
        return {"records": self._records, "events": self._events,
                "dead_lettered": self._dead_lettered, "batches": self._batches}

