"""The retrain runner end to end: real broker, projector, registry service and runner process.

One deployment serves the module: a projector (`modelog project`) and a runner
(`modelog retrainer`, trainers from tests/retrain_trainers.py configured by name)
as processes, the registry service in this process. The traffic drifted: the
labels follow `usage - tenure < 0`, production still predicts `usage + tenure < 0`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pytest

import modelog
from modelog.config import Settings
from modelog.store.reader import Reader
from modelog.streams.registry_agent import RegistryService
from modelog.streams.retrainer import request_retrain
from modelog.streams.topics import ensure_topics

sys.path.insert(0, str(Path(__file__).parent))
from retrain_trainers import churn_pipeline
from test_e2e import _start, _stop, _wait_for  # processes are started as in e2e

TRAINERS = ["churn=retrain_trainers:fit", "slow=retrain_trainers:fit_slow",
            "boom=retrain_trainers:fit_raises", "sleepy=retrain_trainers:fit_hangs",
            "junk=retrain_trainers:fit_not_a_model", "sparse=retrain_trainers:fit",
            "torchy=retrain_trainers:fit_torch"]


@dataclasses.dataclass
class Deployment:
    settings: Settings
    runner: subprocess.Popen[bytes] | None = None
    requests: dict[str, str] = dataclasses.field(default_factory=dict)


def _start_runner(settings: Settings) -> subprocess.Popen[bytes]:
    args = [a for t in TRAINERS for a in ("--trainer", t)]
    return _start(settings, "retrainer", *args, "--timeout", "20", "--concurrency", "2",
                  "--min-rows", "100", "--min-holdout-rows", "50", "--label-wait", "0")


def _query(settings: Settings, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    return Reader(settings).query(sql, params or None).to_pylist()


def _reports(settings: Settings) -> dict[str, dict[str, Any]]:
    rows = _query(settings, "SELECT CAST(payload AS VARCHAR) AS p FROM events "
                            "WHERE type = 'RetrainJobEnded'")
    return {r["request_id"]: r for r in (json.loads(x["p"]) for x in rows)}


def _wait_reports(d: Deployment, models: list[str], timeout: float = 120) -> dict[str, Any]:
    ids = [d.requests[m] for m in models]
    got = _wait_for(lambda: (r := _reports(d.settings)) and all(i in r for i in ids) and r,
                    timeout, f"the reports of {models}")
    return {m: got[d.requests[m]] for m in models}


def _versions(settings: Settings, model: str) -> list[int]:
    return [r["model_version"] for r in _query(
        settings, "SELECT model_version FROM model_versions WHERE model = ? ORDER BY 1",
        [model])]


def _jobs(settings: Settings) -> dict[str, tuple[str, int]]:
    con = sqlite3.connect(settings.data_dir / "retrain.sqlite", timeout=10)
    try:
        return {r: (s, a) for r, s, a in con.execute(
            "SELECT request_id, status, attempts FROM jobs")}
    finally:
        con.close()


def _frame(rng: random.Random, n: int, concept: str) -> pd.DataFrame:
    rows = []
    for _ in range(n):
        u, t = rng.gauss(0, 1), rng.gauss(0, 1)
        y = int(u + t < 0) if concept == "old" else int(u - t < 0)
        rows.append({"usage": u, "tenure": t, "plan": rng.choice(["basic", "pro"]),
                     "churned": y})
    return pd.DataFrame(rows)


def _request(d: Deployment, model: str, **kw: Any) -> str:
    with modelog.connect(settings=d.settings) as client:
        d.requests[model] = request_retrain(client, model, reason=f"test {model}", **kw).id
    return d.requests[model]


# -- pure parts and training data (no broker) -----------------------------------------------
def test_trainers_come_only_from_the_runners_configuration() -> None:
    from modelog.models.errors import TrainerConfigError, TrainerNotConfiguredError
    from modelog.models.retrain_job import resolve_trainer, trainer_table
    from modelog.streams.retrainer import configured_trainers

    table = trainer_table(["churn=cli_pkg.train:fit"], "churn=env_pkg:fit,fraud=env_pkg:fraud",
                          [("churn", "ep_pkg:fit"), ("ltv", "ep_pkg.m:fit_ltv")])
    assert {m: (r.target, r.source) for m, r in table.items()} == {
        "churn": ("cli_pkg.train:fit", "--trainer"),
        "fraud": ("env_pkg:fraud", "MODELOG_TRAINERS"),
        "ltv": ("ep_pkg.m:fit_ltv", "entry point modelog.trainers:ltv")}
    for bad in ("churn", "churn=os.system('x'):y", "=m:f", "churn=m", "churn=m:f(1)"):
        with pytest.raises(TrainerConfigError, match=r"model=package\.module:function"):
            trainer_table([bad])
    with pytest.raises(TrainerNotConfiguredError, match="no trainer named 'x' configured"):
        resolve_trainer(table, "x")
    env = {"MODELOG_TRAINERS": "a=m.n:f"}
    assert configured_trainers(["b=m:g"], env, entry_points=False).keys() == {"a", "b"}


def test_a_request_cannot_name_code_and_its_policy_is_checked() -> None:
    import datetime as dt

    from modelog.models.errors import RetrainJobError
    from modelog.models.events import RetrainRequested
    from modelog.models.retrain_job import JobPolicy, plan_job, registration_command_id

    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    req = RetrainRequested(id="r-1", time=t, aggregate="churn", model="churn", reason="x",
                           policy={"trainer": "os:system", "metric": "f1", "margin": 0.05})
    plan = plan_job(req, JobPolicy(min_labelled_rows=10))
    assert (plan.policy.metric, plan.policy.margin, plan.policy.min_labelled_rows) == \
        ("f1", 0.05, 10)
    assert "trainer" not in plan.params()
    with pytest.raises(RetrainJobError, match="metric 'auc' is not one of"):
        plan_job(msgspec.structs.replace(req, policy={"metric": "auc"}))
    assert registration_command_id("r-1") != registration_command_id("r-2")


def test_gate_needs_a_margin_and_enough_rows() -> None:
    from modelog.models.retrain_job import decide_gate, score

    assert decide_gate("accuracy", candidate=0.80, production=0.79, rows=500, min_rows=100,
                       margin=0.02).passed is False
    assert decide_gate("mae", candidate=1.0, production=2.0, rows=500, min_rows=100,
                       margin=0.5).passed is True
    assert decide_gate("mae", candidate=1.0, production=2.0, rows=50, min_rows=100).passed \
        is False
    assert score("f1", ["a", "b", "a"], ["a", "b", "b"]) == pytest.approx((2 / 3 + 2 / 3) / 2)
    from modelog.models.errors import RetrainJobError

    with pytest.raises(RetrainJobError, match="mae needs numeric labels"):
        score("mae", ["a"], ["b"])


def test_training_data_joins_first_labels_datasets_and_a_time_ordered_holdout(
        tmp_path: Path) -> None:
    import duckdb
    import pyarrow as pa

    from modelog.store.artifacts import ArtifactStore
    from modelog.store.schema import create_schema
    from modelog.store.training_data import assemble, duckdb_query

    store = ArtifactStore(tmp_path / "artifacts")
    digest, uri = store.put_table(pa.table({"age": [1, 2], "plan": ["a", "b"],
                                            "churned": [0, 1]}), canonical=True)
    signature = json.dumps([{"name": "age", "type": "int64"},
                            {"name": "plan", "type": "string"}])
    columns = json.dumps([*json.loads(signature), {"name": "churned", "type": "int64"}])
    con = duckdb.connect()
    create_schema(con)
    con.execute(f"""
INSERT INTO predictions SELECT 'e' || i, 'p' || i, 'm', 1, NULL,
    TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_minutes(10 - i),
    json_object('age', i, 'plan', 'pro', 'extra', 1.5), CAST(i % 2 AS JSON), 'app', NULL
FROM range(10) t(i);
INSERT INTO predictions VALUES ('x', 'p-other', 'other', 1, NULL, now(), '{{"age": 1}}', '1', 'a',
    NULL);
INSERT INTO labels SELECT 'l' || i, 'p' || i, 'm', TIMESTAMPTZ '2026-01-02 00:00:00+00',
    CAST(i % 3 AS JSON) FROM range(8) t(i);
INSERT INTO labels VALUES ('late', 'p1', 'm', TIMESTAMPTZ '2026-01-03 00:00:00+00', '7');
INSERT INTO run_datasets VALUES ('run1', 'm-train', '{digest}', 'training', now(), 'u1');
INSERT INTO model_versions VALUES ('m', 1, 'run1', 'sklearn', '', '', '{signature}',
    '', false, '{{}}', 'c1', now(), 'x', 'mv1');
INSERT INTO dataset_versions VALUES ('m-train', '{digest}', 2, '{uri}', [], '{columns}',
    NULL, '', now(), 'x', 'd1')""")
    data = assemble(duckdb_query(con), "m", version=1, holdout_share=0.25,
                    read_table=store.read_table)
    assert data.features == ["age", "plan", "extra"] and data.target == "label"
    assert [d.ref for d in data.datasets] == [f"m-train@{digest[:12]}"]
    rows = data.table.to_pylist()
    assert [(r["source"], r["split"]) for r in rows][:2] == [("dataset", "train")] * 2
    assert [r["label"] for r in rows[:2]] == [0, 1]  # the dataset's target, renamed
    traffic = rows[2:]
    assert [r["age"] for r in traffic] == [7, 6, 5, 4, 3, 2, 1, 0]  # labelled only, by time
    assert {r["age"]: r["label"] for r in traffic}[1] == 1  # the first label, not the late 7
    assert [r["split"] for r in traffic] == ["train"] * 6 + ["holdout"] * 2
    assert data.traffic_rows == 8 and data.holdout.num_rows == 2


# -- the deployment ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def deployment(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    s = Settings(broker=broker, data_dir=tmp_path_factory.mktemp("retrain") / "data",
                 topic_prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=2,
                 producer_name="pytest")
    s.data_dir.mkdir(parents=True)
    ensure_topics(s)
    d = Deployment(s)
    with pytest.MonkeyPatch.context() as mp:  # the runner's trainer process imports tests/
        mp.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent),
                                                 os.environ.get("PYTHONPATH", "")]))
        yield from _deploy(d)


def _deploy(d: Deployment) -> Iterator[Deployment]:
    s = d.settings
    projector = _start(s, "project")
    rng = random.Random(3)
    with RegistryService(s):
        try:
            _wait_for(lambda: (s.data_dir / "projector.json").exists(), 60, "the projector")
            old = _frame(rng, 300, "old")
            with modelog.connect(settings=s) as client:
                ds = client.log_dataset("churn-train", old)
                with client.start_run("churn", name="baseline", capture_code=False) as run:
                    run.use_dataset(ds)
                features = old[["usage", "tenure", "plan"]]
                prod = churn_pipeline().fit(features, old["churned"])
                v1 = client.register_model("churn", prod, run=run, dataset=ds, target="churned")
                client.set_alias("churn", "production", v1, reason="first release")
                for name in ("slow", "torchy"):
                    v1 = client.register_model(name, prod, dataset=ds, target="churned")
                    client.set_alias(name, "production", v1, reason="first release")
                for model in ("churn", "slow", "boom", "sleepy", "junk", "orphan", "sparse",
                              "torchy"):
                    new = _frame(rng, 20 if model == "sparse" else 600, "new")
                    for row in new.to_dict("records"):
                        x = {k: row[k] for k in ("usage", "tenure", "plan")}
                        pid = client.log_prediction(model, 1, x,
                                                    int(row["usage"] + row["tenure"] < 0))
                        client.log_label(model, pid, int(row["churned"]))
                client.flush()
            _wait_for(lambda: _query(s, "SELECT count(*) AS n FROM labels")[0]["n"] >= 4_220,
                      90, "the traffic in the projection")
            d.runner = _start_runner(s)
            yield d
        finally:
            if d.runner is not None:
                _stop(d.runner)
            _stop(projector)


# -- tests ---------------------------------------------------------------------------------
@pytest.mark.broker
@pytest.mark.slow
def test_a_pytorch_trainer_yields_a_candidate_scored_on_the_holdout(
        deployment: Deployment) -> None:
    d, s = deployment, deployment.settings
    _request(d, "torchy")
    report = _wait_reports(d, ["torchy"])["torchy"]
    assert report["status"] == "candidate", report
    assert report["candidate_value"] > 0.85 > 0.7 > report["production_value"], report
    [mv] = _wait_for(lambda: _query(
        s, "SELECT flavor, artifact_digest FROM model_versions WHERE model = 'torchy' "
           "AND model_version = 2"), 60, "the registered PyTorch version")
    assert mv["flavor"] == "pytorch" and mv["artifact_digest"]
    # what was stored is the module's weights, loadable with torch.load(weights_only=True)
    import torch

    with modelog.connect(settings=s) as client:
        state = client.load_model("torchy", 2)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    net = torch.nn.Linear(2, 1)
    net.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
    assert net(torch.zeros(1, 2)).shape == (1, 1)


@pytest.mark.broker
@pytest.mark.slow
def test_a_request_yields_one_candidate_that_beats_production(deployment: Deployment) -> None:
    d, s = deployment, deployment.settings
    request_id = _request(d, "churn")
    report = _wait_reports(d, ["churn"])["churn"]
    assert report["status"] == "candidate", report
    assert report["model_version"] == 2 and report["production_version"] == 1
    assert report["metric"] == "accuracy" and report["holdout_rows"] >= 100
    assert report["candidate_value"] > 0.9 > 0.7 > report["production_value"]
    # the report may be projected before the registry's and the run's events: wait for them
    aliases = _wait_for(lambda: len(a := {r["alias"]: r["model_version"] for r in _query(
        s, "SELECT alias, model_version FROM aliases WHERE model = 'churn'")}) == 2 and a,
        60, "the candidate alias")
    assert aliases == {"production": 1, "candidate": 2}
    assert _versions(s, "churn") == [1, 2]
    _wait_for(lambda: _query(s, "SELECT 1 FROM runs WHERE run_id = ? AND status = 'finished'",
                             [report["run_id"]]), 60, "the finished run")
    # lineage: candidate <- run <- window dataset <- the original dataset; run tags -> request
    [mv] = _query(s, "SELECT run_id, description FROM model_versions "
                     "WHERE model = 'churn' AND model_version = 2")
    assert mv["run_id"] == report["run_id"] and request_id in mv["description"]
    [run] = _query(s, "SELECT status, tags FROM runs WHERE run_id = ?", [mv["run_id"]])
    assert run["status"] == "finished"
    assert json.loads(run["tags"])["retrain_request"] == request_id
    used = {r["dataset"] + "@" + r["digest"][:12] for r in _query(
        s, "SELECT dataset, digest FROM run_datasets WHERE run_id = ?", [mv["run_id"]])}
    versions = _query(s, "SELECT version, digest, parents, num_rows FROM datasets "
                         "WHERE name = 'churn-train' ORDER BY version")
    assert len(versions) == 2
    original, window = versions
    assert window["parents"] == [f"churn-train@{original['digest'][:12]}"]
    assert window["num_rows"] == 300 + 600
    assert used == {f"churn-train@{v['digest'][:12]}" for v in versions}
    assert report["dataset"] == f"churn-train@{window['digest'][:12]}"
    metrics = {r["key"]: r["value"] for r in _query(
        s, "SELECT key, value FROM run_latest_metrics WHERE run_id = ?", [mv["run_id"]])}
    assert metrics["gate_passed"] == 1.0 and metrics["labelled_rows"] == 600
    assert metrics["holdout_accuracy_candidate"] > metrics["holdout_accuracy_production"]
    edges = _query(s, "SELECT src_id FROM lineage_edges WHERE dst_id = 'churn@v2'")
    assert [e["src_id"] for e in edges] == [mv["run_id"]]

    # the same request delivered again: still one job, one candidate
    with modelog.connect(settings=s) as client:
        [event] = [e for e in _jobs_requests(s) if e.id == request_id]
        client.emit(event)
        client.emit(event)
        client.flush()
    time.sleep(5)
    assert _versions(s, "churn") == [1, 2]
    assert _jobs(s)[request_id] == ("candidate", 1)


def _jobs_requests(settings: Settings) -> list[Any]:
    from modelog.models import codec

    con = sqlite3.connect(settings.data_dir / "retrain.sqlite", timeout=10)
    try:
        return [codec.decode(r) for (r,) in con.execute("SELECT request FROM jobs")]
    finally:
        con.close()


@pytest.mark.broker
@pytest.mark.slow
def test_bad_inputs_are_recorded_failed_and_register_nothing(deployment: Deployment) -> None:
    d, s = deployment, deployment.settings
    models = ["orphan", "boom", "junk", "sparse", "sleepy"]
    for model in models:
        _request(d, model)
    reports = _wait_reports(d, models, timeout=180)
    assert {m: r["status"] for m, r in reports.items()} == dict.fromkeys(models, "failed")
    assert "no trainer named 'orphan' configured on this runner" in reports["orphan"]["reason"]
    assert "ValueError: bad trainer for boom" in reports["boom"]["reason"]
    assert "not a model modelog can store" in reports["junk"]["reason"]
    assert "only 20 labelled predictions of sparse" in reports["sparse"]["reason"]
    assert "did not finish within 20 s" in reports["sleepy"]["reason"]
    for model in models:
        assert _versions(s, model) == []
        run_id = reports[model]["run_id"]
        [run] = _wait_for(lambda rid=run_id: _query(
            s, "SELECT status, error, traceback FROM runs WHERE run_id = ? AND status = "
               "'failed'", [rid]), 30, f"the failed run of {model}")
        assert run["error"]
    [boom] = _query(s, "SELECT traceback FROM runs WHERE run_id = ?", [reports["boom"]["run_id"]])
    assert "retrain_trainers.py" in boom["traceback"]  # the trainer's own traceback
    assert "raise ValueError" in boom["traceback"]


@pytest.mark.broker
@pytest.mark.slow
def test_kill_9_mid_job_and_restart_still_one_candidate(deployment: Deployment) -> None:
    d, s = deployment, deployment.settings
    request_id = _request(d, "slow")
    _wait_for(lambda: _jobs(s).get(request_id, ("", 0))[0] == "running", 60, "the slow job")
    time.sleep(2)  # the trainer is running
    assert d.runner is not None
    _stop(d.runner, signal.SIGKILL)
    assert _jobs(s)[request_id] == ("running", 1)
    d.runner = _start_runner(s)  # killed again in the middle of the second attempt
    _wait_for(lambda: _jobs(s).get(request_id) == ("running", 2), 60, "the second attempt")
    time.sleep(2)
    _stop(d.runner, signal.SIGKILL)
    d.runner = _start_runner(s)
    report = _wait_reports(d, ["slow"])["slow"]
    assert report["status"] == "candidate", report
    _wait_for(lambda: _query(s, "SELECT 1 FROM runs WHERE run_id = ? AND status = 'finished'",
                             [report["run_id"]]), 60, "the finished run")
    assert _versions(s, "slow") == [1, 2]
    assert _jobs(s)[request_id] == ("candidate", 3)
    runs = _wait_for(lambda: (r := _query(
        s, "SELECT run_id, status, error FROM runs WHERE experiment = 'retrain-slow' "
           "ORDER BY started")) and r[0]["status"] == "failed" and r[-1]["status"] == "finished"
        and r, 60, "the interrupted run recorded failed")
    assert "interrupted: the attempt did not finish" in runs[0]["error"]
    assert runs[0]["error"].endswith(f"resumed as run {runs[1]['run_id']}")
    # every resume records all earlier attempts failed again (a kill may have lost the last
    # record): the same events, one per run, which readers keep once
    failed = _query(s, "SELECT aggregate, count(*) n FROM events WHERE type = 'RunFailed' "
                       "AND aggregate IN (SELECT run_id FROM runs WHERE experiment = "
                       "'retrain-slow') GROUP BY aggregate")
    assert failed and all(row["n"] == 1 for row in failed), failed


@pytest.mark.broker
@pytest.mark.slow
def test_a_forgotten_job_table_still_yields_one_candidate(deployment: Deployment) -> None:
    """Every request runs again from scratch; the registry answers the same versions."""
    d, s = deployment, deployment.settings
    assert d.runner is not None
    _stop(d.runner)
    for suffix in ("", "-wal", "-shm"):
        (s.data_dir / f"retrain.sqlite{suffix}").unlink(missing_ok=True)
    d.runner = _start_runner(s)
    ids = set(d.requests.values())
    _wait_for(lambda: (j := _jobs(s)) and ids <= set(j)
              and all(j[i][0] not in ("queued", "running") for i in ids), 240,
              "the jobs to run again")
    jobs = _jobs(s)
    assert jobs[d.requests["churn"]][0] == "candidate"
    assert jobs[d.requests["slow"]][0] == "candidate"
    assert _versions(s, "churn") == [1, 2]
    assert _versions(s, "slow") == [1, 2]


def test_a_model_fit_on_some_of_the_logged_inputs_is_scored_on_those() -> None:
    """Found end to end: production fit on 3 of the 4 logged inputs (a DataFrame) made every
    retrain job fail, reported as the trainer's failure."""
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    from modelog.models.errors import RetrainJobError
    from modelog.streams.retrain_child import _scored, predict

    train = pd.DataFrame({"sqft": [50.0, 80.0, 120.0, 60.0], "rooms": [1.0, 2.0, 4.0, 2.0]})
    model = LinearRegression().fit(train[["rooms", "sqft"]], [100.0, 160.0, 250.0, 125.0])
    holdout = pd.DataFrame({"sqft": [70.0, 90.0], "city": ["lyon", "lille"],
                            "rooms": [2.0, 3.0]})
    expected = model.predict(holdout[["rooms", "sqft"]]).tolist()
    assert predict(model, holdout, "mae") == pytest.approx(expected)
    with pytest.raises(RetrainJobError, match="fit on rooms, which the logged inputs"):
        predict(model, holdout.drop(columns=["rooms"]), "mae")

    class Broken:
        def predict(self, frame: object) -> list[float]:
            raise ValueError("could not convert string to float: 'lyon'")

    with pytest.raises(RetrainJobError, match=r"scoring the production version v3 on the "
                                              r"holdout failed \(ValueError: could not"):
        _scored("the production version v3", Broken(), holdout, "mae", [1.0, 2.0])
