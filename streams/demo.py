"""A simulated application for the quickstart (``modelog demo``).

It does what a real team's code would do through the SDK: logs a training
dataset, tracks a training run, registers the model and promotes it to
``production``, then serves predictions and logs the ground truth a little
later. At ``feature_drift_at`` (default: ``drift_at``) one input shifts by
four standard deviations, so the worker raises data-drift and anomaly alerts;
at ``drift_at`` the concept flips (the model's errors jump from ~5 % to ~50 %),
so it raises a concept-drift alert and a retrain request shortly after that
prediction, and none long before.

With ``online=True`` the demo also registers version 2 of the model: a River
logistic regression marked online, which the worker trains on every labelled
prediction of the model (a challenger learning in the shadow of version 1);
its prequential accuracy appears as run metrics and on the dashboard.

With ``retrain=True`` the demo closes the loop: before streaming it sets the
model's retrain policy (a ``RetrainPolicySet``: the training window starts at
the drift, the job trains on at least ``retrain_rows`` labelled predictions of
the new behaviour), and after streaming it waits for the retrain runner's
report (``RetrainJobEnded``) on the request the concept drift caused, and
prints it: the candidate version, its holdout metric against production's, and
the command that shows its lineage back to the drift alert. The runner trains
``demo-churn`` with the built-in scikit-learn trainer
(:mod:`modelog.streams.demo_trainer`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from modelog.config import Settings
from modelog.models.codec import utcnow
from modelog.streams.demo_rollout import RolloutServing, promotion_policy, wait_for_decisions

__all__ = ["DemoConfig", "DemoWorld", "RetrainOutcome", "run_demo", "wait_for_retrain"]


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """How much traffic to simulate, how fast, and where the drift starts."""

    predictions: int = 20_000
    drift_at: int = 10_000
    feature_drift_at: int | None = None
    online: bool = False
    rate: float = 1_000.0
    label_delay: int = 50
    label_share: float = 0.97
    noise: float = 0.05
    seed: int = 7
    model: str = "demo-churn"
    registry_timeout: float = 120.0
    retrain: bool = False
    retrain_rows: int = 1_000
    retrain_timeout: float = 300.0
    auto_promote: bool = False
    degrade_at: int | None = None


class DemoWorld:
    """The simulated reality: inputs, the served model, and the true labels.

    Examples
    --------
    >>> w = DemoWorld(DemoConfig(drift_at=100, seed=1))
    >>> x = w.inputs(0)
    >>> sorted(x)
    ['plan', 'spend', 'tenure', 'usage']
    >>> w.predict(x) in (0, 1)
    True
    """

    def __init__(self, cfg: DemoConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.feature_drift_at = (cfg.drift_at if cfg.feature_drift_at is None
                                 else cfg.feature_drift_at)
        #: Where the world turned against the promoted version (``--degrade-at``): the
        #: first prediction at or after ``cfg.degrade_at`` once the promotion happened.
        self.degraded_from: int | None = None

    def inputs(self, i: int) -> dict[str, float | str]:
        g = self.rng.gauss
        usage = g(0.0, 1.0)
        tenure = g(0.0, 1.0)
        spend = g(50.0, 10.0)
        if i >= self.feature_drift_at:
            spend += 40.0  # data drift: four standard deviations
        plan = self.rng.choice(("basic", "pro", "team"))
        return {"usage": round(usage, 4), "tenure": round(tenure, 4),
                "spend": round(spend, 2), "plan": plan}

    @staticmethod
    def predict(x: dict[str, float | str]) -> int:
        """The model in production: churn when usage and tenure are both low."""
        return int(float(x["usage"]) + float(x["tenure"]) < 0.0)

    def label(self, i: int, x: dict[str, float | str]) -> int:
        if i < self.cfg.drift_at:
            truth = int(float(x["usage"]) + float(x["tenure"]) < 0.0)
        else:  # concept drift: churn now follows another rule
            truth = int(float(x["usage"]) - float(x["tenure"]) < 0.0)
        if self.degraded_from is not None and i >= self.degraded_from:
            truth = 1 - truth  # the world turns against what the retrained model learned
        if self.rng.random() < self.cfg.noise:
            truth = 1 - truth
        return truth


def _training_table(world: DemoWorld, rows: int = 2_000) -> object:
    import pyarrow as pa

    xs = [world.inputs(-1 - i) for i in range(rows)]
    return pa.table({
        "usage": [float(x["usage"]) for x in xs],
        "tenure": [float(x["tenure"]) for x in xs],
        "spend": [float(x["spend"]) for x in xs],
        "plan": [str(x["plan"]) for x in xs],
        "churned": [DemoWorld.predict(x) for x in xs],
    })


@dataclasses.dataclass(frozen=True)
class RetrainOutcome:
    """The retrain runner's report on the demo model's request (a ``RetrainJobEnded``)."""

    status: str
    reason: str
    request_id: str
    model_version: int | None
    production_version: int | None
    metric: str | None
    candidate_value: float | None
    production_value: float | None
    holdout_rows: int
    dataset: str | None

    def lines(self, model: str) -> list[str]:
        """The outcome as the demo prints it."""
        if self.status == "failed":
            return [f"retrain    job failed: {self.reason}"]
        head = (f"retrain    {model} v{self.model_version}: {self.status}"
                + (" (alias 'candidate')" if self.status == "candidate" else ""))
        out = [head, f"           {self.reason}"]
        if self.dataset:
            out.append(f"           trained on window {self.dataset}")
        out.append(f"           lineage: modelog lineage {model}@v{self.model_version} --up")
        return out


def wait_for_retrain(settings: Settings, model: str, since: dt.datetime, *,
                     timeout: float, poll: float = 1.0) -> RetrainOutcome | None:
    """The first ``RetrainJobEnded`` of ``model`` reported after ``since`` (``None``: timeout).

    Reads the projection (the ``events`` ledger) through
    :class:`~modelog.store.reader.Reader`; the report arrives once the runner's
    job ended and the projector wrote it.
    """
    from modelog.store.errors import StoreError
    from modelog.store.reader import Reader

    reader = Reader(settings)
    deadline = time.monotonic() + timeout
    sql = ("SELECT payload FROM events WHERE type = 'RetrainJobEnded' AND aggregate = ? "
           "AND time >= ? ORDER BY time LIMIT 1")
    while True:
        try:
            rows = reader.query(sql, [model, since]).to_pylist()
        except StoreError:  # the projection is not there yet
            rows = []
        if rows:
            p = rows[0]["payload"]
            p = json.loads(p) if isinstance(p, str) else p
            return RetrainOutcome(
                status=p["status"], reason=p["reason"], request_id=p["request_id"],
                model_version=p.get("model_version"),
                production_version=p.get("production_version"), metric=p.get("metric"),
                candidate_value=p.get("candidate_value"),
                production_value=p.get("production_value"),
                holdout_rows=int(p.get("holdout_rows") or 0), dataset=p.get("dataset"))
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll)


def _set_retrain_policy(client: Any, cfg: DemoConfig) -> None:
    """The demo model's retrain policy: window from the drift on, enough new rows."""
    from modelog.models.policy_events import RetrainPolicySet

    client.emit(RetrainPolicySet(
        id=client.new_id(), time=utcnow(), aggregate=cfg.model,
        producer=client.settings.producer_name, model=cfg.model,
        policy={"window_margin_s": 0.0, "min_labelled_rows": cfg.retrain_rows,
                "gate_min_rows": max(50, cfg.retrain_rows // 10)},
        actor="modelog demo", reason="demo: retrain on the behaviour after the drift"))


def run_demo(
    settings: Settings, cfg: DemoConfig, *, echo: Callable[[str], object] = print,
    progress: bool = True,
) -> dict[str, int]:
    """Run the simulation against the configured broker; return what was sent.

    With ``cfg.retrain``, ``sent["retrain_status"]`` is 1 when the runner
    reported a candidate, 0 otherwise (rejected, failed or no report in
    ``cfg.retrain_timeout`` seconds).
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from modelog.streams.sdk import connect

    world = DemoWorld(cfg)
    sent = {"predictions": 0, "labels": 0}
    with connect(settings=settings) as client:
        ds_table = _training_table(world)
        ds = client.log_dataset(f"{cfg.model}-train", ds_table, description="demo training data")
        echo(f"dataset    {ds.name}@{ds.digest[:12]} ({ds.num_rows} rows)")
        with client.start_run("demo-churn", name="baseline", tags={"demo": "true"}) as run:
            run.use_dataset(ds)
            run.log_params({"rule": "usage + tenure < 0", "threshold": 0.0})
            for step in range(10):
                run.log_metrics({"accuracy": 0.90 + step * 0.005, "loss": 0.4 - step * 0.02},
                                step=step)
        echo(f"run        {run.run_id}")
        echo("registry   waiting for the registry worker (`modelog up` starts it) ...")
        if cfg.auto_promote:  # served through the predictor: a model it can load
            version = client.register_model(
                cfg.model, _baseline_model(ds_table), run=run, dataset=ds, target="churned",
                description="logistic regression on the training data",
                timeout=cfg.registry_timeout)
        else:
            version = client.register_model(
                cfg.model, flavor="custom", run=run, dataset=ds, target="churned",
                description="rule-based churn model", timeout=cfg.registry_timeout)
        client.set_alias(cfg.model, "production", version, reason="demo: first release",
                         timeout=cfg.registry_timeout)
        echo(f"model      {cfg.model} v{version} -> production")
        if cfg.online:
            from river import compose, linear_model, preprocessing

            learner = compose.Pipeline(
                compose.Select("usage", "tenure", "spend"),
                preprocessing.StandardScaler(), linear_model.LogisticRegression())
            challenger = client.register_model(
                cfg.model, learner, online=True, dataset=ds,  # a spec: flavor river-spec
                target="churned", description="online River challenger (learns on the stream)",
                timeout=cfg.registry_timeout)
            client.set_alias(cfg.model, "challenger", challenger,
                             reason="demo: online learner in the shadow of production",
                             timeout=cfg.registry_timeout)
            echo(f"model      {cfg.model} v{challenger} -> challenger (online River model)")
        if cfg.retrain:
            _set_retrain_policy(client, cfg)
            echo(f"policy     {cfg.model}: retrain from the drift on, on >= "
                 f"{cfg.retrain_rows:,} labelled predictions (`modelog policy retrain show "
                 f"{cfg.model}`)")
        serving: RolloutServing | None = None
        if cfg.auto_promote:
            client.set_promotion_policy(cfg.model, reason="demo: promote a winning candidate, "
                                        "roll back a worse one", **promotion_policy())
            echo(f"policy     {cfg.model}: promote the candidate when it wins in shadow, roll "
                 f"back when it does worse (`modelog policy promotion show {cfg.model}`)")
            serving = RolloutServing(client, cfg.model, echo)
        started = utcnow()
        echo(f"streaming  {cfg.predictions:,} predictions at "
             f"{'full speed' if cfg.rate <= 0 else f'{cfg.rate:,.0f}/s'}; "
             f"input drift at prediction {world.feature_drift_at:,}, concept drift at "
             f"{cfg.drift_at:,}")

        def serve(first: int, xs: list[dict[str, float | str]]) -> list[str]:
            if serving is not None:  # users come back: a routing key per user
                return serving.serve(xs, [f"user-{(first + k) % 5_000}" for k in range(len(xs))])
            return [client.log_prediction(cfg.model, version, x, world.predict(x)) for x in xs]

        pending: deque[tuple[int, str, dict[str, float | str]]] = deque()
        start = time.perf_counter()
        columns = (TextColumn("[bold]predictions"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[phase]}"), TimeRemainingColumn())
        chunk = 20 if serving is not None else 1
        try:
            with Progress(*columns, disable=not progress, transient=False) as bar:
                task = bar.add_task("predict", total=cfg.predictions, phase="before drift")
                first, deadline = 0, None
                while True:
                    if first >= cfg.predictions:  # serve on until the policy decided
                        if serving is None or serving.settled(cfg.degrade_at is not None):
                            break
                        if deadline is None:
                            deadline = time.monotonic() + cfg.retrain_timeout
                            echo("serving    on past the planned predictions until the "
                                 "promotion policy decided ...")
                        if time.monotonic() > deadline:
                            break
                        bar.update(task, total=first + chunk)
                    if serving is not None and cfg.degrade_at is not None \
                            and world.degraded_from is None and first >= cfg.degrade_at \
                            and serving.promoted is not None:
                        world.degraded_from = first
                        echo(f"degrade    from prediction {first:,} on, the world turns "
                             f"against v{serving.promoted}")
                    xs = [world.inputs(i) for i in range(
                        first, first + chunk if first >= cfg.predictions
                        else min(first + chunk, cfg.predictions))]
                    for k, pid in enumerate(serve(first, xs)):
                        pending.append((first + k, pid, xs[k]))
                    i = first + len(xs) - 1
                    first += len(xs)
                    sent["predictions"] += len(xs)
                    while pending and pending[0][0] <= i - cfg.label_delay:
                        j, lpid, lx = pending.popleft()
                        if world.rng.random() < cfg.label_share:
                            client.log_label(cfg.model, lpid, world.label(j, lx))
                            sent["labels"] += 1
                    if i % 100 < chunk:
                        bar.update(task, completed=i + 1, phase=_phase(world, i))
                    if cfg.rate > 0:
                        ahead = (i + 1) / cfg.rate - (time.perf_counter() - start)
                        if ahead > 0.002:
                            time.sleep(ahead)
                while pending:
                    j, lpid, lx = pending.popleft()
                    if world.rng.random() < cfg.label_share:
                        client.log_label(cfg.model, lpid, world.label(j, lx))
                        sent["labels"] += 1
                bar.update(task, completed=sent["predictions"], phase="done")
        finally:
            if serving is not None:
                serving.close()
        client.flush()
    echo(f"sent       {sent['predictions']:,} predictions and {sent['labels']:,} labels")
    if cfg.retrain:
        echo(f"retrain    waiting up to {cfg.retrain_timeout:.0f} s for the retrain runner's "
             "report (`modelog up` starts it) ...")
        outcome = wait_for_retrain(settings, cfg.model, started, timeout=cfg.retrain_timeout)
        if outcome is None:
            echo(f"retrain    no report in {cfg.retrain_timeout:.0f} s: is `modelog retrainer` "
                 f"running with a trainer for {cfg.model}? See its log in "
                 f"{settings.data_dir / 'logs'}")
        else:
            for line in outcome.lines(cfg.model):
                echo(line)
        sent["retrain_status"] = int(outcome is not None and outcome.status == "candidate")
    if cfg.auto_promote:
        wanted = ["promote", "rollback"] if cfg.degrade_at is not None else ["promote"]
        echo(f"rollout    waiting up to {cfg.retrain_timeout:.0f} s for the policy's "
             f"decisions ({', '.join(wanted)}) ...")
        decisions = wait_for_decisions(settings, cfg.model, started, wanted,
                                       timeout=cfg.retrain_timeout)
        for d in decisions:
            echo(d.line(cfg.model))
        applied = [d.action for d in decisions if d.outcome == "applied"]
        sent["rollout_status"] = int(applied[:len(wanted)] == wanted)
        echo(f"           history: modelog registry show {cfg.model}")
    return sent


def _phase(world: DemoWorld, i: int) -> str:
    if world.degraded_from is not None and i >= world.degraded_from:
        return "degraded"
    return "after drift" if i >= world.cfg.drift_at else "before drift"


def _baseline_model(table: Any) -> Any:
    """Version 1 when served through the predictor: fitted on the training data."""
    from modelog.streams.demo_trainer import churn_pipeline

    features = table.drop_columns(["churned"])
    return churn_pipeline(features.schema).fit(features.to_pandas(),
                                               table.column("churned").to_pandas())
