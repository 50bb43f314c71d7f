"""The model registry end to end: commands, the registry worker, the SDK, history.

One registry worker (a Faust app in a subprocess) serves the whole module;
every test uses its own model names so they do not interfere.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from confluent_kafka import Producer

import modelog
from modelog.config import Settings
from modelog.models import codec, flavors
from modelog.models.deadletter import DeadLetter
from modelog.models.errors import ArtifactDigestMismatch
from modelog.models.events import (
    AliasChangeRequested,
    AliasSet,
    Event,
    ModelVersionRegistered,
    ModelVersionRequested,
)
from modelog.models.registry import RegistryState, apply, decide_registration
from modelog.streams.errors import (
    AliasChangeRejectedError,
    ModelNotFoundError,
    RegistryTimeoutError,
)
from modelog.streams.registry_agent import LogTail, RegistryRouter, decode_records
from modelog.streams.run import DatasetVersion
from modelog.streams.sdk import Client
from modelog.streams.topics import Topics, ensure_topics

T0 = dt.datetime(2026, 3, 3, 14, tzinfo=dt.UTC)


def _request(command_id: str = "c-1", model: str = "churn", **fields: object
             ) -> ModelVersionRequested:
    return ModelVersionRequested(id=command_id, time=T0, aggregate=model, command_id=command_id,
                                 model=model, flavor="sklearn", **fields)  # type: ignore[arg-type]


# -- pure -------------------------------------------------------------------------------
def test_registration_decision_numbers_versions_and_is_idempotent() -> None:
    first = decide_registration(RegistryState(), _request("c-1", library_versions={"x": "1"}),
                                now=T0)
    assert (first.model_version, first.command_id, first.library_versions) == (1, "c-1",
                                                                               {"x": "1"})
    assert decide_registration(RegistryState(), _request("c-1"), now=T0).id == first.id
    state = apply(RegistryState(), first)
    assert decide_registration(state, _request("c-1"), now=T0 + dt.timedelta(hours=1)) == first
    second = decide_registration(state, _request("c-2"), now=T0)
    assert second.model_version == 2 and second.id != first.id
    with pytest.raises(modelog.ModelogError, match="timezone-aware"):
        decide_registration(state, _request("c-3"), now=dt.datetime(2026, 3, 3))


def test_old_registration_records_still_decode() -> None:
    old = (b'{"type":"ModelVersionRegistered","id":"e","time":"2026-03-03T14:00:00Z",'
           b'"aggregate":"churn","model":"churn","model_version":1,"flavor":"sklearn",'
           b'"artifact_uri":"","artifact_digest":""}')
    event = codec.decode(old)
    assert isinstance(event, ModelVersionRegistered)
    assert event.command_id is None and event.library_versions == {}


def test_processor_dead_letters_foreign_records_and_ignores_redeliveries() -> None:
    proc = RegistryRouter(Topics("p."), clock=lambda: T0)
    cmd = codec.encode(_request("c-1"))
    [out] = proc.route(b"churn", cmd, "p.registry-commands", 1, 5)
    assert out.topic == "p.registry" and out.key == b"churn"
    assert proc.route(b"churn", cmd, "p.registry-commands", 1, 6)[0].value == out.value
    assert out.event is not None
    proc.observe(out.event)
    assert proc.route(b"churn", cmd, "p.registry-commands", 1, 7) == []
    [wrong_key] = proc.route(b"fraud", cmd, "p.registry-commands", 0, 8)
    assert wrong_key.topic == "p.dead-letter" and wrong_key.value == cmd
    assert "keyed by their model" in DeadLetter.from_headers(wrong_key.headers).reason
    [foreign] = proc.route(b"churn", out.value, "p.registry-commands", 0, 9)
    info = DeadLetter.from_headers(foreign.headers)
    assert info.consumer == "registry" and "does not belong" in info.reason
    assert info.source_offset == 9 and proc.dead_lettered == 2


# -- with a broker and a registry worker --------------------------------------------------
WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import faust
    from modelog.config import Settings
    from modelog.streams.registry_agent import register_agents
    from modelog.streams.worker import build_app

    broker, prefix, data_dir = sys.argv[1:4]
    settings = Settings(broker=broker, topic_prefix=prefix, data_dir=Path(data_dir),
                        partitions=2, producer_name="registry-worker")
    app = build_app(settings, session_timeout=6)
    register_agents(app, settings)
    register_agents(app, settings)  # idempotent
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
""")


@pytest.fixture(scope="module")
def reg_settings(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(broker=broker, data_dir=tmp_path_factory.mktemp("registry") / "data",
                        topic_prefix=f"r{uuid.uuid4().hex[:10]}.", partitions=2,
                        producer_name="pytest")
    settings.data_dir.mkdir(parents=True)
    ensure_topics(settings)
    return settings


@pytest.fixture(scope="module")
def worker(reg_settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    log = reg_settings.data_dir.parent / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, reg_settings.bootstrap_servers,
             reg_settings.topic_prefix, str(reg_settings.data_dir), "worker"],
            stdout=out, stderr=subprocess.STDOUT, cwd=reg_settings.data_dir.parent,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(2)  # nothing to save: the registry's state is the log
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(reg_settings: Settings, worker: subprocess.Popen[bytes]) -> Iterator[Client]:
    with modelog.connect(settings=reg_settings) as c:
        try:  # the first answer proves the worker is up (Faust joins its group first)
            c.register_model("warm-up", artifact_uri="s3://nowhere", timeout=60)
        except RegistryTimeoutError:
            log = (reg_settings.data_dir.parent / "worker.log").read_text(errors="replace")
            pytest.fail(f"registry worker did not start; its log:\n{log[-3000:]}")
        yield c


@pytest.fixture(scope="module")
def trained(client: Client) -> tuple[DatasetVersion, Any, pd.DataFrame]:
    from sklearn.linear_model import LogisticRegression

    frame = pd.DataFrame({"age": [22.0, 35, 47, 51, 62, 29, 41, 58],
                          "plan": [0, 1, 1, 0, 1, 0, 0, 1],
                          "y": [0, 0, 1, 1, 1, 0, 0, 1]})
    dataset = client.log_dataset("churn-train", frame)
    model = LogisticRegression().fit(frame[["age", "plan"]], frame["y"])
    return dataset, model, frame[["age", "plan"]]


def _registry_records(settings: Settings, *, commands: bool = False) -> list[Event]:
    topics = Topics.from_settings(settings)
    with LogTail(settings, topics.registry_commands if commands else topics.registry) as tail:
        return decode_records(tail.read_to_end())


@pytest.mark.broker
@pytest.mark.slow
def test_register_versions_and_load_them_back(
    client: Client, trained: tuple[DatasetVersion, Any, pd.DataFrame]
) -> None:
    dataset, model, features = trained
    with client.start_run("churn", "baseline", capture_code=False) as run:
        run.use_dataset(dataset)
    assert client.register_model("churn", model, run=run, dataset=dataset, target="y") == 1
    assert client.register_model("churn", model, dataset=features) == 2
    state = client.registry("churn")
    assert set(state.models) == {"churn"}
    v1 = state.versions("churn")[1]
    assert v1.flavor == "sklearn" and v1.run_id == run.run_id
    assert [(c.name, c.type) for c in v1.signature] == [("age", "double"), ("plan", "int64")]
    assert v1.artifact_digest == flavors.digest(client.artifacts.get_bytes(v1.artifact_uri))
    [reg] = [e for e in _registry_records(client.settings)
             if isinstance(e, ModelVersionRegistered) and e.model == "churn"
             and e.model_version == 1]
    assert "scikit-learn" in reg.library_versions and reg.command_id is not None
    for version in (1, None):
        loaded = client.load_model("churn", version)
        assert (loaded.predict(features) == model.predict(features)).all()
    with pytest.raises(ModelNotFoundError, match=r"versions: 1, 2"):
        client.load_model("churn", 5)
    with pytest.raises(ModelNotFoundError, match="alias shadow of churn is not set"):
        client.load_model("churn", alias="shadow")
    with pytest.raises(TypeError, match="assigned by the registry"):
        client.register_model("churn", 3)


@pytest.mark.broker
@pytest.mark.slow
def test_corrupted_artifact_is_refused_before_deserializing(
    client: Client, trained: tuple[DatasetVersion, Any, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sklearn.tree import DecisionTreeClassifier

    _, _, features = trained
    model = DecisionTreeClassifier(max_depth=1).fit(features, [0, 0, 1, 1, 1, 0, 0, 1])
    version = client.register_model("churn-tree", model)
    info = client.registry("churn-tree").versions("churn-tree")[version]
    client.artifacts.resolve(info.artifact_uri).write_bytes(b"not the registered model")

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("deserialized a corrupted artifact")

    monkeypatch.setattr(flavors, "load", must_not_run)
    with pytest.raises(ArtifactDigestMismatch):
        client.load_model("churn-tree", version)


@pytest.mark.broker
@pytest.mark.slow
def test_alias_lifecycle_history_rejections_and_time_travel(client: Client) -> None:
    for _ in range(2):
        client.register_model("fraud", artifact_uri="s3://models/fraud", flavor="custom")
    first = client.set_alias("fraud", "production", 1, reason="first release", actor="alice")
    second = client.set_alias("fraud", "production", 2, reason="better recall", actor="bob",
                              expected_version=1)
    back = client.set_alias("fraud", "production", 1, reason="rollback: incident 42",
                            actor="carol")
    assert (first.previous_version, second.previous_version, back.previous_version) == (
        None, 1, 2)
    history = client.registry("fraud").history("fraud")
    assert [(h.version, h.previous_version, h.actor, h.reason) for h in history] == [
        (1, None, "alice", "first release"), (2, 1, "bob", "better recall"),
        (1, 2, "carol", "rollback: incident 42")]

    with pytest.raises(AliasChangeRejectedError, match=r"versions: 1, 2") as typo:
        client.set_alias("fraud", "production", 9, reason="typo")
    assert "register it first" in typo.value.reason and typo.value.event.command_id
    with pytest.raises(AliasChangeRejectedError, match="needs a reason"):
        client.set_alias("fraud", "production", 2)
    with pytest.raises(AliasChangeRejectedError, match="not the expected version 2"):
        client.set_alias("fraud", "production", 2, reason="retry", expected_version=2)
    staging = client.set_alias("fraud", "staging", 2)  # no reason needed outside production
    assert staging.actor == modelog.streams.registry_client.default_actor()
    removed = client.remove_alias("fraud", "staging", reason="cleanup")
    assert removed.previous_version == 2
    assert client.registry("fraud").aliases("fraud").keys() == {"production"}

    def holder(at: dt.datetime) -> tuple[int, str] | None:
        info = client.registry("fraud", as_of=at).aliases("fraud").get("production")
        return None if info is None else (info.version, info.reason)

    tick = dt.timedelta(microseconds=1)
    assert holder(first.time - tick) is None
    assert holder(first.time) == (1, "first release")
    assert holder(second.time - tick) == (1, "first release")
    assert holder(second.time) == (2, "better recall")
    assert holder(back.time) == (1, "rollback: incident 42")
    # Without a DuckDB file, registry_as_of folds the topic.
    state = modelog.registry_as_of("fraud", second.time, settings=client.settings)
    assert state.aliases["production"].version == 2
    assert [h.actor for h in state.history] == ["alice", "bob"]


@pytest.mark.broker
@pytest.mark.slow
def test_registry_as_of_reads_the_duckdb_ledger(client: Client, tmp_path: Path) -> None:
    client.register_model("ledger", artifact_uri="s3://models/ledger")
    set_ = client.set_alias("ledger", "production", 1, reason="from the ledger")
    # the ledger holds the commands too: answers count only with their command
    events = [e for e in [*_registry_records(client.settings, commands=True),
                          *_registry_records(client.settings)] if e.aggregate == "ledger"]
    # A deployment whose broker log is gone (new prefix, empty topics) but whose ledger is kept.
    from modelog.store.schema import create_schema

    gone = client.settings.replace(topic_prefix=f"g{uuid.uuid4().hex[:8]}.",
                                   data_dir=tmp_path / "kept")
    gone.data_dir.mkdir(parents=True)
    ensure_topics(gone)
    with duckdb.connect(str(gone.duckdb_path)) as con:
        create_schema(con)
        for e in events:
            con.execute("insert into events (id, type, time, aggregate, payload) "
                        "values (?, ?, ?, ?, ?)",
                        [e.id, e.type_name(), e.time, e.aggregate, codec.encode(e).decode()])
    state = modelog.registry_as_of("ledger", set_.time, settings=gone)
    assert state.versions.keys() == {1}
    assert state.aliases["production"].reason == "from the ledger"
    before = modelog.registry_as_of("ledger", set_.time - dt.timedelta(microseconds=1),
                                    settings=gone)
    assert before.aliases == {} and before.versions.keys() == {1}
    assert modelog.registry_as_of("ledger", set_.time, settings=gone.replace(
        data_dir=tmp_path / "nothing")).versions == {}  # no file: the (empty) topic


@pytest.mark.broker
@pytest.mark.slow
def test_malformed_and_redelivered_commands(client: Client) -> None:
    settings, topics = client.settings, client.topics
    with LogTail(settings, topics.dead_letter, from_end=True) as dlq:
        producer = Producer(settings.kafka_config())
        producer.produce(topics.registry_commands, b"{not json", b"dup")
        command_id = client.new_id()
        cmd = ModelVersionRequested(
            id=command_id, time=codec.utcnow(), aggregate="dup", producer="pytest",
            command_id=command_id, model="dup", flavor="custom", artifact_uri="s3://dup")
        for _ in range(2):
            producer.produce(topics.registry_commands, codec.encode(cmd), b"dup")
        assert producer.flush(10) == 0
        # The agent carries on: a later command is answered, numbered right after.
        assert client.register_model("dup", artifact_uri="s3://dup2") == 2
        deadline = time.monotonic() + 10
        dead: list[tuple[int, int, bytes | None, bytes]] = []
        while not dead and time.monotonic() < deadline:
            dead = dlq.poll(0.2)
    assert [(k, v) for _, _, k, v in dead] == [(b"dup", b"{not json")]
    raw = [e for e in _registry_records(settings)
           if isinstance(e, ModelVersionRegistered) and e.model == "dup"]
    assert (raw[0].command_id, raw[0].model_version) == (command_id, 1)
    assert len(raw) == 2 and len({e.id for e in raw}) == 2


@pytest.mark.broker
@pytest.mark.slow
def test_dead_letter_headers_name_the_registry(client: Client) -> None:
    from confluent_kafka import Consumer, TopicPartition

    alias_cmd = AliasChangeRequested(
        id="x", time=codec.utcnow(), aggregate="churn", command_id="x", model="churn",
        alias="production", model_version=1, reason="r")
    producer = Producer(client.settings.kafka_config())
    producer.produce(client.topics.registry_commands, codec.encode(alias_cmd), b"not-churn")
    assert producer.flush(10) == 0
    client.register_model("after-bad-key", artifact_uri="s3://x")  # processed after it
    consumer = Consumer({**client.settings.kafka_config(), "group.id": "t",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(client.topics.dead_letter, 0, 0)])
    found: list[DeadLetter] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not found:
        for msg in consumer.consume(100, 0.5):
            if msg.error() is None and msg.key() == b"not-churn":
                found.append(DeadLetter.from_headers(msg.headers()))  # type: ignore[arg-type]
    consumer.close()
    assert found and found[0].consumer == "registry"
    assert "keyed by their model" in found[0].reason
    assert found[0].source_topic == client.topics.registry_commands


@pytest.mark.broker
@pytest.mark.slow
def test_async_client_mirrors_the_registry_calls(client: Client) -> None:
    async def main() -> tuple[int, AliasSet, int]:
        async with modelog.connect_async(settings=client.settings) as ac:
            version = await ac.register_model("async-model", artifact_uri="s3://a")
            alias = await ac.set_alias("async-model", "production", version, reason="async")
            state = await ac.registry("async-model")
            await ac.remove_alias("async-model", "production", reason="done")
            return version, alias, len((await ac.registry("async-model")).history("async-model")
                                       ) + len(state.history("async-model"))

    version, alias, history_entries = asyncio.run(main())
    assert version == 1 and alias.model_version == 1 and alias.reason == "async"
    assert history_entries == 3  # 1 before the removal, 2 after


@pytest.mark.broker
def test_no_worker_times_out_with_advice(topics: Settings) -> None:
    advice = r"no registry worker answered within 0\.5 s.*modelog worker"
    with modelog.connect(settings=topics) as c, pytest.raises(RegistryTimeoutError,
                                                              match=advice):
        c.set_alias("churn", "production", 1, reason="r", timeout=0.5)
