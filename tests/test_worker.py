"""The Faust monitoring worker against a real broker (one worker process for the module)."""

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
from modelog.models.deadletter import DeadLetter
from modelog.models.events import (
    AnomalyDetected,
    ColumnSchema,
    DriftDetected,
    Event,
    LabelObserved,
    ModelVersionRequested,
    MonitorConfigured,
    MonitorStatsReported,
    PredictionMade,
    RunStarted,
    SkewDetected,
)
from modelog.models.ids import new_id
from modelog.models.registry_fold import answered
from modelog.streams.topics import Topics, ensure_topics

pytestmark = [pytest.mark.broker, pytest.mark.slow]

N = 6_000
CHANGE = 3_000
LABEL_LAG = 5
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
MALFORMED = b"{not json"

WORKER_CODE = """
import os
from modelog.config import Settings
from modelog.streams.worker import run_worker
run_worker(Settings.from_env(), session_timeout=6.0, loglevel="warning")
"""


def serving_stream(seed: int) -> list[Event]:
    """Predictions of model `churn`; label LABEL_LAG steps later; 5 % then 50 % wrong.

    Input "b" also moves by +1.5 sigma from CHANGE (data drift).
    """
    rng = random.Random(seed)
    events: list[Event] = []
    outputs: list[int] = []
    for i in range(N + LABEL_LAG):
        if i < N:
            out = rng.randint(0, 1)
            outputs.append(out)
            events.append(PredictionMade(
                id=new_id(), time=T0 + dt.timedelta(seconds=i), aggregate="churn",
                producer="pytest", prediction_id=f"p{i}", model="churn", model_version=1,
                inputs={"a": rng.gauss(0, 1), "b": rng.gauss(1.5 if i >= CHANGE else 0, 1),
                        "plan": "pro"}, output=out,
            ))
        j = i - LABEL_LAG
        if 0 <= j < N:
            wrong = rng.random() < (0.05 if j < CHANGE else 0.5)
            events.append(LabelObserved(
                id=new_id(), time=T0 + dt.timedelta(seconds=i + 0.5), aggregate="churn",
                producer="pytest", prediction_id=f"p{j}", model="churn",
                label=1 - outputs[j] if wrong else outputs[j],
            ))
    return events


@pytest.fixture(scope="module")
def worker_settings(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Topics for this module and one worker process consuming them."""
    data = tmp_path_factory.mktemp("worker") / "data"
    data.mkdir()
    s = Settings(broker=broker, data_dir=data, topic_prefix=f"w{uuid.uuid4().hex[:10]}.",
                 partitions=2, producer_name="pytest")
    ensure_topics(s)
    env = {**os.environ, "MODELOG_BROKER": s.bootstrap_servers, "MODELOG_DATA_DIR": str(data),
           "MODELOG_TOPIC_PREFIX": s.topic_prefix, "MODELOG_PARTITIONS": str(s.partitions)}
    log = (data / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-c", WORKER_CODE], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=str(data))
    try:
        yield s
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def produced(worker_settings: Settings) -> dict[str, bytes]:
    """Produce the stream plus two bad records; return the bad records' values by name."""
    s = worker_settings
    topics = Topics.from_settings(s)
    producer = Producer({**s.kafka_config(), "enable.idempotence": True, "acks": "all",
                         "linger.ms": 20})
    unknown = codec.encode(RunStarted(id=new_id(), time=T0, aggregate="r1", run_id="r1",
                                      experiment="exp")).replace(b'"RunStarted"', b'"RunExploded"')
    wrong_topic = codec.encode(RunStarted(id=new_id(), time=T0, aggregate="churn",
                                          run_id="r2", experiment="exp"))
    # a signature (with a feature the serving inputs lack) and two run-time configurations
    # the registration as the registry worker records it: the command, then its answer
    requested = ModelVersionRequested(
        id=new_id(), time=T0, aggregate="churn", producer="pytest", command_id="reg-churn-1",
        model="churn", flavor="river", artifact_uri="file:///churn", artifact_digest="0" * 64,
        signature=[ColumnSchema("a", "double"), ColumnSchema("b", "double"),
                   ColumnSchema("plan", "string"), ColumnSchema("tenure", "int64")])
    for event in answered([(requested, T0)]):
        producer.produce(topics.for_event(event), key=b"churn", value=codec.encode(event))
    good = codec.encode(MonitorConfigured(id=new_id(), time=T0, aggregate="churn",
                                          producer="pytest", model="churn",
                                          config={"psi_threshold": 0.25, "check_every": 50}))
    bad = codec.encode(MonitorConfigured(id=new_id(), time=T0, aggregate="churn",
                                         producer="pytest", model="churn",
                                         config={"check_every": "often"}))
    producer.produce(topics.monitoring, key=b"churn", value=good)
    producer.produce(topics.monitoring, key=b"churn", value=bad)
    assert producer.flush(30) == 0
    time.sleep(1.0)  # let the worker take the configuration before the first predictions
    for k, ev in enumerate(serving_stream(seed=2026)):
        producer.produce(topics.serving, key=b"churn", value=codec.encode(ev))
        if k == 100:
            producer.produce(topics.serving, key=b"churn", value=MALFORMED)
            producer.produce(topics.serving, key=b"churn", value=unknown)
            producer.produce(topics.serving, key=b"churn", value=wrong_topic)
        if k % 5_000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return {"malformed": MALFORMED, "unknown": unknown, "wrong_topic": wrong_topic,
            "bad_config": bad}


def read_until(settings: Settings, topic: str, done, timeout: float) -> list[tuple]:
    """Read `topic` from the start (manual assign) until done(records) or timeout."""
    consumer = Consumer({**settings.kafka_config(), "group.id": f"test-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    md = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    records: list[tuple] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(records):
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            records.append((msg.key(), msg.value(), msg.headers()))
    finally:
        consumer.close()
    return records


def test_worker_detects_concept_drift_after_the_change(worker_settings, produced) -> None:
    topics = Topics.from_settings(worker_settings)

    def has_drift(records: list[tuple]) -> bool:
        return any(b'"DriftDetected"' in v and b'"concept"' in v for _, v, _ in records)

    records = read_until(worker_settings, topics.monitoring, has_drift, timeout=90)
    events = [codec.decode(v) for _, v, _ in records]
    drifts = [e for e in events if isinstance(e, DriftDetected) and e.kind == "concept"]
    assert drifts, f"no DriftDetected within 90 s; got {len(events)} monitoring events"
    d = drifts[0]
    # labels of prediction j are at T0 + j + LABEL_LAG + 0.5 s
    labelled_index = int((d.time - T0).total_seconds() - LABEL_LAG - 0.5)
    assert CHANGE <= labelled_index < CHANGE + 300, labelled_index
    assert d.kind == "concept" and d.detector == "adwin" and d.params["delta"] == 0.002
    assert d.model == "churn" and d.model_version == 1 and d.producer == "modelog-worker"
    assert 0 < len(d.prediction_ids) <= 20
    assert all(int(p[1:]) >= CHANGE - 100 for p in d.prediction_ids)
    assert d.statistic > 0.3 and d.threshold is not None and d.threshold < 0.1
    assert d.window.size > 0 and d.window.start is not None and d.window.end == d.time
    assert "ADWIN" in d.message
    # keyed by model, like every event about the model
    assert all(k == b"churn" for k, _, _ in records)
    # nothing alarmed before the change (~2,900 allowing for the label lag)
    for e in events:
        if isinstance(e, DriftDetected | AnomalyDetected):
            assert (e.time - T0).total_seconds() >= 2_900, e
    assert any(isinstance(e, MonitorStatsReported) for e in events)


def test_bad_records_are_dead_lettered_with_original_bytes(worker_settings, produced) -> None:
    topics = Topics.from_settings(worker_settings)
    records = read_until(worker_settings, topics.dead_letter, lambda r: len(r) >= 4, timeout=60)
    assert len(records) == 4
    by_value = {v: (k, DeadLetter.from_headers(h)) for k, v, h in records}
    # the rejected run-time configuration, with the field and the rule
    _, config_dl = by_value.pop(produced["bad_config"])
    assert config_dl.source_topic == topics.monitoring
    assert "'check_every'" in config_dl.reason and "must be an integer" in config_dl.reason
    for name in ("malformed", "unknown", "wrong_topic"):
        assert produced[name] in by_value, name
        key, dl = by_value[produced[name]]
        assert key == b"churn"
        assert dl.source_topic == topics.serving and dl.source_offset >= 0
        assert dl.consumer == "worker"
    assert "not a modelog event" in by_value[MALFORMED][1].reason
    assert "RunExploded" in by_value[produced["unknown"]][1].reason
    assert "RunStarted" in by_value[produced["wrong_topic"]][1].reason


def test_worker_writes_only_modelog_json(worker_settings, produced) -> None:
    topics = Topics.from_settings(worker_settings)
    records = read_until(worker_settings, topics.monitoring, lambda r: len(r) >= 14, timeout=60)
    assert len(records) >= 14  # 6,000 predictions / 500 = 12 stats reports at least
    for _, value, _ in records:
        event = codec.decode(value)  # raises on anything but a modelog event
        assert b"faust" not in value and b"__faust" not in value
        assert event.producer in ("modelog-worker", "modelog-retrain", "pytest")


def test_configured_worker_detects_data_drift_and_skew(worker_settings, produced) -> None:
    topics = Topics.from_settings(worker_settings)

    def decoded(records):
        return [codec.decode(value) for _, value, _ in records]

    def done(records):
        events = decoded(records)
        return (any(isinstance(e, DriftDetected) and e.kind == "data" and e.detector == "psi"
                    for e in events) and any(isinstance(e, SkewDetected) for e in events))

    events = decoded(read_until(worker_settings, topics.monitoring, done, timeout=90))
    data = [e for e in events if isinstance(e, DriftDetected) and e.kind == "data"]
    assert {(d.feature, d.detector) for d in data} >= {("b", "psi")}
    assert all(d.feature == "b" for d in data)  # only the shifted input
    psi = next(d for d in data if d.detector == "psi")
    assert psi.threshold == 0.25  # from the MonitorConfigured event
    assert psi.params["check_every"] == 50
    index = int(psi.prediction_ids[-1][1:])
    assert CHANGE <= index < CHANGE + 300
    skews = [e for e in events if isinstance(e, SkewDetected)]
    assert [(s.feature, s.kind) for s in skews] == [("tenure", "missing")]  # once
    stats = [e for e in events if isinstance(e, MonitorStatsReported)]
    assert stats and stats[-1].stats["unregistered"] == 0.0
    assert stats[-1].stats["psi_threshold.b"] == 0.25


def test_concept_drift_requests_one_retrain(worker_settings, produced) -> None:
    topics = Topics.from_settings(worker_settings)

    def decoded(records):
        return [codec.decode(value) for _, value, _ in records]

    records = read_until(worker_settings, topics.monitoring,
                         lambda r: any(e.type_name() == "RetrainRequested" for e in decoded(r)),
                         timeout=60)
    events = decoded(records)
    drifts = {e.id for e in events if e.type_name() == "DriftDetected" and e.kind == "concept"}
    retrains = [e for e in events if e.type_name() == "RetrainRequested"]
    assert len(retrains) == 1  # the cooldown keeps one drift from asking twice
    assert retrains[0].trigger_id in drifts
    assert "drift" in retrains[0].reason and retrains[0].window.end is not None


def test_worker_log_has_no_tracebacks(worker_settings, produced) -> None:
    # run last: by now the worker processed the whole stream
    log = Path(worker_settings.data_dir / "worker.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
