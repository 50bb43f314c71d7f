"""The worker's data plane against a real broker: training data as the reference, point
anomalies, and their view after projection.

A dataset version (with its profile) on the datasets topic, a run that trained on it on the
runs topic, and two registered versions -- v1 from that run, v2 from no run -- on the
registry topics; the worker's serving loop (:class:`~modelog.streams.serving_loop.ServingLoop`,
as ``modelog worker`` runs it) in a thread; then the projector, and the
``prediction_anomalies`` view.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer

from modelog.config import Settings
from modelog.models import codec
from modelog.models.events import (
    AnomalyDetected,
    DriftDetected,
    Event,
    ModelVersionRequested,
    PredictionMade,
)
from modelog.models.monitor import ServingMonitor
from modelog.models.registry_fold import answered
from modelog.streams.serving_loop import ServingLoop
from modelog.streams.topics import Topics
from modelog.streams.worker import RecordRouter
from tests.test_monitor_reference import T0, predictions
from tests.test_outliers import gaussian, lifecycle, profile_of
from tests.test_worker import read_until

pytestmark = [pytest.mark.broker]

GROSS = {120: {"age": 400.0}, 240: {"income": -80_000.0}, 360: {"age": -350.0},
         480: {"age": 500.0}, 600: {"plan": "enterprise-xl"}}


def _produce(s: Settings, events: list[Event]) -> None:
    topics = Topics.from_settings(s)
    producer = Producer({**s.kafka_config(), "acks": "all", "linger.ms": 20})
    for event in events:
        producer.produce(topics.for_event(event), key=event.aggregate.encode(),
                         value=codec.encode(event))
    assert producer.flush(30) == 0


def _request(version_hint: str, run_id: str | None) -> ModelVersionRequested:
    return ModelVersionRequested(id=version_hint, time=T0, aggregate="churn",
                                 command_id=version_hint, model="churn", run_id=run_id,
                                 flavor="custom", artifact_uri="file:///m",
                                 artifact_digest="0" * 64)


def _decoded(records: list[tuple[Any, ...]]) -> list[Event]:
    out = []
    for _, value, _ in records:
        try:
            out.append(codec.decode(value))
        except Exception:
            continue
    return out


def test_worker_uses_the_training_dataset_and_flags_gross_outliers(topics: Settings) -> None:
    s = topics
    dataset, used, _ = lifecycle(profile_of(gaussian, 5_000, seed=1))
    registry = answered([(_request(f"reg-{uuid.uuid4().hex[:8]}", "r1"), T0),
                         (_request(f"reg-{uuid.uuid4().hex[:8]}", None), T0)])
    _produce(s, [dataset, used, *registry])

    loop = ServingLoop(s, lambda: RecordRouter(Topics.from_settings(s), ServingMonitor()),
                       group=f"{s.topic_prefix}worker.monitor", batch_within=0.1,
                       session_timeout=6.0, snapshot_every=None)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        assert loop.started.wait(60), "the serving loop did not start"
        v1 = predictions(1, 800)  # +2 sigma from the first prediction: wrong from day one
        for i, change in GROSS.items():
            v1[i] = PredictionMade(**{**{f: getattr(v1[i], f) for f in v1[i].__struct_fields__},
                                      "inputs": {**v1[i].inputs, **change}})
        v2 = predictions(2, 1_700, shift_from=1_000, seed=8)
        _produce(s, [*v1, *v2])

        def done(records: list[tuple[Any, ...]]) -> bool:
            events = _decoded(records)
            kinds = {(type(e).__name__, getattr(e, "model_version", None),
                      getattr(e, "detector", None)) for e in events}
            return {("DriftDetected", 1, "psi"), ("DriftDetected", 2, "psi"),
                    ("AnomalyDetected", 1, "outliers")} <= kinds

        events = _decoded(read_until(s, Topics.from_settings(s).monitoring, done, 120))
    finally:
        loop.stop()
        thread.join(30)
    assert not thread.is_alive()
    data = [e for e in events if isinstance(e, DriftDetected) and e.kind == "data"
            and e.feature == "age"]
    first_v1 = next(e for e in data if e.model_version == 1)
    first_v2 = next(e for e in data if e.model_version == 2)
    assert "against training dataset churn-train v1" in first_v1.message
    assert first_v1.prediction_ids[-1] == "v1-499"  # the first full window, no warm-up
    assert "against the first 1000 predictions (no training dataset)" in first_v2.message
    [alert] = [e for e in events if isinstance(e, AnomalyDetected) and e.detector == "outliers"]
    assert set(alert.prediction_ids) <= {f"v1-{i}" for i in GROSS}
    assert "training dataset churn-train v1" in alert.message

    # the projection: one row per scored prediction, the gross outliers queryable
    from modelog.store.reader import Reader
    from modelog.streams.projector import Projector

    scored = sum(len(e.prediction_ids) for e in events if e.type_name() == "PredictionsScored"
                 and getattr(e, "model_version", None) == 1)
    with Projector(s, serve=False) as projector:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            projector.project_once(timeout=0.5)
            n = projector_count(projector)
            if n >= scored:
                break
    rows = Reader(s).query(
        "SELECT prediction_id, score, outlier, features, reference FROM prediction_anomalies "
        "WHERE model = 'churn' AND model_version = 1").to_pylist()
    assert len(rows) == scored >= 700
    flagged = {r["prediction_id"]: r for r in rows if r["outlier"]}
    assert set(flagged) == {f"v1-{i}" for i in GROSS}
    assert flagged["v1-120"]["features"] == ["age"] and flagged["v1-600"]["score"] == 10.0
    assert rows[0]["reference"] == "training dataset churn-train v1"
    # the dashboard's panel: the most anomalous recent inputs, with what offends
    from modelog.dashboard.anomaly_panel import anomalous_inputs

    top = anomalous_inputs(Reader(s), "churn", 1, limit=5)
    assert set(top["prediction_id"]) == set(flagged) and top["outlier"].all()
    assert list(top["score"]) == sorted(top["score"], reverse=True)
    first = top.iloc[0]
    # income -80,000 is ~166 robust scales off (income's IQR ~670), age 500 is ~44
    assert first["prediction_id"] == "v1-240" and first["offending"] == "income"
    assert '"income":-80000.0' in str(first["inputs"]).replace(" ", "")


def projector_count(projector: Any) -> int:
    """Rows of the prediction_anomalies view of model version 1 in the projector's database."""
    con = projector.connection
    try:
        row = con.execute("SELECT count(*) FROM prediction_anomalies "
                          "WHERE model_version = 1").fetchone()
    except Exception:
        return 0
    return int(row[0]) if row else 0
