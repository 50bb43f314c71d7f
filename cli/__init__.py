"""The ``modelog`` command line: the root app, its global options and ``main``.

Every component of modelog runs from here, configured by ``MODELOG_*``
environment variables or the global flags (flags win)::

    modelog up                       # broker + worker + projector + dashboard
    modelog demo --predictions 20000 --drift-at 10000
    modelog query "select * from alerts"

The commands live by family: :mod:`modelog.cli.services` (broker, worker,
project, dashboard, up, deliver, demo), :mod:`modelog.cli.lifecycle` (runs,
datasets, lineage, registry, schemas), :mod:`modelog.cli.monitoring` (monitor,
alerts) and :mod:`modelog.cli.operations` (query, topics, archive, bench); the
helpers they share are in :mod:`modelog.cli.common`. This is the top layer: it
may import all of modelog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelog.cli import (
    lifecycle,
    mlflow,
    monitoring,
    operations,
    registry,
    replay,
    retrain,
    rollout,
    services,
    traffic,
)
from modelog.cli.common import exit_on_error
from modelog.config import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="modelog",
    help=(
        "Event-sourced ML model management. Every fact -- datasets, runs, registrations, "
        "alias changes, predictions, labels, alerts -- is an event in Kafka; DuckDB views and "
        "the dashboard are derived from that log.\n\n"
        "Quickstart: `modelog up` in one terminal, `modelog demo` in another, then open the "
        "dashboard URL it prints."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

# In the order `modelog --help` lists them: commands first, then the groups.
for _command in (services.broker, services.worker, services.project, services.dashboard,
                 services.up, services.demo, operations.query, services.deliver,
                 operations.topics, operations.bench, lifecycle.lineage,
                 retrain.retrainer, retrain.retrain, replay.replay):
    app.command()(_command)
app.command("mlflow-server")(mlflow.mlflow_server)
for _name, _group in (("schemas", lifecycle.schemas_app), ("alerts", monitoring.alerts_app),
                      ("monitor", monitoring.monitor_app), ("archive", operations.archive_app),
                      ("runs", lifecycle.runs_app), ("datasets", lifecycle.datasets_app),
                      ("registry", registry.registry_app), ("traffic", traffic.traffic_app)):
    app.add_typer(_group, name=_name)
policy_app = typer.Typer(help="Per-model policies of the closed loop, stored as events.",
                         no_args_is_help=True)
policy_app.add_typer(retrain.retrain_policy_app, name="retrain")
policy_app.add_typer(rollout.promotion_policy_app, name="promotion")
app.add_typer(policy_app, name="policy")

BrokerOpt = Annotated[
    str | None,
    typer.Option("--broker", "-b", envvar="MODELOG_BROKER", show_envvar=True,
                 help="Kafka bootstrap servers host:port[,...]. Default: the embedded broker "
                      "started by `modelog up`/`modelog broker` for this data dir, else "
                      "127.0.0.1:9092."),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", "-d", envvar="MODELOG_DATA_DIR", show_envvar=True,
                 help="Where DuckDB, artifacts and runtime files live. [default: ./.modelog]"),
]
PrefixOpt = Annotated[
    str | None,
    typer.Option("--topic-prefix", envvar="MODELOG_TOPIC_PREFIX", show_envvar=True,
                 help="Prefix of every topic. [default: modelog.]"),
]


@app.callback()
def _root(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    data_dir: DataDirOpt = None,
    topic_prefix: PrefixOpt = None,
) -> None:
    """Global options apply to every command (security settings: see `MODELOG_*` in README)."""
    with exit_on_error():
        ctx.obj = Settings.from_env(broker=broker, data_dir=data_dir, topic_prefix=topic_prefix)


def main() -> None:
    """Entry point of the ``modelog`` console script.

    A command that ``modelog up`` started stops with what it started when ``up``
    is gone, even after a ``kill -9`` of ``up`` alone
    (:func:`~modelog.streams.supervisor.follow_supervisor`).
    """
    from modelog.streams.supervisor import follow_supervisor

    follow_supervisor()
    app()
