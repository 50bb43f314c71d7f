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
from typing import TYPE_CHECKING, Annotated

import typer

from modelog.cli.common import AsOfOpt, exit_on_error, fail, reader_of, settings_of
from modelog.errors import ModelogError

if TYPE_CHECKING:
    from modelog.store.parquet_archive import ParquetArchive

__all__ = ["archive_app", "bench", "query", "topics"]

archive_app = typer.Typer(help="The durable archive of the log: the DuckDB ledger and its open "
                               "Parquet copy.",
                          no_args_is_help=True)


# -- query ---------------------------------------------------------------------------
def query(
    ctx: typer.Context,
    sql: Annotated[str, typer.Argument(help="A read-only SQL statement over the views.")],
    fmt: Annotated[str, typer.Option("--format", "-f",
                                     help="table, csv or json (one object per line).")] = "table",
    limit: Annotated[int, typer.Option(help="Rows to print in table format.")] = 50,
    as_of: AsOfOpt = None,
    archive: Annotated[bool, typer.Option(
        "--archive", help="Query the Parquet archive (`events` is the archived ledger) "
                          "instead of the projection.")] = False,
) -> None:
    """Ask the DuckDB views, also while the projector runs (it never blocks either side).

    Tables: events, predictions, labels, prediction_quality, alerts, monitor_stats,
    dead_letters, datasets, runs, run_params, run_metrics, model_versions, aliases,
    alias_history. `--as-of T`: the same views as they stood at T (events up to T).
    `--archive`: SQL over the open Parquet archive (`modelog archive export`).
    """
    with exit_on_error():
        if archive:
            table = _parquet_archive(ctx, None).query(sql, as_of=as_of)
        else:
            table = reader_of(ctx, as_of).query(sql)
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
        Console(markup=False, emoji=False).print(t)  # cells are data, never markup
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
    from_parquet: Annotated[str | None, typer.Option(
        "--from-parquet", help="First rebuild this (fresh) deployment's DuckDB ledger and "
                               "views from the Parquet archive at this URI (a directory, "
                               "s3://..., any filesystem URI).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="With --from-parquet: add the archive's missing events to a ledger "
                        "that is not empty (refused otherwise).")] = False,
    ledger_only: Annotated[bool, typer.Option(
        "--ledger-only", help="With --from-parquet: rebuild the ledger only, do not refill "
                              "the broker.")] = False,
) -> None:
    """Re-publish archived events into a fresh broker's empty topics.

    `modelog up` does this by itself when it starts the embedded (memory-only) broker.
    Topics that already hold records are skipped, so running it twice is harmless.
    With --from-parquet, the ledger is first rebuilt from the open archive (run it before
    `modelog up`): `modelog archive restore --from-parquet s3://bucket/modelog/archive`.
    """
    from modelog.streams.archive import DEFAULT_STREAMS, restore_to_broker
    from modelog.streams.topics import ensure_topics

    s = settings_of(ctx)
    bad = ""
    if from_parquet:
        from modelog.store.parquet_archive import (
            ParquetArchive,
            bad_files_message,
            restore_ledger,
        )

        with exit_on_error():
            loaded = restore_ledger(ParquetArchive.from_uri(from_parquet), s.duckdb_path,
                                    force=force)
        typer.echo(f"ledger: restored {loaded.rows:,} events and {loaded.dead_letters:,} dead "
                   f"letters from Parquet ({loaded.files} event files) in {loaded.seconds:.1f} s; "
                   "views rebuilt")
        bad = bad_files_message(loaded)
        if ledger_only:
            if bad:
                fail(ModelogError(bad))
            return
    with exit_on_error():
        ensure_topics(s)
        report = restore_to_broker(s, streams=tuple(stream or DEFAULT_STREAMS))
    for topic, n in report.restored.items():
        typer.echo(f"{topic}: restored {n:,} events")
    for topic, why in report.skipped.items():
        typer.echo(f"{topic}: skipped ({why})")
    if bad:
        fail(ModelogError(bad))


ArchiveUriOpt = Annotated[str | None, typer.Option(
    "--uri", help="Root of the Parquet archive; default: archive/ in the artifact store "
                  "(MODELOG_ARTIFACT_URI, else <data dir>/artifacts).")]


def _parquet_archive(ctx: typer.Context, uri: str | None) -> ParquetArchive:
    from modelog.store.parquet_archive import ParquetArchive

    return ParquetArchive.from_uri(uri) if uri else ParquetArchive.from_settings(settings_of(ctx))


@archive_app.command("export")
def archive_export(
    ctx: typer.Context,
    uri: ArchiveUriOpt = None,
    follow: Annotated[bool, typer.Option(
        "--follow", help="Keep exporting as the ledger grows (a service; `modelog up` runs "
                         "it), compacting periodically.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between rounds with --follow.")
                        ] = 2.0,
    compact_every: Annotated[float, typer.Option(
        help="Seconds between compactions with --follow.")] = 300.0,
) -> None:
    """Write the ledger to the open Parquet archive (topic=/date= partitions, zstd).

    Incremental and idempotent: each run continues where the last one stopped, and a
    run after a crash never writes a row twice. Any engine reads it, e.g. pandas:
    `pd.read_parquet("<data dir>/artifacts/archive")`.
    """
    with exit_on_error():
        archive = _parquet_archive(ctx, uri)
        source = reader_of(ctx)
        if not follow:
            report = archive.export(source)
            typer.echo(f"{archive.uri}: exported {report.rows:,} events and "
                       f"{report.dead_letters:,} dead letters into {report.files} files in "
                       f"{report.seconds:.1f} s")
            return
    import threading

    from modelog.streams.signals import stop_on_signal

    stop = threading.Event()

    said: list[str] = [""]

    def complain(exc: Exception) -> None:  # once per distinct problem, not every round
        if str(exc) != said[0]:
            said[0] = str(exc)
            typer.echo(f"archive export: {exc} (retrying)", err=True)

    typer.echo(f"exporting the ledger to {archive.uri} (Ctrl-C stops)")
    with stop_on_signal(stop), contextlib.suppress(KeyboardInterrupt):
        archive.follow(source, stop, interval=interval, compact_every=compact_every,
                       on_error=complain)


@archive_app.command("compact")
def archive_compact(
    ctx: typer.Context,
    uri: ArchiveUriOpt = None,
    min_files: Annotated[int, typer.Option(
        help="Merge today's partition when it has this many files (past days: 2).")] = 8,
) -> None:
    """Merge the small part files of each partition-day into one (atomic per day)."""
    with exit_on_error():
        archive = _parquet_archive(ctx, uri)
        merged = archive.compact(min_files=min_files)
    typer.echo(f"{archive.uri}: compacted {merged} partition-days")


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
    worker_processes: Annotated[int, typer.Option(
        min=1, help="Worker processes in one consumer group for --worker (they share the "
                    "partitions: how the monitoring scales out; the target is for one).")] = 1,
    failover: Annotated[bool, typer.Option(
        "--failover", help="Also measure the worker's failover: seconds from kill -9 of a "
                           "worker under load (2,000 serving records/s) to the first "
                           "monitoring output of the replacement `modelog up` starts.")]
    = False,
    retrain: Annotated[bool, typer.Option(
        "--retrain", help="Also benchmark retraining: assembling a training window of "
                          "--retrain-rows labelled predictions from DuckDB, and seconds from a "
                          "RetrainRequested to its job's start.")] = False,
    retrain_rows: Annotated[int, typer.Option(
        help="Labelled predictions in the retrain window benchmark.")] = 1_000_000,
    predictor: Annotated[bool, typer.Option(
        "--predictor", help="Also benchmark serving through aliases: the predictor's own "
                            "cost per predict (100,000 calls) and the delay from an alias "
                            "change to 3 running predictors serving it (p99 of 30 moves).")]
    = False,
    restore: Annotated[bool, typer.Option(
        "--restore", help="Also benchmark a restore from the Parquet archive: a fresh "
                          "deployment's DuckDB ledger and views, then its broker refilled "
                          "(--restore-events events; target 1,000,000 in 10 s).")] = False,
    restore_events: Annotated[int, typer.Option(
        help="Archived events in the restore benchmark.")] = 1_000_000,
) -> None:
    """Measure the SDK (predictions/s, cost per log_prediction call) and the projector
    (events/s into DuckDB); optionally experiment tracking against MLflow (--tracking) and
    the monitoring worker (--worker), its failover (--failover) and retraining (--retrain).
    Uses a fresh embedded
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
                              predictions=worker_predictions, processes=worker_processes)
            typer.echo(worker_report(wr))
        if failover:
            from modelog.streams.bench.failover import bench_failover
            from modelog.streams.bench.failover import format_report as failover_report

            typer.echo("worker failover: kill -9 under load, twice ...")
            fr = bench_failover(s.replace(topic_prefix=run + "failover."))
            typer.echo(failover_report(fr))
        if retrain:
            from modelog.streams.bench.retrain import bench_request_latency, bench_training_data

            typer.echo(f"retrain: assembling {retrain_rows:,} labelled predictions, then "
                       "request-to-job latency ...")
            bench_training_data(retrain_rows, echo=typer.echo)
            rdir = tmp / "retrain"
            rdir.mkdir()
            bench_request_latency(s.replace(topic_prefix=run + "retrain.", data_dir=rdir),
                                  echo=typer.echo)
        if predictor:
            from modelog.streams.bench.predictor import bench_predictor

            typer.echo("predictor: 100,000 requests, then 30 alias moves under 3 predictors ...")
            pdir = tmp / "predictor"
            pdir.mkdir()
            bench_predictor(s.replace(topic_prefix=run + "predictor.", data_dir=pdir),
                            echo=typer.echo)
        if restore:
            from modelog.streams.bench.restore import bench_restore

            typer.echo(f"restore: {restore_events:,} events from the Parquet archive into a "
                       "fresh deployment ...")
            bench_restore(s.replace(topic_prefix=run + "restore.", data_dir=tmp / "restore"),
                          events=restore_events, echo=typer.echo)
