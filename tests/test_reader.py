"""Readers: through the projector's query server, or the file; never blocked, never half a batch."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from modelog.config import Settings
from modelog.models.codec import encode
from modelog.models.events import PredictionMade
from modelog.models.ids import new_id
from modelog.store.errors import DatabaseBusyError, NoDataError, QueryError, ReadOnlyQueryError
from modelog.store.query_server import PROJECTOR_RUNTIME_FILE
from modelog.store.reader import Reader
from modelog.streams.broker import free_port
from modelog.streams.projector import Projector
from modelog.streams.topics import Topics


def produce_predictions(settings: Settings, first: int, count: int) -> None:
    """Send ``count`` PredictionMade events (p-first ...) with a plain confluent producer."""
    from confluent_kafka import Producer

    topic = Topics.from_settings(settings).serving
    producer = Producer(settings.kafka_config())
    now = dt.datetime.now(dt.UTC)
    for i in range(first, first + count):
        model = f"m{i % 3}"
        ev = PredictionMade(id=new_id(), time=now, aggregate=model, prediction_id=f"p-{i}",
                            model=model, model_version=1 + i % 2, inputs={"x": i}, output=1)
        producer.produce(topic, key=model.encode(), value=encode(ev))
    assert producer.flush(30) == 0


def catch_up(projector: Projector, records: int) -> None:
    deadline = time.monotonic() + 30
    while records > 0:
        assert time.monotonic() < deadline, f"{records} records left unprojected"
        records -= projector.project_once(timeout=0.2)


def test_no_data_yet(tmp_path: Path) -> None:
    with pytest.raises(NoDataError, match="modelog project"):
        Reader(Settings(data_dir=tmp_path)).query("select * from alerts")


def test_writes_are_refused_before_touching_the_file(tmp_path: Path) -> None:
    with pytest.raises(ReadOnlyQueryError) as info:
        Reader(Settings(data_dir=tmp_path)).query("select 1; drop table events")
    assert info.value.statement_type == "DROP"


@pytest.mark.broker
def test_server_answers_and_refuses_writes(topics: Settings) -> None:
    produce_predictions(topics, 0, 20)
    with Projector(topics, max_query_rows=10) as projector:
        catch_up(projector, 20)
        runtime = json.loads((topics.data_dir / PROJECTOR_RUNTIME_FILE).read_text())
        assert runtime["port"] == int(projector.query_url.rsplit(":", 1)[1])
        reader = Reader(topics)
        assert reader.server_url() == projector.query_url
        table = reader.query("select count(*) as n from predictions where model_version = ?",
                             [1])
        assert table.to_pylist() == [{"n": 10}]
        assert list(reader.query_df("describe predictions")["column_name"])[:2] == [
            "event_id", "prediction_id"]
        for sql, kind in [("insert into events (id) values ('x')", "INSERT"),
                          ("delete from predictions", "DELETE"),
                          ("pragma enable_profiling", "PRAGMA (changing a setting)"),
                          ("copy predictions to '/tmp/x.csv'", "COPY")]:
            with pytest.raises(ReadOnlyQueryError) as info:
                reader._query_server(projector.query_url, sql, None)  # bypass client check
            assert info.value.statement_type == kind
        with pytest.raises(QueryError, match="more than 10 rows"):
            reader.query("select * from predictions")
        with pytest.raises(QueryError, match="does not exist"):
            reader.query("select * from no_such_table")
    # stopped cleanly: runtime file gone, the file is read directly
    assert not (topics.data_dir / PROJECTOR_RUNTIME_FILE).exists()
    assert Reader(topics).query("select count(*) as n from predictions").to_pylist() == [
        {"n": 20}]


@pytest.mark.broker
def test_stale_runtime_file_falls_back_to_the_file(topics: Settings) -> None:
    with Projector(topics, serve=False) as projector:
        catch_up(projector, 0)
    (topics.data_dir / PROJECTOR_RUNTIME_FILE).write_text(
        json.dumps({"pid": 1, "port": free_port(), "db": str(topics.duckdb_path)}))
    assert Reader(topics).query("select count(*) as n from events").to_pylist() == [{"n": 0}]


def test_locked_by_a_process_without_server(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time\n"
         "con = duckdb.connect(sys.argv[1]); con.execute('create table t(x int)')\n"
         "print('ready', flush=True); time.sleep(30)\n", str(s.duckdb_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(DatabaseBusyError, match="locked"):
            Reader(s).query("select 1")
        with pytest.raises(DatabaseBusyError, match="locked"):  # a bulk scan: the same
            next(Reader(s).scan("select 1"))
    finally:
        holder.kill()
        holder.wait()


READER_SCRIPT = """
import json, sys, time
from pathlib import Path
from modelog.config import Settings
from modelog.store.reader import Reader
s = Settings(data_dir=Path(sys.argv[1]))
serving, final, out = sys.argv[2], int(sys.argv[3]), []
deadline = time.monotonic() + 40
while time.monotonic() < deadline:
    try:
        row = Reader(s).query(
            "select (select count(*) from events where topic = ?) as e, "
            "(select count(*) from predictions) as p, "
            "(select coalesce(sum(next_offset), 0)::BIGINT from consumer_positions "
            "where topic = ?) "
            "as pos", [serving, serving]).to_pylist()[0]
        out.append(row)
        if row["p"] >= final:
            break
    except Exception as exc:
        out.append({"error": f"{type(exc).__name__}: {exc}"})
    time.sleep(0.01)
print(json.dumps(out))
"""


@pytest.mark.broker
@pytest.mark.slow
def test_reader_in_another_process_sees_only_whole_batches(topics: Settings) -> None:
    n, chunk = 8_000, 400
    serving = Topics.from_settings(topics).serving
    stop = threading.Event()
    projector = Projector(topics, batch_size=300, batch_timeout=0.02)
    projector.start()
    thread = threading.Thread(target=projector.run, args=(stop,))
    thread.start()
    reader = subprocess.Popen(
        [sys.executable, "-c", READER_SCRIPT, str(topics.data_dir), serving, str(n)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        for start in range(0, n, chunk):  # a continuous trickle of writes
            produce_predictions(topics, start, chunk)
            time.sleep(0.02)
        out, _ = reader.communicate(timeout=60)
    finally:
        stop.set()
        thread.join(30)
        if reader.poll() is None:
            reader.kill()
    rows = json.loads(out)
    errors = [r for r in rows if "error" in r]
    assert not errors, errors[:3]
    # the ledger, the derived table and the positions always move together
    assert all(r["e"] == r["p"] == r["pos"] for r in rows), [
        r for r in rows if not r["e"] == r["p"] == r["pos"]][:3]
    counts = [r["p"] for r in rows]
    assert counts == sorted(counts) and counts[-1] == n
    assert len(set(counts)) >= 2, "the reader never saw the projector make progress"
    with duckdb.connect(str(topics.duckdb_path), read_only=True) as con:
        assert con.execute("select count(*) from predictions").fetchall() == [(n,)]


def test_a_scan_streams_every_row_in_batches_without_the_row_cap(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    con = duckdb.connect(str(s.duckdb_path))
    con.execute("create table t as select range as x, 'v' || range as y from range(250000)")
    con.close()
    batches = list(Reader(s).scan("select x, y from t where x % ? = 0 order by x desc", [1],
                                  batch_rows=100_000))
    assert len(batches) >= 3 and all(b.num_rows <= 100_000 for b in batches)
    xs = [x for b in batches for x in b.column("x").to_pylist()]
    assert xs == list(range(249_999, -1, -1))
    with pytest.raises(ReadOnlyQueryError):  # reads only, like query()
        next(Reader(s).scan("delete from t"))
    with pytest.raises(QueryError, match="as_of"):
        next(Reader(s, as_of="2026-01-01T00:00:00Z").scan("select 1"))
