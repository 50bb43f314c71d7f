"""The lifecycle commands (`modelog runs|datasets|lineage|registry`) against a filled DuckDB
file in a temporary data directory; no projector runs, so the Reader opens it read-only."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from modelog.cli import app


def _scenario_module() -> ModuleType:
    # --import-mode=importlib: test modules are not importable by name, so load it by path.
    path = Path(__file__).with_name("test_lifecycle_views.py")
    spec = importlib.util.spec_from_file_location("lifecycle_views_scenario", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LV = _scenario_module()
runner = CliRunner()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("lifecycle-cli") / "data"
    LV.fill(d / "modelog.duckdb", LV.EVENTS)
    return d


def run(data_dir: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--data-dir", str(data_dir), *args])
    return result.exit_code, result.output


def test_data_dir_matches_the_settings(data_dir: Path) -> None:
    from modelog.config import Settings

    assert Settings(data_dir=data_dir).duckdb_path == data_dir / "modelog.duckdb"


def test_runs_list_filters_orders_and_formats(data_dir: Path) -> None:
    code, out = run(data_dir, "runs", "list", "--filter", "params.model = 'rf'",
                    "--order-by", "metrics.f1 DESC", "--format", "json")
    assert code == 0, out
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["run_id"] for r in rows] == ["run-d", "run-a", "run-c"]
    assert rows[0]["metrics.f1"] == 0.95 and rows[1]["params.depth"] == "3"
    code, out = run(data_dir, "runs", "list", "--experiment", "churn", "--limit", "2",
                    "-F", "csv")
    assert code == 0 and out.splitlines()[0].startswith("run_id,experiment,name,status")
    assert len(out.splitlines()) == 3
    code, out = run(data_dir, "runs", "list", "--filter", "status = 'failed'")
    assert code == 0 and "run-b" in out and "run-a" not in out


def test_runs_list_bad_filter_says_where(data_dir: Path) -> None:
    code, out = run(data_dir, "runs", "list", "--filter", "metrics.f1 >")
    assert code == 1 and "expected a value after '>'" in out


def test_runs_show_and_compare(data_dir: Path) -> None:
    code, out = run(data_dir, "runs", "show", "run-b")
    assert code == 0, out
    assert "failed" in out and "OOM" in out and "Traceback: boom" in out
    assert "model = gb" in out and "f1 = 0.65  (2 points, last step 1)" in out
    assert f"churn-train@{LV.TRAIN_V2[:12]} (training)" in out
    code, out = run(data_dir, "runs", "show", "run-a", "--format", "json")
    shown = json.loads(out)
    assert shown["children"][0]["run_id"] == "run-c" and shown["params"]["depth"] == "3"
    code, out = run(data_dir, "runs", "compare", "run-a", "run-d", "--only-diff", "-F", "json")
    assert code == 0, out
    rows = {r["key"]: r for r in map(json.loads, out.splitlines())}
    assert rows["params.lr"] == {"key": "params.lr", "run-a": "0.1", "run-d": "0.05",
                                 "differs": True}
    assert "params.model" not in rows  # both rf


def test_unknown_run_names_what_exists(data_dir: Path) -> None:
    code, out = run(data_dir, "runs", "show", "nope")
    assert code == 1 and "no run 'nope': there are 4 runs (newest: run-d" in out


def test_datasets_list_and_diff(data_dir: Path) -> None:
    code, out = run(data_dir, "datasets", "list")
    assert code == 0 and "churn-train" in out and "raw" in out
    code, out = run(data_dir, "datasets", "list", "churn-train", "-F", "json")
    versions = [json.loads(line) for line in out.splitlines()]
    assert [(v["version"], v["digest"]) for v in versions] == [
        (1, LV.TRAIN_V1), (2, LV.TRAIN_V2), (3, LV.TRAIN_V3)]
    code, out = run(data_dir, "datasets", "diff", "churn-train", "1", "v2")
    assert code == 0, out
    assert "rows: 4 -> 5" in out and "added column tenure" in out
    code, out = run(data_dir, "datasets", "diff", "churn-train", "1", "7")
    assert code == 1 and "dataset churn-train has no version 7: it has versions 1, 2, 3" in out
    code, out = run(data_dir, "datasets", "diff", "churn-train", "2", "3")
    assert code == 1 and "has no profile" in out
    code, out = run(data_dir, "datasets", "list", "customers")
    assert code == 1 and "datasets: churn-train, raw" in out


def test_lineage_up_down_and_prediction(data_dir: Path) -> None:
    code, out = run(data_dir, "lineage", "churn@production", "--up")
    assert code == 0, out
    assert out.splitlines()[0] == "model churn@v2"
    assert "run run-d" in out and "git:def456" in out and f"raw@{LV.RAW[:12]}" in out
    assert "downstream" not in out
    code, out = run(data_dir, "lineage", "churn-train@2", "--down")
    assert code == 0 and "model churn@v2" in out and "alias churn@production" in out
    assert "served 3 predictions" in out and "upstream" not in out
    code, out = run(data_dir, "lineage", "p-0", "--prediction", "-F", "json")
    graph = json.loads(out)
    assert graph["root"] == "prediction:p-0"
    assert {"model:churn@v1", "run:run-a", "git:git:abc123"} <= {n["id"] for n in graph["nodes"]}
    code, out = run(data_dir, "lineage", "churn@canary")
    assert code == 1 and "aliases production" in out
    code, out = run(data_dir, "lineage", "x", "--up", "--down")
    assert code == 1 and "not both" in out


def test_registry_show_now_and_as_of(data_dir: Path) -> None:
    code, out = run(data_dir, "registry", "show", "churn")
    assert code == 0, out
    assert "versions v1, v2" in out
    assert "production -> v2 since 2026-03-01 09:50:00+00:00 by bob: better f1 (was v1)" in out
    assert "staging" in out and "removed" in out  # in the history table
    code, out = run(data_dir, "registry", "show", "churn", "--as-of", "2026-03-01 09:45")
    assert code == 0, out
    assert "production -> v1 since 2026-03-01 09:30:00+00:00 by ana: first model" in out
    assert "staging -> v2" in out and "better f1" not in out
    code, out = run(data_dir, "registry", "show", "churn", "--as-of", "March 3rd")
    assert code == 1 and "not an ISO date or time" in out
    code, out = run(data_dir, "registry", "show", "fraud")
    assert code == 1 and "no model 'fraud' in the registry; models: churn" in out


def test_no_data_yet_is_a_clear_error(tmp_path: Path) -> None:
    code, out = run(tmp_path / "empty", "runs", "list")
    assert code == 1 and "no data yet" in out
