"""Watching models in production: ``monitor configure/show/reset``, ``monitor backtest``
and the ``alerts`` webhooks.

Imports :mod:`modelog.cli.common` and, inside each command, :mod:`modelog.store`
(backtests, the configuration in force) or :mod:`modelog.streams` (subscriptions,
sending a configuration).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from modelog.cli.common import checked_name, exit_on_error, fail, settings_of
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


# -- monitor configuration -----------------------------------------------------------------
def _assignments(pairs: list[str], model: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as settings: JSON values (0.3, false, {"a": 1}), else strings."""
    from modelog.models.errors import COMMAND_LINE, MonitorConfigError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise MonitorConfigError(pair, pair, "write settings as KEY=VALUE, e.g. "
                                     "psi_threshold=0.3 anomaly=false pending_ttl=2h", model,
                                     source=COMMAND_LINE)
        try:
            value: Any = json.loads(raw)
        except (ValueError, RecursionError):
            value = raw
        out[key.strip()] = value
    return out


_VERSION_OPT = Annotated[int | None, typer.Option(
    "--version", help="Only this model version (default: the whole model).")]


@monitor_app.command("configure", help=(
    "Set monitor settings of MODEL (or one --version) from KEY=VALUE pairs, on top of those "
    "in force; checked before anything is sent (a bad one names the setting, the value and "
    "the rule). Keys: the flat settings of a MonitorConfigured, e.g. psi_threshold, "
    "check_every, drift_window, training_reference, outliers, outlier_margin, anomaly, "
    "detector. Example: `modelog monitor configure churn --version 3 psi_threshold=0.3 "
    "outlier_margin=5`"))
def monitor_configure(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model.", callback=checked_name)],
    pairs: Annotated[list[str], typer.Argument(
        help="KEY=VALUE pairs (JSON values, else strings).", metavar="KEY=VALUE...")],
    version: _VERSION_OPT = None,
) -> None:
    from modelog.models.errors import COMMAND_LINE
    from modelog.models.monitor_config import parse_monitor_config
    from modelog.models.quality_config import parse_quality_config
    from modelog.streams.sdk import connect

    with exit_on_error():
        settings = _assignments(pairs, model)
        parse_monitor_config(settings, model=model, source=COMMAND_LINE)  # before connecting
        parse_quality_config(settings, model=model, source=COMMAND_LINE)
        with connect(settings=settings_of(ctx)) as client:
            event = client.configure_monitor(model, version, **settings)
    target = model if version is None else f"{model} v{version}"
    typer.echo(f"configured monitor of {target}: "
               + ", ".join(f"{k}={json.dumps(v)}" for k, v in event.config.items())
               + f" (event {event.id})")


@monitor_app.command("reset", help=(
    "Return MODEL (all its versions) or one --version to the default monitor settings."))
def monitor_reset(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model.", callback=checked_name)],
    version: _VERSION_OPT = None,
) -> None:
    from modelog.streams.sdk import connect

    with exit_on_error(), connect(settings=settings_of(ctx)) as client:
        event = client.reset_monitor(model, version)
    target = model if version is None else f"{model} v{version}"
    typer.echo(f"reset monitor of {target} to the defaults (event {event.id})")


@monitor_app.command("show", help=(
    "Show the monitor configuration in force for MODEL (or one --version), replayed from "
    "the projected ledger (`modelog project` or `modelog up` must have run): the settings "
    "set, then every setting in force."))
def monitor_show(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model.", callback=checked_name)],
    version: _VERSION_OPT = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    from modelog.cli.common import reader_of
    from modelog.store.monitor_configs import monitor_config_in_force

    with exit_on_error():
        view = monitor_config_in_force(reader_of(ctx), model, version)
    if as_json:
        typer.echo(json.dumps(view.to_dict(), default=str))
        return
    target = model if version is None else f"{model} v{version}"
    typer.echo(f"monitor of {target}: " + (
        f"{len(view.settings)} setting(s) set by {view.events} configuration(s)"
        if view.settings else "the defaults"))
    if view.versions and version is None:
        typer.echo("  versions with their own settings: "
                   + ", ".join(f"v{v}" for v in view.versions))
    for key, value in view.config.items():
        if key == "reference" and value:
            value = f"<profile of {len(value.get('columns', value))} columns>"
        mark = "set" if key in view.settings else "default"
        typer.echo(f"  {key:<24} {json.dumps(value, default=str):<24} {mark}")
    for event_id, reason in view.rejected:
        typer.echo(f"  refused {event_id}: {reason}")
