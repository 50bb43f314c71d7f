"""A fresh memory-only broker is refilled from the DuckDB archive: nothing durable is lost."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import modelog
from modelog.config import Settings
from modelog.store.reader import Reader
from modelog.streams.archive import restore_to_broker
from modelog.streams.broker import EmbeddedBroker
from modelog.streams.projector import Projector
from modelog.streams.registry_agent import RegistryService
from modelog.streams.topics import ensure_topics

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _project_until(settings: Settings, sql: str, want: int) -> None:
    with Projector(settings, serve=False) as projector:
        for _ in range(100):
            projector.project_once(timeout=0.5)
            if projector.connection.execute(sql).fetchall()[0][0] >= want:
                return
    raise AssertionError(f"projection never reached {want} for {sql}")


def _record_stamps(settings: Settings, topic: str, want: int) -> dict[str, int]:
    """Event id -> record timestamp (ms) of the first ``want`` records of ``topic``."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from modelog.models import codec
    from modelog.streams.kafka import new_consumer

    consumer = new_consumer(settings, client_id="test-stamps")
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                         for p in range(settings.partitions)])
        out: dict[str, int] = {}
        for _ in range(40):
            if len(out) >= want:
                break
            for msg in consumer.consume(100, 0.5):
                if msg.error() is None:
                    out[codec.decode(msg.value()).id] = msg.timestamp()[1]
        return out
    finally:
        consumer.close()


def test_registry_history_survives_a_broker_restart(settings: Settings) -> None:
    ensure_topics(settings)
    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    model = LogisticRegression().fit(x, [0, 0, 1, 1])
    with RegistryService(settings), modelog.connect(settings=settings) as client:
        with client.start_run("archive", name="r1") as run:
            run.log_params({"c": 1.0})
        assert client.register_model("churn", model, run=run) == 1
        assert client.register_model("churn", model, run=run) == 2
        client.set_alias("churn", "production", 2, reason="better")
    _project_until(settings, "select count(*) from events where type = 'AliasSet'", 1)

    # The broker is gone; a new, empty one takes its place (same data dir).
    with EmbeddedBroker() as fresh:
        moved = dataclasses.replace(settings, broker=fresh.bootstrap_servers)
        ensure_topics(moved)
        report = restore_to_broker(moved)
        registry_topic = f"{settings.topic_prefix}registry"
        assert report.restored[registry_topic] == 3  # two registrations and one alias change
        # Each record is stamped with when the projector first stored its event (what
        # alert delivery compares with a subscription's creation), not the refill's time.
        stored = {r["id"]: r["ms"] for r in Reader(settings).query(
            "select id, epoch_ms(projected_at) ms from events where topic = ?",
            [registry_topic]).to_pylist()}
        assert _record_stamps(moved, registry_topic, len(stored)) == stored
        assert report.restored[f"{settings.topic_prefix}runs"] >= 3
        again = restore_to_broker(moved)  # idempotent: non-empty topics are skipped
        assert again.total == 0 and registry_topic in again.skipped

        with RegistryService(moved), modelog.connect(settings=moved) as client:
            # Numbering continues after the archived versions, and history is intact.
            assert client.register_model("churn", model, run=run) == 3
            state = client.registry("churn")
            assert state.aliases("churn")["production"].version == 2
            assert client.load_model("churn", version=1).predict(x).tolist() == [0, 0, 1, 1]
        _project_until(moved, "select count(*) from model_versions", 3)
    # The ledger holds each archived event once, although it was replayed.
    rows = Reader(settings).query(
        "select count(*) n, count(distinct id) d from events where type = "
        "'ModelVersionRegistered'").to_pylist()[0]
    assert rows == {"n": 3, "d": 3}
