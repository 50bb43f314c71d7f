"""A retrain policy set from the SDK and the CLI reaches the worker's trigger: end to end over a
real broker, a worker process and a projector process.

The SDK refuses an invalid policy before sending it; one sent anyway (by a client
that skips the SDK) is dead-lettered by the worker with the reason, and the policy
set before it stays in force: the request the concept drift then causes carries it.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

import modelog
from modelog.cli import app
from modelog.config import Settings
from modelog.models import codec
from modelog.models.deadletter import DeadLetter
from modelog.models.errors import RetrainPolicyError
from modelog.models.events import RetrainRequested
from modelog.models.policy_events import RetrainPolicySet
from modelog.streams.topics import Topics, ensure_topics

sys.path.insert(0, str(Path(__file__).parent))
from test_e2e import _start, _stop, _wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture(scope="module")
def live(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    data = tmp_path_factory.mktemp("policy") / "data"
    data.mkdir()
    s = Settings(broker=broker, data_dir=data, topic_prefix=f"rp{uuid.uuid4().hex[:8]}.",
                 partitions=2, producer_name="pytest")
    ensure_topics(s)
    procs = [_start(s, "worker", "--session-timeout", "6"), _start(s, "project")]
    try:
        yield s
    finally:
        for p in procs:
            _stop(p)


def _read(s: Settings, topic: str, done: Any, timeout: float) -> list[Any]:
    consumer = Consumer({**s.kafka_config(), "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    records: list[Any] = []
    try:
        _wait_for(lambda: (records.extend(m for m in consumer.consume(500, 0.5)
                                          if not m.error()) or done(records)),
                  timeout, f"records on {topic}")
    finally:
        consumer.close()
    return records


def _cli(s: Settings, *args: str) -> Any:
    return CliRunner().invoke(app, ["--broker", s.bootstrap_servers, "--data-dir",
                                    str(s.data_dir), "--topic-prefix", s.topic_prefix, *args])


def test_a_policy_set_from_the_sdk_is_what_the_drift_request_carries(live: Settings) -> None:
    s, topics = live, Topics.from_settings(live)
    with modelog.connect(settings=s) as client:
        with pytest.raises(RetrainPolicyError, match="gate_metric = 'auc'"):
            client.set_retrain_policy("churn", gate_metric="auc")  # refused before sending
        sent = client.set_retrain_policy("churn", cooldown=dt.timedelta(minutes=7),
                                         gate_metric="f1", gate_margin=0.03, gate_min_rows=20,
                                         reason="f1 for an imbalanced target")
        assert sent.policy == {"cooldown_s": 420.0, "gate_metric": "f1", "gate_margin": 0.03,
                               "gate_min_rows": 20}
        bad = RetrainPolicySet(id=client.new_id(), time=codec.utcnow(), aggregate="churn",
                               model="churn", policy={"cooldown_s": -60})
        client.emit(bad)  # what a client that skips the SDK's check could send
        client.flush()
    [dead] = _read(s, topics.dead_letter, lambda r: any(m.value() == codec.encode(bad)
                                                        for m in r), 60)
    reason = DeadLetter.from_headers(dead.headers()).reason
    assert "retrain policy of 'churn': cooldown_s = -60 is invalid: must be >= 0" in reason
    assert dead.key() == b"churn"

    # the policy was taken (same partition, before the invalid one): now the concept drifts
    rng = random.Random(5)
    with modelog.connect(settings=s) as client:
        for i in range(2_400):
            x = rng.gauss(0, 1)
            pid = client.log_prediction("churn", 1, {"x": x}, int(x > 0))
            wrong = rng.random() < (0.05 if i < 1_200 else 0.5)
            client.log_label("churn", pid, int(x <= 0) if wrong else int(x > 0))
        client.flush()
    records = _read(s, topics.monitoring,
                    lambda r: any(b'"RetrainRequested"' in m.value() for m in r), 90)
    [request] = [e for e in (codec.decode(m.value()) for m in records)
                 if isinstance(e, RetrainRequested)]
    assert request.policy["trigger"] == "concept_drift"
    assert request.policy["cooldown_s"] == 420.0
    assert (request.policy["gate_metric"], request.policy["gate_margin"],
            request.policy["gate_min_rows"]) == ("f1", 0.03, 20)

    # the policy in force, read back from the ledger: the invalid one is not in force
    with modelog.connect(settings=s) as client:
        policy = _wait_for(lambda: (p := client.retrain_policy("churn")).gate_metric and p,
                           60, "the policy in the ledger")
        assert policy.cooldown == dt.timedelta(minutes=7) and policy.gate_min_rows == 20
        last = client.retrain_policy_set("churn")
        assert last is not None and last.id == sent.id
        assert last.reason == "f1 for an imbalanced target"
        assert client.retrain_policy("fraud").gate_metric is None  # never set: defaults


def test_the_cli_sets_shows_and_resets_a_policy(live: Settings) -> None:
    s = live
    assert "KEY=VALUE" in _cli(s, "policy", "retrain", "set", "--help").output
    for cmd in ("show", "reset"):
        assert _cli(s, "policy", "retrain", cmd, "--help").exit_code == 0

    refused = _cli(s, "policy", "retrain", "set", "ltv", "cooldown=-1h")
    assert refused.exit_code == 1
    assert "retrain policy of 'ltv': cooldown_s = " in refused.output
    refused = _cli(s, "policy", "retrain", "set", "ltv", "gate_metrik=f1")
    assert refused.exit_code == 1 and "the valid keys are on_concept_drift" in refused.output

    done = _cli(s, "policy", "retrain", "set", "ltv", "cooldown=2h", "schedule=7d",
                "data_drift_sustained=3", "on_concept_drift=false", "gate_metric=mae",
                "gate_margin=0.5", "--reason", "weekly")
    assert done.exit_code == 0, done.output
    assert "cooldown_s=7200" in done.output and "schedule_s=604800" in done.output

    def shown() -> dict[str, Any]:
        out = _cli(s, "policy", "retrain", "show", "ltv", "--json")
        assert out.exit_code == 0, out.output
        info: dict[str, Any] = json.loads(out.output)
        return info

    info = _wait_for(lambda: (i := shown())["event"] and i, 60, "the policy in the ledger")
    assert info["policy"]["cooldown_s"] == 7200.0 and info["policy"]["schedule_s"] == 604800.0
    assert info["policy"]["data_drift_checks"] == 3
    assert info["policy"]["on_concept_drift"] is False
    assert (info["policy"]["gate_metric"], info["policy"]["gate_margin"]) == ("mae", 0.5)
    assert info["policy"]["metric_sustained"] == 3  # a default
    assert set(info["set"]) == {"cooldown_s", "schedule_s", "data_drift_checks",
                                "on_concept_drift", "gate_metric", "gate_margin"}
    text = _cli(s, "policy", "retrain", "show", "ltv").output
    assert "set by" in text and "(weekly)" in text
    assert [line.split() for line in text.splitlines() if "cooldown_s" in line] == [
        ["cooldown_s", "7200", "set"]]
    assert [line.split() for line in text.splitlines() if "metric_sustained" in line] == [
        ["metric_sustained", "3", "default"]]

    # a retrain requested by hand carries the gate settings of the policy in force
    asked = _cli(s, "retrain", "ltv", "--reason", "by hand")
    assert asked.exit_code == 0, asked.output
    request_id = asked.output.split("request ")[-1].strip()
    records = _read(s, Topics.from_settings(s).monitoring,
                    lambda r: any(request_id.encode() in m.value() for m in r), 30)
    [manual] = [e for e in (codec.decode(m.value()) for m in records) if e.id == request_id]
    assert isinstance(manual, RetrainRequested) and manual.policy["trigger"] == "manual"
    assert (manual.policy["gate_metric"], manual.policy["gate_margin"]) == ("mae", 0.5)

    assert _cli(s, "policy", "retrain", "reset", "ltv").exit_code == 0
    info = _wait_for(lambda: (i := shown())["set"] == [] and i, 60, "the reset in the ledger")
    assert info["policy"]["cooldown_s"] == 3600.0 and info["policy"]["gate_metric"] is None
    assert "the defaults" in _cli(s, "policy", "retrain", "show", "ltv").output
