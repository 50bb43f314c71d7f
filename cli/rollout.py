"""Promotion and rollback policy commands: ``modelog policy promotion set|show|reset``.

Top layer: may import all of modelog.
"""

from __future__ import annotations

from typing import Annotated

import typer

from modelog.cli.common import checked_name, exit_on_error, settings_of

__all__ = ["promotion_policy_app"]

promotion_policy_app = typer.Typer(
    help="A model's promotion and automatic rollback policy, stored as PromotionPolicySet "
         "events on the monitoring topic: the worker compares challengers with production on "
         "the same traffic, promotes a significant winner and rolls back a worse production.",
    no_args_is_help=True)

_KEYS_HELP = (
    "Keys: challenger (alias, default candidate), alpha (0.05), min_pairs (500), min_effect "
    "(0), promote (true), rollback (true), rollback_min (200), rollback_window (5000), "
    "max_error (none: error rate or MAE alarm), cooldown_s (3600), report_every (100).")


def _pairs(model: str, pairs: list[str]) -> dict[str, str]:
    from modelog.models.errors import PromotionPolicyError

    data: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PromotionPolicyError(model, pair, pair, "write KEY=VALUE, e.g. alpha=0.01")
        data[key.strip()] = value.strip()
    return data


def _show(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@promotion_policy_app.command("set", help=(
    "Turn on MODEL's gated promotion and automatic rollback with KEY=VALUE settings (keys "
    "left out keep the defaults; a new `set` replaces the whole policy). Checked before it "
    "is sent. " + _KEYS_HELP + " Example: `modelog policy promotion set churn alpha=0.01 "
    "min_pairs=1000 max_error=0.3`"))
def policy_set(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model.", callback=checked_name)],
    pairs: Annotated[list[str], typer.Argument(
        help="KEY=VALUE pairs, e.g. alpha=0.01 min_pairs=1000.", metavar="KEY=VALUE...")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
) -> None:
    from modelog.models.rollout_policy import parse_promotion_policy
    from modelog.streams.sdk import connect

    with exit_on_error():
        data = _pairs(model, pairs)
        parse_promotion_policy(model, data)  # refuse before connecting
        with connect(settings=settings_of(ctx)) as client:
            event = client.set_promotion_policy(model, reason=reason, **data)
    typer.echo(f"set        promotion policy of {model}: "
               + ", ".join(f"{k}={_show(v)}" for k, v in event.policy.items())
               + f" (event {event.id})")


@promotion_policy_app.command("reset", help=(
    "Turn MODEL's automatic promotion and rollback off (an empty PromotionPolicySet); "
    "comparisons are still reported."))
def policy_reset(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model.", callback=checked_name)],
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
) -> None:
    from modelog.streams.sdk import connect

    with exit_on_error(), connect(settings=settings_of(ctx)) as client:
        event = client.reset_promotion_policy(model, reason=reason)
    typer.echo(f"reset      promotion policy of {model}: automatic decisions off "
               f"(event {event.id})")


@promotion_policy_app.command("show", help=(
    "Show the promotion policy in force for MODEL (read from the projected ledger: "
    "`modelog project` or `modelog up` must have run): every key, and whether it was set "
    "or is the default."))
def policy_show(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model.", callback=checked_name)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    import json

    from modelog.streams.sdk import connect

    with exit_on_error(), connect(settings=settings_of(ctx)) as client:
        event = client.promotion_policy_set(model)
        policy = client.promotion_policy(model)
    params = None if policy is None else policy.as_params()
    set_keys = set(event.policy) if event is not None else set()
    if as_json:
        typer.echo(json.dumps({"model": model, "policy": params, "set": sorted(set_keys),
                               "event": None if event is None else event.id}))
        return
    if params is None:
        typer.echo(f"promotion policy of {model}: off (comparisons only)"
                   + ("" if event is None else f"; reset by {event.actor or '?'} at "
                      f"{event.time.isoformat()}"))
        return
    assert event is not None
    typer.echo(f"promotion policy of {model}: set by {event.actor or '?'} at "
               f"{event.time.isoformat()}" + (f" ({event.reason})" if event.reason else ""))
    for key, value in params.items():
        typer.echo(f"  {key:<16} {_show(value):<12} {'set' if key in set_keys else 'default'}")
