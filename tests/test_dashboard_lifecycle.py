"""Lifecycle pages of the dashboard (runs, datasets, registry, lineage) and their queries.

A real DuckDB file is filled the way the projector fills it: lifecycle events
(built with the event catalogue, encoded with the codec) go into the ``events``
ledger and :func:`rebuild_projections` derives everything else. Objects that
``create_schema`` does not provide yet (``run_latest_metrics``, ``run_datasets``,
``run_artifacts``, ``lineage_edges``, ``datasets.profile``) are added to the
test file only when missing, so the tests work before and after they land.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from modelog.config import Settings
from modelog.dashboard import lifecycle_charts as charts
from modelog.dashboard import lifecycle_data as ld
from modelog.dashboard.data import ConnectionSource
from modelog.dashboard.errors import DashboardQueryError
from modelog.dashboard.text import plain
from modelog.models import events as ev
from modelog.models.codec import encode
from modelog.models.profile import profile_table
from modelog.models.registry_fold import answered
from modelog.store.errors import FilterSyntaxError
from modelog.store.reader import Reader
from modelog.store.schema import create_schema, rebuild_projections
from modelog.store.views import VIEWS

BASE = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC)
RUN = {name: f"019a0000-0000-7000-8000-0000000000{i:02d}" for i, name in
       enumerate(["rf-baseline", "rf-deep", "gbm-crash", "fold-1", "ridge"], start=1)}
DIGEST_V1 = "a1" * 32
DIGEST_V2 = "b2" * 32
ROLLBACK_REASON = "rollback: v3 drifted in production"
# Strings from events reach markdown: an image fetched from anywhere, a link, a colour
# directive, a code span broken out of. The pages show them verbatim.
HOSTILE_REASON = "candidate ![t](http://evil.test/p.png) [click](http://evil.test) :red[x]"
HOSTILE_ACTOR = "ci` **bold**"
T_PROMOTE_2 = BASE + dt.timedelta(days=1)
T_PROMOTE_3 = BASE + dt.timedelta(days=2)
T_ROLLBACK = BASE + dt.timedelta(days=3)

_seq = iter(range(1, 10_000))


def _env(minutes: float) -> dict[str, Any]:
    n = next(_seq)
    return {"id": f"019a0000-0000-7000-9000-{n:012d}",
            "time": BASE + dt.timedelta(minutes=minutes), "producer": "pytest"}


def _run_events() -> list[ev.Event]:
    out: list[ev.Event] = []

    def start(name: str, exp: str, minutes: float, *, commit: str = "abc1234def",
              dirty: bool = False, parent: str | None = None) -> None:
        out.append(ev.RunStarted(**_env(minutes), aggregate=RUN[name], run_id=RUN[name],
                                 experiment=exp, name=name, parent_run_id=parent,
                                 tags={"team": "growth"},
                                 code=ev.CodeVersion(commit=commit, branch="main",
                                                     dirty=dirty)))

    def params(name: str, minutes: float, **values: Any) -> None:
        out.append(ev.ParamsLogged(**_env(minutes), aggregate=RUN[name], run_id=RUN[name],
                                   params=values))

    def curve(name: str, minutes: float, key: str, values: list[float]) -> None:
        out.append(ev.MetricsLogged(**_env(minutes), aggregate=RUN[name], run_id=RUN[name],
                                    metrics=[ev.MetricPoint(key=key, value=v, step=s)
                                             for s, v in enumerate(values)]))

    def finish(name: str, minutes: float) -> None:
        out.append(ev.RunFinished(**_env(minutes), aggregate=RUN[name], run_id=RUN[name]))

    def used(name: str, minutes: float, digest: str) -> None:
        out.append(ev.RunDatasetUsed(**_env(minutes), aggregate=RUN[name], run_id=RUN[name],
                                     dataset="customers", digest=digest))

    start("rf-baseline", "churn-training", 0)
    params("rf-baseline", 1, model="rf", max_depth=5, lr=0.1)
    used("rf-baseline", 1, DIGEST_V1)
    curve("rf-baseline", 2, "accuracy", [0.70, 0.75, 0.78, 0.80, 0.81])
    curve("rf-baseline", 2, "loss", [0.9, 0.6, 0.5, 0.45, 0.44])
    out.append(ev.ArtifactLogged(**_env(3), aggregate=RUN["rf-baseline"],
                                 run_id=RUN["rf-baseline"], path="model/model.pkl",
                                 uri="file:///artifacts/rf-baseline/model.pkl",
                                 digest="c3" * 32, size=2048))
    finish("rf-baseline", 4)
    start("rf-deep", "churn-training", 10, dirty=True)
    params("rf-deep", 11, model="rf", max_depth=12, lr=0.1)
    used("rf-deep", 11, DIGEST_V2)
    curve("rf-deep", 12, "accuracy", [0.72, 0.80, 0.84, 0.86])
    finish("rf-deep", 14)
    start("fold-1", "churn-training", 12, parent=RUN["rf-deep"])
    curve("fold-1", 13, "accuracy", [0.85])
    finish("fold-1", 13.5)
    start("gbm-crash", "churn-training", 20)
    params("gbm-crash", 21, model="gbm", n_estimators=500)
    out.append(ev.RunFailed(**_env(22), aggregate=RUN["gbm-crash"], run_id=RUN["gbm-crash"],
                            error="MemoryError: out of memory at tree 412"))
    start("ridge", "price-tuning", 30, commit="fff0001")
    params("ridge", 31, alpha=0.5)
    curve("ridge", 32, "rmse", [3.0, 2.1, 1.7])
    finish("ridge", 33)
    return out


def _dataset_events() -> list[ev.Event]:
    v1 = pa.table({"age": [20.0 + i % 30 for i in range(200)],
                   "plan": [["basic", "pro"][i % 2] for i in range(200)]})
    v2 = pa.table({"age": [55.0 + i % 30 for i in range(250)],
                   "plan": [["basic", "pro"][i % 2] for i in range(250)]})
    cols = [ev.ColumnSchema(name="age", type="double"), ev.ColumnSchema(name="plan",
                                                                         type="string")]
    return [
        ev.DatasetVersionCreated(**_env(-60), aggregate="customers", name="customers",
                                 digest=DIGEST_V1, columns=cols, num_rows=200,
                                 uri="file:///data/customers/v1.parquet",
                                 profile=profile_table(v1), description="january export"),
        ev.DatasetVersionCreated(**_env(-30), aggregate="customers", name="customers",
                                 digest=DIGEST_V2, columns=cols, num_rows=250,
                                 uri="file:///data/customers/v2.parquet",
                                 parents=[f"customers@{DIGEST_V1}"],
                                 profile=profile_table(v2), description="february export"),
    ]


def _registry_events() -> list[ev.Event]:
    """Registry commands and the registry worker's answers to them (only those count)."""
    commands: list[tuple[ev.ModelVersionRequested | ev.AliasChangeRequested, dt.datetime]] = []
    for version, run in ((1, "rf-baseline"), (2, "rf-deep"), (3, "fold-1")):
        env = _env(40 + version)
        commands.append((ev.ModelVersionRequested(
            **env, aggregate="churn", command_id=env["id"], model="churn", run_id=RUN[run],
            flavor="sklearn", artifact_uri=f"file:///models/churn/{version}",
            artifact_digest=f"{version}e" * 32,
            signature=[ev.ColumnSchema(name="age", type="double")]), env["time"]))

    def alias(at: dt.datetime, alias: str, version: int | None, actor: str,
              reason: str) -> None:
        env = _env(0) | {"time": at - dt.timedelta(seconds=1)}
        commands.append((ev.AliasChangeRequested(
            **env, aggregate="churn", command_id=env["id"], model="churn", alias=alias,
            model_version=version, actor=actor, reason=reason), at))

    alias(T_PROMOTE_2, "production", 2, "ci", "beats v1 on the holdout")
    alias(T_PROMOTE_2 + dt.timedelta(hours=1), "staging", 3, HOSTILE_ACTOR, HOSTILE_REASON)
    alias(T_PROMOTE_3, "production", 3, "ana", "retrained on customers v2")
    alias(T_ROLLBACK, "production", 2, "bob", ROLLBACK_REASON)
    alias(T_ROLLBACK + dt.timedelta(minutes=5), "staging", None, "bob", "v3 withdrawn")
    return answered(commands)


# Objects ``create_schema`` may not provide yet; each is created only when missing.
_FALLBACKS: dict[str, str] = {
    "run_latest_metrics": """
SELECT run_id, key, value, step, time FROM run_metrics
QUALIFY row_number() OVER (PARTITION BY run_id, key ORDER BY step DESC, time DESC,
                           event_id DESC) = 1""",
    "run_datasets": """
SELECT payload->>'$.run_id' AS run_id, payload->>'$.dataset' AS dataset,
       payload->>'$.digest' AS digest, payload->>'$.context' AS context, time
FROM events WHERE type = 'RunDatasetUsed'""",
    "run_artifacts": """
SELECT payload->>'$.run_id' AS run_id, payload->>'$.path' AS path, payload->>'$.uri' AS uri,
       payload->>'$.digest' AS digest, CAST(payload->>'$.size' AS BIGINT) AS size, time
FROM events WHERE type = 'ArtifactLogged'""",
    "lineage_edges": """
SELECT 'dataset' AS src_kind, 'dataset:' || (payload->>'$.dataset') || '@'
           || left(payload->>'$.digest', 12) AS src_id,
       'run' AS dst_kind, 'run:' || (payload->>'$.run_id') AS dst_id, 'used' AS relation, time
FROM events WHERE type = 'RunDatasetUsed'
UNION ALL
SELECT 'git', 'git:' || (payload->>'$.code.commit'), 'run', 'run:' || (payload->>'$.run_id'),
       'code', time
FROM events WHERE type = 'RunStarted' AND payload->>'$.code.commit' IS NOT NULL
UNION ALL
SELECT 'run', 'run:' || (payload->>'$.run_id'), 'model',
       'model:' || (payload->>'$.model') || '@v' || (payload->>'$.model_version'),
       'produced', time
FROM events WHERE type = 'ModelVersionRegistered' AND payload->>'$.run_id' IS NOT NULL
UNION ALL
SELECT 'model', 'model:' || model || '@v' || model_version, 'alias',
       'alias:' || model || '@' || alias, 'points_to', since
FROM aliases""",
}


def _objects(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    return {str(r[0]) for r in rows}


def fill_lifecycle(path: Path) -> None:
    """Create ``path`` with the projection schema and the lifecycle scenario."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        create_schema(con)
        rows = [(e.id, type(e).__name__, e.schema_version, e.time, e.aggregate, e.producer,
                 f"pytest.{e.stream}", 0, i, encode(e).decode())
                for i, e in enumerate([*_dataset_events(), *_run_events(),
                                       *_registry_events()])]
        con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now(), ?)", rows)
        rebuild_projections(con)
        present = _objects(con)
        for name, body in _FALLBACKS.items():
            if name not in present:
                con.execute(f"CREATE VIEW {name} AS {body}")
        columns = {str(r[0]) for r in con.execute("DESCRIBE datasets").fetchall()}
        if "profile" not in columns:  # the view of schema v2 lacks it
            con.execute(f"""CREATE OR REPLACE VIEW datasets AS
                SELECT d.*, json_extract(e.payload, '$.profile') AS profile
                FROM ({VIEWS['datasets']}) d JOIN events e ON e.id = d.event_id""")
    finally:
        con.close()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("lifecycle") / "data")
    fill_lifecycle(settings.duckdb_path)
    return settings


@pytest.fixture(scope="module")
def source(scenario: Settings) -> Reader:
    return Reader(scenario)


# -- runs -----------------------------------------------------------------------------------
def test_experiments_count_runs_and_failures(source: Reader) -> None:
    exps = ld.experiments(source).set_index("experiment")
    assert exps.loc["churn-training", "runs"] == 4
    assert exps.loc["churn-training", "failed"] == 1
    assert exps.loc["price-tuning", "runs"] == 1


def test_runs_filter_order_and_experiment(source: Reader) -> None:
    every = ld.runs(source)
    assert set(every["name"]) == set(RUN)
    assert every["name"].iloc[0] == "ridge"  # newest first
    churn = ld.runs(source, experiment="churn-training")
    assert set(churn["name"]) == {"rf-baseline", "rf-deep", "gbm-crash", "fold-1"}
    good = ld.runs(source, "metrics.accuracy > 0.8", "metrics.accuracy DESC")
    assert list(good["name"]) == ["rf-deep", "fold-1", "rf-baseline"]
    assert list(ld.runs(source, "status = 'failed'")["error"]) == [
        "MemoryError: out of memory at tree 412"]
    assert ld.runs(source, "params.model = 'rf'", experiment="price-tuning").empty
    assert len(ld.runs(source, limit=2)) == 2


def test_runs_reports_filter_syntax_with_column(source: Reader) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        ld.runs(source, "metrics.accuracy > AND status = 'failed'")
    assert info.value.column == 20 and "^" in str(info.value)


def test_params_metrics_and_history(source: Reader) -> None:
    base, deep = RUN["rf-baseline"], RUN["rf-deep"]
    params = ld.run_params(source, [base])
    assert dict(zip(params["key"], params["value"], strict=True)) == {
        "lr": "0.1", "max_depth": "5", "model": "rf"}
    latest = ld.run_latest_metrics(source, [base, deep])
    assert latest.set_index(["run_id", "key"]).loc[(deep, "accuracy"), "value"] == 0.86
    history = ld.metric_history(source, [base])
    acc = history[history["key"] == "accuracy"]
    assert acc["step"].tolist() == [0, 1, 2, 3, 4] and acc["value"].iloc[-1] == 0.81
    assert set(history["run"]) == {"rf-baseline"}
    assert ld.run_datasets(source, base)["digest"].tolist() == [DIGEST_V1]
    assert ld.run_artifacts(source, base)["path"].tolist() == ["model/model.pkl"]


def test_compare_params_marks_differences(source: Reader) -> None:
    ids = [RUN["rf-baseline"], RUN["rf-deep"], RUN["gbm-crash"]]
    table = ld.compare_params(ld.run_params(source, ids), ids).set_index("key")
    assert table.loc["max_depth", RUN["rf-deep"]] == "12"
    assert table.loc["n_estimators", RUN["rf-baseline"]] is None
    assert table["differs"].to_dict() == {"lr": True, "max_depth": True, "model": True,
                                          "n_estimators": True}
    same = ld.compare_params(ld.run_params(source, ids[:2]), ids[:2]).set_index("key")
    assert same["differs"].to_dict() == {"lr": False, "max_depth": True, "model": False}


@pytest.mark.parametrize("call", [
    lambda s: ld.run_params(s, []),
    lambda s: ld.runs(s, limit=0),
    lambda s: ld.lineage_around(s, "run:x", depth=11),
])
def test_bad_arguments_are_refused(source: Reader, call: Any) -> None:
    with pytest.raises(DashboardQueryError, match="must"):
        call(source)


# -- datasets, registry, lineage --------------------------------------------------------------
def test_dataset_versions_with_profiles(source: Reader) -> None:
    names = ld.dataset_names(source)
    assert names.to_dict("records")[0] | {"last_time": None} == {
        "name": "customers", "versions": 2, "rows": 250, "last_time": None}
    versions = ld.dataset_versions(source, "customers")
    assert versions["version"].tolist() == [2, 1]
    assert list(versions["parents"].iloc[0]) == [f"customers@{DIGEST_V1}"]
    profile = ld.parse_json(versions["profile"].iloc[1])
    assert profile["columns"]["age"]["min"] == 20.0
    assert [c["name"] for c in ld.parse_json(versions["columns"].iloc[0])] == ["age", "plan"]


def test_registry_versions_history_and_as_of(source: Reader) -> None:
    versions = ld.model_versions(source, "churn")
    assert versions["model_version"].tolist() == [3, 2, 1]
    assert versions["run"].tolist() == ["fold-1", "rf-deep", "rf-baseline"]
    history = ld.alias_history(source, "churn")
    assert history["action"].tolist() == ["set", "set", "set", "set", "removed"]
    now = ld.aliases_as_of(source, "churn")
    assert now[["alias", "model_version", "reason"]].values.tolist() == [
        ["production", 2, ROLLBACK_REASON]]
    before = ld.aliases_as_of(source, "churn", T_ROLLBACK - dt.timedelta(hours=1))
    assert before[["alias", "model_version", "actor"]].values.tolist() == [
        ["production", 3, "ana"], ["staging", 3, HOSTILE_ACTOR]]
    assert ld.aliases_as_of(source, "churn", BASE).empty
    periods = ld.alias_periods(history, T_ROLLBACK + dt.timedelta(days=1))
    prod = periods[periods["alias"] == "production"]
    assert prod["model_version"].tolist() == [2, 3, 2]
    assert prod["current"].tolist() == [False, False, True]
    assert periods[periods["alias"] == "staging"]["end"].iloc[0] == pd.Timestamp(
        T_ROLLBACK + dt.timedelta(minutes=5))
    spec = charts.alias_timeline(periods, T_PROMOTE_3).to_dict()
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["bar", "text", "rule"]


def _model_node(options: list[str], model: str, version: int) -> str:
    found = [o for o in options if o.startswith("model:") and re.search(
        rf"{model}\W+v?{version}$", o)]
    assert len(found) == 1, options
    return found[0]


def _raw_edges(settings: Settings) -> pd.DataFrame:
    edges: pd.DataFrame = Reader(settings).query_df("SELECT * FROM lineage_edges")
    return edges


def test_lineage_nodes_and_neighbourhood(source: Reader, scenario: Settings) -> None:
    nodes = ld.lineage_nodes(source)
    assert set(nodes["kind"]) >= {"model", "run", "dataset"}
    assert nodes["kind"].iloc[0] == "model"
    node = _model_node(nodes["node"].tolist(), "churn", 2)
    one = ld.lineage_around(source, node, depth=1)
    assert (one["hops"] == 1).all() and len(one) >= 1
    assert any(RUN["rf-deep"] in s for s in one["src"])
    deeper = ld.lineage_around(source, node, depth=3)
    assert len(deeper) > len(one)
    assert any("customers" in s for s in deeper["src"])  # dataset -> run -> model
    assert set(deeper["direction"]) <= {"upstream", "downstream"}
    raw = _raw_edges(scenario)
    assert set(one["relation"]) <= set(raw["relation"])
    dot = charts.lineage_dot(deeper, node)
    assert dot.startswith("digraph") and "penwidth=3" in dot


# -- pages ----------------------------------------------------------------------------------
def _page(name: str) -> None:
    from modelog.dashboard import pages

    getattr(pages, name)()


def _run_page(name: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MODELOG_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MODELOG_QUERY_URL", raising=False)
    at = AppTest.from_function(_page, args=(name,), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


_FRAME_COLUMNS = {  # a column that tells each table of the pages apart
    "compare_params": "differs", "compare_metrics": "key", "dataset_versions": "num_rows",
    "dataset_shifts": "psi", "model_versions": "flavor", "lineage_edges": "relation",
}


def fetch_frame(at: Any, table: str) -> pd.DataFrame:
    """The last dataframe of the page with the column identifying ``table``."""
    found = [d.value for d in at.dataframe if _FRAME_COLUMNS[table] in d.value.columns]
    assert found, f"no {table} table on the page"
    return found[-1]


def _text(at: Any) -> str:
    parts = [str(e.value) for kind in ("markdown", "caption", "success", "info", "warning",
                                       "error") for e in getattr(at, kind)]
    return "\n".join(parts)


def test_runs_page_lists_inspects_and_compares(scenario: Settings,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run_page("runs_page", scenario.data_dir, monkeypatch)
    assert at.title[0].value == "Runs" and not at.error
    assert set(at.dataframe[0].value["name"]) == set(RUN)
    assert at.selectbox(key="experiment").options == [
        "all experiments", "price-tuning", "churn-training"]  # most recently active first
    at.selectbox(key="experiment").select("price-tuning").run()
    assert at.dataframe[0].value["name"].tolist() == ["ridge"]
    at.selectbox(key="experiment").select("all experiments").run()
    at.text_input(key="run_filter").input("metrics.accuracy >").run()
    assert "column 19" in at.error[0].value and "^" in at.error[0].value
    assert "The filter could not be parsed" in at.error[0].value
    at.text_input(key="run_filter").input("").run()
    at.text_input(key="run_order").input("metrics.accuracy DESC, nonsense").run()
    assert "The order-by could not be parsed" in at.error[0].value
    at.text_input(key="run_order").input("metrics.accuracy DESC, name").run()
    assert at.dataframe[0].value["name"].tolist()[:3] == ["rf-deep", "fold-1", "rf-baseline"]
    at.text_input(key="run_filter").input("status = 'failed'").run()
    assert at.dataframe[0].value["name"].tolist() == ["gbm-crash"]
    at.multiselect(key="selected_runs").select(RUN["gbm-crash"]).run()
    assert "MemoryError: out of memory at tree 412" in _text(at)
    at.text_input(key="run_filter").input("").run()
    at.multiselect(key="selected_runs").unselect(RUN["gbm-crash"]).select(RUN["rf-deep"]).run()
    assert not at.exception
    page = _text(at)
    assert "abc1234def" in page and "dirty working tree" in page
    metrics = at.dataframe[2].value
    assert dict(zip(metrics["key"], metrics["value"], strict=True)) == {"accuracy": 0.86}
    assert at.get("vega_lite_chart")
    at.multiselect(key="selected_runs").select(RUN["rf-baseline"]).run()
    assert "Comparing 2 runs" in [s.value for s in at.subheader]
    compare = fetch_frame(at, "compare_params").set_index("key")
    assert compare.loc["max_depth"].tolist()[:2] == ["12", "5"]
    assert compare["differs"].to_dict() == {"lr": False, "max_depth": True, "model": False}
    latest = fetch_frame(at, "compare_metrics").set_index("key")
    assert latest.loc["accuracy"].tolist() == [0.86, 0.81]


def test_datasets_page_profile_and_diff(scenario: Settings,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run_page("datasets_page", scenario.data_dir, monkeypatch)
    assert at.title[0].value == "Datasets" and not at.error
    assert fetch_frame(at, "dataset_versions")["num_rows"].tolist() == [250, 200]
    page = _text(at)
    assert "**age**" in page and "min 55" in page and "2 distinct values" in page
    assert len(at.get("vega_lite_chart")) == 2  # age histogram, plan categories
    assert "Drifted: **age**" in [w.value for w in at.warning]
    shifts = fetch_frame(at, "dataset_shifts").set_index("column")
    assert shifts.loc["age", "drifted"] and not shifts.loc["plan", "drifted"]
    assert shifts.loc["age", "psi"] > 1
    assert {m.label: m.value for m in at.metric}["Rows"] == "250"
    at.selectbox(key="dataset_version:customers").select(1).run()
    assert "min 20" in _text(at)


def test_registry_page_aliases_timeline_and_as_of(scenario: Settings,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run_page("registry_page", scenario.data_dir, monkeypatch)
    assert at.title[0].value == "Registry" and not at.error
    assert fetch_frame(at, "model_versions")["model_version"].tolist() == [3, 2, 1]
    assert "`production` → **v2**" in _text(at) and ROLLBACK_REASON in _text(at)
    now = [s.value for s in at.success]
    assert len(now) == 1 and "was **v2**" in now[0] and "replacing v3" in now[0]
    assert at.get("vega_lite_chart")
    before = T_ROLLBACK - dt.timedelta(hours=2)
    at.date_input(key="as_of_date").set_value(before.date())
    at.time_input(key="as_of_time").set_value(before.time()).run()
    then = [s.value for s in at.success]
    assert any("`production` was **v3**" in s and "retrained on customers v2" in s
               for s in then), then
    assert any("`staging` was **v3**" in s for s in then)
    shown = "\n".join(then)  # the staging reason and actor are hostile: shown verbatim
    assert plain(HOSTILE_REASON) in shown and plain(HOSTILE_ACTOR) in shown
    assert "[click](" not in shown and "![t](" not in shown and ":red[x]" not in shown
    assert "**bold**" not in shown


def test_lineage_page_draws_graph_and_edges(scenario: Settings,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run_page("lineage_page", scenario.data_dir, monkeypatch)
    assert at.title[0].value == "Lineage" and not at.error
    node = _model_node(at.selectbox(key="lineage_node").options, "churn", 2)
    at.selectbox(key="lineage_node").select(node).run()
    spec = at.get("graphviz_chart")[0].proto.spec
    raw = _raw_edges(scenario)
    touching = raw[raw["dst_id"].str.endswith(node.split(":", 1)[1])
                   | raw["src_id"].str.endswith(node.split(":", 1)[1])]
    assert not touching.empty
    for relation in touching["relation"]:
        assert f'label="{relation}"' in spec
    edges = fetch_frame(at, "lineage_edges")
    assert set(touching["relation"]) <= set(edges["relation"])
    assert any("customers" in s for s in edges["src"])
    assert 'label="run:rf-deep (019a0000)"' in spec  # run nodes show their name


@pytest.mark.parametrize("page", ["runs_page", "datasets_page", "registry_page",
                                  "lineage_page"])
def test_pages_show_empty_states(page: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    con = duckdb.connect(str(Settings(data_dir=tmp_path).duckdb_path))
    try:
        create_schema(con)
        present = _objects(con)
        for name, body in _FALLBACKS.items():
            if name not in present:
                con.execute(f"CREATE VIEW {name} AS {body}")
    finally:
        con.close()
    at = _run_page(page, tmp_path, monkeypatch)
    assert not at.error, [e.value for e in at.error]
    assert "yet" in at.info[0].value


def test_pages_without_a_file_explain_how_to_start(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run_page("runs_page", tmp_path / "missing", monkeypatch)
    assert "client.start_run(...)" in at.info[0].value and not at.error


def test_connection_source_works_on_the_scenario(scenario: Settings) -> None:
    con = duckdb.connect(str(scenario.duckdb_path), read_only=True)
    try:
        source = ConnectionSource(con)
        assert ld.model_names(source)["model"].tolist() == ["churn"]
    finally:
        con.close()
