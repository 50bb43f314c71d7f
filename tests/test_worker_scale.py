"""Monitoring state follows its partition: workers join and leave without losing detector state.

Two workers share twelve models over four partitions; a third joins mid-stream
and takes partitions over; later one of the first two stops. Every derived
event the group published (alerts, resolutions, stats, retrain requests) must
be exactly what a single pure :class:`RecordRouter` computes over the same
log: a detector restarted from scratch on the new owner would warm up again
and alert at other positions, with other ids.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from modelog.config import Settings
from modelog.models import codec
from modelog.models.events import Event, LabelObserved, PredictionMade
from modelog.streams.topics import Topics, ensure_topics
from modelog.streams.worker import standard_router

pytestmark = [pytest.mark.broker, pytest.mark.slow]

MODELS = [f"m{i}" for i in range(12)]
PER_PHASE = 1_200  # predictions per model and phase
LABEL_LAG = 5
T0 = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)

WORKER_CODE = """
import logging, sys
from modelog.config import Settings
from modelog.streams.worker import run_worker
log = logging.getLogger("modelog.worker")
handler = logging.FileHandler(sys.argv[1])
handler.setFormatter(logging.Formatter("%(message)s"))
log.addHandler(handler)
log.setLevel(logging.INFO)
run_worker(Settings.from_env(), session_timeout=6.0, loglevel="warning")
"""


def phase(seed: int, start: int, drifted: bool) -> list[Event]:
    """PER_PHASE predictions per model (round-robin), each labelled LABEL_LAG steps later."""
    rng = random.Random(seed)
    events: list[Event] = []
    outputs: dict[tuple[str, int], int] = {}
    for i in range(PER_PHASE + LABEL_LAG):
        for m in MODELS:
            t = T0 + dt.timedelta(seconds=start + i, milliseconds=MODELS.index(m))
            if i < PER_PHASE:
                out = rng.randint(0, 1)
                outputs[(m, i)] = out
                events.append(PredictionMade(
                    id=f"{m}-p{start + i}", time=t, aggregate=m, producer="pytest",
                    prediction_id=f"{m}-{start + i}", model=m, model_version=1, output=out,
                    inputs={"a": rng.gauss(0, 1), "b": rng.gauss(2.0 if drifted else 0, 1),
                            "plan": rng.choice(("basic", "pro"))},
                ))
            j = i - LABEL_LAG
            if 0 <= j < PER_PHASE:
                wrong = rng.random() < (0.5 if drifted else 0.05)
                y = outputs[(m, j)]
                events.append(LabelObserved(
                    id=f"{m}-l{start + j}", time=t + dt.timedelta(microseconds=500),
                    aggregate=m, producer="pytest", prediction_id=f"{m}-{start + j}",
                    model=m, label=1 - y if wrong else y,
                ))
    return events


@pytest.fixture(scope="module")
def cluster(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    data = tmp_path_factory.mktemp("scale") / "data"
    data.mkdir()
    s = Settings(broker=broker, data_dir=data, topic_prefix=f"s{uuid.uuid4().hex[:10]}.",
                 partitions=4, producer_name="pytest")
    ensure_topics(s)
    env = {**os.environ, "MODELOG_BROKER": s.bootstrap_servers, "MODELOG_DATA_DIR": str(data),
           "MODELOG_TOPIC_PREFIX": s.topic_prefix, "MODELOG_PARTITIONS": str(s.partitions)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}

    def start(name: str) -> None:
        logs[name] = data / f"{name}.log"
        out = (data / f"{name}.out").open("wb")
        procs[name] = subprocess.Popen([sys.executable, "-c", WORKER_CODE, str(logs[name])],
                                       env=env, stdout=out, stderr=subprocess.STDOUT,
                                       cwd=str(data))

    def stop(name: str) -> None:
        proc = procs[name]
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    try:
        yield {"settings": s, "start": start, "stop": stop, "logs": logs, "procs": procs}
    finally:
        for name, proc in procs.items():
            if proc.poll() is None:
                stop(name)


ENDS: dict[int, int] = {}
"""Next offset after the last serving record produced, per partition (from delivery reports:
the embedded broker under-reports the high watermark of multi-record batches)."""


def produce(s: Settings, events: list[Event]) -> None:
    producer = Producer({**s.kafka_config(), "enable.idempotence": True, "acks": "all",
                         "linger.ms": 10})
    topic = Topics.from_settings(s).serving

    def acked(err: object, msg: object) -> None:
        assert err is None, err
        ENDS[msg.partition()] = max(ENDS.get(msg.partition(), 0),  # type: ignore[attr-defined]
                                    msg.offset() + 1)  # type: ignore[attr-defined]

    for k, ev in enumerate(events):
        producer.produce(topic, key=ev.aggregate.encode(), value=codec.encode(ev),
                         on_delivery=acked)
        if k % 5_000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def wait_caught_up(s: Settings, timeout: float = 120) -> None:
    """Until the monitoring group's committed serving offsets reach what was produced."""
    topic = Topics.from_settings(s).serving
    probe = Consumer({**s.kafka_config(), "group.id": f"{s.topic_prefix}worker.monitor",
                      "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p) for p in range(s.partitions)]
        ends = dict(ENDS)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = {tp.partition: tp.offset for tp in probe.committed(tps, timeout=10)}
            if all(done.get(p, -1) >= end for p, end in ends.items()):
                return
            time.sleep(0.5)
        raise AssertionError(f"workers did not catch up: committed {done}, ends {ends}")
    finally:
        probe.close()


def wait_for_line(path: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.3)
    raise AssertionError(f"{path.name} never logged {text!r}")


def assignments(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if "assigned serving" in line]


def published(s: Settings) -> dict[str, str]:
    """Derived event id -> type, as published on the monitoring topic (duplicates collapse)."""
    topic = Topics.from_settings(s).monitoring
    consumer = Consumer({**s.kafka_config(), "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(s.partitions)}
        consumer.assign([TopicPartition(topic, p, 0) for p in range(s.partitions)])
        seen = dict.fromkeys(ends, 0)
        out: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msgs = [m for m in consumer.consume(5_000, 0.5) if m.error() is None]
            for msg in msgs:
                seen[msg.partition()] = msg.offset() + 1
                ev = codec.decode(msg.value())
                out[ev.id] = ev.type_name()
            # past the (possibly under-reported) high watermarks, stop at an empty read
            if not msgs and all(seen[p] >= e for p, e in ends.items()):
                break
        return out
    finally:
        consumer.close()


def reference(s: Settings, events: list[Event]) -> dict[str, str]:
    """What one pure router derives from the whole log."""
    topics = Topics.from_settings(s)
    router = standard_router(topics)
    out: dict[str, str] = {}
    for k, ev in enumerate(events):
        for rec in router.route(ev.aggregate.encode(), codec.encode(ev), topics.serving, 0, k):
            derived = codec.decode(rec.value)
            out[derived.id] = derived.type_name()
    return out


def test_a_joining_and_a_leaving_worker_keep_every_detector_state(cluster: dict) -> None:
    s: Settings = cluster["settings"]
    logs: dict[str, Path] = cluster["logs"]
    first = phase(1, 0, drifted=False)
    second = phase(2, PER_PHASE + LABEL_LAG, drifted=False)
    third = phase(3, 2 * (PER_PHASE + LABEL_LAG), drifted=True)

    cluster["start"]("a")
    cluster["start"]("b")
    wait_for_line(logs["a"], "assigned serving partitions [")
    wait_for_line(logs["b"], "assigned serving partitions [")
    produce(s, first)
    wait_caught_up(s)

    cluster["start"]("c")  # joins: partitions move from a and b to c
    wait_for_line(logs["c"], "state rebuilt from")
    produce(s, second)
    wait_caught_up(s)

    cluster["stop"]("a")  # leaves: its partitions move to b and c
    produce(s, third)
    wait_caught_up(s)

    got = published(s)
    want = reference(s, first + second + third)
    kinds = sorted(set(want.values()))
    assert {"DriftDetected", "MonitorStatsReported"} <= set(kinds), kinds
    assert sum(t == "DriftDetected" for t in want.values()) >= len(MODELS)
    missing = {i: t for i, t in want.items() if i not in got}
    extra = {i: t for i, t in got.items() if i not in want}
    assert not missing and not extra, (len(missing), len(extra), list(missing.items())[:5],
                                       list(extra.items())[:5])
    # the rebalances really moved partitions: c rebuilt state that a or b had built
    c_owned = {line.split("[", 1)[1] for line in assignments(logs["c"])}
    assert any(line.strip("]") for line in c_owned), assignments(logs["c"])
    rebuilt = [line for name in ("b", "c") for line in logs[name].read_text().splitlines()
               if "state rebuilt from" in line and not line.endswith("from 0 records in 0.0 s")]
    assert rebuilt, "no partition state was rebuilt from the log after a rebalance"
