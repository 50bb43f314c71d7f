"""The retrain commands: ``modelog retrainer`` (the runner) and ``modelog retrain`` (by hand).

The runner's trainers come from its own configuration only -- ``--trainer
model=package.module:function`` (repeatable), ``MODELOG_TRAINERS`` (the same,
comma-separated) and the ``modelog.trainers`` entry points of installed
packages -- never from an event. Top layer: may import all of modelog.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from modelog.cli.common import checked_name, exit_on_error, settings_of

__all__ = ["retrain", "retrain_policy_app", "retrainer"]

retrain_policy_app = typer.Typer(
    help="A model's retrain policy (when it asks for retraining, how candidates are gated), "
         "stored as RetrainPolicySet events on the monitoring topic: the worker's retrain "
         "trigger applies it, the retrain runner gates with it.", no_args_is_help=True)

_KEYS_HELP = (
    "Keys: on_concept_drift (true/false), data_drift_sustained (a count of checks, or a "
    "duration), metric_floor, metric_name, higher_is_better, metric_sustained, schedule, "
    "cooldown, window_margin (durations: 90, 45s, 30m, 2h, 7d; or *_s in seconds), "
    "min_labelled_rows, gate_metric (accuracy, f1, mae), gate_margin, gate_min_rows. "
    "`none` switches a rule off or leaves a gate setting to the runner's options.")


@retrain_policy_app.command("set", help=(
    "Set MODEL's retrain policy from KEY=VALUE pairs (keys left out keep the defaults; a "
    "new `set` replaces the whole policy). Checked before it is sent. " + _KEYS_HELP
    + " Example: `modelog policy retrain set churn cooldown=6h data_drift_sustained=3 "
      "gate_metric=f1 gate_margin=0.01`"))
def policy_set(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model.", callback=checked_name)],
    pairs: Annotated[list[str], typer.Argument(
        help="KEY=VALUE pairs, e.g. cooldown=2h gate_metric=f1.", metavar="KEY=VALUE...")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
) -> None:
    from modelog.models.retrain import parse_retrain_policy
    from modelog.models.retrain_input import parse_assignments
    from modelog.streams.sdk import connect

    with exit_on_error():
        data = parse_assignments(pairs, model)
        parse_retrain_policy(model, data)  # refuse before connecting
        with connect(settings=settings_of(ctx)) as client:
            event = client.set_retrain_policy(model, reason=reason, **data)
    typer.echo(f"set        retrain policy of {model}: "
               + ", ".join(f"{k}={_show(v)}" for k, v in event.policy.items())
               + f" (event {event.id})")


@retrain_policy_app.command("reset", help=(
    "Reset MODEL's retrain policy to the deployment's defaults (an empty RetrainPolicySet)."))
def policy_reset(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model.", callback=checked_name)],
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
) -> None:
    from modelog.streams.sdk import connect

    with exit_on_error(), connect(settings=settings_of(ctx)) as client:
        event = client.reset_retrain_policy(model, reason=reason)
    typer.echo(f"reset      retrain policy of {model} to the defaults (event {event.id})")


@retrain_policy_app.command("show", help=(
    "Show the retrain policy in force for MODEL (read from the projected ledger: "
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
        event = client.retrain_policy_set(model)
        policy = client.retrain_policy(model).as_params()
    set_keys = set(event.policy) if event is not None else set()
    if as_json:
        typer.echo(json.dumps({"model": model, "policy": policy, "set": sorted(set_keys),
                               "event": None if event is None else event.id}))
        return
    if event is None or not event.policy:
        typer.echo(f"retrain policy of {model}: the defaults"
                   + ("" if event is None else f" (reset by {event.actor or '?'} at "
                      f"{event.time.isoformat()})"))
    else:
        typer.echo(f"retrain policy of {model}: set by {event.actor or '?'} at "
                   f"{event.time.isoformat()}" + (f" ({event.reason})" if event.reason else ""))
    for key, value in policy.items():
        mark = "set" if key in set_keys else "default"
        typer.echo(f"  {key:<18} {_show(value):<12} {mark}")


def _show(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def retrainer(
    ctx: typer.Context,
    trainer: Annotated[list[str] | None, typer.Option(
        "--trainer", "-t", help="MODEL=package.module:function: the trainer of MODEL "
                                "(repeatable; wins over MODELOG_TRAINERS and the "
                                "'modelog.trainers' entry points).")] = None,
    timeout: Annotated[float, typer.Option(
        help="Seconds a trainer may run before its process is killed and the job "
             "recorded failed.")] = 600.0,
    concurrency: Annotated[int, typer.Option(help="Jobs running at once.")] = 1,
    min_rows: Annotated[int, typer.Option(
        help="Fewest labelled predictions in the window for a job to train.")] = 200,
    holdout: Annotated[float, typer.Option(
        help="Share of the labelled traffic, the most recent, kept as the holdout.")] = 0.2,
    min_holdout_rows: Annotated[int, typer.Option(
        help="Fewest holdout rows for the gate to pass.")] = 50,
    metric: Annotated[str | None, typer.Option(
        help="Gate metric: accuracy, f1 or mae (default: accuracy for classes, mae for "
             "numbers).")] = None,
    margin: Annotated[float, typer.Option(
        help="How much better than production the candidate must be on the holdout.")]
    = 0.0,
    io_retries: Annotated[int, typer.Option(
        help="Times a job's transient I/O failure (broker unavailable, query server not "
             "reachable or 5xx) is retried, with exponential backoff from 1 s (at most 30 s "
             "a wait), before the job is recorded failed.")] = 5,
    label_wait: Annotated[float, typer.Option(
        help="Seconds a job waits for labelled traffic since its window's start when the "
             "window holds too few labelled rows (a drift is detected long before the new "
             "behaviour is labelled); the window then ends when there were enough.")] = 600.0,
) -> None:
    """Run the retrain runner: one job per `RetrainRequested` (exactly once in effect), each
    trainer in its own process; registers the candidate and gives it the `candidate` alias
    only when it beats production on the holdout. Never touches `production`. A model's
    retrain policy (`modelog policy retrain set`) overrides --metric, --margin,
    --min-holdout-rows and --min-rows for that model's requests.

    Example: `modelog retrainer --trainer demo-churn=my_pkg.train:fit`"""
    from modelog.models.retrain_job import JobPolicy
    from modelog.streams.retrainer import configured_trainers, run_retrainer

    with exit_on_error():
        trainers = configured_trainers(trainer or ())
        policy = JobPolicy(min_labelled_rows=min_rows, holdout_share=holdout,
                           min_holdout_rows=min_holdout_rows, metric=metric, margin=margin)
        for ref in trainers.values():
            typer.echo(f"trainer    {ref.model} = {ref.target} (from {ref.source})")
        run_retrainer(settings_of(ctx), trainers, policy=policy, timeout=timeout,
                      concurrency=concurrency, io_retries=io_retries, label_wait=label_wait)


_JOB_KEYS = ("min_labelled_rows", "gate_metric", "gate_margin", "gate_min_rows")
"""The keys of a model's retrain policy that a job uses (the rest say when to ask)."""


def _time(value: str | None, option: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time (e.g. "
                                 "2026-03-01T12:00:00+00:00)", param_hint=option) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def retrain(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model to retrain.", callback=checked_name)],
    start: Annotated[str | None, typer.Option(
        "--from", help="Start of the window of labelled traffic (ISO 8601; UTC when no "
                       "offset). Default: all of it.")] = None,
    end: Annotated[str | None, typer.Option(
        "--to", help="End of the window (ISO 8601). Default: now.")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    min_rows: Annotated[int | None, typer.Option(
        help="Override the runner's minimum of labelled predictions.")] = None,
) -> None:
    """Request a retrain by hand: emits a `RetrainRequested`, which `modelog retrainer`
    handles like one a drift triggered. The gate settings of the model's retrain policy
    (`modelog policy retrain set`), when the ledger has one, go with the request."""
    from modelog.models.events import Scalar
    from modelog.store.errors import StoreError
    from modelog.streams.retrainer import request_retrain
    from modelog.streams.sdk import connect

    t0, t1 = _time(start, "--from"), _time(end, "--to")
    with exit_on_error(), connect(settings=settings_of(ctx)) as client:
        policy: dict[str, Scalar] = {}
        try:  # the policy in force, when something was projected
            params = client.retrain_policy(model).as_params()
            policy = {k: v for k in _JOB_KEYS if (v := params[k]) is not None}
        except StoreError:
            pass
        if min_rows is not None:
            policy["min_labelled_rows"] = min_rows
        request = request_retrain(client, model, start=t0, end=t1, reason=reason,
                                  policy=policy)
    typer.echo(f"requested  retrain of {model}: request {request.id}")
