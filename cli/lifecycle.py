"""What happened to models and data: ``runs``, ``datasets``, ``lineage`` and
``schemas`` (the event catalogue for non-Python producers); the registry's
commands are in :mod:`modelog.cli.registry`.

Imports :mod:`modelog.cli.common` and, inside each command, :mod:`modelog.store`
or :mod:`modelog.models`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from modelog.cli.common import (
    AsOfOpt,
    FormatOpt,
    cell,
    exit_on_error,
    fail,
    print_frame,
    reader_of,
)
from modelog.errors import ModelogError

__all__ = ["datasets_app", "lineage", "runs_app", "schemas_app"]

schemas_app = typer.Typer(help="JSON Schemas of the event catalogue, for non-Python producers.",
                          no_args_is_help=True)
runs_app = typer.Typer(help="Tracked runs: search, inspect and compare (like `mlflow runs`).",
                       no_args_is_help=True)
datasets_app = typer.Typer(help="Versioned datasets: list versions and diff their profiles.",
                           no_args_is_help=True)


# -- schemas ------------------------------------------------------------------------
@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write <Type>.json files into.")],
) -> None:
    """Write one JSON Schema per event type (with its topic in `x-modelog-topic`)."""
    from modelog.models.codec import json_schemas

    directory.mkdir(parents=True, exist_ok=True)
    schemas = json_schemas()
    for name, schema in schemas.items():
        (directory / f"{name}.json").write_text(json.dumps(schema, indent=2) + "\n")
    typer.echo(f"wrote {len(schemas)} schemas to {directory}")


@schemas_app.command("list")
def schemas_list() -> None:
    """List event types with their schema version and topic."""
    from modelog.models.events import CATALOGUE

    for name, cls in CATALOGUE.items():
        typer.echo(f"{name:28} v{cls.current_version()}  {cls.stream}")


# -- runs --------------------------------------------------------------------------------
@runs_app.command("list")
def runs_list(
    ctx: typer.Context,
    filter_: Annotated[str, typer.Option("--filter", help=(
        "MLflow-style filter, e.g. \"metrics.f1 > 0.8 and params.model = 'rf'\"; fields: "
        "metrics.<k>, params.<k>, tags.<k>, status, name, experiment, started, ended."))] = "",
    order_by: Annotated[list[str] | None, typer.Option(
        "--order-by", help="e.g. \"metrics.f1 DESC\" (repeatable); default: newest first.")
    ] = None,
    experiment: Annotated[str | None, typer.Option(help="Only this experiment's runs.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs.")] = 100,
    fmt: FormatOpt = "table",
    as_of: AsOfOpt = None,
) -> None:
    """Search runs; params and latest metrics become `params.<k>`/`metrics.<k>` columns.

    Examples:

        modelog runs list --filter "metrics.f1 > 0.8 and status = 'finished'"

        modelog runs list --experiment churn --order-by "metrics.f1 DESC" --limit 5 -F csv
    """
    from modelog.store.queries import list_runs

    with exit_on_error():
        df = list_runs(reader_of(ctx, as_of), filter_, order_by or (), experiment=experiment,
                       limit=limit)
    print_frame(df, fmt, empty="no runs match")


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run id (or a unique prefix of it).")],
    fmt: Annotated[str, typer.Option("--format", "-F", help="text or json.")] = "text",
    as_of: AsOfOpt = None,
) -> None:
    """Everything about one run: attributes, params, latest metrics (and how many points),
    datasets, artifacts, child runs, registered models, code version and failure.

    Example: `modelog runs show 0190f3c2`
    """
    from modelog.store.queries import show_run

    with exit_on_error():
        run = show_run(reader_of(ctx, as_of), run_id)
    if fmt == "json":
        typer.echo(json.dumps(run, default=str, indent=2))
        return
    typer.echo(f"run {run['run_id']}  {run['name'] or ''}".rstrip())
    for key in ("experiment", "status", "started", "ended", "parent_run_id", "producer"):
        if run.get(key) is not None:
            typer.echo(f"  {key:<14}{cell(run[key])}")
    if run["failure"]:
        typer.echo(f"  {'error':<14}{run['failure']['error']}")
        for line in str(run["failure"]["traceback"]).splitlines():
            typer.echo(f"    {line}")
    sections: list[tuple[str, list[str]]] = [
        ("code", [f"{k}: {cell(v)}" for k, v in run["code"].items()]),
        ("tags", [f"{k} = {v}" for k, v in run["tags"].items()]),
        ("params", [f"{k} = {v}" for k, v in run["params"].items()]),
        ("metrics (latest)", [
            f"{k} = {cell(v)}  ({run['metric_history'].get(k, {}).get('points', 0)} points, "
            f"last step {run['metric_history'].get(k, {}).get('last_step')})"
            for k, v in run["metrics"].items()]),
        ("datasets", [f"{d['dataset']}@{d['digest'][:12]} ({d['context']})"
                      for d in run["datasets"]]),
        ("artifacts", [f"{a['path']}  {a['size']} bytes  {a['uri']}" for a in run["artifacts"]]),
        ("children", [f"{c['run_id']}  {c['name'] or ''} ({c['status']})"
                      for c in run["children"]]),
        ("registered as", [f"{m['model']}@v{m['model_version']}" for m in run["models"]]),
    ]
    for title, lines in sections:
        if lines:
            typer.echo(f"{title}:")
            for line in lines:
                typer.echo(f"  {line}")


@runs_app.command("compare")
def runs_compare(
    ctx: typer.Context,
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids (or prefixes).")],
    only_diff: Annotated[bool, typer.Option("--only-diff", help="Hide rows where all runs "
                                                               "agree.")] = False,
    fmt: FormatOpt = "table",
    as_of: AsOfOpt = None,
) -> None:
    """Params and latest metrics side by side, one column per run; `differs` flags rows
    where the runs disagree (a missing value differs).

    Example: `modelog runs compare run-a run-b --only-diff`
    """
    from modelog.store.queries import compare_runs

    with exit_on_error():
        df = compare_runs(reader_of(ctx, as_of), run_ids)
    if only_diff:
        df = df[df["differs"]]
    print_frame(df, fmt)


# -- datasets ----------------------------------------------------------------------------
@datasets_app.command("list")
def datasets_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="A dataset: list its versions.")] = None,
    fmt: FormatOpt = "table",
    as_of: AsOfOpt = None,
) -> None:
    """List datasets (one line each), or the versions of dataset NAME.

    Versions are numbered 1, 2, ... by the first appearance of each content digest;
    logging the same content again creates no version.
    """
    from modelog.store.queries import list_datasets

    with exit_on_error():
        df = list_datasets(reader_of(ctx, as_of), name)
    print_frame(df, fmt, empty="no datasets yet")


@datasets_app.command("diff")
def datasets_diff(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The dataset.")],
    v1: Annotated[str, typer.Argument(help="Old version: number (2, v2) or digest prefix.")],
    v2: Annotated[str, typer.Argument(help="New version: number or digest prefix.")],
    fmt: Annotated[str, typer.Option("--format", "-F", help="text or json.")] = "text",
    as_of: AsOfOpt = None,
) -> None:
    """What changed between two versions: rows, schema, and per-column shifts (PSI).

    Example: `modelog datasets diff churn-train 1 2`
    """
    from modelog.store.queries import dataset_diff

    with exit_on_error():
        diff = dataset_diff(reader_of(ctx, as_of), name, v1, v2)
    if fmt == "json":
        typer.echo(json.dumps(diff.to_dict(), default=str, indent=2))
    else:
        typer.echo(f"{name}: {v1} -> {v2}")
        typer.echo(diff.render().rstrip())


# -- lineage -----------------------------------------------------------------------------
def lineage(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help=(
        "model@vN, model@alias, dataset@N, dataset@<digest prefix>, a run id, git:<commit>, "
        "an alert or retrain request id, or a prediction id with --prediction."))],
    up: Annotated[bool, typer.Option("--up", help="Only what REF came from.")] = False,
    down: Annotated[bool, typer.Option("--down", help="Only what came from REF.")] = False,
    prediction: Annotated[bool, typer.Option(
        "--prediction", help="REF is a prediction id: model version -> run -> datasets.")
    ] = False,
    depth: Annotated[int, typer.Option(help="Hops to follow.")] = 10,
    fmt: Annotated[str, typer.Option("--format", "-F", help="text or json (nodes + edges).")
                   ] = "text",
    as_of: AsOfOpt = None,
) -> None:
    """Where something came from and what came from it: datasets, runs, code commits,
    model versions, alias periods, served predictions, and for a retrained version the
    retrain request and the alert that caused it.

    Examples:

        modelog lineage churn@production --up     # datasets and code behind the serving model

        modelog lineage churn-train@2 --down      # models trained on version 2

        modelog lineage churn@candidate --up      # back to the drift alert and data window

        modelog lineage 0190f3c2-... --prediction # why did this prediction happen
    """
    from modelog.store.lineage import Direction, lineage_of_prediction
    from modelog.store.lineage import lineage as lineage_of

    if up and down:
        fail(ModelogError("give --up or --down, not both (neither shows both directions)"))
    direction: Direction = "up" if up else "down" if down else "both"
    with exit_on_error():
        reader = reader_of(ctx, as_of)
        tree = (lineage_of_prediction(reader, ref, depth=depth) if prediction
                else lineage_of(reader, ref, direction, depth=depth))
    if fmt == "json":
        typer.echo(json.dumps(tree.to_dict(), indent=2))
    else:
        typer.echo(tree.render().rstrip())

