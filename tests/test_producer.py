"""EventProducer: delivery, buffer policies, failures surfacing, unreachable broker."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from modelog.config import Settings
from modelog.streams.broker import free_port
from modelog.streams.errors import (
    BrokerUnavailableError,
    BufferFullError,
    ClientClosedError,
    DeliveryError,
)
from modelog.streams.kafka import producer_config
from modelog.streams.producer import EventProducer, ProducerStats


def raw_records(settings: Settings, topic: str, expected: int, timeout: float = 15.0
                ) -> list[tuple[Any, Any, Any]]:
    """``(key, value, partition)`` of every record on ``topic`` (manual assignment)."""
    conf = {**settings.kafka_config(), "group.id": f"t-{uuid.uuid4().hex}",
            "enable.auto.commit": False}
    consumer = Consumer(conf)
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        out: list[tuple[Any, Any, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    out.append((msg.key(), msg.value(), msg.partition()))
        for msg in consumer.consume(1000, 0.3):  # anything beyond what we expected?
            if msg.error() is None:
                out.append((msg.key(), msg.value(), msg.partition()))
        return out
    finally:
        consumer.close()


def test_producer_config_is_idempotent_and_keeps_security_settings() -> None:
    s = Settings(broker="k:1", security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
                 sasl_username="u", sasl_password="p")
    conf = producer_config(s, client_id="modelog-sdk", bulk=True)
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    assert conf["compression.type"] == "lz4" and conf["sasl.username"] == "u"
    assert conf["security.protocol"] == "SASL_SSL"


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="on_full"):
        EventProducer(Settings(broker="127.0.0.1:1"), on_full="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="buffer_size"):
        EventProducer(Settings(broker="127.0.0.1:1"), buffer_size=0)


def test_unreachable_broker_fails_fast_with_a_hint() -> None:
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(BrokerUnavailableError) as info:
        EventProducer(Settings(broker=address), connect_timeout=1.0)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert address in message and "modelog broker" in message and "MODELOG_BROKER" in message


@pytest.mark.broker
def test_send_flush_and_read_back(topics: Settings) -> None:
    topic = f"{topics.topic_prefix}serving"
    with EventProducer(topics) as producer:
        for i in range(500):
            producer.send(topic, b"model-a" if i % 2 else b"model-b", f"v{i}".encode(), bytes)
        producer.flush()
        stats = producer.stats
    assert stats == ProducerStats(sent=500, acked=500, failed=0, dropped=0, buffered=0)
    records = raw_records(topics, topic, 500)
    assert sorted(v for _, v, _ in records) == sorted(f"v{i}".encode() for i in range(500))
    partitions = {k: {p for kk, _, p in records if kk == k} for k, _, _ in records}
    assert all(len(ps) == 1 for ps in partitions.values())  # one key -> one partition
    in_order = [v for k, v, _ in records if k == b"model-a"]
    assert in_order == [f"v{i}".encode() for i in range(1, 500, 2)]


@pytest.mark.broker
def test_close_is_idempotent_and_send_after_close_raises(topics: Settings) -> None:
    producer = EventProducer(topics)
    producer.send(f"{topics.topic_prefix}runs", b"k", b"v", bytes)
    producer.close()
    producer.close()
    assert producer.closed and producer.stats.acked == 1
    with pytest.raises(ClientClosedError):
        producer.send(f"{topics.topic_prefix}runs", b"k", b"v", bytes)
    with pytest.raises(ClientClosedError):
        producer.flush()


@pytest.mark.broker
def test_on_full_raise(topics: Settings) -> None:
    topic = f"{topics.topic_prefix}serving"
    with EventProducer(topics, buffer_size=5, on_full="raise") as producer:
        with producer.paused():
            for _ in range(5):
                producer.send(topic, b"k", b"v", bytes)
            with pytest.raises(BufferFullError, match="buffer_size"):
                producer.send(topic, b"k", b"v", bytes)
            assert producer.stats.buffered == 5
        producer.flush()
        assert producer.stats.acked == 5


@pytest.mark.broker
def test_on_full_drop_counts_and_warns_once(
    topics: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"{topics.topic_prefix}monitoring"
    with EventProducer(topics, buffer_size=4, on_full="drop") as producer:
        with producer.paused():
            for i in range(10):
                producer.send(topic, b"k", f"{i}".encode(), bytes)
        producer.flush()
        stats = producer.stats
    assert (stats.sent, stats.acked, stats.dropped) == (4, 4, 6)
    assert sum("dropping new events" in r.getMessage() for r in caplog.records) == 1
    assert sorted(v for _, v, _ in raw_records(topics, topic, 4)) == [b"0", b"1", b"2", b"3"]


@pytest.mark.broker
def test_on_full_block_waits_then_raises(topics: Settings) -> None:
    topic = f"{topics.topic_prefix}runs"
    with EventProducer(topics, buffer_size=2, on_full="block", block_timeout=0.3) as producer:
        with producer.paused():
            producer.send(topic, b"k", b"1", bytes)
            producer.send(topic, b"k", b"2", bytes)
            start = time.monotonic()
            with pytest.raises(BufferFullError, match=r"waited 0\.3s"):
                producer.send(topic, b"k", b"3", bytes)
            assert time.monotonic() - start >= 0.3

        # Blocked while paused elsewhere, released as soon as the sender drains.
        def hold() -> None:
            with producer.paused():
                time.sleep(0.3)

        producer.block_timeout = 10.0
        producer.send(topic, b"k", b"3", bytes)
        producer.send(topic, b"k", b"4", bytes)  # two in flight or buffered
        holder = threading.Thread(target=hold)
        producer.flush()
        holder.start()
        time.sleep(0.05)
        for i in range(5, 9):
            producer.send(topic, b"k", f"{i}".encode(), bytes)
        holder.join()
        producer.flush()
        assert producer.stats.acked == 8


@pytest.mark.broker
def test_rejected_and_unencodable_events_surface_on_flush(topics: Settings) -> None:
    topic = f"{topics.topic_prefix}serving"

    def broken(_: object) -> bytes:
        raise RuntimeError("boom")

    producer = EventProducer(topics)
    producer.send(topic, b"k", b"ok", bytes)
    producer.send(topic, b"k", b"x" * 2_000_000, bytes)  # larger than message.max.bytes
    producer.send(topic, b"k", None, broken)
    with pytest.raises(DeliveryError) as info:
        producer.flush()
    assert "2 events were not delivered" in str(info.value)
    stats = producer.stats
    assert (stats.sent, stats.acked, stats.failed) == (3, 1, 2)
    producer.flush()  # failures are reported once
    producer.close()


def test_an_event_over_the_message_limit_fails_locally_naming_the_rule(
        topics: Settings) -> None:
    """What inline checks cannot bound (escaped text) is caught before the broker sees it."""
    import modelog
    from modelog.models.validation import SIZE_RULE

    client = modelog.connect(settings=topics)
    try:
        # under the limit in characters, over it in bytes: each \x01 encodes as \u0001
        client.log_prediction("m", 1, {"t": "x" * 990_000, "u": "\x01" * 2_000}, 1)
        client.log_prediction("m", 1, {"t": "x" * 900_000}, 1)  # large but fine
        with pytest.raises(DeliveryError) as info:
            client.flush()
        assert "1 events were not delivered" in str(info.value)
        assert "encodes to 1,00" in str(info.value) and SIZE_RULE in str(info.value)
        assert (client.stats.failed, client.stats.acked) == (1, 1)
    finally:
        client.close()
    sent = raw_records(topics, f"{topics.topic_prefix}serving", 1)
    assert len(sent) == 1 and len(sent[0][1]) > 900_000


@pytest.mark.broker
@pytest.mark.slow
def test_flush_raises_when_broker_goes_away() -> None:
    from modelog.streams.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        s = Settings(broker=broker.bootstrap_servers, topic_prefix="gone.", partitions=1)
        producer = EventProducer(s, config={"message.timeout.ms": 1500})
        producer.send("gone.serving", b"k", b"v", bytes)  # auto-created topic
        producer.flush(timeout=10)
    producer.send("gone.serving", b"k", b"lost", bytes)
    with pytest.raises(DeliveryError, match="1 events were not delivered"):
        producer.flush(timeout=5)  # message.timeout.ms expires inside the flush
    assert producer.stats.failed == 1
    producer.send("gone.serving", b"k", b"also lost", bytes)
    with pytest.raises(DeliveryError, match=r"not acknowledged .* within 0\.5s"):
        producer.close(timeout=0.5)  # still retrying when close gives up
    assert producer.closed
