"""The open archive: the ledger as Hive-partitioned Parquet (topic=/date=, zstd).

A real DuckDB ledger (the lifecycle scenario of ``test_lifecycle_views.py`` plus serving
traffic over three days) is exported -- through a real query server, as while the
projector runs -- into a directory, and into S3 (moto's server, pyarrow's S3 client).
Checked: the archive holds every ledger row once (count and ids), a re-run after a crash
writes no row twice, new ledger rows are exported incrementally, compaction leaves one
file per partition-day, plain pyarrow / pandas / DuckDB read it with no modelog code,
``modelog query --archive`` answers over it, and a restore into a fresh DuckDB gives
identical views; a corrupt file is named and the rest restored.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from modelog.config import Settings
from modelog.models import events as ev
from modelog.models.ids import new_id
from modelog.store.derivations import DERIVED_TABLES
from modelog.store.errors import ArchiveError, AsOfError
from modelog.store.parquet_archive import STATE_FILE, ParquetArchive, restore_ledger
from modelog.store.query_server import QueryServer
from modelog.store.reader import Reader
from modelog.store.readonly_sql import LOCKED_CONFIG
from modelog.store.views import VIEWS

sys.path.insert(0, str(Path(__file__).parent))
import test_artifacts_uri
import test_lifecycle_views as LV  # noqa: N812  (the lifecycle scenario)

s3_uri = test_artifacts_uri.s3_uri
runner = CliRunner()
DAY = dt.timedelta(days=1)


def _traffic(n: int, start: dt.datetime, tag: str) -> list[ev.Event]:
    out: list[ev.Event] = []
    for i in range(n):
        t = start + i * dt.timedelta(hours=7)  # spans several days
        out.append(ev.PredictionMade(id=new_id(), time=t, aggregate="churn", producer="app",
                                     prediction_id=f"{tag}-{i}", model="churn",
                                     model_version=1 + i % 2, inputs={"age": 20 + i},
                                     output=i % 2))
        if i % 3 == 0:
            out.append(ev.LabelObserved(id=new_id(), time=t + dt.timedelta(minutes=5),
                                        aggregate="churn", producer="app",
                                        prediction_id=f"{tag}-{i}", model="churn", label=1))
    return out


EVENTS: list[ev.Event] = [*LV.EVENTS, *_traffic(12, LV.T0 + dt.timedelta(hours=2), "p")]
LATER: list[ev.Event] = _traffic(5, LV.T0 + 3 * DAY, "q")


def _ledger(path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path), read_only=True, config=LOCKED_CONFIG)


def _ids(path: Path) -> list[str]:
    con = _ledger(path)
    try:
        return [r[0] for r in con.execute("select id from events order by id").fetchall()]
    finally:
        con.close()


def _plain_read(root: Path) -> pd.DataFrame:
    """What another engine sees: pyarrow.dataset with Hive partitioning, no modelog code."""
    return pads.dataset(root, format="parquet", partitioning="hive").to_table().to_pandas()


@pytest.fixture()
def ledger(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data")
    LV.fill(settings.duckdb_path, EVENTS)
    return settings


def test_export_holds_every_ledger_row_once_and_is_idempotent(ledger: Settings,
                                                              tmp_path: Path) -> None:
    root = tmp_path / "archive"
    archive = ParquetArchive.from_uri(root)
    con = _ledger(ledger.duckdb_path)
    try:
        with QueryServer(con) as server:  # the projector's path: reads go through its server
            source = Reader(Settings(data_dir=tmp_path, query_url=server.url))
            first = archive.export(source, batch_rows=10, max_steps=1)
            after_one = (root / STATE_FILE).read_text()
            report = archive.export(source, batch_rows=10)
            assert first.rows == 10 and report.rows == len(EVENTS) - 10 and report.steps > 3
            assert archive.export(source, batch_rows=10).rows == 0  # caught up
            # a crash before the position was recorded: the same steps run again
            (root / STATE_FILE).write_text(after_one)
            assert archive.export(source, batch_rows=10).rows == len(EVENTS) - 10
    finally:
        con.close()
    frame = _plain_read(root)
    assert len(frame) == len(EVENTS) and sorted(frame["id"]) == _ids(ledger.duckdb_path)
    state = json.loads((root / STATE_FILE).read_text())
    assert state["rows"] == len(EVENTS)
    # the layout: topic=/date=/part-*.parquet, zstd, the day of the event's time
    parts = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    assert all(re.fullmatch(r"topic=[\w.-]+/date=\d{4}-\d{2}-\d{2}/part-\d{10}-\d{10}\.parquet",
                            p) for p in parts), parts
    assert {p.split("/")[1] for p in parts} == {"date=2026-03-01", "date=2026-03-02",
                                                "date=2026-03-03", "date=2026-03-04"}
    meta = pq.ParquetFile(root / parts[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    by_day = frame.assign(day=frame["time"].dt.strftime("%Y-%m-%d"))
    assert (by_day["day"] == by_day["date"].astype(str)).all()
    assert set(frame["topic"].astype(str)) == {f"pytest.{e.stream}" for e in EVENTS}


def test_incremental_export_compaction_and_other_engines(ledger: Settings,
                                                         tmp_path: Path) -> None:
    root = tmp_path / "archive"
    archive = ParquetArchive.from_uri(root)
    assert archive.export(Reader(ledger), batch_rows=8).rows == len(EVENTS)
    con = duckdb.connect(str(ledger.duckdb_path))
    try:
        LV.project_batch(con, LATER)
    finally:
        con.close()
    assert archive.export(Reader(ledger), batch_rows=8).rows == len(LATER)  # only the new
    n = len(EVENTS) + len(LATER)
    many = len(list(root.rglob("*.parquet")))
    saved = {p: p.read_bytes() for p in root.rglob("*.parquet")}
    merged = archive.compact(min_files=2, today=dt.date(2026, 3, 10))
    dirs = {p.parent for p in root.rglob("*.parquet")}
    assert 0 < merged <= len(dirs)  # days with one file already are left as they are
    assert len(list(root.rglob("*.parquet"))) == len(dirs) < many
    assert len(_plain_read(root)) == n
    # a compaction that crashed after publishing, before deleting its inputs
    stale, body = next(iter(saved.items()))
    stale.write_bytes(body)
    assert len(_plain_read(root)) > n  # a plain reader sees the stale part ...
    assert sum(pq.read_metadata(archive.fs.open_input_file(f.path)).num_rows
               for f in archive.files()) == n  # ... modelog's readers skip it
    assert archive.heal() == 1 and len(_plain_read(root)) == n  # and the next run deletes it
    # other engines, no modelog code: pandas, pyarrow, DuckDB's read_parquet
    assert len(pd.read_parquet(root)) == n
    ids = sorted(pads.dataset(root, partitioning="hive").to_table(columns=["id"])["id"]
                 .to_pylist())
    assert ids == _ids(ledger.duckdb_path)
    plain = duckdb.connect()
    got = plain.execute(f"select topic, count(*) from read_parquet('{root}/**/*.parquet', "
                        "hive_partitioning=1) where type = 'PredictionMade' group by topic"
                        ).fetchall()
    assert got == [("pytest.serving", 12 + 5 + 5)]


def test_query_archive_and_restore_give_the_same_views(ledger: Settings,
                                                       tmp_path: Path) -> None:
    root = tmp_path / "archive"
    archive = ParquetArchive.from_uri(root)
    archive.export(Reader(ledger), batch_rows=16)
    live = Reader(ledger)
    # modelog query --archive: events, and the views derived from them
    for sql in ("select count(*) as n, min(time) as t0 from events",
                "select * from runs order by all", "select * from aliases order by all"):
        assert archive.query(sql).equals(live.query(sql)), sql
    cut = LV.at(45)
    assert archive.query("select * from aliases order by all", as_of=cut).equals(
        Reader(ledger, as_of=cut).query("select * from aliases order by all"))
    with pytest.raises(Exception, match="only read statements"):
        archive.query("delete from events")
    with pytest.raises(AsOfError, match="before the first event"):
        archive.query("select 1", as_of=LV.at(-1))
    # restore into a fresh deployment: identical ledger and views
    fresh = Settings(data_dir=tmp_path / "fresh")
    report = restore_ledger(archive, fresh.duckdb_path)
    assert report.rows == len(EVENTS) and not report.bad
    a, b = _ledger(ledger.duckdb_path), _ledger(fresh.duckdb_path)
    try:
        for name in ["events", *DERIVED_TABLES, *VIEWS]:
            sql = f"select * from {name} order by all"
            assert a.execute(sql).fetchall() == b.execute(sql).fetchall(), name
    finally:
        a.close()
        b.close()
    with pytest.raises(ArchiveError, match="already holds"):
        restore_ledger(archive, fresh.duckdb_path)
    assert restore_ledger(archive, fresh.duckdb_path, force=True).rows == 0  # nothing missing


def _cli(data_dir: Path, *args: str) -> tuple[int, str]:
    from modelog.cli import app

    result = runner.invoke(app, ["--data-dir", str(data_dir), *args])
    return result.exit_code, result.output


def test_cli_export_query_and_a_corrupt_file(ledger: Settings, tmp_path: Path) -> None:
    code, out = _cli(ledger.data_dir, "archive", "export")
    assert code == 0 and f"exported {len(EVENTS)} events" in out, out
    root = ledger.data_dir / "artifacts" / "archive"
    code, out = _cli(ledger.data_dir, "query", "--archive", "-f", "json",
                     "select count(*) as n from predictions")
    assert code == 0 and json.loads(out) == {"n": 12 + 5}, out
    code, out = _cli(ledger.data_dir, "archive", "compact", "--min-files", "2")
    assert code == 0 and "compacted" in out
    # a truncated partition: named, the rest restored
    victim = sorted(root.rglob("*.parquet"))[0]
    lost = pq.read_metadata(victim).num_rows
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    fresh = tmp_path / "fresh"
    code, out = _cli(fresh, "archive", "restore", "--from-parquet", str(root), "--ledger-only")
    assert code == 1 and str(victim) in " ".join(out.split()) and "corrupt or truncated" in out
    assert len(_ids(fresh / "modelog.duckdb")) == len(EVENTS) - lost > 0
    code, out = _cli(ledger.data_dir, "query", "--archive", "select 1")
    assert code == 1 and str(victim) in " ".join(out.split())


def test_s3_archive_export_read_and_restore(ledger: Settings, s3_uri: str,
                                           tmp_path: Path) -> None:
    settings = ledger.replace(artifact_uri=s3_uri)
    archive = ParquetArchive.from_settings(settings)
    assert archive.uri == "s3://models/modelog/archive"
    assert archive.export(Reader(ledger), batch_rows=20).rows == len(EVENTS)
    assert archive.export(Reader(ledger), batch_rows=20).rows == 0
    archive.compact(min_files=2)
    # pyarrow alone, on the same S3 filesystem
    table = pads.dataset(archive.base, filesystem=archive.fs, format="parquet",
                         partitioning="hive").to_table()
    assert sorted(table["id"].to_pylist()) == _ids(ledger.duckdb_path)
    assert archive.query("select count(*) as n from labels").to_pylist() == [{"n": 4}]
    fresh = tmp_path / "fresh"
    code, out = _cli(fresh, "archive", "restore", "--from-parquet",
                     s3_uri.replace("/modelog?", "/modelog/archive?"), "--ledger-only")
    assert code == 0 and f"restored {len(EVENTS)} events" in out, out
    assert _ids(fresh / "modelog.duckdb") == _ids(ledger.duckdb_path)


def test_restore_refuses_a_busy_or_empty_archive(tmp_path: Path) -> None:
    archive = ParquetArchive.from_uri(tmp_path / "nothing")
    with pytest.raises(ArchiveError, match="holds no part files"):
        archive.query("select count(*) from events")
    report: Any = restore_ledger(archive, tmp_path / "d" / "modelog.duckdb")
    assert report.rows == 0 and report.files == 0


def test_rows_without_a_projection_time_are_exported_once(tmp_path: Path) -> None:
    """Rows written by hand (no ``projected_at``) sort first and are exported too."""
    settings = Settings(data_dir=tmp_path / "data")
    LV.fill(settings.duckdb_path, EVENTS[:6])
    con = duckdb.connect(str(settings.duckdb_path))
    try:
        con.execute("insert into events (id, type, time, topic, payload) select 'x' || i, "
                    "'Note', TIMESTAMPTZ '2026-03-01 10:00+00', 'pytest.notes', '{}' "
                    "from range(5) t(i)")
    finally:
        con.close()
    archive = ParquetArchive.from_uri(tmp_path / "archive")
    assert archive.export(Reader(settings), batch_rows=2).rows == 11
    assert archive.export(Reader(settings), batch_rows=2).rows == 0
    assert sorted(_plain_read(tmp_path / "archive")["id"]) == _ids(settings.duckdb_path)


def test_follow_service_exports_as_the_ledger_grows(ledger: Settings, tmp_path: Path) -> None:
    """`modelog archive export --follow` (what `modelog up` runs): a real process reading
    through the projector's query server, stopped by SIGTERM."""
    import os
    import signal
    import subprocess
    import time

    root = tmp_path / "archive"
    state = root / STATE_FILE

    def exported() -> int:
        try:
            return int(json.loads(state.read_text())["rows"])
        except (OSError, ValueError):
            return 0

    def wait_for(rows: int) -> None:
        deadline = time.monotonic() + 60
        while exported() < rows and time.monotonic() < deadline:
            time.sleep(0.1)
        assert exported() == rows

    con = duckdb.connect(str(ledger.duckdb_path))  # the projector's writer connection
    try:
        with QueryServer(con) as server:
            env = {**os.environ, "MODELOG_QUERY_URL": server.url}
            proc = subprocess.Popen(
                [sys.executable, "-m", "modelog", "--data-dir", str(ledger.data_dir), "archive",
                 "export", "--follow", "--uri", str(root), "--interval", "0.2"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                wait_for(len(EVENTS))
                LV.project_batch(con, LATER)  # the ledger grows while the service runs
                wait_for(len(EVENTS) + len(LATER))
            finally:
                proc.send_signal(signal.SIGTERM)
                out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0, out
            assert f"exporting the ledger to {root}" in out
    finally:
        con.close()
    assert sorted(_plain_read(root)["id"]) == _ids(ledger.duckdb_path)


@pytest.mark.broker
def test_restore_benchmark_restores_ledger_views_and_broker(settings: Settings) -> None:
    """`modelog bench --restore` at a small size: the figures come from a real restore."""
    from modelog.streams.bench.restore import bench_restore

    lines: list[str] = []
    out = bench_restore(settings, events=3000, echo=lines.append)
    assert out["events"] == out["refilled"] == 3000 and out["total_s"] > 0
    assert "3,000 events from Parquet" in lines[0]
    con = _ledger(settings.duckdb_path)
    try:
        assert con.execute("select count(distinct prediction_id) from predictions"
                           ).fetchall() == [(3000,)]
    finally:
        con.close()
