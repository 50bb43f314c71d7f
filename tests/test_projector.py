"""The projector: exactly-once projection of the log into DuckDB, replays, crashes, rebuilds."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest

from modelog.config import Settings
from modelog.models.codec import encode
from modelog.models.events import (
    AliasChangeRequested,
    DatasetVersionCreated,
    DriftDetected,
    Event,
    LabelObserved,
    MetricPoint,
    MetricsLogged,
    ModelVersionRequested,
    MonitorStatsReported,
    ParamsLogged,
    PredictionMade,
    RunStarted,
    SkewDetected,
    Window,
)
from modelog.models.ids import new_id
from modelog.models.registry_fold import answered
from modelog.store.derivations import DERIVED_TABLES
from modelog.store.ledger import build_batch
from modelog.store.reader import Reader
from modelog.store.views import VIEWS
from modelog.streams.broker import EmbeddedBroker
from modelog.streams.projector import Projector, ProjectorProgress
from modelog.streams.topics import Topics, ensure_topics

T0 = dt.datetime(2026, 3, 3, 12, 0, tzinfo=dt.UTC)
MODEL = "churn"


# -- helpers (also used by test_reader.py) --------------------------------------------
def produce(settings: Settings, records: Sequence[Event | tuple[str, bytes, bytes]]) -> None:
    """Send events (encoded, to their topic, keyed by aggregate) or raw (topic, key, value)."""
    from confluent_kafka import Producer

    topics = Topics.from_settings(settings)
    producer = Producer({**settings.kafka_config(), "linger.ms": 5, "enable.idempotence": True})
    for rec in records:
        if isinstance(rec, Event):
            producer.produce(topics.for_event(rec), key=rec.aggregate.encode(), value=encode(rec))
        else:
            producer.produce(rec[0], key=rec[1], value=rec[2])
        producer.poll(0)
    assert producer.flush(30) == 0


def register_command(command_id: str, version: int, run: str) -> ModelVersionRequested:
    return ModelVersionRequested(
        id=command_id, time=T0, aggregate=MODEL, command_id=command_id, model=MODEL,
        run_id=run, flavor="sklearn", artifact_uri=f"file:///a/{version}",
        artifact_digest="cd" * 8)


def alias_command(command_id: str, alias: str, version: int | None) -> AliasChangeRequested:
    return AliasChangeRequested(
        id=command_id, time=T0, aggregate=MODEL, command_id=command_id, model=MODEL,
        alias=alias, model_version=version, actor="ci", reason="test")


def prediction(i: int, model: str = MODEL, output: Any = None) -> PredictionMade:
    return PredictionMade(
        id=new_id(), time=T0 + dt.timedelta(seconds=i), aggregate=model, producer="app",
        prediction_id=f"p-{i}", model=model, model_version=1 + i % 2, code_version="c0ffee",
        inputs={"x": float(i), "plan": "pro"}, output=i % 2 if output is None else output,
    )


def project_until(projector: Projector, records: int, timeout: float = 30.0) -> int:
    """Project until ``records`` records were consumed (or fail after ``timeout``)."""
    done, deadline = 0, time.monotonic() + timeout
    while done < records:
        assert time.monotonic() < deadline, f"only {done}/{records} records projected"
        done += projector.project_once(timeout=0.2)
    return done


SNAPSHOT_QUERIES = {
    "events": 'SELECT * EXCLUDE (projected_at) FROM events ORDER BY id',
    "dead_letters": 'SELECT * FROM dead_letters ORDER BY topic, partition, "offset"',
    **{t: f"SELECT * FROM {t} ORDER BY event_id" for t in DERIVED_TABLES},
    **{v: f"SELECT * FROM {v} ORDER BY ALL" for v in VIEWS},
}


def snapshot(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    """Every table and view, in a deterministic order."""
    return {name: con.execute(sql).fetchall() for name, sql in SNAPSHOT_QUERIES.items()}


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> Any:
    return con.execute(sql, list(params)).fetchall()[0][0]


def lifecycle_events() -> list[Event]:
    """A dataset, a run, a registered model with aliases, predictions, labels and alerts."""
    ds = DatasetVersionCreated(
        id=new_id(), time=T0, aggregate="customers", name="customers", digest="ab" * 8,
        columns=[], num_rows=100, uri="file:///d/customers.parquet",
    )
    run = "run-1"
    evs: list[Event] = [
        ds,
        RunStarted(id=new_id(), time=T0, aggregate=run, run_id=run, experiment="churn-exp",
                   name="first"),
        ParamsLogged(id=new_id(), time=T0, aggregate=run, run_id=run,
                     params={"lr": 0.1, "kind": "tree", "depth": 3}),
        MetricsLogged(id=new_id(), time=T0, aggregate=run, run_id=run, metrics=[
            MetricPoint(key="auc", value=0.8, step=0), MetricPoint(key="auc", value=0.9, step=1),
        ]),
        # the registry as the registry worker writes it: each command, then its answer
        *answered([
            (register_command("c-reg-1", 1, run), T0),
            (register_command("c-reg-2", 2, run), T0),
            (alias_command("c-a1", "production", 1), T0 + dt.timedelta(minutes=1)),
            (alias_command("c-a2", "production", 2), T0 + dt.timedelta(minutes=2)),
            (alias_command("c-a3", "staging", 2), T0 + dt.timedelta(minutes=3)),
            (alias_command("c-a4", "staging", None), T0 + dt.timedelta(minutes=4)),
        ]),
    ]
    preds = [prediction(i) for i in range(6)]
    evs += preds
    # p-0: right; p-1: right, then a later contradicting label (the first one counts);
    # p-2: wrong; p-3..p-5: no label yet.
    evs += [
        LabelObserved(id=new_id(), time=T0 + dt.timedelta(hours=1), aggregate=MODEL,
                      prediction_id="p-0", model=MODEL, label=0),
        LabelObserved(id=new_id(), time=T0 + dt.timedelta(hours=1), aggregate=MODEL,
                      prediction_id="p-1", model=MODEL, label=1.0),
        LabelObserved(id=new_id(), time=T0 + dt.timedelta(hours=2), aggregate=MODEL,
                      prediction_id="p-1", model=MODEL, label=0),
        LabelObserved(id=new_id(), time=T0 + dt.timedelta(hours=1), aggregate=MODEL,
                      prediction_id="p-2", model=MODEL, label=1),
        DriftDetected(id=new_id(), time=T0 + dt.timedelta(hours=3), aggregate=MODEL,
                      model=MODEL, model_version=1, kind="concept", detector="ADWIN",
                      params={"delta": 0.002}, statistic=0.4, threshold=0.2,
                      window=Window(start=T0, end=T0 + dt.timedelta(hours=3), size=6),
                      prediction_ids=["p-1", "p-2"], severity="critical", message="errors up"),
        SkewDetected(id=new_id(), time=T0 + dt.timedelta(hours=3), aggregate=MODEL,
                     model=MODEL, feature="plan", kind="type", expected="str",
                     observed="int"),
        MonitorStatsReported(id=new_id(), time=T0 + dt.timedelta(hours=3), aggregate=MODEL,
                             model=MODEL, model_version=1,
                             window=Window(end=T0 + dt.timedelta(hours=3), size=6),
                             stats={"error_rate": 0.33, "anomaly": None}),
    ]
    return evs


def v1_prediction_record(i: int) -> bytes:
    """A PredictionMade on the old v1 wire format (the codec upcasts it)."""
    return json.dumps({
        "type": "PredictionMade", "schema_version": 1, "id": new_id(),
        "time": (T0 + dt.timedelta(seconds=100 + i)).isoformat(), "aggregate": MODEL,
        "prediction_id": f"old-{i}", "model": MODEL, "model_version": 1,
        "features": {"x": 1.5}, "prediction": 1,
    }).encode()


# -- pure core -------------------------------------------------------------------------
class _Rec:
    def __init__(self, topic: str, offset: int, value: bytes | None,
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        self._t, self._o, self._v, self._h = topic, offset, value, headers

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return 1

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes | None:
        return self._v

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._h

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_767_000_000_000)


def test_build_batch_dedupes_upcasts_and_sorts_out_bad_records() -> None:
    from modelog.models.deadletter import dead_letter_headers

    p = prediction(1)
    recs = [
        _Rec("m.serving", 10, encode(p)),
        _Rec("m.serving", 11, encode(p)),              # duplicate id: first one wins
        _Rec("m.serving", 12, v1_prediction_record(0)),
        _Rec("m.serving", 13, b'{"type":"Nope"}'),
        _Rec("m.serving", 14, None),
        _Rec("m.dead-letter", 3, b"junk",
             dead_letter_headers("bad json", "m.runs", 0, 7, "worker")),
    ]
    batch = build_batch(recs, "m.dead-letter")
    assert batch.records == 6
    assert batch.events.column("id").to_pylist()[0] == p.id
    assert batch.events.num_rows == 2
    assert batch.events.column("schema_version").to_pylist() == [3, 3]
    assert json.loads(batch.events.column("payload")[1].as_py())["inputs"] == {"x": 1.5}
    assert [(r.offset, "Nope" in r.reason) for r in batch.invalid] == [(13, True), (14, False)]
    assert batch.dead_letters.to_pylist()[0]["source_offset"] == 7
    assert batch.dead_letters.to_pylist()[0]["reason"] == "bad json"
    assert batch.positions == {("m.serving", 1): 15, ("m.dead-letter", 1): 4}


def test_build_batch_decodes_every_record_as_the_codec_does() -> None:
    """The fast path (canonical records) and the codec's path give the same rows."""
    from modelog.models.codec import decode

    p = prediction(3)
    canonical = encode(p)
    reordered = json.dumps(dict(reversed(json.loads(canonical).items())), indent=1).encode()
    # no schema_version: the codec reads it as v1 and upcasts (``features`` -> ``inputs``)
    unversioned = json.dumps({k: v for k, v in json.loads(encode(prediction(4))).items()
                              if k != "schema_version"}).encode()
    values = [canonical, reordered.replace(p.id.encode(), b"other-id"), unversioned]
    batch = build_batch([_Rec("m.serving", i, v) for i, v in enumerate(values)], "m.dl")
    assert batch.invalid == []
    expected = [decode(v) for v in values]
    assert batch.events.column("payload").to_pylist() == [encode(e).decode() for e in expected]
    assert batch.events.column("time").to_pylist() == [e.time for e in expected]
    assert batch.events.column("producer").to_pylist() == [e.producer for e in expected]
    assert json.loads(batch.events.column("payload")[2].as_py())["inputs"] == {}
    assert batch.types == frozenset({"PredictionMade"})


def test_positions_only_move_forward_unless_the_cluster_changed() -> None:
    import pyarrow as pa

    from modelog.store.recorder import _UPSERT_POSITIONS
    from modelog.store.schema import create_schema

    con = duckdb.connect()
    create_schema(con)
    for offset, cluster in [(10, "a"), (5, "a"), (12, "a"), (3, "b")]:
        con.register("modelog_positions", pa.table({
            "topic": ["t"], "partition": pa.array([0], pa.int32()),
            "next_offset": pa.array([offset], pa.int64()), "cluster_id": [cluster]}))
        con.execute(_UPSERT_POSITIONS)
        if (offset, cluster) == (5, "a"):
            assert scalar(con, "SELECT next_offset FROM consumer_positions") == 10
    assert con.execute("SELECT next_offset, cluster_id FROM consumer_positions").fetchall() \
        == [(3, "b")]


# -- with a broker ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def projected(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The lifecycle scenario plus upcast and malformed records, projected once."""
    data = tmp_path_factory.mktemp("projected")
    s = Settings(broker=broker, data_dir=data, topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
                 partitions=2, producer_name="pytest")
    ensure_topics(s)
    topics = Topics.from_settings(s)
    evs = lifecycle_events()
    raw = [(topics.serving, MODEL.encode(), v1_prediction_record(i)) for i in range(2)]
    bad = [(topics.serving, b"broken", b'{"type": "PredictionMade", "id": 5'),
           (topics.runs, b"x", b'{"type": "NotAnEvent"}')]
    produce(s, [*evs, *raw, *bad])
    projector = Projector(s, serve=False)
    project_until(projector, len(evs) + len(raw) + len(bad))
    # the dead-lettered copies come back on the dead-letter topic and are projected too
    project_until(projector, len(bad))
    yield {"settings": s, "projector": projector, "events": evs, "bad": bad}
    projector.close()


@pytest.mark.broker
def test_ledger_and_derived_tables(projected: dict[str, Any]) -> None:
    con = projected["projector"].connection
    n_events = len(projected["events"]) + 2
    assert scalar(con, "SELECT count(*) FROM events") == n_events
    assert scalar(con, "SELECT count(*) FROM predictions") == 8
    row = con.execute("SELECT model_version, code_version, inputs, output FROM predictions "
                      "WHERE prediction_id = 'old-0'").fetchall()
    assert row == [(1, None, '{"x":1.5}', "1")]
    assert scalar(con, "SELECT max(schema_version) FROM events WHERE type = 'PredictionMade'") == 3
    alerts = con.execute(
        "SELECT type, kind, detector, statistic, threshold, severity, window_size, "
        "prediction_ids, params->>'$.delta', message FROM alerts ORDER BY type").fetchall()
    assert alerts[0] == ("DriftDetected", "concept", "ADWIN", 0.4, 0.2, "critical", 6,
                         ["p-1", "p-2"], "0.002", "errors up")
    assert alerts[1][:2] == ("SkewDetected", "type")
    assert alerts[1][-1] == "expected str, observed int"
    stats = con.execute("SELECT model_version, stats->>'$.error_rate' FROM monitor_stats")
    assert stats.fetchall() == [(1, "0.33")]


@pytest.mark.broker
def test_lifecycle_views(projected: dict[str, Any]) -> None:
    con = projected["projector"].connection
    assert con.execute("SELECT name, version, num_rows, parents FROM datasets").fetchall() == [
        ("customers", 1, 100, [])]
    assert con.execute("SELECT run_id, experiment, status, ended IS NULL FROM runs").fetchall() \
        == [("run-1", "churn-exp", "running", True)]
    params = con.execute("SELECT key, value FROM run_params ORDER BY key").fetchall()
    assert params == [("depth", "3"), ("kind", "tree"), ("lr", "0.1")]
    assert con.execute("SELECT key, value, step FROM run_metrics ORDER BY step").fetchall() == [
        ("auc", 0.8, 0), ("auc", 0.9, 1)]
    assert con.execute("SELECT model, model_version, flavor FROM model_versions "
                       "ORDER BY model_version").fetchall() == [
        (MODEL, 1, "sklearn"), (MODEL, 2, "sklearn")]
    hist = con.execute("SELECT alias, action, model_version FROM alias_history").fetchall()
    assert hist == [("production", "set", 1), ("production", "set", 2), ("staging", "set", 2),
                    ("staging", "removed", None)]
    assert con.execute("SELECT alias, model_version FROM aliases").fetchall() == [
        ("production", 2)]


@pytest.mark.broker
def test_prediction_quality_uses_the_first_label(projected: dict[str, Any]) -> None:
    con = projected["projector"].connection
    rows = dict(con.execute(
        "SELECT prediction_id, correct FROM prediction_quality WHERE prediction_id LIKE 'p-%'"
    ).fetchall())
    assert rows == {"p-0": True, "p-1": True, "p-2": False, "p-3": None, "p-4": None,
                    "p-5": None}
    assert scalar(con, "SELECT abs_error FROM prediction_quality WHERE prediction_id = 'p-2'") \
        == 1.0


@pytest.mark.broker
def test_malformed_records_are_dead_lettered_and_projection_continues(
    projected: dict[str, Any],
) -> None:
    s = projected["settings"]
    con = projected["projector"].connection
    topics = Topics.from_settings(s)
    rows = con.execute(
        "SELECT source_topic, consumer, value, reason FROM dead_letters ORDER BY source_topic"
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (topics.runs, "projector", b'{"type": "NotAnEvent"}'),
        (topics.serving, "projector", b'{"type": "PredictionMade", "id": 5'),
    ]
    assert "NotAnEvent" in rows[0][3]
    assert scalar(con, "SELECT dead_letters FROM dead_letter_count") == 2
    assert scalar(con, "SELECT count(*) FROM events WHERE topic = ? AND \"offset\" IN "
                       "(SELECT source_offset FROM dead_letters)", [topics.runs]) == 0
    # the events after the bad records were projected
    assert scalar(con, "SELECT count(*) FROM predictions WHERE prediction_id LIKE 'old-%'") == 2


@pytest.mark.broker
def test_replaying_the_log_changes_nothing_and_rebuild_equals_live(
    projected: dict[str, Any],
) -> None:
    s, projector = projected["settings"], projected["projector"]
    con = projector.connection
    before = snapshot(con)
    # duplicates on the log (an at-least-once producer retried) ...
    dupes = projected["events"][-6:]
    produce(s, dupes)
    project_until(projector, len(dupes))
    assert snapshot(con) == before
    # ... and a full replay from offset 0 (positions lost)
    projector.close()
    con = duckdb.connect(str(s.duckdb_path))
    total = scalar(con, "SELECT sum(next_offset) FROM consumer_positions")
    con.execute("DELETE FROM consumer_positions")
    con.close()
    project_until(projector, total)
    con = projector.connection
    assert snapshot(con) == before
    # rebuild from the ledger equals the live state
    assert projector.rebuild() == len(before["events"])
    assert snapshot(con) == before


@pytest.mark.broker
def test_pipelined_projection_equals_the_synchronous_one(topics: Settings, tmp_path: Path) -> None:
    """project() (reader process + writer) gives what project_once() gives, replays too."""
    t = Topics.from_settings(topics)
    evs = lifecycle_events()
    log = [*evs, (t.serving, b"x", v1_prediction_record(0)), (t.runs, b"x", b"{broken"),
           *evs[-4:]]  # a bad record, and duplicates
    produce(topics, log)
    reference = Projector(topics.replace(data_dir=tmp_path / "reference"), serve=False)
    try:
        project_until(reference, len(log) + 1)  # + its dead-letter copy
        want = snapshot(reference.connection)
    finally:
        reference.close()
    stop = threading.Event()
    goal = [len(log) + 2]  # + the reference's dead-letter copy and our own

    def until(progress: ProjectorProgress) -> None:
        if progress.records >= goal[0]:
            stop.set()

    pipelined = Projector(topics.replace(data_dir=tmp_path / "pipelined"), serve=False,
                          progress=until, batch_size=7)
    timer = threading.Timer(60, stop.set)
    timer.start()
    try:
        pipelined.project(stop)
        got = snapshot(pipelined.connection)
        # each projector dead-letters the bad record itself: compare the sources only
        assert got.pop("dead_letters") != [] and want.pop("dead_letters") != []
        assert got == want
        assert pipelined.stats()["dead_lettered"] == 1
        # the whole log again from offset 0: every batch is a replay, nothing changes
        pipelined.connection.execute("DELETE FROM consumer_positions")
        pipelined._assigned = set()  # forget the partitions: follow them from the start
        pipelined._next_discovery = 0.0
        stop.clear()
        goal[0] *= 2
        pipelined.project(stop)
        assert pipelined.stats()["records"] >= goal[0]
        again = snapshot(pipelined.connection)
        again.pop("dead_letters")
        assert again == want
    finally:
        timer.cancel()
        pipelined.close()


def _count(reader: Reader, sql: str) -> int:
    try:
        return int(reader.query(sql).column(0)[0].as_py() or 0)
    except Exception:
        return -1


@pytest.mark.broker
@pytest.mark.slow
def test_killed_projector_resumes_to_the_same_tables(topics: Settings, tmp_path: Path) -> None:
    n = 6_000
    produce(topics, [prediction(i, model=f"m{i % 3}") for i in range(n)])
    script = (
        "import sys; from pathlib import Path; from modelog.config import Settings\n"
        "from modelog.streams.projector import Projector\n"
        "s = Settings(broker=sys.argv[1], data_dir=Path(sys.argv[2]), topic_prefix=sys.argv[3])\n"
        "Projector(s, batch_size=50, batch_timeout=0.05).run()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, topics.bootstrap_servers,
                             str(topics.data_dir), topics.topic_prefix])
    reader = Reader(topics)
    seen = 0
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            seen = _count(reader, "SELECT count(*) FROM predictions")
            if seen > 0:
                break
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert seen > 0, "the projector subprocess projected nothing"
    resumed = Projector(topics, serve=False)
    try:
        rest = n - scalar(resumed.connection,
                          "SELECT coalesce(sum(next_offset), 0) FROM consumer_positions")
        if rest:
            project_until(resumed, rest)
        got = snapshot(resumed.connection)
    finally:
        resumed.close()
    reference = Projector(topics.replace(data_dir=tmp_path / "reference"), serve=False)
    try:
        project_until(reference, n)
        want = snapshot(reference.connection)
    finally:
        reference.close()
    assert len(got["predictions"]) == n
    assert got == want


@pytest.mark.broker
@pytest.mark.slow
def test_restart_after_a_multi_record_batch_resumes_without_rereading(
    topics: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Tansu reports a multi-record batch's high watermark as its first offset + 1, so a
    stored position looks "beyond the end"; the projector checks the log instead of
    re-reading the partition from the beginning."""
    from confluent_kafka import Producer

    producer = Producer({**topics.kafka_config(), "linger.ms": 200,
                         "enable.idempotence": True})
    for i in range(40):  # one batch on one partition
        ev = prediction(i)
        producer.produce(Topics.from_settings(topics).serving, key=MODEL.encode(),
                         value=encode(ev))
    assert producer.flush(30) == 0
    with Projector(topics, serve=False) as p:
        project_until(p, 40)
    caplog.clear()
    with caplog.at_level("WARNING", logger="modelog.streams.projector"), \
            Projector(topics, serve=False) as p:
        assert p.project_once(timeout=1.0) == 0  # nothing new, nothing read again
        assert p.stats()["records"] == 0
        assert scalar(p.connection, "SELECT count(*) FROM predictions") == 40
    assert not [r for r in caplog.records if "beyond" in r.getMessage()]


def test_new_cluster_restarts_from_the_beginning_without_duplicates(tmp_path: Path) -> None:
    prefix = "cl."
    first = [prediction(i) for i in range(10)]
    with EmbeddedBroker() as b1:
        s = Settings(broker=b1.bootstrap_servers, data_dir=tmp_path, topic_prefix=prefix,
                     partitions=1)
        ensure_topics(s)
        produce(s, first)
        with Projector(s, serve=False) as p:
            project_until(p, 10)
    # a new (memory-only) broker: new cluster id, the log replayed in a different order
    # plus new events; more records than the stored positions, so only the id tells
    newer = [prediction(100 + i) for i in range(15)]
    with EmbeddedBroker() as b2:
        s2 = s.replace(broker=b2.bootstrap_servers)
        ensure_topics(s2)
        produce(s2, [*newer, *first])
        with Projector(s2, serve=False) as p:
            project_until(p, 25)
            con = p.connection
            assert scalar(con, "SELECT count(*) FROM predictions") == 25
            assert scalar(con, "SELECT count(DISTINCT id) FROM events") == 25
            assert scalar(con, "SELECT min(cluster_id) FROM consumer_positions "
                               "WHERE topic = ?", [prefix + "serving"]) == b2.cluster_id
    # same cluster id, but the broker lost its log: positions beyond the end restart too
    with EmbeddedBroker(cluster_id=b2.cluster_id) as b3:
        s3 = s.replace(broker=b3.bootstrap_servers)
        ensure_topics(s3)
        produce(s3, [prediction(200 + i) for i in range(3)])
        with Projector(s3, serve=False) as p:
            project_until(p, 3)
            assert scalar(p.connection, "SELECT count(*) FROM predictions") == 28
