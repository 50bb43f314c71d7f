"""One retrain job, from its request to its report: a run, a dataset, a candidate, a gate.

:class:`JobRunner` does what the retrain runner (:mod:`modelog.streams.retrainer`)
does for one ``RetrainRequested``:

1. plans the job (:func:`~modelog.models.retrain_job.plan_job`) and resolves the
   model's trainer from the runner's own table (an unconfigured model fails
   with "no trainer named X configured on this runner");
2. starts a run (experiment ``retrain-<model>``, tags naming the request and the
   alert that caused it) and logs the plan as its parameters;
3. assembles the training window from the ledger
   (:func:`modelog.store.training_data.assemble`), fails when it holds fewer
   labelled rows than the policy's minimum, and records it as a new dataset
   version whose parents are the production version's training datasets; the
   run uses both;
4. trains in a separate process (:mod:`modelog.streams.retrain_child`) with a
   timeout: a trainer that raises, hangs or returns something that is not a
   model fails the job (the run records the traceback) and nothing is
   registered;
5. registers the candidate through the registry agent with a command id derived
   from the request id -- a re-run job gets the version already assigned, so a
   request never yields two candidates -- logs candidate and production holdout
   metrics, decides the gate and, only when it passes, points the
   ``candidate`` alias at the version. ``production`` is never touched.

Gate metric, margin and minimum rows come from the request's ``policy`` (the
model's retrain policy in force when the trigger fired) over the runner's
defaults. The job's I/O -- the registry read from the broker, the training
window from the query server -- is retried on a transient failure (broker
unavailable, nothing projected yet, database busy, an HTTP 5xx from the query
server) with bounded exponential backoff (:func:`retrying`) before the job is
recorded failed; the trainer itself is never retried.

It returns the :class:`~modelog.models.events.RetrainJobEnded` report.
May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from modelog.models import codec
from modelog.models.errors import ModelsError, RetrainJobError
from modelog.models.events import (
    AliasChangeRequested,
    ColumnSchema,
    ModelVersionRequested,
    RetrainJobEnded,
    RetrainRequested,
    RunFailed,
)
from modelog.models.ids import derived_id, epoch_ms
from modelog.models.registry import RegistryState
from modelog.models.retrain_job import (
    CANDIDATE_ALIAS,
    GateDecision,
    JobPolicy,
    RetrainPlan,
    TrainerRef,
    alias_command_id,
    backoff_delays,
    decide_gate,
    plan_job,
    registration_command_id,
    resolve_trainer,
)
from modelog.store.errors import DatabaseBusyError, NoDataError, QueryError, StoreError
from modelog.store.reader import Reader
from modelog.store.retrain_window import await_labelled_rows, rows_needed
from modelog.store.training_data import assemble
from modelog.streams.errors import (
    BrokerUnavailableError,
    RegistryTimeoutError,
    TrainerProcessError,
)
from modelog.streams.registry_client import default_actor
from modelog.streams.run import Run
from modelog.streams.sdk import Client

__all__ = ["PRODUCER", "JobRunner", "is_transient", "retrying"]

log = logging.getLogger(__name__)

PRODUCER = "modelog-retrainer"
"""The ``producer`` of the runner's reports."""

T = TypeVar("T")
_HTTP_5XX = re.compile(r"\bHTTP 5\d\d\b")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of a job's I/O that may pass: the broker is
    unavailable, nothing is projected yet, the database is busy, or the query
    server answered 5xx (bad SQL, a 4xx or a refused rule are not)."""
    if isinstance(exc, BrokerUnavailableError | NoDataError | DatabaseBusyError):
        return True
    return type(exc) is QueryError and bool(_HTTP_5XX.search(str(exc)))


def retrying(fn: Callable[..., T], delays: list[float], what: str,
             sleep: Callable[[float], None] = time.sleep) -> Callable[..., T]:
    """``fn`` retried after each of ``delays`` seconds while it fails transiently
    (:func:`is_transient`); then the last failure is raised."""
    def call(*args: Any, **kwargs: Any) -> T:
        for attempt, delay in enumerate([*delays, None], start=1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if delay is None or not is_transient(exc):
                    raise
                log.warning("retrain: %s failed (%s); attempt %d of %d in %g s", what, exc,
                            attempt + 1, len(delays) + 1, delay)
                sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
    return call


class JobRunner:
    """Runs retrain jobs with a client, the runner's trainers and policy.

    Parameters
    ----------
    client
        Connected SDK client (runs, datasets, registry commands).
    trainers
        The runner's ``model -> trainer`` table.
    policy
        Job defaults (a request may override some).
    timeout
        Seconds a trainer may take before its process is killed.
    registry_timeout
        Seconds to wait for the registry agent's answers.
    io_retries, io_backoff
        A transient I/O failure is retried this many times, waiting ``io_backoff``
        seconds, doubling (at most 30 s), before the job is recorded failed.
    label_wait
        Seconds a job waits for labelled traffic since its window's start when the
        window holds too little (a drift is detected long before the new behaviour
        is labelled): the window's end then moves to when there was enough (see
        :mod:`modelog.store.retrain_window`).
    """

    def __init__(self, client: Client, trainers: Mapping[str, TrainerRef], *,
                 policy: JobPolicy | None = None, timeout: float = 600.0,
                 registry_timeout: float = 60.0, io_retries: int = 5,
                 io_backoff: float = 1.0, label_wait: float = 600.0) -> None:
        self.client = client
        self.label_wait = label_wait
        self.settings = client.settings
        self.trainers = dict(trainers)
        self.policy = policy or JobPolicy()
        self.timeout = timeout
        self.registry_timeout = registry_timeout
        self.delays = backoff_delays(io_retries, io_backoff)

    # -- the job ----------------------------------------------------------------------
    def run(self, request: RetrainRequested, run: Run,
            previous_runs: tuple[str, ...] = ()) -> RetrainJobEnded:
        """Do the job of ``request`` as run ``run`` (started here); return its report."""
        # Earlier attempts died with the runner: each is recorded failed, resumed by the
        # next. Every resume repeats the records of all of them (a kill may have lost the
        # last ones); their ids and texts are the same each time, so readers keep one.
        for old, resumed in itertools.pairwise((*previous_runs, run.run_id)):
            self._interrupted(request, old, f"resumed as run {resumed}")
        report: dict[str, Any] = {"run_id": run.run_id}
        run.start()
        try:
            plan = plan_job(request, self.policy)
            self._job(request, plan, run, report)
        except RegistryTimeoutError:
            raise  # not the job's fault: the runner retries it (the run is ended then)
        except BaseException as exc:
            run.end(exc)
            if not isinstance(exc, Exception):
                raise
            reason = str(exc) if isinstance(exc, RetrainJobError | ModelsError | StoreError) \
                else f"{type(exc).__name__}: {exc}"
            log.warning("retrain %s of %s failed: %s", request.id, request.model, reason)
            return self._report(request, "failed", reason, **report)
        run.end()
        gate: GateDecision = report.pop("gate")
        status = "candidate" if gate.passed else "rejected"
        return self._report(request, status, gate.reason, **report)

    def interrupted_too_often(self, request: RetrainRequested, attempts: int,
                              runs: list[str]) -> RetrainJobEnded:
        """The report of a job the runner died in ``attempts`` times: failed, not retried."""
        for old, resumed in itertools.pairwise(runs):
            self._interrupted(request, old, f"resumed as run {resumed}")
        if runs:
            self._interrupted(request, runs[-1], "the job was interrupted too often")
        return self._report(request, "failed", (
            f"the job did not finish in {attempts} attempts (the runner stopped during it, or "
            "the registry did not answer) and is not started again; request a new retrain"),
            run_id=runs[-1] if runs else None)

    def _interrupted(self, request: RetrainRequested, run_id: str, what: str) -> None:
        """Record an attempt's run failed (one id per run: a repeat is a duplicate)."""
        self.client.emit(RunFailed(
            id=derived_id(epoch_ms(request.time), "run-interrupted", request.id, run_id),
            time=codec.utcnow(), aggregate=run_id,
            producer=self.settings.producer_name, run_id=run_id,
            error=f"interrupted: the attempt did not finish (the retrain runner stopped, or the "
                  f"registry did not answer); {what}"))

    def _report(self, request: RetrainRequested, status: str, reason: str,
                **fields: Any) -> RetrainJobEnded:
        return RetrainJobEnded(
            id=derived_id(epoch_ms(request.time), "retrain-ended", request.id),
            time=codec.utcnow(), aggregate=request.model, producer=PRODUCER,
            model=request.model, request_id=request.id, status=status,  # type: ignore[arg-type]
            reason=reason[:4000], **fields)

    def _job(self, request: RetrainRequested, plan: RetrainPlan, run: Run,
             report: dict[str, Any]) -> None:
        trainer = resolve_trainer(self.trainers, plan.model)
        production = self._production(plan.model)
        report["production_version"] = None if production is None else production.version
        run.log_params({**plan.params(), "trainer": trainer.target,
                        "trainer_source": trainer.source,
                        "production_version": report["production_version"]})
        query = retrying(Reader(self.settings).query, self.delays, "a training-data query")
        p = plan.policy
        wait = await_labelled_rows(
            query, plan.model, start=plan.start, end=plan.end, max_wait=self.label_wait,
            needed=rows_needed(p.min_labelled_rows, p.min_holdout_rows, p.holdout_share))
        if wait.end != plan.end:
            run.log_params({"window_end_used": None if wait.end is None
                            else wait.end.isoformat(), "label_wait_s": wait.waited})
        data = assemble(query, plan.model,
                        version=None if production is None else production.version,
                        start=plan.start, end=wait.end,
                        holdout_share=plan.policy.holdout_share,
                        read_table=self.client.artifacts.read_table)
        labelled = data.traffic_rows
        run.log_metrics({"labelled_rows": labelled, "window_rows": data.table.num_rows})
        if labelled < plan.policy.min_labelled_rows:
            raise RetrainJobError(
                f"only {labelled} labelled predictions of {plan.model} in the window "
                f"{_window(plan)}; the job needs at least {plan.policy.min_labelled_rows} "
                "(min_labelled_rows): wait for more labels or widen the window")
        name = data.datasets[0].name if len(data.datasets) == 1 else f"{plan.model}-retrain"
        for ds in data.datasets:
            run.use_dataset((ds.name, ds.digest), context="training")
        window = self.client.log_dataset(
            name, data.table, parents=[d.ref for d in data.datasets],
            description=f"retrain window of {plan.model} {_window(plan)} for request "
                        f"{request.id} ({request.reason})")
        run.use_dataset(window, context="training")
        report["dataset"] = f"{window.name}@{window.digest[:12]}"
        result = self._train(plan, trainer, window.uri, data.features, data.target, production,
                             labelled)
        metric = str(result["metric"])
        metrics = {f"trainer_{k}": float(v) for k, v in result["trainer_metrics"].items()}
        metrics.update(train_rows=result["train_rows"], holdout_rows=result["holdout_rows"])
        metrics[f"holdout_{metric}_candidate"] = result["candidate"]
        if result["production"] is not None:
            metrics[f"holdout_{metric}_production"] = result["production"]
        version = self._register(request, plan, run, result)
        gate = decide_gate(metric, candidate=float(result["candidate"]),
                           production=result["production"], rows=int(result["holdout_rows"]),
                           min_rows=plan.policy.min_holdout_rows, margin=plan.policy.margin)
        metrics["gate_passed"] = float(gate.passed)
        run.log_metrics(metrics)
        if gate.passed:
            self._set_candidate(request, version, gate)
        report.update(gate=gate, model_version=version, metric=metric,
                      candidate_value=gate.candidate, production_value=gate.production,
                      holdout_rows=gate.rows)

    # -- registry ---------------------------------------------------------------------
    def _registry(self, model: str) -> RegistryState:
        state: RegistryState = retrying(self.client.registry, self.delays,
                                        "reading the registry")(model)
        return state

    def _production(self, model: str) -> Any:
        state = self._registry(model).models.get(model)
        if state is None:
            return None
        alias = state.aliases.get("production")
        return None if alias is None else state.versions.get(alias.version)

    def _register(self, request: RetrainRequested, plan: RetrainPlan, run: Run,
                  result: Mapping[str, Any]) -> int:
        """Register the candidate once per request (a re-run gets the same version)."""
        cid = registration_command_id(request.id)
        state = self._registry(plan.model).models.get(plan.model)
        if state is not None and cid in state.registrations:
            return state.registrations[cid].model_version
        trigger = f", caused by alert {request.trigger_id}" if request.trigger_id else ""
        command = ModelVersionRequested(
            id=self.client.new_id(), time=codec.utcnow(), aggregate=plan.model,
            producer=PRODUCER, command_id=cid, model=plan.model, run_id=run.run_id,
            flavor=str(result["flavor"]), artifact_uri=str(result["artifact_uri"]),
            artifact_digest=str(result["artifact_digest"]),
            signature=[ColumnSchema(str(n), str(t)) for n, t in result["signature"]],
            description=f"retrain candidate for request {request.id}{trigger}: "
                        f"{request.reason}"[:2000],
            library_versions={str(k): str(v) for k, v in result["library_versions"].items()},
            actor=default_actor())
        answer = self.client.send_command(command, self.registry_timeout)
        return int(getattr(answer, "model_version"))  # noqa: B009 -- the registration answer

    def _set_candidate(self, request: RetrainRequested, version: int, gate: GateDecision) -> None:
        cid = alias_command_id(request.id)
        state = self._registry(request.model).models.get(request.model)
        if state is not None and cid in state.decided:
            return
        command = AliasChangeRequested(
            id=self.client.new_id(), time=codec.utcnow(), aggregate=request.model,
            producer=PRODUCER, command_id=cid, model=request.model, alias=CANDIDATE_ALIAS,
            model_version=version, actor=default_actor(),
            reason=f"retrain request {request.id}: {gate.reason}"[:2000])
        self.client.send_command(command, self.registry_timeout)

    # -- the trainer's process ----------------------------------------------------------
    def _train(self, plan: RetrainPlan, trainer: TrainerRef, dataset_uri: str,
               features: list[str], target: str, production: Any,
               rows: int) -> dict[str, Any]:
        job = {
            "trainer": {"module": trainer.module, "function": trainer.function},
            "dataset_uri": dataset_uri, "metric": plan.policy.metric,
            "context": {"model": plan.model, "request_id": plan.request_id,
                        "reason": plan.reason, "features": features, "target": target,
                        "start": None if plan.start is None else plan.start.isoformat(),
                        "end": None if plan.end is None else plan.end.isoformat(),
                        "production_version": None if production is None
                        else production.version, "rows": rows},
            "production": None if production is None else {
                "version": production.version, "flavor": production.flavor,
                "artifact_uri": production.artifact_uri,
                "artifact_digest": production.artifact_digest},
        }
        work = Path(tempfile.mkdtemp(prefix="modelog-retrain-"))
        try:
            (work / "job.json").write_text(json.dumps(job))
            return self._child(work, trainer)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _child(self, work: Path, trainer: TrainerRef) -> dict[str, Any]:
        from modelog.config import env_for

        env = {**os.environ, **env_for(self.settings), "PYTHONUNBUFFERED": "1"}
        log_path = work / "child.log"
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "modelog.streams.retrain_child", str(work),
                 str(os.getpid())], env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RetrainJobError(
                    f"the trainer {trainer.target} did not finish within {self.timeout:g} s "
                    "and was stopped; make it faster or raise the runner's --timeout") from None
        result_path = work / "result.json"
        if not result_path.exists():
            tail = log_path.read_text(errors="replace")[-4000:]
            raise RetrainJobError(
                f"the trainer process of {trainer.target} died (exit code {proc.returncode}) "
                f"without a result; its output ends with:\n{tail}")
        result: dict[str, Any] = json.loads(result_path.read_text())
        if not result.get("ok"):
            error = str(result["error"]) if result.get("verdict") \
                else f"the trainer {trainer.target} failed: {result['error']}"
            raise RetrainJobError(error) from TrainerProcessError(str(result.get("traceback")))
        return result


def _window(plan: RetrainPlan) -> str:
    start = "the beginning" if plan.start is None else plan.start.isoformat()
    end = "now" if plan.end is None else plan.end.isoformat()
    return f"[{start}, {end}]"

