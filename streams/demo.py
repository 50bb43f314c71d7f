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
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import deque
from collections.abc import Callable

from modelog.config import Settings

__all__ = ["DemoConfig", "DemoWorld", "run_demo"]


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


def run_demo(
    settings: Settings, cfg: DemoConfig, *, echo: Callable[[str], object] = print,
    progress: bool = True,
) -> dict[str, int]:
    """Run the simulation against the configured broker; return what was sent."""
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
        ds = client.log_dataset(f"{cfg.model}-train", _training_table(world),
                                description="demo training data")
        echo(f"dataset    {ds.name}@{ds.digest[:12]} ({ds.num_rows} rows)")
        with client.start_run("demo-churn", name="baseline", tags={"demo": "true"}) as run:
            run.use_dataset(ds)
            run.log_params({"rule": "usage + tenure < 0", "threshold": 0.0})
            for step in range(10):
                run.log_metrics({"accuracy": 0.90 + step * 0.005, "loss": 0.4 - step * 0.02},
                                step=step)
        echo(f"run        {run.run_id}")
        echo("registry   waiting for the registry worker (`modelog up` starts it) ...")
        version = client.register_model(cfg.model, flavor="custom", run=run, dataset=ds,
                                        target="churned", description="rule-based churn model",
                                        timeout=cfg.registry_timeout)
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
        echo(f"streaming  {cfg.predictions:,} predictions at "
             f"{'full speed' if cfg.rate <= 0 else f'{cfg.rate:,.0f}/s'}; "
             f"input drift at prediction {world.feature_drift_at:,}, concept drift at "
             f"{cfg.drift_at:,}")

        pending: deque[tuple[int, str, dict[str, float | str]]] = deque()
        start = time.perf_counter()
        columns = (TextColumn("[bold]predictions"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[phase]}"), TimeRemainingColumn())
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task("predict", total=cfg.predictions, phase="before drift")
            for i in range(cfg.predictions):
                x = world.inputs(i)
                pid = client.log_prediction(cfg.model, version, x, world.predict(x))
                sent["predictions"] += 1
                pending.append((i, pid, x))
                while pending and pending[0][0] <= i - cfg.label_delay:
                    j, lpid, lx = pending.popleft()
                    if world.rng.random() < cfg.label_share:
                        client.log_label(cfg.model, lpid, world.label(j, lx))
                        sent["labels"] += 1
                if i % 100 == 0:
                    bar.update(task, completed=i + 1,
                               phase="after drift" if i >= cfg.drift_at else "before drift")
                if cfg.rate > 0:
                    ahead = (i + 1) / cfg.rate - (time.perf_counter() - start)
                    if ahead > 0.002:
                        time.sleep(ahead)
            while pending:
                j, lpid, lx = pending.popleft()
                if world.rng.random() < cfg.label_share:
                    client.log_label(cfg.model, lpid, world.label(j, lx))
                    sent["labels"] += 1
            bar.update(task, completed=cfg.predictions, phase="done")
        client.flush()
    echo(f"sent       {sent['predictions']:,} predictions and {sent['labels']:,} labels")
    return sent
