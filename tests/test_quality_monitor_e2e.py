"""Issue 13 through real processes: a `modelog worker` and a `modelog project` against the
session's broker; the quality monitor's events reach the ledger, the alerts table and the
`performance_estimates` / `segment_metrics` views."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from modelog.config import Settings
from modelog.models import codec
from modelog.models.events import MonitorConfigured
from modelog.models.ids import new_id
from modelog.streams.topics import Topics, ensure_topics
from tests.test_e2e import _q, _start, _stop, _wait_for
from tests.test_quality_monitor import T0, serving

pytestmark = [pytest.mark.broker, pytest.mark.slow]

N = 3_000
FLIP_AT = 2_000


def _committed(s: Settings, topic: str) -> int:
    """Records of ``topic`` the worker's serving loop committed past (all partitions)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**s.kafka_config(), "group.id": f"{s.topic_prefix}worker.monitor",
                  "enable.auto.commit": False})
    try:
        parts = c.committed([TopicPartition(topic, p) for p in range(s.partitions)], 10)
    finally:
        c.close()
    return sum(max(tp.offset, 0) for tp in parts)


@pytest.fixture(scope="module")
def live(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("quality")
    s = Settings(broker=broker, data_dir=data, topic_prefix=f"q{os.getpid()}.", partitions=2,
                 producer_name="pytest")
    ensure_topics(s)
    procs = {"worker": _start(s, "worker", "--session-timeout", "6"),
             "projector": _start(s, "project")}
    try:
        topics = Topics.from_settings(s)
        producer = Producer({**s.kafka_config(), "enable.idempotence": True, "acks": "all",
                             "linger.ms": 20})
        config = MonitorConfigured(
            id=new_id(), time=T0, aggregate="churn", producer="pytest", model="churn",
            config={"quality": {"window": 250, "reference_size": 250, "segments": ["country"],
                                "report_every": 500}})
        producer.produce(topics.monitoring, key=b"churn", value=codec.encode(config))
        assert producer.flush(30) == 0
        # the configuration is consumed (the worker committed past it) before the first
        # prediction: with a backlog on both topics their order is not guaranteed
        _wait_for(lambda: _committed(s, topics.monitoring) >= 1, 120,
                  "the worker to consume the configuration")
        for ev in serving(N, seed=9, flip_at=FLIP_AT):
            producer.produce(topics.for_event(ev), key=b"churn", value=codec.encode(ev))
            producer.poll(0)
        assert producer.flush(30) == 0
        _wait_for(lambda: _q(s, "select count(*) n from predictions")[0]["n"] == N, 120,
                  f"{N} predictions in DuckDB")
        yield {"settings": s}
    finally:
        for p in procs.values():
            _stop(p)


def test_estimated_and_realized_accuracy_reach_the_view(live: dict[str, Any]) -> None:
    s = live["settings"]
    rows = _wait_for(lambda: _q(s, "select * from performance_estimates where "
                                   "realized_accuracy is not null order by window_index")
                     if len(_q(s, "select * from performance_estimates where realized_accuracy "
                                  "is not null")) >= N // 250 - 1 else None, 90,
                     "every window's estimate and its realized accuracy")
    assert [r["window_size"] for r in rows] == [250] * len(rows)
    assert all(r["model"] == "churn" and r["model_version"] == 1 for r in rows)
    assert any(r["calibrated"] for r in rows)
    assert all(abs(r["gap"]) < 0.12 for r in rows), [r["gap"] for r in rows]


def test_the_correlation_flip_is_one_multivariate_alert(live: dict[str, Any]) -> None:
    s = live["settings"]
    alerts = _wait_for(lambda: _q(s, "select * from alerts where type = "
                                     "'MultivariateDriftDetected'"), 90,
                       "a multivariate drift alert")
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["statistic"] > alert["threshold"] and alert["detector"] == "pca_reconstruction"
    first = _q(s, "select count(*) n from predictions where time < "
                  f"(select min(time) from predictions where prediction_id in "
                  f"(select unnest(prediction_ids) from alerts where event_id = "
                  f"'{alert['event_id']}'))")[0]["n"]
    assert FLIP_AT <= first < FLIP_AT + 500


def test_segment_metrics_view_has_the_configured_segments(live: dict[str, Any]) -> None:
    s = live["settings"]
    def whole() -> list[dict[str, Any]] | None:  # the report after the last prediction
        rows = _q(s, "select * from segment_metrics where latest order by value")
        return rows if sum(r["predictions"] for r in rows) == N else None

    rows = _wait_for(whole, 60, f"the segment report of all {N} predictions")
    assert [r["value"] for r in rows] == ["DE", "FR", "US"]
    assert all(r["feature"] == "country" and r["predictions"] > 0 for r in rows)
    assert sum(r["predictions"] for r in rows) == N
    assert all(r["share"] is not None and r["psi"] is not None for r in rows)  # traffic mix
    assert len({r["feature_psi"] for r in rows}) == 1 and rows[0]["feature_psi"] >= 0
