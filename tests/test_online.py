"""Online River models on the stream: equality with River, checkpoints, the join, a broker run."""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing, stream

from modelog.models import codec
from modelog.models.errors import ArtifactDigestMismatch, InvalidParameterError, OnlineModelError
from modelog.models.events import (
    Event,
    LabelObserved,
    MetricsLogged,
    ModelVersionRegistered,
    OnlineModelCheckpointed,
    PredictionMade,
)
from modelog.models.flavors import dump
from modelog.models.online import OnlineLearner
from modelog.models.online_models import OnlineModelProcessor
from modelog.store.artifacts import ArtifactStore

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
MODEL = "phish"
KEY = b"worker-key-for-tests-0123456789ab"  # the worker's <data_dir>/worker.key


def make_model() -> Any:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def phishing() -> list[tuple[dict[str, Any], Any]]:
    return list(datasets.Phishing())


def agrawal(n: int) -> list[tuple[dict[str, Any], Any]]:
    return list(datasets.synth.Agrawal(seed=1).take(n))


def registration(store: ArtifactStore, model: Any = None, *, version: int = 1,
                 online: bool = True, digest: str | None = None,
                 run_id: str | None = None) -> ModelVersionRegistered:
    art = dump(model if model is not None else make_model(), "river-spec")
    d, uri = store.put_bytes(art.data, suffix=".json")
    return ModelVersionRegistered(
        id=f"reg-{version}", time=T0, aggregate=MODEL, model=MODEL, model_version=version,
        run_id=run_id, flavor="river-spec", artifact_uri=uri, artifact_digest=digest or d,
        online=online)


def prediction(i: int, x: dict[str, Any], *, model: str = MODEL) -> PredictionMade:
    return PredictionMade(id=f"p-{i}", time=T0 + dt.timedelta(seconds=1 + i), aggregate=model,
                          prediction_id=f"pred-{i}", model=model, model_version=1,
                          inputs=x, output=None)


def label(i: int, y: Any, *, model: str = MODEL) -> LabelObserved:
    return LabelObserved(id=f"l-{i}", time=T0 + dt.timedelta(seconds=1 + i), aggregate=model,
                         prediction_id=f"pred-{i}", model=model, label=y)


def serving_events(data: list[tuple[dict[str, Any], Any]], delay: int = 0) -> Iterator[Event]:
    """Predictions and labels in the order River reveals them (``delay`` samples later)."""
    if delay == 0:
        for i, (x, y) in enumerate(data):
            yield prediction(i, x)
            yield label(i, y)
        return
    for i, x, y in stream.simulate_qa(data, None, delay, copy=True):
        yield prediction(i, x) if y is None else label(i, y)


def river_score(data: list[tuple[dict[str, Any], Any]], metric: Any,
                delay: int | None = None) -> float:
    return float(evaluate.progressive_val_score(data, make_model(), metric, delay=delay).get())


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def run(proc: OnlineModelProcessor, events: Iterator[Event] | list[Event]) -> list[Event]:
    return [out for ev in events for out in proc.process(ev)]


# -- equality with River's progressive validation ---------------------------------------
def test_processor_equals_progressive_val_score_on_phishing(store: ArtifactStore) -> None:
    data = phishing()
    proc = OnlineModelProcessor(store, metrics_every=100, checkpoint_every=10_000)
    assert proc.process(registration(store)) == []
    out = run(proc, serving_events(data))

    learner = proc.learner(MODEL, 1)
    assert learner is not None and learner.n_learned == len(data) == 1250
    expected = river_score(data, metrics.Accuracy())
    assert learner.value == pytest.approx(expected, abs=1e-12)
    logged = [e for e in out if isinstance(e, MetricsLogged)]
    assert [e.metrics[0].step for e in logged] == list(range(100, 1201, 100))
    assert {e.run_id for e in logged} == {"online-phish-v1"}
    assert logged[-1].metrics[0].key == "prequential_accuracy"
    # every point equals River's value at the same step
    checkpoints = evaluate.iter_progressive_val_score(data, make_model(), metrics.Accuracy(),
                                                      step=100)
    river_curve = [(c["Step"], c["Accuracy"].get()) for c in checkpoints][:12]
    assert [e.metrics[0].step for e in logged] == [n for n, _ in river_curve]
    assert [e.metrics[0].value for e in logged] == pytest.approx(
        [v for _, v in river_curve], abs=1e-12)
    assert proc.counters(MODEL, 1)["pending"] == 0
    # on shutdown, the state since the last checkpoint is saved too
    [final] = proc.checkpoint_all()
    assert isinstance(final, OnlineModelCheckpointed) and final.n_learned == 1250
    assert final.metrics["prequential_accuracy"] == learner.value
    assert final.time == T0 + dt.timedelta(seconds=1250)


def test_agrawal_with_a_probability_metric_and_the_registration_run(
        store: ArtifactStore) -> None:
    data = agrawal(2000)
    proc = OnlineModelProcessor(store, metric=lambda _model: metrics.LogLoss(),
                                metrics_every=500)
    proc.process(registration(store, run_id="run-42"))
    out = run(proc, serving_events(data))
    learner = proc.learner(MODEL, 1)
    assert learner is not None
    assert learner.value == pytest.approx(river_score(data, metrics.LogLoss()), abs=1e-12)
    assert [(e.run_id, e.metrics[0].key) for e in out if isinstance(e, MetricsLogged)] == [
        ("run-42", "prequential_logloss")] * 4


def test_delayed_labels_equal_river_with_delay(store: ArtifactStore) -> None:
    data = agrawal(1500)
    proc = OnlineModelProcessor(store)
    proc.process(registration(store))
    run(proc, serving_events(data, delay=25))
    learner = proc.learner(MODEL, 1)
    assert learner is not None and learner.n_learned == 1500
    expected = river_score(data, metrics.Accuracy(), delay=25)
    assert learner.value == pytest.approx(expected, abs=1e-12)
    # and delay changes the result, so the test can tell the semantics apart
    assert expected != river_score(data, metrics.Accuracy())


# -- checkpoints and restart ---------------------------------------------------------------
def test_restart_from_checkpoint_equals_uninterrupted_run(store: ArtifactStore) -> None:
    data = agrawal(3000)
    reg = registration(store)
    records = list(serving_events(data, delay=7))  # predictions pending across the checkpoint

    whole = OnlineModelProcessor(store, checkpoint_every=1500, metrics_every=500,
                                 checkpoint_key=KEY)
    whole.process(reg)
    whole_out = [out for offset, ev in enumerate(records)
                 for out in whole.process(ev, partition=0, offset=offset)]
    uninterrupted = whole.learner(MODEL, 1)
    assert uninterrupted is not None and uninterrupted.n_learned == 3000

    first = OnlineModelProcessor(store, checkpoint_every=1500, metrics_every=500,
                                 checkpoint_key=KEY)
    first.process(reg)
    checkpoints: list[OnlineModelCheckpointed] = []
    for offset, ev in enumerate(records):
        checkpoints += [e for e in first.process(ev, partition=0, offset=offset)
                        if isinstance(e, OnlineModelCheckpointed)]
        if checkpoints:
            break  # the worker dies right after publishing the first checkpoint
    [cp] = checkpoints
    assert cp.n_learned == 1500 and cp.model_version == 1
    assert cp.source_offset == {"0": offset + 1}
    assert set(cp.metrics) == {"prequential_accuracy"}
    assert first.counters(MODEL, 1)["pending"] > 0  # carried by the checkpoint

    # resume: restore, re-read the registry (ignored: already restored), replay from the offset
    second = OnlineModelProcessor(store, checkpoint_every=1500, metrics_every=500,
                                  checkpoint_key=KEY)
    assert second.resume(checkpoints) == 1
    assert second.process(reg) == []
    start = second.start_offsets()[0]
    assert start == offset + 1
    second_out = [out for o in range(start, len(records))
                  for out in second.process(records[o], partition=0, offset=o)]
    resumed = second.learner(MODEL, 1)
    assert resumed is not None
    assert resumed.n_learned == 3000
    assert resumed.value == uninterrupted.value
    assert resumed.learning_curve == uninterrupted.learning_curve
    # the events published after the restart are the uninterrupted run's, same ids
    tail = [e for e in whole_out if e.time > cp.time]
    assert [e.id for e in second_out] == [e.id for e in tail]

    # replaying the whole log into a restored processor learns nothing twice
    third = OnlineModelProcessor(store, checkpoint_every=1500, metrics_every=500,
                                 checkpoint_key=KEY)
    third.resume(checkpoints)
    for o, ev in enumerate(records):
        third.process(ev, partition=0, offset=o)
    replayed = third.learner(MODEL, 1)
    assert replayed is not None and replayed.value == uninterrupted.value
    assert third.counters(MODEL, 1)["skipped_covered"] == start


def test_learner_checkpoint_roundtrip_and_digest_check() -> None:
    data = agrawal(600)
    learner = OnlineLearner(make_model(), metrics.Accuracy(), every=100)
    for x, y in data[:300]:
        learner.learn_one(x, y)
    blob = learner.checkpoint()
    from modelog.models.flavors import digest

    restored = OnlineLearner.restore(blob, digest(blob))
    for x, y in data[300:]:
        learner.learn_one(x, y)
        restored.learn_one(x, y)
    assert restored.value == learner.value == pytest.approx(
        river_score(data, metrics.Accuracy()), abs=1e-12)
    assert len(restored.learning_curve) == 6
    with pytest.raises(ArtifactDigestMismatch):
        OnlineLearner.restore(blob, "0" * 64)


# -- the join and the registrations ----------------------------------------------------------
def test_join_counts_orphans_duplicates_and_old_predictions(store: ArtifactStore) -> None:
    data = agrawal(10)
    proc = OnlineModelProcessor(store, max_pending=3)
    early = prediction(-2, data[0][0])  # before the registration time
    assert proc.process(early) == []  # nobody learns "phish" yet
    proc.process(registration(store))
    proc.process(early)
    for i in range(5):
        proc.process(prediction(i, data[i][0]))
    proc.process(prediction(4, data[4][0]))           # duplicate prediction
    proc.process(label(0, data[0][1]))                # evicted: orphan
    proc.process(label(4, data[4][1]))
    proc.process(label(4, data[4][1]))                # duplicate label
    proc.process(label(99, True))                     # unknown id
    proc.process(label(0, 1, model="other"))          # no online model: ignored
    c = proc.counters(MODEL, 1)
    assert c == {"predictions": 5, "learned": 1, "orphan_labels": 2, "duplicate_predictions": 1,
                 "duplicate_labels": 1, "evicted": 2, "predict_errors": 0, "learn_errors": 0,
                 "skipped_covered": 0, "skipped_before_registration": 1, "pending": 2}
    assert proc.online_models() == [(MODEL, 1)]


def test_registrations_that_do_not_start_learners(store: ArtifactStore) -> None:
    proc = OnlineModelProcessor(store)
    assert proc.process(registration(store, online=False)) == []
    batch = ModelVersionRegistered(id="r", time=T0, aggregate=MODEL, model=MODEL,
                                   model_version=2, flavor="sklearn", artifact_uri="x",
                                   artifact_digest="0" * 64, online=True)
    assert proc.process(batch) == []
    assert proc.online_models() == []
    with pytest.raises(OnlineModelError, match="digest mismatch"):
        proc.process(registration(store, version=3, digest="ab" * 32))
    no_store = OnlineModelProcessor(None)
    assert no_store.process(registration(store)) == [] and no_store.ignored_registrations == 1
    with pytest.raises(InvalidParameterError, match="checkpoint_every"):
        OnlineModelProcessor(store, checkpoint_every=0)


def test_two_online_versions_learn_side_by_side_with_deterministic_ids(
        store: ArtifactStore) -> None:
    data = agrawal(400)
    regs = [registration(store, version=1),
            registration(store, linear_model.LogisticRegression(), version=2)]

    def once() -> list[Event]:
        proc = OnlineModelProcessor(store, metrics_every=200, checkpoint_every=400)
        for reg in regs:
            proc.process(reg)
        out = run(proc, serving_events(data))
        assert proc.online_models() == [(MODEL, 1), (MODEL, 2)]
        return out

    a, b = once(), once()
    assert [e.id for e in a] == [e.id for e in b]
    checkpointed = [e.model_version for e in a if isinstance(e, OnlineModelCheckpointed)]
    assert sorted(checkpointed) == [1, 2]
    runs = {e.run_id for e in a if isinstance(e, MetricsLogged)}
    assert runs == {"online-phish-v1", "online-phish-v2"}


# -- through the real broker ---------------------------------------------------------------
@pytest.mark.broker
def test_through_the_broker_serialization_does_not_change_the_result(
        topics: Any, store: ArtifactStore) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    from modelog.streams.topics import Topics

    data = phishing()
    names = Topics.from_settings(topics)
    producer = Producer(topics.kafka_config())
    events = list(serving_events(data))
    for ev in events:
        producer.produce(names.serving, key=ev.aggregate.encode(), value=codec.encode(ev))
    assert producer.flush(30) == 0

    consumer = Consumer({**topics.kafka_config(), "group.id": "h12-online-test",
                         "enable.auto.commit": False})
    proc = OnlineModelProcessor(store, metrics_every=250, checkpoint_every=1000)
    proc.process(registration(store))
    out: list[Event] = []
    seen = 0
    try:
        consumer.assign([TopicPartition(names.serving, p, 0) for p in range(topics.partitions)])
        for _ in itertools.count():
            batch = consumer.consume(1000, timeout=2.0)
            if not batch:
                break
            for msg in batch:
                assert msg.error() is None
                value = msg.value()
                assert value is not None
                out += proc.process(codec.decode(value), msg.partition(), msg.offset())
                seen += 1
            if seen == len(events):
                break
    finally:
        consumer.close()
    assert seen == len(events)
    learner = proc.learner(MODEL, 1)
    assert learner is not None and learner.n_learned == len(data)
    assert learner.value == pytest.approx(river_score(data, metrics.Accuracy()), abs=1e-12)
    [cp] = [e for e in out if isinstance(e, OnlineModelCheckpointed)]
    assert cp.source_offset is not None and len(cp.source_offset) == 1
    assert codec.decode(codec.encode(cp)) == cp
    assert all(math.isfinite(m.value) for e in out if isinstance(e, MetricsLogged)
               for m in e.metrics)


def test_snapshot_restored_mid_stream_gives_the_same_events(store: ArtifactStore) -> None:
    events = list(serving_events(agrawal(600), delay=5))
    whole = OnlineModelProcessor(store, metrics_every=50, checkpoint_every=10_000)
    expected = run(whole, [registration(store), *events])
    assert any(isinstance(e, MetricsLogged) for e in expected)

    first = OnlineModelProcessor(store, metrics_every=50, checkpoint_every=10_000)
    head = run(first, [registration(store), *events[:500]])
    resumed = OnlineModelProcessor(store, metrics_every=50, checkpoint_every=10_000)
    resumed.restore(first.snapshot())
    assert resumed.artifacts is store  # the store is not part of the snapshot
    assert head + run(resumed, events[500:]) == expected
