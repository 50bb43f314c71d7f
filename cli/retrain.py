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

from modelog.cli.common import exit_on_error, settings_of

__all__ = ["retrain", "retrain_policy_app", "retrainer"]

retrain_policy_app = typer.Typer(
    help="A model's retrain policy (when it asks for retraining, how candidates are gated), "
         "stored as RetrainPolicySet events.", no_args_is_help=True)


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
) -> None:
    """Run the retrain runner: one job per `RetrainRequested` (exactly once in effect), each
    trainer in its own process; registers the candidate and gives it the `candidate` alias
    only when it beats production on the holdout. Never touches `production`.

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
                      concurrency=concurrency)


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
    model: Annotated[str, typer.Argument(help="The model to retrain.")],
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
    handles like one a drift triggered."""
    from modelog.models.events import Scalar
    from modelog.streams.retrainer import request_retrain
    from modelog.streams.sdk import connect

    t0, t1 = _time(start, "--from"), _time(end, "--to")
    with exit_on_error(), connect(settings=settings_of(ctx)) as client:
        policy: dict[str, Scalar] = {} if min_rows is None else {"min_labelled_rows": min_rows}
        request = request_retrain(client, model, start=t0, end=t1, reason=reason,
                                  policy=policy)
    typer.echo(f"requested  retrain of {model}: request {request.id}")
