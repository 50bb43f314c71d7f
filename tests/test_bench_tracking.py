"""The tracking benchmark (modelog vs MLflow): modelog's side at a small scale, the report.

MLflow is never installed here: the broker test points the benchmark at a
virtualenv that cannot be created, so it must report MLflow as skipped.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from modelog.config import Settings
from modelog.streams.bench import tracking as bt
from modelog.streams.errors import MlflowUnavailableError
from modelog.streams.topics import ensure_topics

METRICS = 2_000
RUNS = 200


def _python_matches(runs: int) -> list[str]:
    """The filter ``metrics.f1 > 0.8 and params.model = 'rf'`` evaluated in plain Python."""
    logged = [bt.run_spec(i) for i in range(runs)]
    return sorted(r.name for r in logged if r.model == "rf" and r.f1 > 0.8)


def test_run_specs_are_deterministic_and_varied() -> None:
    specs = [bt.run_spec(i) for i in range(3_000)]
    assert specs == [bt.run_spec(i) for i in range(3_000)]
    assert len({s.name for s in specs}) == 3_000
    assert {s.model for s in specs} == {"rf", "gbm", "lr"}
    assert all(0.0 <= s.f1 < 1.0 and 2 <= s.depth <= 9 for s in specs)
    share = len(bt.expected_matches(3_000)) / 3_000
    assert 0.05 < share < 0.09  # ~1/3 rf x ~1/5 with f1 > 0.8
    assert bt.expected_matches(3_000) == _python_matches(3_000)


def test_mlflow_side_script_builds_the_same_runs() -> None:
    """The standalone script (no modelog imports) must log exactly :func:`run_spec`'s runs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mlflow_side", bt.MLFLOW_SIDE_SCRIPT)
    assert spec is not None and spec.loader is not None
    side = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(side)
    assert [tuple(bt.run_spec(i)) for i in range(1_000)] == [side.run_spec(i)
                                                             for i in range(1_000)]
    tree = ast.parse(bt.MLFLOW_SIDE_SCRIPT.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert "modelog" not in imported and "mlflow" in imported


def test_missing_mlflow_is_a_clear_error(tmp_path: Path) -> None:
    # This environment has no MLflow: the script fails and says so.
    with pytest.raises(MlflowUnavailableError, match="exited with 1"):
        bt.run_mlflow_side(Path(sys.executable), tmp_path, metrics=10, runs=3, timeout=60)
    with pytest.raises(MlflowUnavailableError, match="venv"):
        bt.ensure_mlflow_venv(Path("/dev/null/mlflow-venv"))


def _figures(**over: Any) -> dict[str, Any]:
    ours = {"metrics": 100_000, "runs": 10_000, "log_metric_per_s": 200_000.0,
            "log_metric_accept_per_s": 400_000.0, "e2e_metrics_per_s": 50_000.0,
            "runs_per_s": 5_000.0, "search_s": 0.02, "search_reader_s": 0.03,
            "search_matches": 667, "search_expected": 667, "search_correct": True}
    ours.update(over)
    return ours


def test_ratios_targets_and_report_with_mlflow() -> None:
    ours = _figures()
    theirs = {"mlflow_version": "3.17.2", "log_metric_per_s": 130.0, "log_metric_calls": 2_000,
              "log_batch_per_s": 5_000.0, "runs_per_s": 50.0, "search_s": 1.0,
              "search_matches": 667, "search_expected": 667, "search_correct": True,
              "db_in_memory": True}
    result = {"modelog": ours, "mlflow": theirs, "mlflow_skipped": None,
              **bt._compare(ours, theirs)}
    assert result["ratios"]["acked_vs_log_batch"] == pytest.approx(40.0)
    assert result["ratios"]["search_speedup"] == pytest.approx(50.0)
    assert result["targets"]["ratio"]["met"] is True
    assert result["targets"]["search_s"]["met"] is True
    report = bt.format_report(result)
    assert "MLflow 3.17.2 on SQLite (file on tmpfs)" in report
    assert "ratio >= 20x MLflow's batched rate ..... 40.0x  PASS" in report
    assert "search over 10,000 runs < 50 ms ....... 20.0 ms  PASS" in report
    assert "extrapolated from 2,000 calls" in report
    assert "measured over" not in report

    slow = _figures(log_metric_per_s=50_000.0, search_s=0.08)
    failed = bt._compare(slow, theirs)
    assert failed["targets"]["ratio"]["met"] is False
    assert failed["targets"]["search_s"]["met"] is False
    wrong = bt._compare(_figures(search_correct=False), theirs)
    assert wrong["targets"]["search_s"]["met"] is False  # fast but wrong is no pass


@pytest.mark.broker
def test_modelog_side_small_scale(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    db_dir = tmp_path / "bench-db"
    result = bt.bench_tracking(
        settings, metrics=METRICS, runs=RUNS, mlflow=True, db_dir=db_dir, repeats=3,
        mlflow_venv=Path("/dev/null/mlflow-venv"),  # cannot be created: MLflow is skipped
    )
    ours = result["modelog"]
    for key in ("log_metric_per_s", "log_metric_accept_per_s", "e2e_metrics_per_s",
                "runs_per_s", "search_s", "search_reader_s"):
        assert ours[key] > 0, key
    assert ours["e2e_metrics_per_s"] < ours["log_metric_per_s"]  # projection adds time
    assert len(ours["search_times_s"]) == 3

    expected = _python_matches(RUNS)
    assert expected  # the filter selects something at this scale
    assert ours["search_matches"] == ours["search_expected"] == len(expected)
    assert ours["search_correct"] is True

    assert result["mlflow"] is None
    assert "venv" in result["mlflow_skipped"]
    assert result["ratios"] == {}
    assert result["targets"]["ratio"]["met"] is None
    report = bt.format_report(result)
    assert "MLflow skipped:" in report and "n/a" in report
    assert f"measured over {RUNS} runs" in report

    # The projection the benchmark searched holds exactly what was logged.
    con = duckdb.connect(str(db_dir / "modelog.duckdb"), read_only=True)
    try:
        logged = con.execute(
            "SELECT count(*) FROM run_metrics m JOIN runs r USING (run_id) "
            "WHERE r.experiment = 'bench-metrics'").fetchall()[0][0]
        found = con.execute(
            "SELECT r.name FROM runs r "
            "JOIN run_params p ON p.run_id = r.run_id AND p.key = 'model' "
            "JOIN run_metrics m ON m.run_id = r.run_id AND m.key = 'f1' "
            "WHERE p.value = 'rf' AND m.value > 0.8 ORDER BY r.name").fetchall()
    finally:
        con.close()
    assert logged == METRICS
    assert [name for (name,) in found] == expected
