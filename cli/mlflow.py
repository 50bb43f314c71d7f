"""``modelog mlflow-server``: MLflow's REST API in front of modelog.

The server is :mod:`modelog.streams.mlflow_api`.

Point an unmodified MLflow client at it (``MLFLOW_TRACKING_URI=http://127.0.0.1:5000``):
runs, params, metrics, artifacts, registrations and alias changes become modelog
events. Top layer: may import all of modelog.
"""

from __future__ import annotations

from typing import Annotated

import typer

from modelog.cli.common import exit_on_error, settings_of

__all__ = ["mlflow_server"]


def mlflow_server(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(envvar="MODELOG_MLFLOW_HOST", show_envvar=True,
                                      help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="MODELOG_MLFLOW_PORT", show_envvar=True,
                                      help="Port (mlflow server's default).")] = 5000,
    token: Annotated[str | None, typer.Option(
        envvar="MODELOG_MLFLOW_TOKEN", show_envvar=True, show_default=False,
        help="Bearer token every request must carry (clients: MLFLOW_TRACKING_TOKEN); "
             "required beyond loopback.")] = None,
) -> None:
    """Serve MLflow's tracking and model-registry REST API; every write becomes modelog events.

    `MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python train.py` then logs runs,
    params, metrics and artifacts, registers versions (through the registry worker
    of `modelog worker`/`modelog up`) and moves aliases, all visible in
    `modelog runs list` and `modelog registry show`.
    """
    from modelog.cli.services import _wait_for_signal
    from modelog.streams.mlflow_api import MlflowServer

    s = settings_of(ctx)
    with exit_on_error():
        server = MlflowServer(s, host, port, token=token).start()
    typer.echo(f"MLflow endpoint on {server.url}  (MLFLOW_TRACKING_URI={server.url})")
    try:
        _wait_for_signal(lambda: False)
    finally:
        typer.echo("stopping...")
        server.stop()
