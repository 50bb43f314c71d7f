"""`modelog query` is read-only by construction: no writes, no files, no settings (issue 10).

Every bypass attempt goes through the projector's query server, :meth:`Reader.query`,
the ``modelog query`` command, and the file a reader opens when no projector runs.
After each one the database, the settings and the file system are as they were, and
the error names the rule. The engine-level tests switch the statement check off, to
show that DuckDB itself (read-only transaction, no external access, locked settings)
refuses what the check would have caught.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelog.config import Settings
from modelog.models.codec import encode
from modelog.models.events import PredictionMade
from modelog.models.ids import new_id
from modelog.store import readonly_sql
from modelog.store.errors import QueryError, QueryRuleError, ReadOnlyQueryError
from modelog.store.reader import Reader
from modelog.streams.projector import Projector
from modelog.streams.topics import Topics

EVENTS = 12

#: (SQL, the rule the error names as ``statement_type``); ``{tmp}``, ``{parquet}`` and
#: ``{db}`` are filled in per test.
ATTEMPTS: list[tuple[str, str]] = [
    ("explain analyze delete from events", "EXPLAIN DELETE"),
    ("explain analyze create table t as select 1", "EXPLAIN CREATE"),
    ("explain /* a */ analyze -- b\n delete from events", "EXPLAIN DELETE"),
    ("explain (analyze) delete from events", "EXPLAIN DELETE"),
    ("explain analyze commit", "EXPLAIN TRANSACTION"),
    ("with d as (delete from events returning *) select * from d", "WRITE"),
    ("select 1; delete from events", "DELETE"),
    ("select 1 -- \n; delete from events", "DELETE"),
    ("/* */ delete from events", "DELETE"),
    ("select 1 /* ; */; /* */ drop table events", "DROP"),
    ("select 1; select 2", "MULTIPLE STATEMENTS"),
    ("commit", "TRANSACTION"),
    ("create temp table t as select 1", "CREATE"),
    ("attach ':memory:' as x", "ATTACH"),
    ("attach '{tmp}/other.duckdb' as x", "ATTACH"),
    ("copy events to '{tmp}/x.csv'", "COPY"),
    ("export database '{tmp}/export'", "EXPORT"),
    ("install httpfs", "LOAD"),
    ("load httpfs", "LOAD"),
    ("set threads = 1", "SET"),
    ("reset threads", "SET"),
    ("pragma enable_profiling", "PRAGMA (changing a setting)"),
    ("pragma force_checkpoint", "PRAGMA (changing a setting)"),
    ("call checkpoint()", "CALL"),
    ("select * from enable_logging()", "SETTING"),
    ("select * from checkpoint()", "TABLE FUNCTION checkpoint"),
    ("select * from truncate_duckdb_logs()", "TABLE FUNCTION truncate_duckdb_logs"),
    ("select * from read_blob('{db}')", "TABLE FUNCTION read_blob"),
    ("select * from read_text('/etc/passwd')", "EXTERNAL ACCESS"),
    ("select * from read_csv('/etc/passwd')", "EXTERNAL ACCESS"),
    ("select * from read_parquet('{parquet}')", "EXTERNAL ACCESS"),
    ("select * from '{parquet}'", "EXTERNAL ACCESS"),
    ("select * from glob('/etc/*')", "EXTERNAL ACCESS"),
    ("select * from query('select * from read_text(''/etc/passwd'')')", "EXTERNAL ACCESS"),
    ("explain analyze select * from read_text('/etc/passwd')", "EXTERNAL ACCESS"),
]

#: Single statements that get past the statement-type check when it is switched off:
#: DuckDB itself must refuse them.
ENGINE_ATTEMPTS: list[tuple[str, str]] = [
    ("delete from events", "WRITE"),
    ("drop table events", "WRITE"),
    ("explain analyze delete from events", "WRITE"),
    ("explain analyze create table t as select 1", "WRITE"),
    ("with d as (delete from events returning *) select * from d", "WRITE"),
    ("attach '{tmp}/other.duckdb' as x", "EXTERNAL ACCESS"),
    ("copy events to '{tmp}/x.csv'", "EXTERNAL ACCESS"),
    ("export database '{tmp}/export'", "EXTERNAL ACCESS"),
    ("install httpfs", "EXTERNAL ACCESS"),
    ("load httpfs", "EXTERNAL ACCESS"),
    ("set threads = 1", "SETTING"),
    ("pragma enable_profiling", "SETTING"),
    ("select * from enable_logging()", "SETTING"),
    ("select * from read_text('/etc/passwd')", "EXTERNAL ACCESS"),
    ("select * from read_parquet('{parquet}')", "EXTERNAL ACCESS"),
    ("select * from glob('/etc/*')", "EXTERNAL ACCESS"),
]

READS = [
    ("select count(*) as n from events", [{"n": EVENTS}]),
    ("from predictions select count(*) as n", [{"n": EVENTS}]),
    ("with p as (select * from predictions) select count(*) as n from p, unnest([1])",
     [{"n": EVENTS}]),
]
SHAPES = ["describe events", "show tables", "summarize predictions", "explain select 1",
          "explain analyze select count(*) from events", "pragma table_info('events')",
          "select table_name from duckdb_tables() where table_name = 'events'",
          "select * from range(3)"]


# -- set-up ------------------------------------------------------------------------------
def _send(settings: Settings, count: int) -> None:
    from confluent_kafka import Producer

    producer = Producer(settings.kafka_config())
    topic = Topics.from_settings(settings).serving
    for i in range(count):
        ev = PredictionMade(id=new_id(), time=dt.datetime.now(dt.UTC), aggregate="m",
                            prediction_id=f"q-{new_id()}", model="m", model_version=1,
                            inputs={"x": i}, output=0)
        producer.produce(topic, key=b"m", value=encode(ev))
    assert producer.flush(30) == 0


def _project(projector: Projector, records: int) -> None:
    for _ in range(300):
        if records <= 0:
            return
        records -= projector.project_once(timeout=0.1)
    raise AssertionError(f"{records} records left unprojected")


@pytest.fixture
def fill(topics: Settings, tmp_path: Path) -> dict[str, str]:
    """Values for the ``{...}`` fields of the attempts (a real parquet file, a scratch dir)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    parquet = tmp_path / "secret.parquet"
    pq.write_table(pa.table({"secret": ["s3cr3t"]}), parquet)
    return {"tmp": str(scratch), "parquet": str(parquet), "db": str(topics.duckdb_path)}


@pytest.fixture
def projector(topics: Settings) -> Iterator[Projector]:
    """A running projector (serving queries) over EVENTS projected predictions."""
    _send(topics, EVENTS)
    with Projector(topics) as p:
        _project(p, EVENTS)
        yield p


def _state(con: duckdb.DuckDBPyConnection, scratch: Path) -> tuple[Any, ...]:
    """Everything an attempt must leave alone: rows, catalog, settings, files."""
    return (
        con.execute("select count(*) from events").fetchall(),
        con.execute("select database_name, schema_name, table_name from duckdb_tables() "
                    "order by all").fetchall(),
        con.execute("select database_name from duckdb_databases() order by all").fetchall(),
        con.execute("select name, value from duckdb_settings() where name in ('threads', "
                    "'enable_profiling', 'enable_logging', 'enable_external_access', "
                    "'lock_configuration') order by name").fetchall(),
        sorted(p.name for p in scratch.iterdir()),
    )


def _assert_refused(exc: BaseException, rule: str) -> None:
    assert isinstance(exc, ReadOnlyQueryError), exc
    assert exc.statement_type == rule, (exc.statement_type, str(exc))
    text = str(exc)
    assert "only read statements are allowed" in text or "refused:" in text
    assert "root:" not in text and "s3cr3t" not in text  # nothing read came back
    if isinstance(exc, QueryRuleError):
        assert "Allowed: exactly one SELECT" in text


# -- through the projector ---------------------------------------------------------------
@pytest.mark.broker
def test_bypass_attempts_are_refused_with_the_projector_running(
        topics: Settings, projector: Projector, fill: dict[str, str]) -> None:
    con, scratch = projector.connection, Path(fill["tmp"])
    before = _state(con, scratch)
    reader = Reader(topics)
    url = projector.query_url
    assert url is not None and reader.server_url() == url
    for template, rule in ATTEMPTS:
        sql = template.format(**fill)
        with pytest.raises(ReadOnlyQueryError) as server:
            reader._query_server(url, sql, None)  # the server's own check, not the client's
        _assert_refused(server.value, rule)
        with pytest.raises(ReadOnlyQueryError) as client:
            reader.query(sql)
        _assert_refused(client.value, rule)
        assert _state(con, scratch) == before, sql
    # the writer still writes
    _send(topics, 3)
    _project(projector, 3)
    assert reader.query("select count(*) as n from events").to_pylist() == [{"n": EVENTS + 3}]


@pytest.mark.broker
def test_the_engine_refuses_even_without_the_statement_check(
        topics: Settings, projector: Projector, fill: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readonly_sql, "_checked", lambda sql: (sql, None))
    con, scratch = projector.connection, Path(fill["tmp"])
    before = _state(con, scratch)
    url = projector.query_url
    assert url is not None
    for template, rule in ENGINE_ATTEMPTS:
        sql = template.format(**fill)
        with pytest.raises(QueryRuleError) as direct:
            readonly_sql.run_read_query(con, sql)
        _assert_refused(direct.value, rule)
        with pytest.raises(QueryRuleError) as served:
            Reader(topics)._query_server(url, sql, None)
        _assert_refused(served.value, rule)
        assert _state(con, scratch) == before, sql


@pytest.mark.broker
def test_reads_still_work_through_the_server(topics: Settings, projector: Projector) -> None:
    reader = Reader(topics)
    for sql, rows in READS:
        assert reader.query(sql).to_pylist() == rows, sql
    for sql in SHAPES:
        assert reader.query(sql).num_rows >= 1, sql
    assert reader.query("select count(*) as n from predictions where model_version = ?",
                        [1]).to_pylist() == [{"n": EVENTS}]


@pytest.mark.broker
def test_the_cli_refuses_every_attempt(topics: Settings, projector: Projector,
                                       fill: dict[str, str]) -> None:
    con, scratch = projector.connection, Path(fill["tmp"])
    before = _state(con, scratch)
    exe = str(Path(sys.executable).with_name("modelog"))
    env = {**os.environ, "MODELOG_DATA_DIR": str(topics.data_dir)}
    env.pop("MODELOG_QUERY_URL", None)
    procs = [(sql, rule, subprocess.Popen([exe, "query", "--format", "json", sql], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
             for sql, rule in [(t.format(**fill), r) for t, r in ATTEMPTS]
             + [("select count(*) as n from events", "")]]
    for sql, rule, proc in procs:
        out, err = proc.communicate(timeout=120)
        if not rule:
            assert proc.returncode == 0, err
            assert out.strip() == f'{{"n": {EVENTS}}}'
            continue
        assert proc.returncode == 1, (sql, out, err)
        assert out == "" and "root:" not in err and "s3cr3t" not in err, (sql, out, err)
        assert "only read statements are allowed" in err or "refused:" in err, (sql, err)
    assert _state(con, scratch) == before
    # A table prints strings from events verbatim: never read as rich markup or emoji codes
    # (a closing tag such as "[/x]" crashed the command).
    hostile = "[/x] :bomb: [bold]b[/bold]"
    shown = subprocess.run([exe, "query", f"select '{hostile}' as \"[/y]\""], env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert hostile in shown.stdout and "[/y]" in shown.stdout


# -- without a projector: the file, read-only -------------------------------------------
@pytest.mark.broker
def test_the_file_path_has_the_same_restrictions(
        topics: Settings, fill: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _send(topics, EVENTS)
    with Projector(topics, serve=False) as p:
        _project(p, EVENTS)
    scratch = Path(fill["tmp"])
    reader = Reader(topics)
    assert reader.server_url() is None

    def state() -> tuple[Any, ...]:
        with duckdb.connect(str(topics.duckdb_path), read_only=True,
                            config=readonly_sql.LOCKED_CONFIG) as con:
            return _state(con, scratch)

    before = state()
    for template, rule in ATTEMPTS:
        with pytest.raises(ReadOnlyQueryError) as info:
            reader.query(template.format(**fill))
        _assert_refused(info.value, rule)
    for sql, rows in READS:
        assert reader.query(sql).to_pylist() == rows, sql
    for sql in SHAPES:
        assert reader.query(sql).num_rows >= 1, sql
    monkeypatch.setattr(readonly_sql, "_checked", lambda sql: (sql, None))
    for template, rule in ENGINE_ATTEMPTS:
        with pytest.raises(QueryRuleError) as engine:
            reader._query_file(template.format(**fill), None)
        _assert_refused(engine.value, rule)
    assert state() == before


# -- no broker needed ----------------------------------------------------------------------
def test_writes_are_refused_before_anything_is_opened(tmp_path: Path) -> None:
    reader = Reader(Settings(data_dir=tmp_path))
    for sql, rule in [("select 1; select 2", "MULTIPLE STATEMENTS"),
                      ("explain analyze delete from events", "EXPLAIN DELETE"),
                      ("explain (format json, analyze) insert into events values (1)",
                       "EXPLAIN INSERT")]:
        with pytest.raises(ReadOnlyQueryError) as info:
            reader.query(sql)
        _assert_refused(info.value, rule)
    with pytest.raises(QueryError, match="does not parse"):
        reader.query("explain analyze explain analyze delete from events")
    assert list(tmp_path.iterdir()) == []


def test_lock_down_is_for_the_whole_instance_and_keeps_the_writer_writing() -> None:
    con = duckdb.connect()
    con.execute("create table t (x int)")
    readonly_sql.lock_down(con)
    readonly_sql.lock_down(con)  # idempotent
    con.register("batch", pa.table({"x": [1, 2]}))
    con.execute("insert into t select * from batch")
    with pytest.raises(duckdb.PermissionException):
        con.execute("select * from read_text('/etc/passwd')")
    with pytest.raises(duckdb.InvalidInputException, match="locked"):
        con.execute("set threads = 1")
    assert readonly_sql.run_read_query(con, "select sum(x) as s from t").to_pylist() == [
        {"s": 3}]
