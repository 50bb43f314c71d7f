"""Traffic policy commands: ``modelog traffic set|show``.

``set`` sends a ``TrafficPolicyRequested`` command and waits for the registry
worker's answer (``client.set_traffic``); ``show`` reads the live registry topic.

Top layer: may import all of modelog.
"""

from __future__ import annotations

from typing import Annotated

import typer

from modelog.cli.common import cell, checked_name, exit_on_error, settings_of

__all__ = ["traffic_app"]

traffic_app = typer.Typer(
    help="How predictors route a model's requests between aliases (A/B weights, shadows).",
    no_args_is_help=True)


@traffic_app.command("set")
def traffic_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The model.", callback=checked_name)],
    arms: Annotated[list[str], typer.Argument(
        help="ALIAS=WEIGHT for each arm, e.g. production=0.9 candidate=0.1.")],
    shadow: Annotated[list[str] | None, typer.Option(
        "--shadow", "-s", help="An alias scored on the same inputs, never returned "
                               "(repeatable).")] = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept with the policy).")
                      ] = "",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the registry's answer.")
                       ] = 30.0,
) -> None:
    """Route NAME's requests between aliases by weight (sticky per routing key), with
    optional shadows. Checked by the registry worker: every alias must be set.

        modelog traffic set churn production=0.9 candidate=0.1 --shadow challenger
    """
    from modelog.models.traffic import parse_arms
    from modelog.streams.sdk import connect

    with exit_on_error():
        weights = parse_arms(arms)
        with connect(settings=settings_of(ctx)) as client:
            answer = client.set_traffic(name, weights, shadows=shadow or (), reason=reason,
                                        timeout=timeout)
    typer.echo(f"traffic of {name}: " + " ".join(f"{a}={w:g}" for a, w in answer.arms.items())
               + (f" shadows={','.join(answer.shadows)}" if answer.shadows else ""))


@traffic_app.command("show")
def traffic_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The model.", callback=checked_name)],
) -> None:
    """The traffic policy in force for NAME, and the version behind each alias it names."""
    from modelog.streams.sdk import connect

    with exit_on_error(), connect(settings=settings_of(ctx)) as client:
        state = client.registry(name)
    policy = state.traffic(name)
    aliases = state.aliases(name)
    if not state.versions(name):
        typer.echo(f"model {name} is not registered", err=True)
        raise typer.Exit(1)
    origin = (f"set {cell(policy.since)} by {policy.actor or 'unknown'}"
              + (f": {policy.reason}" if policy.reason else "")
              if policy.since is not None else "the default (never set)")
    typer.echo(f"traffic of {name}: {policy} -- {origin}")
    total = sum(w for _, w in policy.arms) or 1.0
    for alias, weight in policy.arms:
        info = aliases.get(alias)
        behind = f"v{info.version}" if info is not None else "NOT SET (skipped)"
        typer.echo(f"  arm    {alias:<14} {weight / total:7.1%}  -> {behind}")
    for alias in policy.shadows:
        info = aliases.get(alias)
        behind = f"v{info.version}" if info is not None else "NOT SET (skipped)"
        typer.echo(f"  shadow {alias:<14} {'':7}  -> {behind}")
