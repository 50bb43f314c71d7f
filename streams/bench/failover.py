"""Benchmark of the monitoring worker's failover (``modelog bench --failover`` prints it).

One worker process runs under a :class:`~modelog.streams.supervisor.Supervisor`
(as ``modelog up`` runs it: restarted after 1 s, monitoring consumer session
of 1 s) while serving traffic arrives at a steady rate. After ``history``
seconds of traffic the worker is killed with SIGKILL; the supervisor starts a
replacement, which joins the group, rebuilds the partitions' state from the
log (see :mod:`modelog.streams.serving_loop`) and resumes. The figure is the
time from the kill to the first record the replacement publishes on the
monitoring topic. It grows with the history to replay (the rebuild), so the
history is part of the report. Nothing is asserted.

May import ``modelog.config``, ``modelog.models`` and ``modelog.streams``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import os
import signal
import statistics
import sys
import threading
import time
from typing import Any

from modelog.config import Settings
from modelog.models import codec
from modelog.streams.bench.worker import serving_events
from modelog.streams.kafka import new_consumer, new_producer
from modelog.streams.supervisor import Supervisor
from modelog.streams.topics import Topics, ensure_topics

__all__ = ["MonitoringArrivals", "bench_failover", "format_report"]


class MonitoringArrivals:
    """Times (:func:`time.monotonic`) at which records arrive on ``topic`` (a watching thread).

    It reads every partition from the beginning; :meth:`close` stops it.
    """

    def __init__(self, settings: Settings, topic: str) -> None:
        from confluent_kafka import TopicPartition

        self.times: list[float] = []
        self._stop = threading.Event()
        self._consumer = new_consumer(settings, client_id="modelog-bench-failover",
                                      extra={"fetch.wait.max.ms": 10})
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(1_000, 0.05):
                if msg.error() is None:
                    self.times.append(time.monotonic())

    def first_after(self, t: float) -> float | None:
        """The first arrival after ``t`` (arrivals are appended in time order)."""
        times = self.times
        i = bisect.bisect_right(times, t)
        return times[i] if i < len(times) else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


class _Load:
    """Serving traffic (predictions of four models, each labelled) at ``rate`` records/s."""

    def __init__(self, settings: Settings, topic: str, rate: float) -> None:
        self.sent = 0
        self._topic = topic
        self._rate = rate
        self._producer = new_producer(settings, client_id="modelog-bench-failover", linger_ms=5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        gens = [serving_events(f"failover-{i}", 10**9, seed=i, start=t0) for i in range(4)]
        chunk = max(1, int(self._rate / 100))
        started = time.perf_counter()
        while not self._stop.is_set():
            for k in range(chunk):
                ev = next(gens[k % len(gens)])
                while True:
                    try:
                        self._producer.produce(self._topic, codec.encode(ev),
                                               ev.aggregate.encode())
                        break
                    except BufferError:
                        self._producer.poll(0.05)
            self._producer.poll(0)
            self.sent += chunk
            ahead = self.sent / self._rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._producer.flush(30)


def bench_failover(settings: Settings, *, rate: float = 2_000.0, history: float = 10.0,
                   rounds: int = 2, restart_delay: float = 1.0,
                   monitor_session_timeout: float = 1.0,
                   progress: Any = None) -> dict[str, Any]:
    """Kill a worker under load ``rounds`` times; seconds until its replacement publishes.

    Parameters
    ----------
    settings
        Broker, a topic prefix of its own and a data directory.
    rate
        Serving records per second (predictions and labels) during the whole run.
    history
        Seconds of traffic before the first kill, and between two kills.
    rounds
        How many times the worker is killed.
    restart_delay
        The supervisor's first restart delay (``modelog up`` uses 1 s).
    monitor_session_timeout
        The worker's ``--monitor-session-timeout`` (``modelog up`` passes 1 s).
    progress
        Called with a short message at each stage (e.g. ``print``).

    Returns
    -------
    dict
        ``failover_s`` (one figure per round), ``median_s``, ``max_s``,
        ``history_records`` (serving records in the log at each kill), ``rate``,
        ``restart_delay_s``, ``monitor_session_timeout_s``.
    """
    say = progress or (lambda _msg: None)
    ensure_topics(settings)
    topics = Topics.from_settings(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MODELOG_BROKER": settings.bootstrap_servers,
           "MODELOG_DATA_DIR": str(settings.data_dir),
           "MODELOG_TOPIC_PREFIX": settings.topic_prefix,
           "MODELOG_PARTITIONS": str(settings.partitions)}
    sup = Supervisor(initial_backoff=restart_delay, echo=say)
    arrivals = MonitoringArrivals(settings, topics.monitoring)
    load = _Load(settings, topics.serving, rate)
    log = settings.data_dir / "bench-failover-worker.log"
    figures: list[float] = []
    histories: list[int] = []
    try:
        started = time.monotonic()
        sup.start("worker", [sys.executable, "-m", "modelog", "worker",
                             "--monitor-session-timeout", f"{monitor_session_timeout:g}"],
                  env=env, log=log)
        _wait(lambda: arrivals.first_after(started) is not None, 120,
              f"the worker published nothing; see {log}", sup)
        say(f"worker up; {rate:,.0f} serving records/s")
        for _ in range(rounds):
            time.sleep(history)
            pid = sup.pid("worker")
            if pid is None:
                raise RuntimeError(f"the worker is not running; see {log}")
            histories.append(load.sent)
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            _wait(lambda old=pid: sup.pid("worker") not in (None, old), 60,
                  "the supervisor did not restart the worker", sup)
            replaced = time.monotonic()
            _wait(lambda since=replaced: arrivals.first_after(since) is not None, 120,
                  f"the replacement published nothing; see {log}", sup)
            first = arrivals.first_after(replaced)
            assert first is not None
            figures.append(first - killed)
            say(f"failover after {histories[-1]:,} records: {figures[-1]:.1f} s")
    finally:
        load.close()
        sup.stop()
        arrivals.close()
    return {
        "failover_s": figures,
        "median_s": statistics.median(figures),
        "max_s": max(figures),
        "history_records": histories,
        "rate": rate,
        "restart_delay_s": restart_delay,
        "monitor_session_timeout_s": monitor_session_timeout,
    }


def _wait(done: Any, timeout: float, what: str, sup: Supervisor) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(what)
        sup.poll()
        time.sleep(0.02)


def format_report(r: dict[str, Any]) -> str:
    """The benchmark's line, as ``modelog bench --failover`` prints it.

    Examples
    --------
    >>> print(format_report({"failover_s": [6.1, 7.0], "median_s": 6.55, "max_s": 7.0,
    ...                      "history_records": [20_000, 40_000], "rate": 2_000.0,
    ...                      "restart_delay_s": 1.0, "monitor_session_timeout_s": 1.0}))
    failover            6.5 s from kill -9 of a worker under load to its replacement's first
    monitoring output (median of 2: 6.1, 7.0 s; 2,000 serving records/s, 20,000 to 40,000
    records of history to replay; restart delay 1 s, session 1 s)  [target <= 10 s]
    """
    each = ", ".join(f"{x:.1f}" for x in r["failover_s"])
    hist = r["history_records"]
    span = f"{hist[0]:,}" if len(hist) == 1 else f"{hist[0]:,} to {hist[-1]:,}"
    return (f"failover   {r['median_s']:>12.1f} s from kill -9 of a worker under load to its "
            f"replacement's first\nmonitoring output (median of {len(r['failover_s'])}: {each} s; "
            f"{r['rate']:,.0f} serving records/s, {span}\nrecords of history to replay; "
            f"restart delay {r['restart_delay_s']:g} s, session "
            f"{r['monitor_session_timeout_s']:g} s)  [target <= 10 s]")
