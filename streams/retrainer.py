"""The retrain runner: ``RetrainRequested`` in, one job per request, a candidate (or a reason) out.

:class:`Retrainer` (``modelog retrainer``) follows the monitoring topic and runs
one job per :class:`~modelog.models.events.RetrainRequested` with
:class:`~modelog.streams.retrain_run.JobRunner` -- each trainer in its own
process, with a timeout, at most ``concurrency`` at a time -- and reports how
each ended as a :class:`~modelog.models.events.RetrainJobEnded`.

Exactly once *in effect*, keyed by the request id:

* the job table (:class:`~modelog.store.retrain_jobs.JobTable`,
  ``<data_dir>/retrain.sqlite``) records a request together with the consumer
  positions that pass it; a redelivered or replayed request is no new job;
* a job is marked ``running`` before it starts; one found ``running`` at start
  was interrupted (``kill -9``, a crash) and is resumed (its old run is
  recorded failed, "interrupted"), at most ``max_attempts`` times; a job whose
  registry command got no answer (the registry agent is down) is retried the
  same way after ``retry_delay`` seconds;
* the candidate's registration command id is derived from the request id, and
  the registry answers a known command id with the version it already
  assigned: a resumed job never registers a second candidate;
* a job's end and its report are one transaction (an outbox re-sent at start).

Trainers come only from the runner's configuration (:func:`configured_trainers`:
``--trainer`` options, ``MODELOG_TRAINERS``, the ``modelog.trainers`` entry
points). :func:`request_retrain` (``modelog retrain``) asks for a retrain by
hand, through the same topic.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

from modelog.config import Settings
from modelog.models import codec
from modelog.models.errors import EventDecodeError
from modelog.models.events import RetrainRequested, Scalar, Window
from modelog.models.retrain_job import (
    ENTRY_POINT_GROUP,
    JobPolicy,
    TrainerRef,
    trainer_table,
)
from modelog.store.errors import StoreError
from modelog.store.retrain_jobs import JOB_TABLE_FILE, JobTable
from modelog.streams.errors import RegistryTimeoutError, RetrainerError
from modelog.streams.kafka import ErrorPolicy, new_consumer, resume_offset
from modelog.streams.retrain_run import PRODUCER, JobRunner
from modelog.streams.sdk import Client, connect
from modelog.streams.signals import stop_on_signal
from modelog.streams.topics import Topics, ensure_topics

__all__ = ["Retrainer", "configured_trainers", "request_retrain", "run_retrainer"]

log = logging.getLogger(__name__)


def configured_trainers(cli: Sequence[str] = (), env: Mapping[str, str] | None = None,
                        *, entry_points: bool = True) -> dict[str, TrainerRef]:
    """The runner's trainer table from ``--trainer`` values, ``MODELOG_TRAINERS`` and the
    ``modelog.trainers`` entry points of the installed packages (in that precedence)."""
    import os
    from importlib.metadata import entry_points as eps

    declared = [(ep.name, ep.value) for ep in eps(group=ENTRY_POINT_GROUP)] if entry_points \
        else []
    source = os.environ if env is None else env
    return trainer_table(cli, source.get("MODELOG_TRAINERS"), declared)


class Retrainer:
    """Follow retrain requests and run their jobs (see the module docstring).

    Parameters
    ----------
    settings
        Broker, topics, data directory (the job table lives there: one runner per
        data directory).
    trainers
        ``model -> trainer`` (:func:`configured_trainers`).
    policy
        Job defaults (minimum labelled rows, holdout share, metric, margin).
    timeout
        Seconds a trainer may run before its process is killed.
    concurrency
        Jobs running at once.
    max_attempts
        Times an interrupted job is started before it is recorded failed.
    io_retries, io_backoff
        A job's transient I/O failure (broker unavailable, query server not
        reachable or 5xx) is retried this many times with exponential backoff from
        ``io_backoff`` seconds before the job is recorded failed.
    label_wait
        Seconds a job waits for labelled traffic since its window's start when the
        window holds too little (see :mod:`modelog.store.retrain_window`).
    """

    def __init__(self, settings: Settings, trainers: Mapping[str, TrainerRef], *,
                 policy: JobPolicy | None = None, timeout: float = 600.0,
                 concurrency: int = 1, registry_timeout: float = 60.0,
                 max_attempts: int = 3, io_retries: int = 5,
                 io_backoff: float = 1.0, label_wait: float = 600.0) -> None:
        if concurrency < 1 or max_attempts < 1 or timeout <= 0:
            raise RetrainerError("concurrency and max_attempts must be at least 1 and the "
                                 "timeout positive")
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.trainers = dict(trainers)
        self.policy = policy or JobPolicy()
        self.timeout = timeout
        self.concurrency = concurrency
        self.registry_timeout = registry_timeout
        self.max_attempts = max_attempts
        self.io_retries = io_retries
        self.io_backoff = io_backoff
        self.label_wait = label_wait
        self._errors = ErrorPolicy("retrain runner", RetrainerError)
        self._lock = threading.Lock()
        self._active: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self.retry_delay = 30.0
        self._read_to: dict[tuple[str, int], int] = {}
        self._failure: BaseException | None = None
        self._cluster_id: str | None = None
        self._jobs: JobTable | None = None
        self._client: Client | None = None
        self._consumer: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self.runner: JobRunner | None = None

    @property
    def jobs(self) -> JobTable:
        if self._jobs is None:
            raise RetrainerError("the retrain runner is not started; call start() first")
        return self._jobs

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> Retrainer:
        """Open the job table, re-send reports, resume interrupted jobs, assign partitions."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            self._jobs = JobTable(self.settings.data_dir / JOB_TABLE_FILE)
        except StoreError as exc:
            raise RetrainerError(str(exc)) from exc
        ensure_topics(self.settings)
        self._client = connect(settings=self.settings.replace(producer_name=PRODUCER))
        self.runner = JobRunner(self._client, self.trainers, policy=self.policy,
                                timeout=self.timeout, registry_timeout=self.registry_timeout,
                                io_retries=self.io_retries, io_backoff=self.io_backoff,
                                label_wait=self.label_wait)
        self._consumer = new_consumer(self.settings, client_id="modelog-retrainer",
                                      group=f"{self.settings.topic_prefix}retrainer",
                                      fetch="tail")
        try:
            metadata = self._consumer.list_topics(timeout=10)
        except KafkaException as exc:
            self.close()
            raise RetrainerError(f"cannot read topics from {self.settings.bootstrap_servers} "
                                 f"({exc}); is the broker running?") from None
        self._cluster_id = metadata.cluster_id
        topic = self.topics.monitoring
        tmeta = metadata.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            self.close()
            raise RetrainerError(f"topic {topic} is missing on the broker")
        stored = self.jobs.positions()
        assignment, restarts = [], {}
        for partition in sorted(tmeta.partitions):
            tp = (topic, partition)
            offset = resume_offset(self._consumer, self.settings, tp, stored.get(tp),
                                   self._cluster_id, service="retrainer") or 0
            if offset == 0 and tp in stored:
                restarts[tp] = 0
            self._read_to[tp] = offset
            assignment.append(TopicPartition(topic, partition, offset))
        self._consumer.assign(assignment)
        if restarts:
            self.jobs.save_positions(restarts, self._cluster_id, reset=True)
        self._send_outbox()
        for request in self.jobs.interrupted():
            self.jobs.requeue(request.id)
            log.warning("retrainer: resuming the interrupted job of request %s (%s)",
                        request.id, request.model)
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="modelog-retrain")
        log.info("retrainer: trainers for %s; %d job(s) at a time, timeout %g s",
                 ", ".join(sorted(self.trainers)) or "no model", self.concurrency, self.timeout)
        return self

    def close(self) -> None:
        """Wait for running jobs, then close everything (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()
            self._consumer = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._jobs is not None:
            self._jobs.close()
            self._jobs = None

    def __enter__(self) -> Retrainer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- reading and dispatching -------------------------------------------------------------
    def poll_once(self, timeout: float = 0.5) -> int:
        """Read a batch of the monitoring topic, record new requests, start queued jobs.

        Returns the number of records read.

        Raises
        ------
        RetrainerError
            A job thread met a failure of the runner itself (job table, broker).
        """
        if self._failure is not None:
            raise RetrainerError(f"the retrain runner failed: {self._failure}; restart it "
                                 "(interrupted jobs are resumed)") from self._failure
        messages = self._errors.records(self._consumer.consume(200, timeout))
        requests: list[RetrainRequested] = []
        for msg in messages:
            tp = (msg.topic(), msg.partition())
            self._read_to[tp] = max(self._read_to.get(tp, 0), msg.offset() + 1)
            try:
                event = codec.decode(msg.value())
            except EventDecodeError:
                continue  # the worker and the projector dead-letter it
            if isinstance(event, RetrainRequested):
                requests.append(event)
        if messages:
            try:
                self.jobs.enqueue(requests, dict(self._read_to), self._cluster_id)
            except StoreError as exc:
                raise RetrainerError(str(exc)) from exc
        self._dispatch()
        return len(messages)

    def _dispatch(self) -> None:
        with self._lock:
            for request in self.jobs.queued():
                if len(self._active) >= self.concurrency:
                    break
                if request.id in self._active or \
                        self._retry_at.get(request.id, 0.0) > time.monotonic():
                    continue
                self._active.add(request.id)
                assert self._pool is not None
                self._pool.submit(self._run_job, request)

    @property
    def busy(self) -> int:
        """Jobs running now."""
        with self._lock:
            return len(self._active)

    def _run_job(self, request: RetrainRequested) -> None:
        try:
            job = self.jobs.get(request.id)
            if job is None or job.status != "queued":
                return
            assert self._client is not None and self.runner is not None
            if job.attempts >= self.max_attempts:
                report = self.runner.interrupted_too_often(request, job.attempts, job.run_ids)
            else:
                run = self._client.start_run(
                    f"retrain-{request.model}"[:128], name=f"retrain {request.model}",
                    tags={"retrain_request": request.id, "trigger_id": request.trigger_id or "",
                          "model": request.model, "reason": request.reason[:500]})
                job = self.jobs.start(request.id, run.run_id)
                report = self.runner.run(request, run, previous_runs=tuple(job.run_ids[:-1]))
            self.jobs.end(report, self.topics.monitoring)
            log.info("retrainer: request %s of %s ended %s: %s", request.id, request.model,
                     report.status, report.reason)
            self._send_outbox()
        except RegistryTimeoutError as exc:
            log.warning("retrainer: the job of request %s waits for the registry (%s); "
                        "retrying in %g s", request.id, exc, self.retry_delay)
            with self._lock:
                self._retry_at[request.id] = time.monotonic() + self.retry_delay
            self.jobs.requeue(request.id)
        except BaseException as exc:
            log.exception("retrainer: the job of request %s could not be recorded", request.id)
            self._failure = exc
        finally:
            with self._lock:
                self._active.discard(request.id)

    def _send_outbox(self) -> None:
        assert self._client is not None
        for event_id, _topic, _key, value in self.jobs.outbox():
            self._client.emit(codec.decode(value))
            self._client.flush()
            self.jobs.sent(event_id)

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set, SIGTERM or Ctrl-C."""
        stop = stop or threading.Event()
        with self, stop_on_signal(stop):
            try:
                while not stop.is_set():
                    self.poll_once(0.5)
            except KeyboardInterrupt:
                pass


def run_retrainer(settings: Settings, trainers: Mapping[str, TrainerRef],
                  stop: threading.Event | None = None, **options: Any) -> None:
    """Run the retrain runner until stopped (``modelog retrainer``); ``options`` go to
    :class:`Retrainer`."""
    Retrainer(settings, trainers, **options).run(stop)


def request_retrain(client: Client, model: str, *, start: dt.datetime | None = None,
                    end: dt.datetime | None = None, reason: str = "",
                    policy: Mapping[str, Scalar] | None = None) -> RetrainRequested:
    """Ask for a retrain of ``model`` by hand (``modelog retrain``); return the request sent.

    The request goes on the monitoring topic like the ones drift triggers, so the
    runner treats it the same way. ``policy`` may set ``min_labelled_rows``,
    ``holdout_share``, ``min_holdout_rows``, ``metric`` and ``margin``.
    """
    from modelog.streams.registry_client import default_actor

    actor = default_actor()
    now = codec.utcnow()
    request = RetrainRequested(
        id=client.new_id(), time=now, aggregate=model, producer=client.settings.producer_name,
        model=model, reason=reason or f"retrain requested by hand by {actor}",
        window=Window(start=start, end=end or now),
        policy={"trigger": "manual", "actor": actor, **(policy or {})})
    client.emit(request)
    client.flush()
    return request
