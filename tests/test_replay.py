"""`modelog replay`: a slice of the ledger as JSON lines, into a topic, or as typed events.

Real parts only: serving traffic of two models is produced to the session's broker,
projected into a real DuckDB ledger by the projector, then replayed by the command
line (the real Typer app) and the SDK.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from typer.testing import CliRunner, Result

from modelog.cli import app
from modelog.config import Settings
from modelog.models import codec
from modelog.models.events import Event, LabelObserved, PredictionMade
from modelog.store.reader import Reader
from modelog.streams.bench.worker import serving_events
from modelog.streams.errors import ReplayError
from modelog.streams.projector import Projector
from modelog.streams.replay import ReplayQuery, replay
from modelog.streams.topics import Topics, ensure_topics

pytestmark = [pytest.mark.broker]

T0 = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
PER_MODEL = 300


def _events() -> list[Event]:
    a = list(serving_events("ra", PER_MODEL, seed=1, start=T0))
    b = list(serving_events("rb", PER_MODEL, seed=2, start=T0 + dt.timedelta(microseconds=500)))
    return a + b


@pytest.fixture(scope="module")
def archived(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose ledger holds :func:`_events` (projected for real)."""
    import uuid

    data = tmp_path_factory.mktemp("replay") / "data"
    data.mkdir()
    s = Settings(broker=broker, data_dir=data, topic_prefix=f"r{uuid.uuid4().hex[:10]}.",
                 partitions=2, producer_name="pytest")
    ensure_topics(s)
    topics = Topics.from_settings(s)
    producer = Producer({**s.kafka_config(), "enable.idempotence": True, "acks": "all"})
    events = _events()
    for ev in events:
        producer.produce(topics.serving, key=ev.aggregate.encode(), value=codec.encode(ev))
    assert producer.flush(30) == 0
    with Projector(s, serve=False) as projector:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            projector.project_once(timeout=0.5)
            if projector.connection.execute(
                    "select count(*) from events").fetchall()[0][0] >= len(events):
                break
        else:
            raise AssertionError("the projector did not record every event")
    return s


def _cli(s: Settings, *args: str, check: bool = True) -> Result:
    """``modelog replay ARGS`` (the real command, in this process), stdout and stderr apart."""
    env = {"MODELOG_BROKER": s.bootstrap_servers, "MODELOG_DATA_DIR": str(s.data_dir),
           "MODELOG_TOPIC_PREFIX": s.topic_prefix, "MODELOG_PARTITIONS": str(s.partitions)}
    done = CliRunner().invoke(app, ["replay", *args], env=env)
    if check:
        assert done.exit_code == 0, done.stdout + done.stderr
    return done


def _ledger(s: Settings, where: str, params: list[object]) -> list[str]:
    table = Reader(s).query(f"select payload from events where {where} order by time, id",
                            params)
    return [str(p) for p in table.column(0).to_pylist()]


def test_json_lines_equal_the_ledger_slice(archived: Settings) -> None:
    since, until = "2026-05-01T00:00:00.100Z", "2026-05-01T00:00:00.200Z"
    out = _cli(archived, "--model", "ra", "--type", "PredictionMade", "--since", since,
               "--until", until).stdout.splitlines()
    want = _ledger(archived, "type = 'PredictionMade' and aggregate = 'ra' and time >= ? "
                   "and time < ?", [since, until])
    assert len(want) == 100 and out == want
    assert [json.loads(line)["id"] for line in out] == [f"ra-e{i}" for i in range(100, 200)]
    # the whole serving topic, paged, in (time, id) order; --from/--to spell the same
    everything = _cli(archived, "--topic", "serving", "--from", "2026-04-30").stdout.splitlines()
    assert everything == _ledger(archived, "true", [])
    assert len(everything) == 4 * PER_MODEL
    # --limit and --version
    assert len(_cli(archived, "--limit", "7", "--version", "1").stdout.splitlines()) == 7
    assert _cli(archived, "--version", "2").stdout == ""


def test_an_empty_range_says_so_and_succeeds(archived: Settings) -> None:
    done = _cli(archived, "--since", "2020-01-01", "--until", "2020-01-02")
    assert done.stdout == "" and "no events match: since 2020-01-01" in done.stderr


def test_bad_filters_are_clear_errors(archived: Settings) -> None:
    for args, words in [
        (["--type", "PredictionMad"], "--type='PredictionMad' is not an event type"),
        (["--topic", "servings"], "--topic='servings' is not a topic of this deployment"),
        (["--since", "last tuesday"], "--since='last tuesday' is not a time"),
        (["--since", "2h", "--until", "3h"], "is not before --until"),
        (["--version", "0"], "--version=0 is not a model version"),
        (["--rate", "-1"], "--rate=-1.0 must be a number of events per second"),
        (["--to-topic", "bad topic"], "is not a Kafka topic name"),
        (["--format", "csv"], "--format='csv' is not supported"),
    ]:
        done = _cli(archived, *args, check=False)
        assert done.exit_code == 1 and words in done.stderr, (args, done.stderr)
    # a filter is a bound parameter, never SQL: a quote in it matches nothing, breaks nothing
    assert _cli(archived, "--model", "ra' or '1'='1").stdout == ""


def test_into_a_topic_keeps_ids_times_and_keys(archived: Settings) -> None:
    target = f"{archived.topic_prefix}staging"
    done = _cli(archived, "--model", "rb", "--to-topic", target)
    assert f"replayed {2 * PER_MODEL:,} events into {target}" in done.stderr
    consumer = Consumer({**archived.kafka_config(), "group.id": f"{target}-check",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(target, p, OFFSET_BEGINNING) for p in range(2)])
    got: dict[str, tuple[bytes | None, int]] = {}
    deadline = time.monotonic() + 30
    while len(got) < 2 * PER_MODEL and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.5):
            if msg.error() is None:
                ev = codec.decode(msg.value())
                got[ev.id] = (msg.key(), msg.timestamp()[1])
                assert msg.timestamp()[1] == int(ev.time.timestamp() * 1000)
    consumer.close()
    want = [e for e in _events() if e.aggregate == "rb"]
    assert set(got) == {e.id for e in want}
    assert {key for key, _ in got.values()} == {b"rb"}
    # refused a second time (the topic holds records), accepted with --append
    again = _cli(archived, "--model", "rb", "--to-topic", target, check=False)
    assert again.exit_code == 1 and "already holds records" in again.stderr
    assert "replayed 3 events" in _cli(archived, "--model", "rb", "--limit", "3",
                                       "--to-topic", target, "--append").stderr


def test_the_sdk_yields_typed_events_in_order(archived: Settings) -> None:
    events = list(replay(archived, types=["LabelObserved", "PredictionMade"], model="ra"))
    assert len(events) == 2 * PER_MODEL
    assert all(isinstance(e, PredictionMade | LabelObserved) for e in events)
    assert [(e.time, e.id) for e in events] == sorted((e.time, e.id) for e in events)
    by_id = {e.id: e for e in _events()}
    assert all(e == by_id[e.id] for e in events)
    with pytest.raises(ReplayError, match="--aggregate=''"):
        replay(archived, aggregate="")


def test_the_rate_limit_is_respected(archived: Settings) -> None:
    started = time.monotonic()
    events = list(replay(archived, model="ra", limit=60, rate=200.0))
    assert len(events) == 60
    assert time.monotonic() - started >= 59 / 200.0


def test_the_query_is_deterministic_and_parameterised(archived: Settings) -> None:
    q = ReplayQuery.build(archived, since="2026-05-01", model="ra", version=1, limit=50)
    sql, params = q.where()
    assert params[-1] == "ra" and "'ra'" not in sql
    reader = Reader(archived)
    assert list(q.rows(reader, page=7)) == list(q.rows(reader, page=1000))
    assert q.count(reader) == 50


def test_relative_times_are_before_now() -> None:
    now = dt.datetime(2026, 5, 2, tzinfo=dt.UTC)
    q = ReplayQuery.build(Settings(data_dir=Path("unused")), since="1d", until="1h", now=now)
    assert q.since == now - dt.timedelta(days=1) and q.until == now - dt.timedelta(hours=1)
