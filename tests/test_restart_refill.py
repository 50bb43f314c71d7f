"""Refilling a fresh broker: order, retention, dead letters, and the worker's snapshots moved.

Real parts: serving traffic with a duplicate and an undecodable record goes to the
session's broker and is projected into a real DuckDB ledger; a real
:class:`~modelog.streams.worker.RecordRouter` processes the first part and its state is
saved as the worker saves it. Then a second, empty embedded broker is refilled.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from modelog.config import Settings
from modelog.models import codec
from modelog.models.events import Event
from modelog.models.monitor import ServingMonitor
from modelog.store.partition_state import PartitionSnapshots
from modelog.store.worker_key import worker_key
from modelog.streams.archive import restore_to_broker
from modelog.streams.bench.worker import serving_events
from modelog.streams.broker import EmbeddedBroker
from modelog.streams.kafka import new_consumer
from modelog.streams.projector import Projector
from modelog.streams.topics import Topics, ensure_topics
from modelog.streams.worker import RecordRouter

pytestmark = [pytest.mark.broker, pytest.mark.slow]

GROUP = "refill-test.worker.monitor"
N = 1_200  # predictions, each labelled
CUT = 1_300  # records the "worker" processed before the broker was lost
OLD = 50  # ledger rows made older than the retention


def _read(s: Settings, topic: str, partition: int) -> list[tuple[int, bytes | None, bytes,
                                                                 list[tuple[str, bytes]]]]:
    consumer = Consumer({**s.kafka_config(), "group.id": "refill-read",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    out: list[tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]] = []
    idle = 0
    while idle < 4:
        msgs = consumer.consume(5000, 0.5)
        idle = 0 if msgs else idle + 1
        out += [(m.offset(), m.key(), m.value(), list(m.headers() or []))
                for m in msgs if m.error() is None]
    consumer.close()
    return out


def _derived(router: RecordRouter, topics: Topics, records: list[tuple[int, bytes | None,
                                                                       bytes, object]],
             partition: int) -> list[str]:
    return [codec.decode(out.value).id for off, key, value, _ in records
            for out in router.route(key, value, topics.serving, partition, off)
            if out.topic != topics.dead_letter]


def test_refill_keeps_order_moves_snapshots_and_honours_retention(
        settings: Settings, tmp_path: Path) -> None:
    s = dataclasses.replace(settings, partitions=1)
    ensure_topics(s)
    topics = Topics.from_settings(s)
    t0 = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    events: list[Event] = list(serving_events("rr", N, seed=5, start=t0, drift_at=500))
    producer = Producer({**s.kafka_config(), "enable.idempotence": True, "acks": "all"})
    for k, ev in enumerate(events):
        producer.produce(topics.serving, key=b"rr", value=codec.encode(ev))
        if k == 100:  # published twice (the ledger keeps it once) and a record that is junk
            producer.produce(topics.serving, key=b"rr", value=codec.encode(ev))
            producer.produce(topics.serving, key=b"rr", value=b"{not json")
    assert producer.flush(30) == 0
    with Projector(s, serve=False) as projector:
        deadline = time.monotonic() + 60
        while projector.connection.execute("select count(*) from events").fetchall()[0][0] \
                < len(events) or projector.connection.execute(
                    "select count(*) from dead_letters").fetchall()[0][0] < 1:
            assert time.monotonic() < deadline, "the projector did not record everything"
            projector.project_once(timeout=0.5)
    original = _read(s, topics.serving, 0)
    assert len(original) == len(events) + 2

    # The worker's state after CUT records, saved as the worker saves it.
    router = RecordRouter(topics, ServingMonitor())
    before = _derived(router, topics, original[:CUT], 0)
    snaps = PartitionSnapshots(s.data_dir / "worker-state" / GROUP, key=worker_key(s.data_dir))
    snaps.save(0, {topics.serving: CUT, topics.monitoring: 0}, router.snapshot())
    never_restarted = _derived(router, topics, original[CUT:], 0)
    assert before and never_restarted, "the drift must show on both sides of the cut"

    # The first OLD events were projected longer ago than the retention.
    con = duckdb.connect(str(s.duckdb_path))
    con.execute("update events set projected_at = projected_at - interval 10 day where id in "
                "(select id from events order by projected_at, \"offset\" limit ?)", [OLD])
    ledger = [r[0] for r in con.execute(
        "select id from events order by projected_at, \"offset\", id").fetchall()]
    con.close()

    with EmbeddedBroker() as fresh:
        moved = dataclasses.replace(s, broker=fresh.bootstrap_servers)
        ensure_topics(moved)
        report = restore_to_broker(moved, retention_days=7)
        assert report.restored[topics.serving] == len(events) - OLD
        assert report.restored[topics.dead_letter] == 1 and report.snapshots == 1
        refilled = _read(moved, topics.serving, 0)
        # the ledger's order, the old traffic left out, keys and bytes as recorded
        assert [codec.decode(v).id for _, _, v, _ in refilled] == ledger[OLD:]
        assert {k for _, k, _, _ in refilled} == {b"rr"}
        # the snapshot now ends just after the last event it had processed
        last = codec.decode(original[CUT - 1][2]).id
        position = [codec.decode(v).id for _, _, v, _ in refilled].index(last) + 1
        assert position != CUT  # the offsets moved (duplicate, junk, retention)
        loaded = snaps.load(0)
        assert loaded is not None and loaded[0][topics.serving] == position
        consumer = new_consumer(moved, client_id="refill-check", group=GROUP)
        committed = {tp.topic: tp.offset for tp in consumer.committed(
            [TopicPartition(topics.serving, 0), TopicPartition(topics.monitoring, 0)],
            timeout=10)}
        consumer.close()
        assert committed == {topics.serving: position, topics.monitoring: 0}
        # a worker restoring it on the refilled log derives what a never-restarted one did
        restored = RecordRouter(topics, ServingMonitor())
        restored.restore(loaded[1])
        assert _derived(restored, topics, refilled[position:], 0) == never_restarted
        # the dead letter is back, with its reason and source
        [(_, _key, value, headers)] = _read(moved, topics.dead_letter, 0)
        assert value == b"{not json" and dict(headers)["modelog-source-offset"] == b"102"

    with EmbeddedBroker() as everything:  # retention 0: everything
        again = dataclasses.replace(s, broker=everything.bootstrap_servers)
        ensure_topics(again)
        assert restore_to_broker(again, retention_days=0).restored[topics.serving] == len(events)
