"""Working with the log and the views: ``query``, ``topics``, ``archive`` and ``bench``.

Imports :mod:`modelog.cli.common` and, inside each command, :mod:`modelog.store`
or :mod:`modelog.streams`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from modelog.cli.common import exit_on_error, fail, settings_of
from modelog.errors import ModelogError

__all__ = ["archive_app", "bench", "query", "topics"]

archive_app = typer.Typer(help="The durable archive of the log (the DuckDB ledger).",
                          no_args_is_help=True)


# -- query ---------------------------------------------------------------------------
def query(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="A read-only SQL statement over the views.")],
    fmt: Annotated[str, typer.Option("--format", "-f",
                                     help="table, csv or json (one object per line).")] = "table",
    limit: Annotated[int, typer.Option(help="Rows to print in table format.")] = 50,
) -> None:
    """Ask the DuckDB views, also while the projector runs (it never blocks either side).

    Tables: events, predictions, labels, prediction_quality, alerts, monitor_stats,
    dead_letters, datasets, runs, run_params, run_metrics, model_versions, aliases,
    alias_history.
    """
    from modelog.store.reader import Reader

    with exit_on_error():
        table = Reader(settings_of(ctx)).query(sql)
    if fmt == "csv":
        import pyarrow.csv as pacsv

        buf = __import__("io").BytesIO()
        pacsv.write_csv(table, buf)
        sys.stdout.write(buf.getvalue().decode())
    elif fmt == "json":
        for row in table.to_pylist():
            sys.stdout.write(json.dumps(row, default=str) + "\n")
    elif fmt == "table":
        from rich.console import Console
        from rich.table import Table

        t = Table(show_lines=False)
        for name in table.column_names:
            t.add_column(name)
        for row in table.slice(0, limit).to_pylist():
            t.add_row(*("" if v is None else str(v) for v in row.values()))
        Console().print(t)
        if table.num_rows > limit:
            typer.echo(f"... {table.num_rows - limit} more rows (use --limit or --format csv)")
    else:
        fail(ModelogError(f"--format {fmt!r} is not one of table, csv, json"))


# -- archive -----------------------------------------------------------------------------
@archive_app.command("restore")
def archive_restore(
    ctx: typer.Context,
    stream: Annotated[list[str] | None, typer.Option(
        "--stream", help="Stream family to restore (repeatable); default: all but serving "
                         "traffic and commands.")] = None,
) -> None:
    """Re-publish archived events into a fresh broker's empty topics.

    `modelog up` does this by itself when it starts the embedded (memory-only) broker.
    Topics that already hold records are skipped, so running it twice is harmless.
    """
    from modelog.streams.archive import DEFAULT_STREAMS, restore_to_broker
    from modelog.streams.topics import ensure_topics

    s = settings_of(ctx)
    with exit_on_error():
        ensure_topics(s)
        report = restore_to_broker(s, streams=tuple(stream or DEFAULT_STREAMS))
    for topic, n in report.restored.items():
        typer.echo(f"{topic}: restored {n:,} events")
    for topic, why in report.skipped.items():
        typer.echo(f"{topic}: skipped ({why})")


# -- topics --------------------------------------------------------------------------
def topics(ctx: typer.Context) -> None:
    """Create modelog's topics on the broker (idempotent) and list them."""
    from modelog.streams.topics import Topics, ensure_topics

    s = settings_of(ctx)
    with exit_on_error():
        created = ensure_topics(s)
    for name in Topics.from_settings(s).all():
        typer.echo(f"{name}{'  (created)' if name in created else ''}")


# -- bench ----------------------------------------------------------------------------
def bench(
    ctx: typer.Context,
    predictions: Annotated[int, typer.Option(help="Predictions to send from one process.")]
    = 200_000,
    projector_events: Annotated[int, typer.Option(help="Events to push through the projector.")]
    = 200_000,
    projector_sustained: Annotated[int, typer.Option(
        help="Events of the sustained projector run, timed until DuckDB's final checkpoint "
             "(0 skips it).")] = 1_000_000,
    tracking: Annotated[bool, typer.Option(
        "--tracking", help="Also benchmark experiment tracking against MLflow: 100,000 "
                           "metrics and a filtered search over 10,000 runs (installs MLflow "
                           "once into its own venv under the data dir).")] = False,
    worker: Annotated[bool, typer.Option(
        "--worker", help="Also benchmark the monitoring worker: predictions/s through one "
                         "worker process with every monitor on, and the alert latency on "
                         "live drifting traffic (median, p99).")] = False,
    worker_predictions: Annotated[int, typer.Option(
        help="Predictions (each labelled) in the worker benchmark's backlog.")] = 100_000,
    failover: Annotated[bool, typer.Option(
        "--failover", help="Also measure the worker's failover: seconds from kill -9 of a "
                           "worker under load (2,000 serving records/s) to the first "
                           "monitoring output of the replacement `modelog up` starts.")]
    = False,
) -> None:
    """Measure the SDK (predictions/s, cost per log_prediction call) and the projector
    (events/s into DuckDB); optionally experiment tracking against MLflow (--tracking) and
    the monitoring worker (--worker) and its failover (--failover). Uses a fresh embedded
    broker unless --broker is given."""
    import tempfile

    from modelog.streams.bench.projector import bench_projector
    from modelog.streams.bench.sdk import bench_sdk
    from modelog.streams.broker import EmbeddedBroker

    s = settings_of(ctx)
    with contextlib.ExitStack() as stack:
        if not s.broker:
            b = stack.enter_context(EmbeddedBroker())
            s = s.replace(broker=b.bootstrap_servers)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelog-bench-")))
        run = f"bench{int(time.time())}."
        s = s.replace(topic_prefix=run, data_dir=tmp)
        typer.echo(f"broker {s.bootstrap_servers}; {predictions:,} predictions ...")
        sdk = bench_sdk(s.replace(topic_prefix=run + "sdk."), n=predictions)
        typer.echo(f"SDK        {sdk['predictions_per_s']:>12,.0f} predictions/s accepted "
                   f"(incl. flush)  [target >= 150,000]")
        typer.echo(f"SDK        {sdk['call_median_us']:>12.2f} us median per log_prediction, "
                   f"p99 {sdk['call_p99_us']:.2f} us  [target median <= 10]")
        typer.echo(f"{projector_events:,} events through the projector ...")
        pj = bench_projector(s.replace(topic_prefix=run + "proj."), n=projector_events,
                             sustained=projector_sustained)
        typer.echo(f"projector  {pj['events_per_s']:>12,.0f} events/s into DuckDB, best of "
                   f"{int(pj.get('runs', 1))} (median {pj.get('events_per_s_median', 0):,.0f})  "
                   f"[target >= 100,000]")
        if "sustained_per_s" in pj:
            typer.echo(f"projector  {pj['sustained_per_s']:>12,.0f} events/s sustained over "
                       f"{pj['sustained_events']:,.0f} events, until DuckDB's final checkpoint  "
                       f"[target >= 100,000]")
        if tracking:
            from modelog.streams.bench.tracking import bench_tracking, format_report

            typer.echo("tracking benchmark (modelog vs MLflow; MLflow's venv is installed once)")
            result = bench_tracking(
                s.replace(topic_prefix=run + "track."), metrics=100_000, runs=10_000,
                mlflow_venv=settings_of(ctx).data_dir.resolve() / "bench" / "mlflow-venv",
            )
            typer.echo(format_report(result))
        if worker:
            from modelog.streams.bench.worker import bench_worker
            from modelog.streams.bench.worker import format_report as worker_report

            typer.echo(f"monitoring worker: {worker_predictions:,} labelled predictions, then "
                       "live drifting traffic ...")
            wr = bench_worker(s.replace(topic_prefix=run + "worker."),
                              predictions=worker_predictions)
            typer.echo(worker_report(wr))
        if failover:
            from modelog.streams.bench.failover import bench_failover
            from modelog.streams.bench.failover import format_report as failover_report

            typer.echo("worker failover: kill -9 under load, twice ...")
            fr = bench_failover(s.replace(topic_prefix=run + "failover."))
            typer.echo(failover_report(fr))
