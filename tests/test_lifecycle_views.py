"""The lifecycle projection: derived tables and views, lineage and the queries over them.

A scenario (datasets, runs, registry, predictions) is written into a real DuckDB file the
way the projector writes it: per batch, the new events go into the ``events`` ledger and
:func:`modelog.store.schema.derive` runs over just those events -- in shuffled order, so
"live equals rebuild" is tested against out-of-order arrival. ``test_lifecycle_cli.py``
loads the scenario helpers from this file.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from modelog.config import Settings
from modelog.models import events as ev
from modelog.models.codec import encode
from modelog.models.errors import ProfileError
from modelog.models.ids import new_id
from modelog.models.profile import profile_table
from modelog.models.registry_fold import answered
from modelog.store import lineage as lin
from modelog.store import queries as q
from modelog.store import registry as reg
from modelog.store.derivations import DERIVED_TABLES
from modelog.store.errors import NotFoundError
from modelog.store.filters import select_runs
from modelog.store.ledger import LEDGER_SCHEMA
from modelog.store.reader import Reader
from modelog.store.schema import (
    SCHEMA_VERSION,
    create_schema,
    derive,
    rebuild_projections,
    stored_schema_version,
)
from modelog.store.views import VIEWS

T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
RAW = "a0" * 32
TRAIN_V1 = "b1" * 32
TRAIN_V2 = "c2" * 32
TRAIN_V3 = "d3" * 32
PROFILE_V1 = profile_table(pa.table({"age": [30, 40, 50, 60], "plan": ["a", "a", "b", "b"]}))
PROFILE_V2 = profile_table(pa.table({"age": [31, 45, 70, 90, 99],
                                     "plan": ["a", "c", "c", "c", "b"],
                                     "tenure": [1.0, 2.0, 3.0, 4.0, 5.0]}))
ROLLBACK_REASON = "v2 misbehaves on new customers"


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def _env(minutes: float, aggregate: str) -> dict[str, Any]:
    return {"id": new_id(), "time": at(minutes), "aggregate": aggregate, "producer": "pytest"}


def scenario() -> list[ev.Event]:
    """The story the lifecycle tests check (times in minutes after T0)."""
    cols = [ev.ColumnSchema(name="age", type="int64")]
    out: list[ev.Event] = [
        ev.DatasetVersionCreated(**_env(0, "raw"), name="raw", digest=RAW, columns=cols,
                                 num_rows=1000, uri="file:///raw"),
        ev.DatasetVersionCreated(**_env(1, "churn-train"), name="churn-train", digest=TRAIN_V1,
                                 columns=cols, num_rows=4, uri="file:///t1",
                                 parents=[f"raw@{RAW}"], profile=PROFILE_V1),
        # the same content logged again: no new version
        ev.DatasetVersionCreated(**_env(2, "churn-train"), name="churn-train", digest=TRAIN_V1,
                                 columns=cols, num_rows=4, uri="file:///t1",
                                 parents=[f"raw@{RAW}"], profile=PROFILE_V1),
        ev.DatasetVersionCreated(**_env(3, "churn-train"), name="churn-train", digest=TRAIN_V2,
                                 columns=cols, num_rows=5, uri="file:///t2", parents=["raw@1"],
                                 profile=PROFILE_V2, description="more customers"),
        ev.DatasetVersionCreated(**_env(4, "churn-train"), name="churn-train", digest=TRAIN_V3,
                                 columns=cols, num_rows=6, uri="file:///t3",
                                 parents=["churn-train@v2"]),
    ]

    def run(rid: str, minute: float, *, name: str, commit: str | None, params: dict[str, Any],
            f1: Sequence[tuple[int, float]], dataset: str | None, end: str | None,
            parent: str | None = None) -> None:
        out.append(ev.RunStarted(**_env(minute, rid), run_id=rid, experiment="churn", name=name,
                                 parent_run_id=parent, tags={"team": "fraud"},
                                 code=ev.CodeVersion(commit=commit, branch="main")))
        out.append(ev.ParamsLogged(**_env(minute + 0.1, rid), run_id=rid, params=params))
        # metric points logged out of step order, in two events
        pts = [ev.MetricPoint(key="f1", value=v, step=s) for s, v in f1]
        out.append(ev.MetricsLogged(**_env(minute + 0.3, rid), run_id=rid, metrics=pts[1:]))
        out.append(ev.MetricsLogged(**_env(minute + 0.2, rid), run_id=rid, metrics=[
            *pts[:1], ev.MetricPoint(key="loss", value=0.5, step=0)]))
        if dataset:
            name_, digest = dataset.split("@")
            out.append(ev.RunDatasetUsed(**_env(minute + 0.4, rid), run_id=rid, dataset=name_,
                                         digest=digest))
        out.append(ev.ArtifactLogged(**_env(minute + 0.5, rid), run_id=rid, path="model.pkl",
                                     uri=f"file:///{rid}.pkl", digest="e5" * 32, size=123))
        if end == "finished":
            out.append(ev.RunFinished(**_env(minute + 1, rid), run_id=rid))
        elif end == "failed":
            out.append(ev.RunFailed(**_env(minute + 1, rid), run_id=rid, error="OOM",
                                    traceback="Traceback: boom"))

    run("run-a", 10, name="rf-1", commit="abc123", params={"model": "rf", "lr": 0.1, "depth": 3},
        f1=[(2, 0.7), (0, 0.5), (1, 0.9)], dataset=f"churn-train@{TRAIN_V1}", end="finished")
    run("run-b", 12, name="gb-1", commit="abc123", params={"model": "gb", "lr": 0.01},
        f1=[(0, 0.6), (1, 0.65)], dataset=f"churn-train@{TRAIN_V2}", end="failed")
    run("run-c", 14, name="rf-1-child", commit=None, params={"model": "rf", "lr": 0.1},
        f1=[(0, 0.1)], dataset=None, end=None, parent="run-a")
    run("run-d", 16, name="rf-2", commit="def456", params={"model": "rf", "lr": 0.05},
        f1=[(0, 0.8), (5, 0.95)], dataset=f"churn-train@{TRAIN_V2}", end="finished")

    # the registry: commands and the registry worker's answers (only those count)
    commands: list[tuple[ev.AliasChangeRequested | ev.ModelVersionRequested, dt.datetime]] = []

    def register(version: int, rid: str, minute: float) -> None:
        commands.append((ev.ModelVersionRequested(
            **_env(minute - 0.1, "churn"), command_id=f"cmd-{version}", model="churn",
            run_id=rid, flavor="sklearn", artifact_uri=f"file:///{rid}.pkl",
            artifact_digest="e5" * 32, library_versions={"sklearn": "1.5"}), at(minute)))

    def alias(minute: float, name: str, version: int | None, actor: str, reason: str) -> None:
        commands.append((ev.AliasChangeRequested(
            **_env(minute - 0.1, "churn"), command_id=f"alias-{minute}", model="churn",
            alias=name, model_version=version, actor=actor, reason=reason), at(minute)))

    register(1, "run-a", 20)
    register(2, "run-d", 21)
    alias(30, "production", 1, "ana", "first model")
    alias(40, "staging", 2, "ci", "candidate")
    alias(50, "production", 2, "bob", "better f1")
    alias(55, "staging", None, "bob", "promoted")
    out += answered(commands)
    for i in range(5):
        version = 1 if i < 2 else 2
        out.append(ev.PredictionMade(**_env(31 + i * 5, "churn"), prediction_id=f"p-{i}",
                                     model="churn", model_version=version, code_version="srv-9",
                                     inputs={"age": 30 + i}, output=1))
    return out


def ledger_table(events: Iterable[ev.Event]) -> pa.Table:
    """Events as ledger rows, like the projector's batches."""
    evs = list(events)
    return pa.table([
        pa.array([e.id for e in evs], pa.string()),
        pa.array([type(e).__name__ for e in evs], pa.string()),
        pa.array([e.schema_version for e in evs], pa.int32()),
        pa.array([e.time for e in evs], pa.timestamp("us", tz="UTC")),
        pa.array([e.aggregate for e in evs], pa.string()),
        pa.array([e.producer for e in evs], pa.string()),
        pa.array([f"pytest.{e.stream}" for e in evs], pa.string()),
        pa.array([0] * len(evs), pa.int32()),
        pa.array(range(len(evs)), pa.int64()),
        pa.array([encode(e).decode() for e in evs], pa.string()),
    ], schema=LEDGER_SCHEMA)


def project_batch(con: duckdb.DuckDBPyConnection, events: Sequence[ev.Event]) -> int:
    """One projector transaction: add the new events to the ledger, derive only those."""
    con.register("lifecycle_batch", ledger_table(events))
    con.execute("BEGIN TRANSACTION")
    new = con.execute(
        'INSERT INTO events SELECT id, type, schema_version, time, aggregate, producer, topic, '
        'partition, "offset", now(), payload FROM lifecycle_batch ON CONFLICT DO NOTHING '
        "RETURNING id").fetchall()
    if new:
        con.register("lifecycle_new", pa.table({"id": [r[0] for r in new]}))
        derive(con, "(SELECT * FROM lifecycle_batch WHERE id IN (SELECT id FROM lifecycle_new))",
               {type(e).__name__ for e in events})
    con.execute("COMMIT")
    con.unregister("lifecycle_batch")
    return len(new)


def fill(path: Path, events: Sequence[ev.Event], *, batch: int = 7, seed: int = 3,
         shuffle: bool = True) -> None:
    """Write ``events`` into the DuckDB file at ``path`` in batches (shuffled: out of order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    evs = list(events)
    if shuffle:
        random.Random(seed).shuffle(evs)
    con = duckdb.connect(str(path))
    try:
        create_schema(con)
        for i in range(0, len(evs), batch):
            project_batch(con, evs[i:i + batch])
    finally:
        con.close()


# -- fixtures ----------------------------------------------------------------------------
EVENTS = scenario()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("lifecycle") / "data")
    fill(settings.duckdb_path, EVENTS)
    return settings


@pytest.fixture(scope="module")
def reader(data: Settings) -> Reader:
    return Reader(data)  # no projector: opens the file read-only per query


def rows(reader: Reader, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    table = reader.query(sql, list(params))
    return [tuple(r.values()) for r in table.to_pylist()]


def snapshot(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    names = [*DERIVED_TABLES, *VIEWS]
    return {n: con.execute(f"SELECT * FROM {n} ORDER BY ALL").fetchall() for n in names}


# -- tables and views --------------------------------------------------------------------
def test_runs_status_params_and_failure(reader: Reader) -> None:
    runs = {r[0]: r[1:] for r in rows(reader, "SELECT run_id, status, started, ended, error, "
                                              "code_commit, parent_run_id FROM runs")}
    assert runs == {
        "run-a": ("finished", at(10), at(11), None, "abc123", None),
        "run-b": ("failed", at(12), at(13), "OOM", "abc123", None),
        "run-c": ("running", at(14), None, None, None, "run-a"),
        "run-d": ("finished", at(16), at(17), None, "def456", None),
    }
    assert rows(reader, "SELECT key, value, value_json FROM run_params WHERE run_id = 'run-a' "
                        "ORDER BY key") == [("depth", "3", "3"), ("lr", "0.1", "0.1"),
                                            ("model", "rf", '"rf"')]


def test_latest_metric_is_the_highest_step_whatever_the_arrival_order(reader: Reader) -> None:
    expected: dict[tuple[str, str], tuple[int, float]] = {}
    for e in EVENTS:
        if isinstance(e, ev.MetricsLogged):
            for p in e.metrics:
                key = (e.run_id, p.key)
                expected[key] = max(expected.get(key, (-1, 0.0)), (p.step, p.value))
    got = {(r[0], r[1]): (r[3], r[2]) for r in rows(
        reader, "SELECT run_id, key, value, step FROM run_latest_metrics")}
    assert got == expected
    assert got[("run-a", "f1")] == (2, 0.7)  # step 2 wins over the later-logged step 1
    n_points = sum(len(e.metrics) for e in EVENTS if isinstance(e, ev.MetricsLogged))
    assert rows(reader, "SELECT count(*) FROM run_metrics") == [(n_points,)]


def test_relogged_dataset_is_no_new_version(reader: Reader) -> None:
    got = rows(reader, "SELECT name, version, digest, num_rows, parents, profile IS NOT NULL "
                       "FROM datasets ORDER BY name, version")
    assert got == [
        ("churn-train", 1, TRAIN_V1, 4, [f"raw@{RAW}"], True),
        ("churn-train", 2, TRAIN_V2, 5, ["raw@1"], True),
        ("churn-train", 3, TRAIN_V3, 6, ["churn-train@v2"], False),
        ("raw", 1, RAW, 1000, [], False),
    ]
    assert rows(reader, "SELECT count(*) FROM dataset_versions") == [(5,)]


def test_registry_tables(reader: Reader) -> None:
    assert rows(reader, "SELECT model_version, run_id, command_id, library_versions->>'sklearn' "
                        "FROM model_versions ORDER BY 1") == [
        (1, "run-a", "cmd-1", "1.5"), (2, "run-d", "cmd-2", "1.5")]
    assert rows(reader, "SELECT alias, action, model_version, previous_version FROM "
                        "alias_history ORDER BY time") == [
        ("production", "set", 1, None), ("staging", "set", 2, None),
        ("production", "set", 2, 1), ("staging", "removed", None, 2)]
    assert rows(reader, "SELECT alias, model_version, actor FROM aliases") == [
        ("production", 2, "bob")]
    assert rows(reader, "SELECT dataset, digest, context FROM run_datasets WHERE run_id = "
                        "'run-d'") == [("churn-train", TRAIN_V2, "training")]
    assert rows(reader, "SELECT path, size FROM run_artifacts WHERE run_id = 'run-d'") == [
        ("model.pkl", 123)]


def test_lineage_edges(reader: Reader) -> None:
    edges = set(rows(reader, "SELECT src_kind, src_id, dst_kind, dst_id, relation, n "
                             "FROM lineage_edges"))
    t1, t2, t3, raw = (f"churn-train@{d[:12]}" for d in (TRAIN_V1, TRAIN_V2, TRAIN_V3, RAW))
    raw = f"raw@{RAW[:12]}"
    assert {
        ("dataset", raw, "dataset", t1, "derived", None),  # parent by digest
        ("dataset", raw, "dataset", t2, "derived", None),  # parent by version number
        ("dataset", t2, "dataset", t3, "derived", None),  # parent by vN
        ("dataset", t2, "run", "run-d", "used:training", None),
        ("git", "git:def456", "run", "run-d", "code", None),
        ("run", "run-d", "model", "churn@v2", "produced", None),
        ("model", "churn@v2", "alias", "churn@production", "aliased", None),
        ("model", "churn@v2", "predictions", "churn@v2/predictions", "served", 3),
        ("model", "churn@v1", "predictions", "churn@v1/predictions", "served", 2),
    } <= edges
    periods = rows(reader, "SELECT src_id, time, until FROM lineage_edges WHERE dst_id = "
                           "'churn@production' ORDER BY time")
    assert periods == [("churn@v1", at(30), at(50)), ("churn@v2", at(50), None)]


def test_live_projection_equals_rebuild(data: Settings, tmp_path: Path) -> None:
    path = tmp_path / "copy.duckdb"
    fill(path, EVENTS, batch=3, seed=11)
    # the same events again (an at-least-once producer) change nothing
    con = duckdb.connect(str(path))
    try:
        live = snapshot(con)
        assert project_batch(con, EVENTS[:10]) == 0
        assert snapshot(con) == live
        rebuild_projections(con)
        assert snapshot(con) == live
    finally:
        con.close()
    # ... and equals the module's file, filled in another order and batching
    other = duckdb.connect(str(data.duckdb_path), read_only=True)
    try:
        expected = snapshot(other)
    finally:
        other.close()
    for name in ("runs", "run_params", "run_latest_metrics", "datasets", "aliases",
                 "lineage_edges"):
        assert live[name] == expected[name], name


def test_upgrade_from_views_to_tables_rebuilds(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    # a schema-2 file: the lifecycle objects were views over the ledger
    create_schema(con)
    for name in ("run_params", "run_metrics", "model_versions", "alias_history"):
        con.execute(f"DROP TABLE {name}")
        con.execute(f"CREATE VIEW {name} AS SELECT 1 AS old")
    con.execute("UPDATE schema_info SET version = 2")
    con.register("old_batch", ledger_table(EVENTS))
    con.execute('INSERT INTO events SELECT id, type, schema_version, time, aggregate, producer, '
                'topic, partition, "offset", now(), payload FROM old_batch')
    create_schema(con)  # what the projector does on open: keeps the old objects
    assert stored_schema_version(con) == 2
    rebuild_projections(con)
    assert stored_schema_version(con) == SCHEMA_VERSION
    kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables "
                             "WHERE table_name IN ('run_params', 'alias_history')").fetchall())
    assert kinds == {"run_params": "BASE TABLE", "alias_history": "BASE TABLE"}
    assert con.execute("SELECT count(*) FROM alias_history").fetchall() == [(4,)]
    con.close()


# -- queries -----------------------------------------------------------------------------
def test_list_runs_filters_and_pivots(reader: Reader) -> None:
    df = q.list_runs(reader, "params.model = 'rf' and metrics.f1 > 0.6", "metrics.f1 DESC")
    assert list(df["run_id"]) == ["run-d", "run-a"]
    assert list(df.columns) == [*q.RUN_COLUMNS, "params.depth", "params.lr", "params.model",
                                "metrics.f1", "metrics.loss"]
    assert list(df["metrics.f1"]) == [0.95, 0.7]
    assert list(df["params.depth"]) == [None, "3"]
    assert list(q.list_runs(reader, experiment="nope")["run_id"]) == []
    assert set(q.list_runs(reader, experiment="churn", limit=2)["run_id"]) == {"run-d", "run-c"}


def test_show_and_compare_runs(reader: Reader) -> None:
    run = q.show_run(reader, "run-b")
    assert run["status"] == "failed"
    assert run["failure"] == {"error": "OOM", "traceback": "Traceback: boom"}
    assert run["params"] == {"lr": "0.01", "model": "gb"}
    assert run["metrics"] == {"f1": 0.65, "loss": 0.5}
    assert run["metric_history"]["f1"] == {"points": 2, "first_step": 0, "last_step": 1}
    assert [d["digest"] for d in run["datasets"]] == [TRAIN_V2]
    assert run["code"] == {"commit": "abc123", "branch": "main", "dirty": False}
    parent = q.show_run(reader, "run-a")
    assert [c["run_id"] for c in parent["children"]] == ["run-c"]
    assert [(m["model"], m["model_version"]) for m in parent["models"]] == [("churn", 1)]
    cmp = q.compare_runs(reader, ["run-a", "run-c"]).set_index("key")
    assert not cmp.loc["params.lr", "differs"]
    assert bool(cmp.loc["params.depth", "differs"])
    assert cmp.loc["metrics.f1", "run-a"] == 0.7
    with pytest.raises(NotFoundError, match="no run 'zzz': there are 4 runs"):
        q.show_run(reader, "zzz")
    with pytest.raises(NotFoundError, match="ambiguous"):
        q.show_run(reader, "run-")


def test_datasets_and_diff(reader: Reader) -> None:
    names = q.list_datasets(reader)
    assert dict(zip(names["name"], names["versions"], strict=True)) == {"churn-train": 3,
                                                                        "raw": 1}
    versions = q.list_datasets(reader, "churn-train")
    assert list(versions["has_profile"]) == [True, True, False]
    diff = q.dataset_diff(reader, "churn-train", 1, TRAIN_V2[:6])
    assert diff.added == {"tenure": "double"} and diff.row_delta == 1
    assert "tenure" in diff.render()
    with pytest.raises(ProfileError, match=r"version 3 .* has no profile"):
        q.dataset_diff(reader, "churn-train", 2, 3)
    with pytest.raises(NotFoundError, match="dataset churn-train has no version 9: it has "
                                            "versions 1, 2, 3"):
        q.dataset_diff(reader, "churn-train", 1, 9)
    with pytest.raises(NotFoundError, match="datasets: churn-train, raw"):
        q.list_datasets(reader, "churn")


def test_lineage_up_from_the_serving_model(reader: Reader) -> None:
    tree = lin.lineage(reader, "churn@production", "up")
    assert tree.root == lin.Node("model", "churn@v2")
    up = set(tree.upstream())
    assert {lin.Node("run", "run-d"), lin.Node("git", "git:def456"),
            lin.Node("dataset", f"churn-train@{TRAIN_V2[:12]}"),
            lin.Node("dataset", f"raw@{RAW[:12]}")} == up
    text = tree.render()
    assert "upstream" in text and "git:def456" in text and "downstream" not in text
    graph = tree.to_dict()
    assert graph["root"] == "model:churn@v2" and len(graph["edges"]) == 4


def test_lineage_down_from_a_dataset_version(reader: Reader) -> None:
    tree = lin.lineage(reader, "churn-train@2", "down")
    down = set(tree.downstream())
    assert {lin.Node("run", "run-b"), lin.Node("run", "run-d"), lin.Node("model", "churn@v2"),
            lin.Node("alias", "churn@production"), lin.Node("alias", "churn@staging"),
            lin.Node("predictions", "churn@v2/predictions"),
            lin.Node("dataset", f"churn-train@{TRAIN_V3[:12]}")} == down
    assert "served 3 predictions" in tree.render()
    assert lin.lineage(reader, "run-a", "both", depth=1).upstream() == [
        lin.Node("dataset", f"churn-train@{TRAIN_V1[:12]}"), lin.Node("git", "git:abc123")]
    with pytest.raises(NotFoundError, match=r"version 7 of churn does not exist "
                                            r"\(versions: 1, 2\)"):
        lin.lineage(reader, "churn@v7")
    with pytest.raises(NotFoundError, match="models: churn; datasets: churn-train, raw"):
        lin.lineage(reader, "nothing@1")


def test_lineage_of_a_prediction(reader: Reader) -> None:
    tree = lin.lineage_of_prediction(reader, "p-4")
    up = tree.upstream()
    assert up[0] in (lin.Node("model", "churn@v2"), lin.Node("git", "git:srv-9"))
    assert {lin.Node("run", "run-d"), lin.Node("git", "git:def456"),
            lin.Node("dataset", f"churn-train@{TRAIN_V2[:12]}")} <= set(up)
    assert tree.render().splitlines()[0] == "prediction p-4"
    with pytest.raises(NotFoundError, match="no prediction 'nope'"):
        lin.lineage_of_prediction(reader, "nope")


def test_registry_state_as_of_and_history(reader: Reader) -> None:
    now = reg.registry_state(reader, "churn")
    assert now.aliases["production"].version == 2
    assert set(now.versions) == {1, 2}
    then = reg.registry_state(reader, "churn", as_of=at(45).replace(tzinfo=None))  # naive = UTC
    assert {a: i.version for a, i in then.aliases.items()} == {"production": 1, "staging": 2}
    assert then.aliases["production"].reason == "first model"
    assert reg.registry_state(reader, "churn", as_of=at(-1)).versions == {}
    hist = reg.registry_history(reader, "churn")
    assert list(hist["action"]) == ["set", "set", "set", "removed"]
    with pytest.raises(NotFoundError, match="models: churn"):
        reg.registry_history(reader, "fraud")


# -- performance -------------------------------------------------------------------------
def test_filtered_search_over_10000_runs(tmp_path: Path) -> None:
    rng = random.Random(5)
    evs: list[ev.Event] = []
    truth: dict[str, tuple[str, float, float]] = {}
    for i in range(10_000):
        rid = f"r{i:05d}"
        model = rng.choice(["rf", "gb", "lr"])
        evs.append(ev.RunStarted(**_env(i / 60, rid), run_id=rid, experiment=f"e{i % 10}"))
        evs.append(ev.ParamsLogged(**_env(i / 60, rid), run_id=rid, params={"model": model}))
        series = {k: [rng.random() for _ in range(20)] for k in ("f1", "auc", "a", "b", "c")}
        evs.append(ev.MetricsLogged(**_env(i / 60, rid), run_id=rid, metrics=[
            ev.MetricPoint(key=k, value=v, step=s) for k, vs in series.items()
            for s, v in enumerate(vs)]))
        evs.append(ev.RunFinished(**_env(i / 60 + 1, rid), run_id=rid))
        truth[rid] = (model, series["f1"][-1], series["auc"][-1])
    con = duckdb.connect(str(tmp_path / "big.duckdb"))
    create_schema(con)
    for i in range(0, len(evs), 10_000):
        project_batch(con, evs[i:i + 10_000])
    sql, params = select_runs("metrics.f1 > 0.9 and params.model = 'rf' and status = "
                              "'finished'", "metrics.auc DESC", limit=50)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        got = [r[0] for r in con.execute(sql, params).fetchall()]
        best = min(best, time.perf_counter() - start)
    con.close()
    print(f"\nfiltered search over 10,000 runs (1,000,000 metric points): {best * 1000:.1f} ms")
    expected = sorted((rid for rid, (m, f1, _) in truth.items() if m == "rf" and f1 > 0.9),
                      key=lambda rid: (-truth[rid][2], rid))[:50]
    assert got == expected
