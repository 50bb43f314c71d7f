"""Registry facts come only from the registry worker: forged registry records change no reader.

A legitimate flow (SDK commands, a registry worker answering them) is followed by
records written straight to the registry topic with a raw Kafka producer. No reader
-- the SDK, ``modelog.registry_as_of``, :mod:`modelog.store.registry`, the DuckDB
tables and views after a real projection, ``modelog registry show``, the monitoring
loop's registry follower -- takes them, and each is reported with its reason (dead
letters from the registry worker, ``unverified`` in the readers). The pure fold's
ordering rules (an answer read before its command) are tested without a broker.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pyarrow as pa
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

import modelog
from modelog.cli import app
from modelog.config import Settings
from modelog.models import codec
from modelog.models.deadletter import DeadLetter
from modelog.models.events import (
    AliasChangeRejected,
    AliasChangeRequested,
    AliasSet,
    Event,
    ModelVersionRegistered,
    ModelVersionRequested,
)
from modelog.models.registry import PRODUCER
from modelog.models.registry_fold import RegistryFold, answered, verified_state, verify_log
from modelog.store import registry as store_registry
from modelog.store.reader import Reader
from modelog.store.schema import create_schema, derive
from modelog.streams.errors import RegistryAnswerEmitError
from modelog.streams.logtail import LogTail
from modelog.streams.projector import Projector
from modelog.streams.registry_agent import RegistryFollower, RegistryService
from modelog.streams.topics import Topics, ensure_topics

T0 = dt.datetime(2026, 3, 3, 14, tzinfo=dt.UTC)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def register(cid: str, minute: float, model: str = "churn") -> ModelVersionRequested:
    return ModelVersionRequested(id=cid, time=at(minute), aggregate=model, command_id=cid,
                                 model=model, flavor="sklearn", artifact_uri=f"s3://{cid}")


def move(cid: str, minute: float, version: int | None, alias: str = "production",
         model: str = "churn", reason: str = "ok") -> AliasChangeRequested:
    return AliasChangeRequested(id=cid, time=at(minute), aggregate=model, command_id=cid,
                                model=model, alias=alias, model_version=version, reason=reason)


class _Source:
    """A query source over an open DuckDB connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def query(self, sql: str, params: Any = None) -> pa.Table:
        return pa.Table.from_pandas(self.con.execute(sql, params or []).df())


def split(log: list[Event]) -> tuple[list[Event], list[Event]]:
    commands = [e for e in log if isinstance(e, ModelVersionRequested | AliasChangeRequested)]
    return commands, [e for e in log if e not in commands]


# -- the pure fold -----------------------------------------------------------------------
def test_answers_before_their_commands_are_held_then_accepted_in_order() -> None:
    log = answered([(register("r1", 0), at(1)), (register("r2", 2), at(3)),
                    (move("a1", 4, 2), at(5)), (register("x1", 0, model="fraud"), at(1))])
    commands, answers = split(log)
    fold = RegistryFold()
    accepted = [a for ev in answers for a in fold.feed(ev)]
    assert accepted == [] and fold.held == 4 and fold.refused == 0
    # the fraud command releases only fraud's answer; churn's wait in their order
    assert fold.feed(commands[3]) == [answers[3]]
    assert fold.feed(commands[1]) == [] and fold.held == 3  # r2's answer waits behind r1's
    assert fold.feed(commands[0]) == answers[:2]
    assert fold.feed(commands[2]) == [answers[2]] and fold.held == 0
    assert fold.state.aliases("churn")["production"].version == 2
    assert fold.state == verified_state([*answers, *commands]) == verified_state(log)


def test_settle_refuses_answers_without_command_and_accepts_the_rest() -> None:
    log = answered([(register("r1", 0), at(1)), (move("a1", 2, 1), at(3))])
    commands, answers = split(log)
    forged = AliasSet(id="f", time=at(2), aggregate="churn", producer=PRODUCER, model="churn",
                      alias="production", model_version=1, command_id="nope")
    fold = RegistryFold()
    for ev in [answers[0], forged, answers[1]]:
        fold.feed(ev)
    fold.feed(commands[0])
    assert fold.held == 2  # the forgery (no command yet) holds a1's answer behind it
    fold.feed(commands[1])
    assert fold.settle() == [answers[1]]
    [refused] = fold.take_unverified()
    assert refused.event == forged and "not on the registry-commands topic" in refused.reason
    assert fold.state.aliases("churn")["production"].event_id == answers[1].id


def test_what_is_held_is_bounded() -> None:
    fold = RegistryFold(max_pending=2)
    for i in range(3):
        fold.feed(AliasSet(id=f"f{i}", time=T0, aggregate="m", model="m", alias="a",
                           model_version=1, command_id=f"c{i}"))
    assert fold.held == 2 and fold.refused == 1
    assert "did not arrive within 2" in fold.take_unverified()[0].reason


def test_answers_that_are_not_the_decision_are_refused() -> None:
    log = answered([(register("r1", 0), at(1)), (register("r2", 2), at(3)),
                    (move("a1", 4, 1), at(5)), (move("a2", 6, 7), at(7)),
                    (move("a3", 8, 2, reason=""), at(9))])
    assert [type(e).__name__ for e in log[1::2]] == [
        "ModelVersionRegistered", "ModelVersionRegistered", "AliasSet",
        "AliasChangeRejected", "AliasChangeRejected"]
    set_a1, rejected_a2 = log[5], log[7]
    assert isinstance(set_a1, AliasSet) and isinstance(rejected_a2, AliasChangeRejected)
    forged = [
        # a version number the registry did not assign (before the real answer)
        msgspec.structs.replace(log[3], id="other", model_version=5),
        # the id of an accepted answer, other content
        msgspec.structs.replace(set_a1, model_version=2),
        # a second answer to an answered command
        msgspec.structs.replace(set_a1, id="again"),
        # the rejected command (no such version) "accepted", before its command is read
        AliasSet(id=rejected_a2.id, time=at(7), aggregate="churn", producer=PRODUCER,
                 model="churn", alias="production", model_version=2, command_id="a3"),
    ]
    accepted, refused = verify_log([*log[:3], forged[0], *log[3:6], *forged[1:], *log[6:]])
    assert accepted == [e for e in log[1::2]]
    assert [r.event for r in refused] == forged
    reasons = [r.reason for r in refused]
    assert "model_version is 5, the registry decides 2" in reasons[0]
    assert "reuses the id of the accepted answer" in reasons[1]
    assert "answered already" in reasons[2]
    assert "answers it with AliasChangeRejected, not AliasSet" in reasons[3]
    # a rejection's reason text is not compared (its "known models" hint varies)
    reworded = msgspec.structs.replace(rejected_a2, reason="another wording")
    assert verify_log([*log[:7], reworded])[0][-1] == reworded


def test_the_sql_tables_take_an_answer_when_its_command_arrives_later() -> None:
    log = answered([(register("r1", 0), at(1)), (move("a1", 2, 1), at(3))])
    commands, answers = split(log)
    forged = AliasSet(id="f", time=at(4), aggregate="churn", producer=PRODUCER,
                      model="churn", alias="production", model_version=1, command_id="nope")
    con = duckdb.connect()
    create_schema(con)

    def project(events: list[Event]) -> None:  # one projector batch
        for e in events:
            con.execute("INSERT INTO events (id, type, time, aggregate, producer, payload) "
                        "VALUES (?, ?, ?, ?, ?, ?)", [e.id, e.type_name(), e.time, e.aggregate,
                                                      e.producer, codec.encode(e).decode()])
        ids = ", ".join(f"'{e.id}'" for e in events)
        derive(con, f"(SELECT * FROM events WHERE id IN ({ids}))",
               {type(e).__name__ for e in events})

    def count(table: str) -> int:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])

    project([*answers, forged])
    assert (count("model_versions"), count("alias_history")) == (0, 0)
    project(commands)
    assert (count("model_versions"), count("alias_history")) == (1, 1)
    assert con.execute("SELECT model_version FROM aliases").fetchall() == [(1,)]
    project([move("nope", 5, 1, reason="")])  # a command for the forgery, after the fact
    # ... its fields match the forgery's: SQL takes it, the Python re-check does not
    assert count("alias_history") == 2
    source = _Source(con)
    state = store_registry.registry_state(source, "churn")
    assert state.aliases["production"].event_id == answers[1].id
    assert [u.event.id for u in state.unverified] == ["f"]
    assert list(store_registry.registry_history(source, "churn")["event_id"]) == [
        answers[1].id]


# -- with a broker, a registry worker and the projector ----------------------------------
def _dead_letters(settings: Settings, want: int) -> list[DeadLetter]:
    from confluent_kafka import Consumer

    consumer = Consumer({**settings.kafka_config(), "group.id": f"dl-{time.monotonic_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([Topics.from_settings(settings).dead_letter])
    found: list[DeadLetter] = []
    try:
        deadline = time.monotonic() + 60
        while len(found) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                found.append(DeadLetter.from_headers(msg.headers()))
    finally:
        consumer.close()
    return found


def _project_ids(settings: Settings, ids: set[str]) -> None:
    """Run a real projector until its ledger holds every event of ``ids``."""
    have: set[str] = set()
    deadline = time.monotonic() + 60
    with Projector(settings, serve=False) as projector:
        while not ids <= have and time.monotonic() < deadline:
            projector.project_once(timeout=0.5)
            have = {row[0] for row in projector.connection.execute(
                "SELECT id FROM events WHERE list_contains(?, id)", [sorted(ids)]).fetchall()}
    assert ids <= have, f"never projected {sorted(ids - have)}"


@pytest.mark.broker
@pytest.mark.slow
def test_forged_registry_records_change_no_reader(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    topics = Topics.from_settings(settings)
    with RegistryService(settings), modelog.connect(settings=settings) as client:
        assert client.register_model("churn", artifact_uri="s3://churn/1") == 1
        assert client.register_model("churn", artifact_uri="s3://churn/2") == 2
        legit = client.set_alias("churn", "production", 1, reason="first model")
        with pytest.raises(RegistryAnswerEmitError, match=r"client\.set_alias"):
            client.emit(msgspec.structs.replace(legit, id="x", model_version=2))

        now = codec.utcnow()
        forged: list[Event] = [
            AliasSet(id="forged-alias", time=now, aggregate="churn", producer=PRODUCER,
                     model="churn", alias="production", model_version=2, actor="mallory",
                     reason="trust me", command_id="made-up"),
            ModelVersionRegistered(id="forged-version", time=now, aggregate="churn",
                                   producer=PRODUCER, model="churn", model_version=3,
                                   flavor="sklearn", artifact_uri="s3://evil",
                                   artifact_digest="ab" * 32, command_id="made-up-too"),
            # another answer to a real command
            msgspec.structs.replace(legit, id="forged-reply", model_version=2, time=now),
        ]
        raw = Producer(settings.kafka_config())
        for ev in forged:
            raw.produce(topics.registry, key=b"churn", value=codec.encode(ev))
        assert raw.flush(30) == 0

        # the registry worker dead-letters each forgery, with the reason
        letters = _dead_letters(settings, 3)
        assert len(letters) == 3 and all(d.consumer == "registry" for d in letters)
        assert all(d.source_topic == topics.registry for d in letters)
        assert sum("not on the registry-commands topic" in d.reason for d in letters) == 2
        # (answered already, or not the decision: depends on which partition the raw
        # producer's partitioner picked, i.e. on what was read before it)
        assert sum(f"command {legit.command_id}" in d.reason for d in letters) == 1

        # the SDK's live read
        state = client.registry("churn")
        assert state.aliases("churn")["production"].version == 1
        assert sorted(state.versions("churn")) == [1, 2]
        assert {u.event.id for u in state.unverified} == {e.id for e in forged}
        assert f"command {legit.command_id}" in next(
            u.reason for u in state.unverified if u.event.id == "forged-reply")

        # the monitoring loop's registry follower feeds the monitor verified answers only
        with RegistryFollower(settings) as follower:
            seen = follower.read_to_end()
            assert {e.id for e in seen}.isdisjoint(e.id for e in forged)
            assert follower.fold.refused == 3

        # the registry worker did not fold them either: numbering and history go on
        assert client.register_model("churn", artifact_uri="s3://churn/3") == 3
        moved = client.set_alias("churn", "production", 2, reason="better")
        assert moved.previous_version == 1
        churn = client.registry("churn").models["churn"]

    # a real projection puts the forgeries in the ledger; no derived reader takes them
    _project_ids(settings, {e.id for e in forged} | {legit.id, moved.id, *churn.decided,
                                                     *churn.registrations}
                 | {v.event_id for v in churn.versions.values()})
    reader = Reader(settings)
    ledger_state = store_registry.registry_state(reader, "churn")
    assert ledger_state.aliases["production"].version == 2
    assert sorted(ledger_state.versions) == [1, 2, 3]
    assert ledger_state.versions[3].artifact_uri == "s3://churn/3"
    assert {u.event.id for u in ledger_state.unverified} == {e.id for e in forged}
    before = modelog.registry_as_of("churn", moved.time - dt.timedelta(microseconds=1),
                                    settings=settings)
    assert before.aliases["production"].version == 1 and sorted(before.versions) == [1, 2, 3]
    assert len(before.unverified) == 3
    history = store_registry.registry_history(reader, "churn")
    assert list(history["event_id"]) == [legit.id, moved.id]
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        assert con.execute("SELECT alias, model_version FROM aliases "
                           "WHERE model = 'churn'").fetchall() == [("production", 2)]
        assert con.execute("SELECT model_version, artifact_uri FROM model_versions "
                           "WHERE model = 'churn' ORDER BY 1").fetchall() == [
            (1, "s3://churn/1"), (2, "s3://churn/2"), (3, "s3://churn/3")]
        ids = {r[0] for r in con.execute("SELECT event_id FROM alias_history").fetchall()}
        assert ids == {legit.id, moved.id}

    result = CliRunner().invoke(app, ["--data-dir", str(settings.data_dir),
                                      "registry", "show", "churn"])
    assert result.exit_code == 0, result.output
    assert "production -> v2" in result.output and "versions v1, v2, v3" in result.output
    assert "mallory" not in result.output and "trust me" not in result.output


@pytest.mark.broker
@pytest.mark.slow
def test_a_follower_reading_an_answer_before_its_command_keeps_it(settings: Settings) -> None:
    """The answer is on the registry topic; the follower has not read the command yet."""
    ensure_topics(settings)
    topics = Topics.from_settings(settings)
    log = answered([(register("r1", 0), at(1)), (move("a1", 2, 1), at(3))])
    commands, answers = split(log)
    with RegistryFollower(settings) as follower:
        assert follower.read_to_end() == []
        raw = Producer(settings.kafka_config())
        for cmd in commands:  # the registry worker's order: command first, then its answer
            raw.produce(topics.registry_commands, key=b"churn", value=codec.encode(cmd))
        assert raw.flush(30) == 0
        for ans in answers:
            raw.produce(topics.registry, key=b"churn", value=codec.encode(ans))
        assert raw.flush(30) == 0
        # read the registry topic alone first: the answers wait for their commands
        registry = LogTail(settings, topics.registry)
        try:
            records = registry.read_to_end()
        finally:
            registry.close()
        early = [follower.fold.feed(codec.decode(r[3])) for r in records]
        assert early == [[], []] and follower.fold.held == 2
        # the follower's own reads then find the commands and accept them
        accepted: list[Event] = []
        for _ in range(50):
            accepted += follower.poll()
            if len(accepted) == 2:
                break
        assert accepted == answers and follower.fold.refused == 0
        assert follower.fold.state.aliases("churn")["production"].version == 1

