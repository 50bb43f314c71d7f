"""The retrain runner honours a request's gate keys and retries its I/O while the projection
is not there yet (real broker, registry service, projector process started late, trainer
processes).

The traffic drifted (labels follow `usage - tenure < 0`, production predicts
`usage + tenure < 0`). The runner's own options would gate with accuracy on at least
500 holdout rows -- more than the window holds -- so only the request's
``gate_metric``/``gate_min_rows``/``gate_margin`` let the candidate through (the
margin's effect on a decision is tested without a broker in test_retrain_policy.py).
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import modelog
from modelog.config import Settings
from modelog.models.events import RetrainJobEnded
from modelog.models.retrain_job import JobPolicy
from modelog.streams.registry_agent import RegistryService
from modelog.streams.retrain_run import JobRunner
from modelog.streams.retrainer import configured_trainers, request_retrain

sys.path.insert(0, str(Path(__file__).parent))
from retrain_trainers import churn_pipeline
from test_e2e import _start, _stop
from test_retrainer import _frame

pytestmark = [pytest.mark.broker, pytest.mark.slow]

RUNNER_DEFAULTS = JobPolicy(min_labelled_rows=300, min_holdout_rows=500, metric="accuracy",
                            margin=0.0)


def _job(runner: JobRunner, client: Any, policy: dict[str, Any]) -> RetrainJobEnded:
    request = request_retrain(client, "churn", reason="test gate keys", policy=policy)
    run = client.start_run("retrain-churn", name="retrain churn", capture_code=False)
    return runner.run(request, run)


def test_gate_keys_of_the_request_win_and_a_late_projection_is_waited_for(
        topics: Settings, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    s = topics
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent),
                                                      os.environ.get("PYTHONPATH", "")]))
    caplog.set_level(logging.WARNING, logger="modelog.streams.retrain_run")
    rng = random.Random(11)
    projector = None
    with RegistryService(s), modelog.connect(settings=s) as client:
        old = _frame(rng, 200, "old")
        ds = client.log_dataset("churn-train", old)
        prod = churn_pipeline().fit(old[["usage", "tenure", "plan"]], old["churned"])
        v1 = client.register_model("churn", prod, dataset=ds, target="churned")
        client.set_alias("churn", "production", v1, reason="first release")
        for row in _frame(rng, 400, "new").to_dict("records"):
            x = {k: row[k] for k in ("usage", "tenure", "plan")}
            pid = client.log_prediction("churn", 1, x, int(row["usage"] + row["tenure"] < 0))
            client.log_label("churn", pid, int(row["churned"]))
        client.flush()
        runner = JobRunner(client, configured_trainers(["churn=retrain_trainers:fit"],
                                                       env={}, entry_points=False),
                           policy=RUNNER_DEFAULTS, timeout=60, io_retries=8, io_backoff=0.5,
                           label_wait=60)
        reports: list[RetrainJobEnded] = []
        failure: list[BaseException] = []

        def first_job() -> None:
            try:
                reports.append(_job(runner, client, {"gate_metric": "f1", "gate_min_rows": 40,
                                                     "gate_margin": 0.05}))
            except BaseException as exc:  # reported by the assertion below
                failure.append(exc)

        job = threading.Thread(target=first_job)
        job.start()
        try:
            # the job starts with nothing projected: it backs off until the projector is up
            job.join(2.0)
            assert job.is_alive()
            projector = _start(s, "project")
            job.join(120)
            assert not job.is_alive() and not failure, failure
            [first] = reports
        finally:
            job.join(1)
            if projector is not None:
                _stop(projector)
    retried = [r.message for r in caplog.records if "a training-data query failed" in r.message]
    assert retried and ("no data yet" in retried[0] or "locked" in retried[0]), retried
    assert first.status == "candidate", first
    assert first.metric == "f1"  # not the runner's accuracy
    assert first.holdout_rows is not None and 40 <= first.holdout_rows < 500
    assert first.candidate_value is not None and first.production_value is not None
    assert first.candidate_value > first.production_value + 0.05
    assert "(margin 0.05)" in first.reason, first.reason  # the request's margin, not 0
