"""Restarts of `modelog up` on the embedded broker lose nothing and repeat nothing.

`modelog up` runs for real (embedded broker, worker, projector, delivery, retrainer)
while serving traffic with concept drift streams in, in three phases: after the first
(the drift has begun, the first detection is out), `up` is stopped with SIGTERM and
started again; after the second, the whole process tree is killed with SIGKILL and
started again. The broker forgets its log each time; `up` refills it from the ledger
and carries the worker's state snapshots over to the refilled offsets.

Afterwards the monitoring outputs in the ledger are exactly those of one pure
:class:`~modelog.streams.worker.RecordRouter` that saw the whole stream once (derived
ids are deterministic: a detector that started over -- a second warm-up, a drift
detected again -- would publish events with other ids), and the final broker's
serving topic holds every prediction of all three phases.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from modelog.config import Settings
from modelog.models import codec
from modelog.models.events import Event
from modelog.models.monitor import ServingMonitor
from modelog.models.retrain import RetrainTrigger
from modelog.store.errors import StoreError
from modelog.streams.bench.worker import serving_events
from modelog.streams.broker import free_port
from modelog.streams.topics import Topics
from modelog.streams.worker import RecordRouter

pytestmark = [pytest.mark.broker, pytest.mark.slow]

MODELS = ("rs0", "rs1")
PER_MODEL = 2_000
DRIFT_AT = 700


def stream() -> list[Event]:
    t0 = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    gens = [serving_events(m, PER_MODEL, seed=21 + i, start=t0, drift_at=DRIFT_AT)
            for i, m in enumerate(MODELS)]
    return [ev for batch in zip(*gens, strict=True) for ev in batch]


def reference(s: Settings, events: list[Event]) -> list[tuple[int, str, str]]:
    """``(index of the cause, derived id, type)`` of one never-restarted pure router."""
    topics = Topics.from_settings(s)
    router = RecordRouter(topics, ServingMonitor(), retrain=RetrainTrigger())
    out: list[tuple[int, str, str]] = []
    for k, ev in enumerate(events):
        for rec in router.route(ev.aggregate.encode(), codec.encode(ev), topics.serving, 0, k):
            derived = codec.decode(rec.value)
            out.append((k, derived.id, derived.type_name()))
    return out


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(duckdb.Error, OSError, StoreError):
            if predicate():
                return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


class Up:
    """`modelog up` as a real process tree on one data directory and broker port."""

    def __init__(self, data: Path, logs: Path) -> None:
        self.data, self.logs, self.port = data, logs, free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MODELOG_")}
        self.env.update(MODELOG_DATA_DIR=str(data), MODELOG_PARTITIONS="2",
                        PYTHONUNBUFFERED="1")
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def log(self) -> Path:
        return self.logs / f"up-{self.runs}.log"

    def start(self) -> str:
        self.runs += 1
        runtime = self.data / "projector.json"
        stale = runtime.read_text() if runtime.exists() else ""
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modelog", "up", "--no-dashboard", "--broker-port",
                 str(self.port)], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        _wait(lambda: "Ctrl-C stops all" in self.log.read_text(), 120,
              f"`modelog up` to start (see {self.log})")
        _wait(lambda: runtime.read_text() not in ("", stale), 60,
              "the new projector's query server")
        return self.log.read_text()

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(90)

    def kill_tree(self) -> None:
        """SIGKILL `up` and every process under it (the children run in sessions of their own)."""
        assert self.proc is not None
        for pid in [*_descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(30)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill_tree()


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    data = tmp_path / "data"
    data.mkdir()
    running = Up(data, tmp_path)
    try:
        yield running
    finally:
        running.close()


def _ledger_ids(s: Settings, topic: str, kinds: set[str] | None = None) -> set[str]:
    from modelog.store.reader import Reader

    table = Reader(s).query("select id, type from events where topic = ?", [topic])
    return {str(i) for i, t in zip(*(table.column(c).to_pylist() for c in range(2)),
                                   strict=True) if kinds is None or t in kinds}


def _produce(s: Settings, events: list[Event]) -> None:
    topics = Topics.from_settings(s)
    producer = Producer({**s.kafka_config(), "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5})
    for ev in events:
        producer.produce(topics.serving, key=ev.aggregate.encode(), value=codec.encode(ev))
    assert producer.flush(30) == 0


def _topic_ids(s: Settings, topic: str) -> Counter[str]:
    """How often each event id is on ``topic`` of the current broker."""
    consumer = Consumer({**s.kafka_config(), "group.id": "restart-check",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(2)])
    ids: Counter[str] = Counter()
    idle = 0
    while idle < 6:
        msgs = consumer.consume(5000, 0.5)
        idle = 0 if msgs else idle + 1
        ids.update(codec.decode(m.value()).id for m in msgs if m.error() is None)
    consumer.close()
    return ids


def test_stop_crash_and_restart_mid_drift_repeat_and_lose_nothing(up: Up) -> None:
    s = Settings(data_dir=up.data, partitions=2, producer_name="pytest")
    topics = Topics.from_settings(s)
    events = stream()
    want = reference(s, events)
    drifts = [(k, i) for k, i, t in want if t == "DriftDetected"]
    assert len(drifts) >= 2, "the stream must drift in both models"
    cut1 = drifts[0][0] + 200  # the first drift is detected, the restart comes mid-drift
    cut2 = (cut1 + len(events)) // 2

    def derived_until(cut: int) -> Callable[[], bool]:
        ids = {i for k, i, _ in want if k < cut}
        return lambda: ids <= _ledger_ids(s, topics.monitoring)

    up.start()
    _produce(s, events[:cut1])
    _wait(derived_until(cut1), 120, f"the first phase's monitoring output (see {up.logs})")
    up.stop()
    phase_a = _ledger_ids(s, topics.serving)
    projected_at = duckdb.connect(str(s.duckdb_path), read_only=True).execute(
        "select max(projected_at), count(*) from events").fetchall()[0]

    started = up.start()  # a fresh broker: refilled from the ledger before the services
    refilled = re.search(r"restored +([\d,]+) archived events .* (\d+) worker snapshots",
                         started)
    assert refilled, started
    assert int(refilled.group(1).replace(",", "")) == projected_at[1]
    assert int(refilled.group(2)) >= 1  # the worker state of the partitions with traffic
    _produce(s, events[cut1:cut2])
    _wait(derived_until(cut2), 120, "the second phase's monitoring output")
    up.kill_tree()

    up.start()
    _produce(s, events[cut2:])
    _wait(derived_until(len(events)), 120, "the last phase's monitoring output")
    time.sleep(2)  # anything extra (a detector that started over) would be out by now

    # exactly the never-restarted router's outputs: no alert twice, no second warm-up
    # (other services' events on the monitoring topic, e.g. the retrainer's, left aside)
    kinds = {t for _, _, t in want}
    got = _ledger_ids(s, topics.monitoring, kinds)
    want_ids = {i for _, i, _ in want}
    assert got == want_ids, (len(got - want_ids), len(want_ids - got))
    # ... and the worker continued from its snapshots, not from the beginning: what the
    # first two phases derived is on the final broker (refilled) and was not published again
    # (only the few seconds after the last snapshot may be)
    earlier = {i for k, i, _ in want if k < cut2}
    again = {i for i, n in _topic_ids(s, topics.monitoring).items() if n > 1}
    assert len(again & earlier) < len(earlier) / 2, (len(again & earlier), len(earlier))
    from modelog.store.reader import Reader

    alerts = Reader(s).query("select count(*) n, count(distinct event_id) d from alerts "
                             "where type = 'DriftDetected'").to_pylist()[0]
    assert alerts == {"n": len(drifts), "d": len(drifts)}
    # the projector recorded no refilled event again (same rows, same projection times)
    before = Reader(s).query(
        "select max(projected_at) t, count(*) n from events where projected_at <= ?",
        [projected_at[0].isoformat()]).to_pylist()[0]
    assert before["n"] == projected_at[1]
    assert phase_a <= _ledger_ids(s, topics.serving)
    # the final broker's serving topic holds the predictions of every phase
    assert set(_topic_ids(s, topics.serving)) == {e.id for e in events}
