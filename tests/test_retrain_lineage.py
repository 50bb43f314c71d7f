"""Lineage of a retrained candidate: version -> run -> retrain request -> drift alert and window.

The events a retrain job produces (see :mod:`modelog.streams.retrain_run`) are written
into a real DuckDB file the way the projector writes them (per batch, shuffled, with the
helpers of ``test_lifecycle_views.py``); no broker, no runner. ``test_dashboard_retrain.py``
loads :func:`retrain_scenario` from this file.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from modelog.cli import app
from modelog.config import Settings
from modelog.models import events as ev
from modelog.models.ids import derived_id, epoch_ms, new_id
from modelog.models.registry_fold import answered
from modelog.models.retrain_job import alias_command_id, registration_command_id
from modelog.store import lineage as lin
from modelog.store.reader import Reader


def _load(name: str) -> ModuleType:
    # --import-mode=importlib: test modules are not importable by name, so load by path.
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"retrain_lineage_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LV = _load("test_lifecycle_views.py")
T0 = dt.datetime(2026, 4, 1, 8, 0, tzinfo=dt.UTC)
TRAIN = "7a" * 32
WINDOW = "8b" * 32
MODEL = "demo"
ALERT, REQUEST, MANUAL, QUEUED, DATA_ALERT = (new_id() for _ in range(5))
RUN_OK, RUN_FAILED = "run-retrain-ok", "run-retrain-failed"
GATE = "candidate accuracy 0.91 beats production 0.72 by 0.19 (margin 0.01) on 120 holdout rows"
FAILED = ("only 12 labelled predictions of demo in the window; the job needs at least 200 "
          "(min_labelled_rows): wait for more labels or widen the window")


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def _env(minutes: float, aggregate: str, producer: str = "pytest") -> dict[str, Any]:
    return {"id": new_id(), "time": at(minutes), "aggregate": aggregate, "producer": producer}


def _job_run(out: list[ev.Event], run_id: str, request: str, trigger: str | None,
             minute: float, reason: str) -> None:
    out.append(ev.RunStarted(**_env(minute, run_id), run_id=run_id,
                             experiment=f"retrain-{MODEL}", name=f"retrain {MODEL}",
                             tags={"retrain_request": request, "trigger_id": trigger or "",
                                   "model": MODEL, "reason": reason}))
    out.append(ev.ParamsLogged(**_env(minute + 0.1, run_id), run_id=run_id, params={
        "request_id": request, "trigger_id": trigger, "trainer": "pkg.train:fit",
        "metric": "auto", "margin": 0.01, "production_version": 1}))
    out.append(ev.RunDatasetUsed(**_env(minute + 0.2, run_id), run_id=run_id, dataset="demo-train",
                                 digest=TRAIN))


def _ended(request: str, minute: float, **fields: Any) -> ev.RetrainJobEnded:
    return ev.RetrainJobEnded(id=derived_id(epoch_ms(at(minute)), "retrain-ended", request),
                              time=at(minute), aggregate=MODEL, producer="modelog-retrainer",
                              model=MODEL, request_id=request, **fields)


def retrain_scenario() -> list[ev.Event]:
    """Production v1 drifts; a request retrains it into candidate v2; a manual request
    fails; a third request waits in the queue (times in minutes after T0)."""
    cols = [ev.ColumnSchema(name="usage", type="double")]
    out: list[ev.Event] = [
        ev.DatasetVersionCreated(**_env(0, "demo-train"), name="demo-train", digest=TRAIN,
                                 columns=cols, num_rows=1000, uri="file:///train"),
        ev.RunStarted(**_env(1, "run-prod"), run_id="run-prod", experiment="demo",
                      name="first", code=ev.CodeVersion(commit="abc123")),
        ev.RunDatasetUsed(**_env(1.5, "run-prod"), run_id="run-prod", dataset="demo-train",
                          digest=TRAIN),
        ev.RunFinished(**_env(2, "run-prod"), run_id="run-prod"),
        # the drift alert and the request it caused
        ev.DriftDetected(**_env(60, MODEL, "modelog-worker") | {"id": ALERT}, model=MODEL,
                         model_version=1, kind="concept", detector="adwin", statistic=0.4,
                         threshold=0.1, message="error rate rose"),
        ev.RetrainRequested(**_env(61, MODEL, "modelog-worker") | {"id": REQUEST}, model=MODEL,
                            model_version=1, reason="concept drift on demo v1",
                            trigger_id=ALERT, window=ev.Window(start=at(30), end=at(60)),
                            policy={"trigger": "concept"}),
    ]
    # the job: a run, the window recorded as a dataset version, holdout metrics
    _job_run(out, RUN_OK, REQUEST, ALERT, 62, "concept drift on demo v1")
    out += [
        ev.DatasetVersionCreated(**_env(63, "demo-train"), name="demo-train", digest=WINDOW,
                                 columns=cols, num_rows=600, uri="file:///window",
                                 parents=[f"demo-train@{TRAIN[:12]}"],
                                 description=f"retrain window of demo for request {REQUEST}"),
        ev.RunDatasetUsed(**_env(63.5, RUN_OK), run_id=RUN_OK, dataset="demo-train",
                          digest=WINDOW),
        ev.MetricsLogged(**_env(65, RUN_OK), run_id=RUN_OK, metrics=[
            ev.MetricPoint(key=k, value=v) for k, v in {
                "labelled_rows": 600.0, "train_rows": 480.0, "holdout_rows": 120.0,
                "holdout_accuracy_candidate": 0.91, "holdout_accuracy_production": 0.72,
                "gate_passed": 1.0}.items()]),
        ev.RunFinished(**_env(66, RUN_OK), run_id=RUN_OK),
    ]
    register = [
        (ev.ModelVersionRequested(**_env(2.5, MODEL), command_id="cmd-v1", model=MODEL,
                                  run_id="run-prod", flavor="sklearn",
                                  artifact_uri="file:///v1.pkl", artifact_digest="e5" * 32),
         at(2.6)),
        (ev.AliasChangeRequested(**_env(3, MODEL), command_id="alias-prod", model=MODEL,
                                 alias="production", model_version=1, actor="ana",
                                 reason="first model"), at(3.1)),
        (ev.ModelVersionRequested(**_env(65.5, MODEL, "modelog-retrainer"),
                                  command_id=registration_command_id(REQUEST), model=MODEL,
                                  run_id=RUN_OK, flavor="sklearn",
                                  artifact_uri="file:///v2.pkl", artifact_digest="f6" * 32,
                                  description=f"retrain candidate for request {REQUEST}, "
                                              f"caused by alert {ALERT}: concept drift"),
         at(65.6)),
        (ev.AliasChangeRequested(**_env(65.8, MODEL, "modelog-retrainer"),
                                 command_id=alias_command_id(REQUEST), model=MODEL,
                                 alias="candidate", model_version=2, actor="retrainer",
                                 reason=f"retrain request {REQUEST}: {GATE}"), at(65.9)),
    ]
    out += answered(register)
    out.append(_ended(REQUEST, 66.5, status="candidate", reason=GATE, run_id=RUN_OK,
                      model_version=2, production_version=1, metric="accuracy",
                      candidate_value=0.91, production_value=0.72, holdout_rows=120,
                      dataset=f"demo-train@{WINDOW[:12]}"))
    # a manual request whose job fails; a data-drift request still queued
    out.append(ev.RetrainRequested(**_env(70, MODEL, "pytest") | {"id": MANUAL}, model=MODEL,
                                   reason="by hand", policy={"trigger": "manual",
                                                             "actor": "ana"}))
    _job_run(out, RUN_FAILED, MANUAL, None, 71, "by hand")
    out.append(ev.RunFailed(**_env(73.5, RUN_FAILED), run_id=RUN_FAILED, error=FAILED,
                            traceback="Traceback: RetrainJobError"))
    out.append(_ended(MANUAL, 74, status="failed", reason=FAILED, run_id=RUN_FAILED,
                      production_version=1))
    out.append(ev.DriftDetected(**_env(80, MODEL, "modelog-worker") | {"id": DATA_ALERT},
                                model=MODEL, model_version=1, kind="data", feature="usage",
                                detector="psi", statistic=0.5, threshold=0.2))
    out.append(ev.RetrainRequested(**_env(81, MODEL, "modelog-worker") | {"id": QUEUED},
                                   model=MODEL, model_version=1, reason="data drift on usage",
                                   trigger_id=DATA_ALERT, window=ev.Window(start=at(50))))
    return out


EVENTS = retrain_scenario()


def fill(path: Path) -> None:
    """The retrain scenario in the DuckDB file at ``path``, projected in shuffled batches."""
    LV.fill(path, EVENTS, batch=5, seed=7)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("retrain-lineage") / "data")
    fill(settings.duckdb_path)
    return settings


@pytest.fixture(scope="module")
def reader(data: Settings) -> Reader:
    return Reader(data)


def test_retrain_edges(reader: Reader) -> None:
    edges = set(LV.rows(reader, "SELECT src_kind, src_id, dst_kind, dst_id, relation "
                                "FROM lineage_edges WHERE src_kind IN ('alert', 'retrain')"))
    window, train = f"demo-train@{WINDOW[:12]}", f"demo-train@{TRAIN[:12]}"
    assert edges == {
        ("alert", ALERT, "retrain", REQUEST, "triggered: DriftDetected concept"),
        ("retrain", REQUEST, "run", RUN_OK,
         "requested: concept drift on demo v1 (window 2026-04-01 08:30 -> 2026-04-01 09:00)"),
        ("retrain", REQUEST, "dataset", window, "window"),
        ("retrain", MANUAL, "run", RUN_FAILED, "requested: by hand (window start -> now)"),
        ("alert", DATA_ALERT, "retrain", QUEUED, "triggered: DriftDetected data on usage"),
    }
    assert ("dataset", train, "dataset", window, "derived") in set(LV.rows(
        reader, "SELECT src_kind, src_id, dst_kind, dst_id, relation FROM lineage_edges"))


def test_lineage_up_walks_from_the_candidate_to_the_alert_and_window(reader: Reader) -> None:
    tree = lin.lineage(reader, "demo@candidate", "up")
    assert tree.root == lin.Node("model", "demo@v2")
    up = tree.upstream()
    for node in (lin.Node("run", RUN_OK), lin.Node("retrain", REQUEST),
                 lin.Node("alert", ALERT), lin.Node("dataset", f"demo-train@{WINDOW[:12]}"),
                 lin.Node("dataset", f"demo-train@{TRAIN[:12]}")):
        assert node in up, node
    assert up.index(lin.Node("retrain", REQUEST)) < up.index(lin.Node("alert", ALERT))
    assert lin.Node("retrain", MANUAL) not in up and lin.Node("model", "demo@v1") not in up


def test_lineage_down_from_the_alert_reaches_the_candidate(reader: Reader) -> None:
    assert lin.resolve_ref(reader, ALERT) == lin.Node("alert", ALERT)
    assert lin.resolve_ref(reader, QUEUED) == lin.Node("retrain", QUEUED)
    assert lin.resolve_ref(reader, RUN_OK) == lin.Node("run", RUN_OK)
    down = lin.lineage(reader, ALERT, "down").downstream()
    assert lin.Node("model", "demo@v2") in down and lin.Node("alias", "demo@candidate") in down


def test_cli_lineage_up_of_the_candidate(data: Settings) -> None:
    result = CliRunner().invoke(app, ["--data-dir", str(data.data_dir), "lineage", "demo@v2",
                                      "--up"])
    out = result.output
    assert result.exit_code == 0, out
    assert out.splitlines()[0] == "model demo@v2"
    for text in (f"run {RUN_OK}  produced", f"retrain {REQUEST}  requested: concept drift",
                 f"alert {ALERT}  triggered: DriftDetected concept",
                 f"dataset demo-train@{WINDOW[:12]}  used:training",
                 f"dataset demo-train@{TRAIN[:12]}  derived", "window 2026-04-01 08:30"):
        assert text in out, out
    assert "downstream" not in out
    result = CliRunner().invoke(app, ["--data-dir", str(data.data_dir), "lineage", "demo@v2",
                                      "--up", "-F", "json"])
    graph = json.loads(result.output)
    assert {f"retrain:{REQUEST}", f"alert:{ALERT}"} <= {n["id"] for n in graph["nodes"]}
