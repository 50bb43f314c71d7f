"""The dead letters in the open archive (``<root>/_dead_letters/topic=/date=``).

A real DuckDB ledger (the lifecycle scenario of ``test_lifecycle_views.py``) gets dead
letters written the projector's way (:func:`~modelog.store.ledger.build_batch` over
dead-letter-topic records, then the recorder's ``INSERT ... ON CONFLICT DO NOTHING``),
and is exported -- through a real query server, as while the projector runs -- into a
real directory archive. Checked: a restore into a fresh DuckDB gives the same
``dead_letters`` rows (bytes equal); a re-run, and a re-run after a crash, write no row
twice; new dead letters (and ones below the position, as after a broker refill) are
exported once by the next step; a corrupt dead-letter part is named and the rest
restores; the events archive's readers do not see the dead-letter files; plain
pyarrow / DuckDB read the dead-letter folder with no modelog code.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from modelog.config import Settings
from modelog.models.deadletter import dead_letter_headers
from modelog.store.ledger import build_batch
from modelog.store.parquet_archive import STATE_FILE, ParquetArchive, restore_ledger
from modelog.store.parquet_dead_letters import DIRECTORY
from modelog.store.query_server import QueryServer
from modelog.store.reader import Reader
from modelog.store.readonly_sql import LOCKED_CONFIG
from modelog.store.schema import create_schema

sys.path.insert(0, str(Path(__file__).parent))
import test_lifecycle_views as LV  # noqa: N812  (the lifecycle scenario)

DLT = "pytest.dead-letter"
DAY0 = int(dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC).timestamp() * 1000)
ROWS_SQL = 'select * from dead_letters order by topic, partition, "offset"'
runner = CliRunner()


class _Record:
    """A record of the dead-letter topic as the Kafka client hands it to the projector."""

    def __init__(self, partition: int, offset: int, stamp: int | None, topic: str = DLT
                 ) -> None:
        self._p, self._o, self._ts, self._t = partition, offset, stamp, topic

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return None if self._o % 3 == 0 else b"\x00key\xff" + bytes([self._o % 256])

    def value(self) -> bytes:
        return b"\xff\xfe not json \x00" + bytes([self._p, self._o % 256])

    def headers(self) -> list[tuple[str, bytes]]:
        return dead_letter_headers(f"bad record {self._p}/{self._o}", "pytest.serving",
                                   self._p, 100 + self._o, "worker")

    def timestamp(self) -> tuple[int, int]:
        return (0, -1) if self._ts is None else (1, self._ts)


def _dead(ledger: Path | duckdb.DuckDBPyConnection, slots: list[tuple[int, int]], *,
          no_time: bool = False, topic: str = DLT) -> None:
    """Record dead letters at ``(partition, offset)`` the projector's way (into the file, or
    through the projector's writer connection); partition 1's are a day after 0's."""
    records = [_Record(p, o, None if no_time else DAY0 + p * 86_400_000 + o * 60_000, topic)
               for p, o in slots]
    table = build_batch(records, topic).dead_letters
    con = duckdb.connect(str(ledger)) if isinstance(ledger, Path) else ledger
    try:
        con.register("modelog_dead", table)
        con.execute("INSERT INTO dead_letters SELECT * FROM modelog_dead ON CONFLICT DO NOTHING")
        con.unregister("modelog_dead")
    finally:
        if con is not ledger:
            con.close()


def _rows(path: Path) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(path), read_only=True, config=LOCKED_CONFIG)
    try:
        return con.execute(ROWS_SQL).fetchall()
    finally:
        con.close()


def _plain(root: Path) -> pd.DataFrame:
    """The dead-letter folder as another engine reads it (pyarrow, Hive partitions)."""
    return pads.dataset(root / DIRECTORY, format="parquet", partitioning="hive"
                        ).to_table().to_pandas()


@pytest.fixture()
def ledger(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data")
    LV.fill(settings.duckdb_path, LV.EVENTS)
    _dead(settings.duckdb_path, [(p, o) for p in (0, 1) for o in range(4)])
    return settings


def test_export_restore_round_trip_and_idempotence(ledger: Settings, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    archive = ParquetArchive.from_uri(root)
    dead = archive.dead_letter_archive()
    assert dead is not None
    state = root / DIRECTORY / STATE_FILE
    con = duckdb.connect(str(ledger.duckdb_path), read_only=True, config=LOCKED_CONFIG)
    try:
        with QueryServer(con) as server:  # the projector's path: reads through its server
            source = Reader(Settings(data_dir=tmp_path, query_url=server.url))
            report = archive.export(source, batch_rows=3)
            assert report.rows == len(LV.EVENTS) and report.dead_letters == 8
            again = archive.export(source, batch_rows=3)
            assert (again.rows, again.dead_letters) == (0, 0)  # caught up: nothing twice
            # a crash before a position was recorded: files ahead of it, redone from there
            state.unlink()
            assert dead.export(source, batch_rows=6, max_steps=1).rows == 6
    finally:
        con.close()
    # new dead letters in partition 0 sort before partition 1's: the redone step picks
    # other rows than the first time, and the files it wrote then must not stay
    state.write_text(json.dumps({"seq": 0}))
    _dead(ledger.duckdb_path, [(0, 4), (0, 5)])
    assert dead.export(Reader(ledger), batch_rows=6, max_steps=1).rows == 6  # p0: 0..5
    assert dead.export(Reader(ledger), batch_rows=6).rows == 4  # p1: 0..3
    frame = _plain(root)
    assert len(frame) == 10 and not frame.duplicated(["partition", "offset"]).any()
    parts = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    assert all(re.fullmatch(rf"{DIRECTORY}/topic={DLT}/date=2026-03-0[12]/"
                            r"part-\d{10}-\d{10}\.parquet", p)
               for p in parts if p.startswith(DIRECTORY)), parts
    # restore into a fresh deployment: the same rows, key and value bytes equal
    fresh = Settings(data_dir=tmp_path / "fresh")
    loaded = restore_ledger(archive, fresh.duckdb_path)
    assert loaded.rows == len(LV.EVENTS) and loaded.dead_letters == 10 and not loaded.bad
    got, want = _rows(fresh.duckdb_path), _rows(ledger.duckdb_path)
    assert got == want and isinstance(got[1][-1], bytes) and got[1][-2].startswith(b"\x00key")
    assert restore_ledger(archive, fresh.duckdb_path, force=True).dead_letters == 0
    # modelog query --archive names the table (or the view counting it)
    assert archive.query(ROWS_SQL).equals(Reader(ledger).query(ROWS_SQL))
    assert archive.query("select dead_letters from dead_letter_count").to_pylist() == [
        {"dead_letters": 10}]
    assert archive.query("select count(*) as n from dead_letters where time <= ?",
                         [dt.datetime(2026, 3, 1, 23, tzinfo=dt.UTC)]).to_pylist() == [{"n": 6}]


def test_new_and_refilled_dead_letters_then_compaction(ledger: Settings, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    archive = ParquetArchive.from_uri(root)
    assert archive.export(Reader(ledger)).dead_letters == 8
    _dead(ledger.duckdb_path, [(0, 10), (1, 7)])  # new ones, after the position
    assert archive.export(Reader(ledger)).dead_letters == 2
    # a refilled broker starts its offsets again: rows below the position appear
    _dead(ledger.duckdb_path, [(0, 6), (0, 7)], no_time=True)
    report = archive.export(Reader(ledger))
    assert (report.rows, report.dead_letters) == (0, 2)
    assert archive.export(Reader(ledger)).dead_letters == 0
    assert (root / DIRECTORY / f"topic={DLT}" / "date=unknown").is_dir()
    files = len(list((root / DIRECTORY).rglob("*.parquet")))
    assert archive.compact(min_files=2, today=dt.date(2026, 3, 10)) >= 2
    assert len(list((root / DIRECTORY).rglob("*.parquet"))) < files
    frame = _plain(root)
    assert len(frame) == 12 and not frame.duplicated(["partition", "offset"]).any()
    fresh = tmp_path / "fresh" / "modelog.duckdb"
    assert restore_ledger(archive, fresh).dead_letters == 12
    assert _rows(fresh) == _rows(ledger.duckdb_path)


def test_events_readers_skip_the_dead_letters_and_plain_engines_read_them(
        ledger: Settings, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    archive = ParquetArchive.from_uri(root)
    archive.export(Reader(ledger))
    assert all(DIRECTORY not in f.path for f in archive.all_files())
    assert len(archive.all_files()) == len(archive.files()) > 0
    assert len(pd.read_parquet(root)) == len(LV.EVENTS)  # the root: events only
    con = duckdb.connect()
    try:
        create_schema(con)
        assert archive.load(con).rows == len(LV.EVENTS)
        assert con.execute("select count(*) from dead_letters").fetchall() == [(0,)]
        # DuckDB alone over the dead-letter folder: Hive columns, BLOBs as bytes
        got = con.execute(
            f"select topic, partition, \"offset\", key, value from read_parquet("
            f"'{root / DIRECTORY}/*/*/*.parquet', hive_partitioning=1) "
            'order by partition, "offset"').fetchall()
    finally:
        con.close()
    want = [(r[0], r[1], r[2], r[9], r[10]) for r in _rows(ledger.duckdb_path)]
    assert got == want
    frame = _plain(root)
    assert sorted(frame["value"]) == sorted(r[-1] for r in want)


def test_a_corrupt_dead_letter_part_is_named_and_the_rest_restores(
        ledger: Settings, tmp_path: Path) -> None:
    from modelog.cli import app

    result = runner.invoke(app, ["--data-dir", str(ledger.data_dir), "archive", "export"])
    out = result.output
    assert result.exit_code == 0 and f"exported {len(LV.EVENTS)} events and 8 dead" in out, out
    root = ledger.data_dir / "artifacts" / "archive"
    result = runner.invoke(app, ["--data-dir", str(ledger.data_dir), "query", "--archive", "-f",
                                 "json", "select count(*) as n from dead_letters group by all"])
    assert result.exit_code == 0 and json.loads(result.output) == {"n": 8}, result.output
    victim = sorted((root / DIRECTORY).rglob("*.parquet"))[0]
    lost = pq.read_metadata(victim).num_rows
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    fresh = tmp_path / "fresh"
    result = runner.invoke(app, ["--data-dir", str(fresh), "archive", "restore",
                                 "--from-parquet", str(root), "--ledger-only"])
    out = " ".join(result.output.split())
    assert result.exit_code == 1 and str(victim) in out and "corrupt or truncated" in out
    assert f"restored {len(LV.EVENTS)} events and {8 - lost} dead letters" in out, out
    assert len(_rows(fresh / "modelog.duckdb")) == 8 - lost > 0
    with pytest.raises(Exception, match="corrupt or truncated"):
        ParquetArchive.from_uri(root).query("select count(*) from dead_letters")


def test_follow_exports_dead_letters_as_they_come(ledger: Settings, tmp_path: Path) -> None:
    """`ParquetArchive.follow` (what `modelog up` runs) exports the dead letters too."""
    root = tmp_path / "archive"
    archive = ParquetArchive.from_uri(root)
    dead = archive.dead_letter_archive()
    assert dead is not None
    stop = threading.Event()

    def exported(rows: int) -> bool:  # polled: the service's rounds are not ours to time
        deadline = time.monotonic() + 30
        while dead.state()["rows"] < rows and time.monotonic() < deadline:
            time.sleep(0.05)
        return bool(dead.state()["rows"] == rows)

    errors: list[Exception] = []
    con = duckdb.connect(str(ledger.duckdb_path))  # the projector's writer connection
    try:
        with QueryServer(con) as server:
            source = Reader(Settings(data_dir=tmp_path, query_url=server.url))
            thread = threading.Thread(target=archive.follow, args=(source, stop),
                                      kwargs={"interval": 0.05, "on_error": errors.append})
            thread.start()
            try:
                assert exported(8)
                _dead(con, [(1, 9)])  # a new dead letter while the service runs
                assert exported(9)
            finally:
                stop.set()
                thread.join(30)
    finally:
        con.close()
    assert not thread.is_alive() and not errors and len(_plain(root)) == 9


@pytest.mark.broker
def test_a_broker_refilled_after_a_parquet_restore_has_its_dead_letters(
        topics: Settings, tmp_path: Path) -> None:
    """The chain on a new machine: Parquet -> fresh DuckDB -> fresh (empty) topics."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from modelog.streams.archive import restore_to_broker
    from modelog.streams.topics import Topics

    topic = Topics(topics.topic_prefix).dead_letter
    old = Settings(data_dir=tmp_path / "old")
    LV.fill(old.duckdb_path, LV.EVENTS[:3])
    _dead(old.duckdb_path, [(0, o) for o in range(6)], topic=topic)  # the topic has one
    archive = ParquetArchive.from_uri(tmp_path / "archive")
    assert archive.export(Reader(old)).dead_letters == 6
    assert restore_ledger(archive, topics.duckdb_path).dead_letters == 6
    report = restore_to_broker(topics, streams=())
    assert report.restored[topic] == 6
    consumer = Consumer({**topics.kafka_config(), "group.id": "dl-read",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got: list[tuple[bytes | None, bytes, dict[str, bytes]]] = []
    deadline = time.monotonic() + 30
    while len(got) < 6 and time.monotonic() < deadline:
        got += [(m.key(), m.value(), dict(m.headers() or []))
                for m in consumer.consume(100, 0.5) if m.error() is None]
    consumer.close()
    # in the original order, key and value bytes as recorded, reason and source kept
    assert [(k, v) for k, v, _ in got] == [(r[9], r[10]) for r in _rows(old.duckdb_path)]
    assert [h["modelog-source-offset"] for *_, h in got] == [
        str(100 + o).encode() for o in range(6)]
