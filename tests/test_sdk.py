"""The SDK: inline validation, artifacts and dataset digests, and a round trip
through a real broker (predictions, labels, a run, the registry, async)."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, TopicPartition

import modelog
from modelog.config import Settings
from modelog.models import codec
from modelog.models.errors import ArtifactDigestMismatch, EventValidationError
from modelog.models.events import (
    AliasSet,
    Event,
    LabelObserved,
    MetricsLogged,
    ModelVersionRegistered,
    ParamsLogged,
    PredictionMade,
    RunFailed,
    RunFinished,
    RunStarted,
)
from modelog.models.ids import UuidV7
from modelog.models.validation import check_output, check_scalars
from modelog.store.artifacts import ArtifactStore, table_digest
from modelog.store.errors import ArtifactNotFoundError, ArtifactPathError
from modelog.streams.broker import free_port
from modelog.streams.errors import BrokerUnavailableError, RunNotActiveError
from modelog.streams.producer import EventProducer
from modelog.streams.registry_agent import RegistryService
from modelog.streams.sdk import Client
from modelog.streams.topics import Topics, ensure_topics


# -- helpers ------------------------------------------------------------------------
class _Recorder(EventProducer):
    """A producer that records what the client queues instead of sending it (no broker)."""

    def __init__(self) -> None:  # no super().__init__: no broker connection
        self.sent: list[tuple[str, bytes, bytes]] = []
        self._closed = False

    def send(self, topic: str, key: bytes, payload: Any, encoder: Any = codec.encode) -> None:
        self.sent.append((topic, key, encoder(payload)))

    def send_event(self, event: Event) -> None:
        self.send(f"x.{event.stream}", event.aggregate.encode(), event)

    def flush(self, timeout: float = 30.0) -> None:
        return None


@pytest.fixture
def offline(tmp_path: Path) -> tuple[Client, _Recorder]:
    recorder = _Recorder()
    settings = Settings(broker="127.0.0.1:1", data_dir=tmp_path, producer_name="unit")
    return Client(settings, recorder), recorder


def read_events(settings: Settings, topics: list[str], timeout: float = 15.0,
                expected: int = 0) -> list[tuple[str, bytes, Event]]:
    """Every record of ``topics`` from the beginning, decoded: ``(topic, key, event)``."""
    consumer = Consumer({**settings.kafka_config(), "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(timeout=10).topics
        consumer.assign([TopicPartition(t, p, 0) for t in topics for p in meta[t].partitions])
        out: list[tuple[str, bytes, Event]] = []
        end = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < end:
            batch = [m for m in consumer.consume(1000, 0.3) if m.error() is None]
            out.extend((m.topic() or "", m.key() or b"", codec.decode(m.value() or b""))
                       for m in batch)
            if batch:
                quiet_since = time.monotonic()
            elif len(out) >= expected and time.monotonic() - quiet_since > 0.6:
                break
        return out
    finally:
        consumer.close()


# -- inline validation (no broker) -----------------------------------------------------
@pytest.mark.parametrize(
    ("call", "field", "value", "rule"),
    [
        (lambda c: c.log_prediction("churn", 1, {"age": math.nan}, 1), "inputs.age",
         None, "finite"),
        (lambda c: c.log_prediction("churn", 1, {"age": np.float64("inf")}, 1), "inputs.age",
         None, "finite"),
        (lambda c: c.log_prediction("no spaces!", 1, {}, 1), "model", "no spaces!",
         "letters, digits"),
        (lambda c: c.log_prediction("churn", 0, {}, 1), "model_version", 0, ">= 1"),
        (lambda c: c.log_prediction("churn", True, {}, 1), "model_version", True, ">= 1"),
        (lambda c: c.log_prediction("churn", 1, [("age", 1)], 1), "inputs", [("age", 1)],
         "mapping"),
        (lambda c: c.log_prediction("churn", 1, {"x": [1, 2]}, 1), "inputs.x", [1, 2],
         "str, int, float, bool or None"),
        (lambda c: c.log_prediction("churn", 1, {1: 2}, 1), "inputs", 1, "keys must be str"),
        (lambda c: c.log_prediction("churn", 1, {}, math.inf), "output", math.inf, "finite"),
        (lambda c: c.log_prediction("churn", 1, {}, [0.1, math.nan]), "output[1]", None,
         "finite"),
        (lambda c: c.log_prediction("churn", 1, {}, {"a": "b"}), "output.a", "b", "number"),
        (lambda c: c.log_prediction("churn", 1, {}, 1, prediction_id=""), "prediction_id", "",
         "1-128"),
        (lambda c: c.log_prediction("churn", 1, {}, 1, time=dt.datetime(2026, 1, 1)), "time",
         dt.datetime(2026, 1, 1), "timezone-aware"),
        (lambda c: c.log_label("churn", "p-1", math.nan), "label", None, "finite"),
        (lambda c: c.log_label("bad name", "p-1", 1), "model", "bad name", "letters"),
        (lambda c: c.log_prediction("churn", 1, {"__output__": 1.0}, 1), "inputs.__output__",
         1.0, "reserved"),
        (lambda c: c.log_prediction("churn", 2**31, {}, 1), "model_version", 2**31,
         "at most 2**31 - 1"),
        # surely more than a Kafka message holds: refused before anything is queued
        (lambda c: c.log_prediction("churn", 1, {"text": "x" * 1_200_000}, 1), "inputs",
         "<1 features, 1,200,000 characters of text>", "at most 1,000,000 bytes"),
        (lambda c: c.log_prediction("churn", 1, {f"f{i}": 1 for i in range(250_000)}, 1),
         "inputs", None, "at most 1,000,000 bytes"),
        (lambda c: c.log_prediction("churn", 1, {}, [0.5] * 600_000), "output", None,
         "log large data as a dataset or an artifact"),
    ],
)
def test_inline_validation_names_field_value_and_rule(
    offline: tuple[Client, _Recorder], call: Any, field: str, value: Any, rule: str
) -> None:
    client, recorder = offline
    with pytest.raises(EventValidationError) as info:
        call(client)
    err = info.value
    assert err.field == field
    if value is not None:
        assert err.value == value
    assert rule in err.rule
    assert field in str(err) and "nothing was sent" in str(err)
    assert recorder.sent == []


def test_log_prediction_encodes_a_valid_event(offline: tuple[Client, _Recorder]) -> None:
    client, recorder = offline
    inputs: dict[str, Any] = {"age": np.int64(42), "score": np.float32(0.5), "plan": "pro",
                              "ok": np.bool_(True), "none": None}
    pid = client.log_prediction("churn", 3, inputs, np.array([0.25, 0.75]), code_version="c1")
    inputs["age"] = 99  # later mutation by the caller must not leak into the event
    (topic, key, raw), = recorder.sent
    event = codec.decode(raw)
    assert isinstance(event, PredictionMade)
    assert (topic, key) == (client.topics.serving, b"churn")
    assert event.id == event.prediction_id == pid and uuid.UUID(pid).version == 7
    assert event.inputs == {"age": 42, "score": 0.5, "plan": "pro", "ok": True, "none": None}
    assert event.output == [0.25, 0.75] and event.code_version == "c1"
    assert event.producer == "unit" and event.aggregate == "churn"
    codec.validate(event)
    given = client.log_prediction("churn", 3, {}, "yes", prediction_id="req-7",
                                  time=dt.datetime(2026, 3, 3, tzinfo=dt.UTC))
    second = codec.decode(recorder.sent[-1][2])
    assert given == "req-7" and isinstance(second, PredictionMade)
    assert second.id != "req-7" and second.time == dt.datetime(2026, 3, 3, tzinfo=dt.UTC)


def test_log_prediction_with_class_probabilities(offline: tuple[Client, _Recorder]) -> None:
    client, recorder = offline
    classes, row = np.array([0, 1, 2]), np.array([0.1, 0.7, 0.2], dtype=np.float32)
    client.log_prediction("churn", 3, {"age": 4}, np.int64(1),
                          probabilities=dict(zip(classes, row, strict=True)))
    event = codec.decode(recorder.sent[-1][2])
    assert isinstance(event, PredictionMade) and event.schema_version == 3
    assert event.output == 1 and event.probabilities == pytest.approx(
        {"0": 0.1, "1": 0.7, "2": 0.2})
    with pytest.raises(EventValidationError) as info:
        client.log_prediction("churn", 3, {"age": 4}, 3, probabilities={0: 0.5, 1: 0.5})
    assert info.value.field == "output" and "one of the classes" in info.value.rule
    with pytest.raises(EventValidationError) as info:
        client.log_prediction("churn", 3, {"age": 4}, 1, probabilities={0: 0.5, 1: 0.9})
    assert info.value.field == "probabilities" and "sum to 1" in info.value.rule
    assert len(recorder.sent) == 1


def test_ids_are_unique_increasing_uuid7() -> None:
    gen = UuidV7()
    ids = [gen() for _ in range(20_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {7}


def test_check_helpers() -> None:
    assert check_scalars({"a": 1.5, "b": None}, "E", "params") == {"a": 1.5, "b": None}
    assert check_output({"a": 1, "b": 0.5}, "E", "output") == {"a": 1.0, "b": 0.5}
    assert check_output(np.float64(0.5), "E", "output") == 0.5
    with pytest.raises(EventValidationError, match=r"'params\.x'"):
        check_scalars({"x": object()}, "E", "params")


def test_run_params_and_metrics(offline: tuple[Client, _Recorder]) -> None:
    client, recorder = offline
    with client.start_run("exp", "r", capture_code=False) as run:
        run.log_params({"lr": 0.1, "depth": 6})
        run.log_params({"lr": 0.1})  # same value again: fine, nothing new sent
        with pytest.raises(EventValidationError) as info:
            run.log_params({"lr": 0.2})
        assert info.value.field == "params.lr" and "already logged as 0.1" in info.value.rule
        with pytest.raises(EventValidationError, match=r"metrics\.loss"):
            run.log_metric("loss", math.nan)
        for step in range(1_500):
            run.log_metrics({"loss": 1 / (step + 1)}, step=step)
    events = [codec.decode(raw) for _, _, raw in recorder.sent]
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["RunStarted", "ParamsLogged", "MetricsLogged", "MetricsLogged",
                     "RunFinished"]
    batches = [e for e in events if isinstance(e, MetricsLogged)]
    assert [len(b.metrics) for b in batches] == [1_000, 500]
    assert isinstance(events[1], ParamsLogged) and events[1].params == {"lr": 0.1, "depth": 6}
    assert {e.aggregate for e in events} == {run.run_id}
    with pytest.raises(RunNotActiveError):
        run.log_metric("late", 1.0)


def test_failed_run_records_the_exception(offline: tuple[Client, _Recorder]) -> None:
    client, recorder = offline
    with pytest.raises(ZeroDivisionError), client.start_run("exp", capture_code=False) as run:
        run.log_metric("x", 1.0)
        1 / 0  # noqa: B018
    last = codec.decode(recorder.sent[-1][2])
    assert isinstance(last, RunFailed) and last.run_id == run.run_id
    assert last.error.startswith("ZeroDivisionError") and "1 / 0" in last.traceback
    assert run.status == "failed"


# -- artifacts and dataset digests (no broker) ----------------------------------------
def test_artifact_store_is_idempotent_and_verifies(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    digest, uri = store.put_bytes(b"weights", suffix=".bin")
    assert store.put_bytes(b"weights", suffix=".bin") == (digest, uri)
    assert len(list((tmp_path / "artifacts" / "sha256").rglob("*"))) == 2  # dir + file
    src = tmp_path / "model.tar.gz"
    src.write_bytes(b"weights")
    assert store.put_file(src)[:2] == (digest, uri.replace(".bin", ".tar.gz"))
    assert store.get_bytes(digest) in (b"weights",) and store.get_bytes(uri) == b"weights"
    path = Path(uri.removeprefix("file://"))
    path.write_bytes(b"tampered")
    with pytest.raises(ArtifactDigestMismatch, match="digest mismatch in "):
        store.get_bytes(uri)
    with pytest.raises(ArtifactNotFoundError):
        store.get_bytes("0" * 64)


@pytest.mark.parametrize("ref", [
    "file:///etc/passwd",
    "../../etc/passwd",
    "file://{root}/sha256/../../outside",
    "s3://bucket/" + "a" * 64,
])
def test_artifact_store_rejects_paths_outside_its_root(tmp_path: Path, ref: str) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    store.put_bytes(b"x")
    with pytest.raises(ArtifactPathError):
        store.get_bytes(ref.format(root=store.root))


def test_artifact_store_rejects_bad_suffixes(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    with pytest.raises(ArtifactPathError, match="suffix"):
        store.put_bytes(b"x", suffix="/../../evil")


def test_dataset_digest_is_canonical(tmp_path: Path) -> None:
    table = pa.table({"age": [31, 42, None], "plan": ["a", "b", "c"], "y": [0.5, 1.5, 2.5]})
    df = table.to_pandas()
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1)])
    assert table_digest(table) == table_digest(table)
    assert table_digest(table) == table_digest(chunked)
    assert table_digest(pa.Table.from_pandas(df, preserve_index=False)) == table_digest(
        pa.table({"age": [31.0, 42.0, None], "plan": ["a", "b", "c"], "y": [0.5, 1.5, 2.5]})
    )  # pandas turns the int column with a null into float; same values -> same digest
    assert table_digest(table) != table_digest(table.slice(1))
    assert table_digest(table) != table_digest(table.rename_columns(["age", "plan", "z"]))
    store = ArtifactStore(tmp_path)
    digest, uri = store.put_table(chunked)
    assert digest == table_digest(table) and store.read_table(uri).equals(
        pa.table({"age": [31, 42, None], "plan": ["a", "b", "c"], "y": [0.5, 1.5, 2.5]}))


def test_log_dataset_accepts_arrow_pandas_parquet_and_csv(
    offline: tuple[Client, _Recorder], tmp_path: Path
) -> None:
    client, recorder = offline
    table = pa.table({"x": [1, 2, 3], "name": ["a", "b", "c"]})
    pq.write_table(table, tmp_path / "t.parquet")
    pd.DataFrame({"x": [1, 2, 3], "name": ["a", "b", "c"]}).to_csv(tmp_path / "t.csv",
                                                                  index=False)
    versions = [
        client.log_dataset("train", table),
        client.log_dataset("train", table.to_pandas()),
        client.log_dataset("train", tmp_path / "t.parquet"),
        client.log_dataset("train", str(tmp_path / "t.csv"), parents=["raw"]),
    ]
    assert len({v.digest for v in versions}) == 1 and len({v.uri for v in versions}) == 1
    assert versions[0].num_rows == 3
    assert client.artifacts.read_table(versions[0].uri).num_rows == 3
    events = [codec.decode(raw) for _, _, raw in recorder.sent]
    assert len(events) == 4 and events[-1].parents == ["raw"]  # type: ignore[attr-defined]
    assert events[0].columns[1].type == "string"  # type: ignore[attr-defined]
    different = client.log_dataset("train", table.slice(1))
    assert different.digest != versions[0].digest
    with pytest.raises(TypeError, match=r"pyarrow\.Table"):
        client.log_dataset("train", [1, 2, 3])
    with pytest.raises(EventValidationError, match="'name'"):
        client.log_dataset("bad name", table)


# -- with a broker ---------------------------------------------------------------------
def test_connect_to_a_closed_port_raises_broker_unavailable(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(BrokerUnavailableError, match=address):
        modelog.connect(address, settings=Settings(data_dir=tmp_path), connect_timeout=1)


@pytest.mark.broker
def test_round_trip_through_the_broker(settings: Settings) -> None:
    with modelog.connect(settings=settings) as client, RegistryService(settings):
        pids = [client.log_prediction("churn", 2, {"age": i, "plan": "pro", "s": i / 10}, i % 2)
                for i in range(300)]
        pids += [client.log_prediction("fraud", 1, {"amount": 9.5}, [0.1, 0.9])
                 for _ in range(100)]
        for pid in pids[:300:3]:
            client.log_label("churn", pid, 1)
        with client.start_run("churn-exp", "baseline", tags={"team": "ml"}) as run:
            run.log_params({"lr": 0.05})
            run.log_metric("auc", 0.91, step=1)
        assert client.register_model("churn", run=run, signature=[("age", "int64")]) == 1
        client.set_alias("churn", "production", 1, reason="better auc")
        client.flush()
        assert client.stats.acked == client.stats.sent == 400 + 100 + 4 + 2
    topics = Topics.from_settings(settings)
    records = read_events(settings, [topics.serving, topics.runs, topics.registry],
                          expected=506)
    by_type = Counter(type(e).__name__ for _, _, e in records)
    assert by_type == {"PredictionMade": 400, "LabelObserved": 100, "RunStarted": 1,
                       "ParamsLogged": 1, "MetricsLogged": 1, "RunFinished": 1,
                       "ModelVersionRegistered": 1, "AliasSet": 1}
    assert len({e.id for _, _, e in records}) == len(records)
    serving = [(k, e) for t, k, e in records if t == topics.serving]
    assert all(isinstance(e, PredictionMade | LabelObserved) and k == e.model.encode()
               for k, e in serving)
    first = next(e for _, e in serving if isinstance(e, PredictionMade) and e.prediction_id ==
                 pids[5])
    assert first.inputs == {"age": 5, "plan": "pro", "s": 0.5} and first.model_version == 2
    labels = {e.prediction_id for _, e in serving if isinstance(e, LabelObserved)}
    assert labels == set(pids[:300:3])
    started = next(e for _, _, e in records if isinstance(e, RunStarted))
    assert started.tags == {"team": "ml"} and started.code.python
    assert any(isinstance(e, RunFinished) and e.run_id == run.run_id for _, _, e in records)
    registered = next(e for _, _, e in records if isinstance(e, ModelVersionRegistered))
    assert registered.run_id == run.run_id and registered.signature[0].name == "age"
    alias = next((k, e) for _, k, e in records if isinstance(e, AliasSet))
    assert alias[0] == b"churn" and alias[1].reason == "better auc"


@pytest.mark.broker
def test_async_client_round_trip(settings: Settings) -> None:
    ensure_topics(settings)

    async def main() -> tuple[str, int]:
        async with modelog.connect_async(settings=settings) as client:
            pid = client.log_prediction("churn", 1, {"age": 3}, 0.7)
            client.log_label("churn", pid, 0)
            async with client.start_run("async-exp", capture_code=False) as run:
                run.log_metric("loss", 0.3)
            assert await client.register_model("churn", run=run) == 1
            await client.set_alias("churn", "staging", 1)
            await client.flush()
            return pid, client.stats.acked

    with RegistryService(settings):
        pid, acked = asyncio.run(main())
    assert acked == 7
    topics = Topics.from_settings(settings)
    events = [e for _, _, e in read_events(settings, [topics.serving, topics.registry],
                                           expected=4)]
    assert [type(e).__name__ for e in events if isinstance(e, PredictionMade | LabelObserved)
            ] == ["PredictionMade", "LabelObserved"]
    assert any(isinstance(e, PredictionMade) and e.prediction_id == pid for e in events)
    assert any(isinstance(e, AliasSet) and e.alias == "staging" for e in events)


def test_prediction_fast_encoding_is_byte_identical_to_the_codec(tmp_path: Path) -> None:
    """The SDK encodes a lean wire struct for PredictionMade; it must be the codec's bytes."""
    import random

    from modelog.streams.sdk import _PredictionWire

    assert _PredictionWire.__struct_fields__ == PredictionMade.__struct_fields__

    rng = random.Random(7)
    recorder = _Recorder()
    client = Client(Settings(broker="127.0.0.1:1", data_dir=tmp_path,
                             producer_name='unit "é" \\ 🚀'), recorder)
    texts = ["", "plain", 'quote " and \\ backslash', "é ü 日本 🚀", "\n\t\x01", "a" * 300]
    numbers = [0, -1, 2**53 + 1, -(2**62), 0.0, -0.0, 1e-300, 1.7976931348623157e308, 0.1,
               -2.5e-7, 123456.789]

    def scalar() -> object:
        kind = rng.randrange(5)
        return (rng.choice(texts) if kind == 0 else rng.choice(numbers) if kind == 1
                else rng.random() * 10 ** rng.randint(-8, 8) if kind == 2
                else rng.choice([True, False]) if kind == 3 else None)

    for i in range(400):
        inputs = {rng.choice(texts) + str(k): scalar() for k in range(rng.randrange(6))}
        output = rng.choice([scalar(), [rng.random() for _ in range(3)],
                             {"a": rng.random(), "b": 0.5}])
        kwargs: dict[str, Any] = {}
        if i % 3 == 0:
            kwargs["prediction_id"] = f"req-{i}"
        if i % 4 == 0:
            kwargs["time"] = dt.datetime(2026, 3, 3, 12, 0, i % 60, (i * 7919) % 1_000_000,
                                         tzinfo=dt.UTC)
        if i % 5 == 0:
            kwargs["code_version"] = rng.choice(texts)
        if i % 7 == 0:
            p = rng.random()
            output, kwargs["probabilities"] = "yes", {"yes": p, "no": 1.0 - p}
        model = rng.choice(["churn", "m-2", "fraud.v1"])
        client.log_prediction(model, 1 + i % 3, inputs, output, **kwargs)
        raw = recorder.sent[-1][2]
        event = codec.decode(raw)
        assert codec.encode(event) == raw, raw
        assert event.inputs == inputs and event.model == model
