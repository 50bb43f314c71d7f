"""Watching models in production: ``monitor backtest`` and the ``alerts`` webhooks.

Imports :mod:`modelog.cli.common` and, inside each command, :mod:`modelog.store`
(backtests) or :mod:`modelog.streams` (subscriptions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from modelog.cli.common import exit_on_error, fail, settings_of
from modelog.errors import ModelogError

__all__ = ["alerts_app", "monitor_app"]

alerts_app = typer.Typer(help="Alert subscriptions: webhooks that receive alerts.",
                         no_args_is_help=True)
monitor_app = typer.Typer(help="Monitoring configuration and backtests.", no_args_is_help=True)


# -- alerts ------------------------------------------------------------------------------
@alerts_app.command("subscribe")
def alerts_subscribe(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Webhook URL (http or https) to POST alerts to.")],
    model: Annotated[list[str] | None, typer.Option(
        "--model", "-m", help="Only alerts of this model (repeatable; default: all).")] = None,
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", "-k", help="Only this alert type or kind, e.g. DriftDetected, concept, "
                             "anomaly (repeatable; default: all).")] = None,
    min_severity: Annotated[str, typer.Option(
        help="info, warning or critical.")] = "info",
    secret: Annotated[str | None, typer.Option(
        help="Sign requests with HMAC-SHA256 of the timestamp and body (Modelog-Signature: "
             "t=...,v1=...); stored encrypted with MODELOG_SECRET_KEY, which must be set.")
    ] = None,
    allow_private: Annotated[bool, typer.Option(
        "--allow-private", help="Accept a URL that reaches a loopback, private or link-local "
                                "address (the delivery worker also needs "
                                "MODELOG_WEBHOOK_ALLOW_PRIVATE=1).")] = False,
) -> None:
    """Subscribe a webhook to alerts; prints the subscription id.

    The URL must reach public addresses only, unless --allow-private.

    Example: `modelog alerts subscribe https://hooks.example/ml --model churn --kind concept`
    """
    from modelog.streams.subscriptions import subscribe

    with exit_on_error():
        sid = subscribe(settings_of(ctx), url, models=tuple(model or ()), kinds=tuple(kind or ()),
                        min_severity=min_severity, secret=secret, allow_private=allow_private)
    typer.echo(sid)


@alerts_app.command("unsubscribe")
def alerts_unsubscribe(
    ctx: typer.Context,
    subscription_id: Annotated[str, typer.Argument(help="Id printed by `alerts subscribe`.")],
) -> None:
    """Remove a subscription (no further deliveries)."""
    from modelog.streams.subscriptions import unsubscribe

    with exit_on_error():
        unsubscribe(settings_of(ctx), subscription_id)
    typer.echo(f"removed {subscription_id}")


@alerts_app.command("subscriptions")
def alerts_subscriptions(ctx: typer.Context) -> None:
    """List the active subscriptions."""
    from modelog.streams.subscriptions import list_subscriptions

    with exit_on_error():
        subs = list_subscriptions(settings_of(ctx))
    if not subs:
        typer.echo("no subscriptions; add one with `modelog alerts subscribe URL`")
    for sub in subs:
        scope = ", ".join(sub.models) or "all models"
        kinds = ", ".join(sub.kinds) or "all kinds"
        typer.echo(f"{sub.subscription_id}  {sub.url}  [{scope}; {kinds}; "
                   f">= {sub.min_severity}]")


# -- monitor -----------------------------------------------------------------------------
def _parse_time(value: str | None, option: str) -> Any:
    if value is None:
        return None
    import datetime as dt

    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        fail(ModelogError(f"{option} {value!r} is not an ISO date or time "
                          "(e.g. 2026-03-03 or 2026-03-03T14:00:00+00:00)"))
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


@monitor_app.command("backtest")
def monitor_backtest(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model whose recorded traffic to replay.")],
    config: Annotated[Path, typer.Option("--config", "-c", help="Candidate monitor "
                                         "configuration (TOML or YAML).")],
    start: Annotated[str | None, typer.Option("--from", help="Replay from this time.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Replay up to this time.")] = None,
    compare_with: Annotated[Path | None, typer.Option(
        "--compare", help="A second configuration to compare against --config.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
    = False,
) -> None:
    """Replay a model's recorded predictions and labels through a candidate monitor
    configuration and report which alerts it would have raised, and when -- next to the
    alerts raised live. Nothing live is touched.

    Example: `modelog monitor backtest churn --config strict.toml --compare current.toml`
    """
    from rich.progress import Progress

    from modelog.store.backtest import backtest, compare, load_monitor_config
    from modelog.store.reader import Reader

    t0, t1 = _parse_time(start, "--from"), _parse_time(end, "--to")
    with exit_on_error():
        cfg = load_monitor_config(config)
        reader = Reader(settings_of(ctx))
        with Progress(transient=True, disable=as_json) as bar:
            task = bar.add_task("replaying", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if compare_with is not None:
                other = load_monitor_config(compare_with)
                result: Any = compare(reader, model, cfg, other, start=t0, end=t1,
                                      progress=progress)
            else:
                result = backtest(reader, model, cfg, start=t0, end=t1, progress=progress)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), default=str, indent=2))
    else:
        typer.echo(result.render())
