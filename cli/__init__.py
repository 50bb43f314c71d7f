"""The ``modelog`` command line.

Every component of modelog runs from here, configured by ``MODELOG_*``
environment variables or the global flags (flags win)::

    modelog up                       # broker + worker + projector + dashboard
    modelog demo --predictions 20000 --drift-at 10000
    modelog query "select * from alerts"
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from modelog.config import Settings
from modelog.errors import ModelogError

app = typer.Typer(
    name="modelog",
    help=(
        "Event-sourced ML model management. Every fact -- datasets, runs, registrations, "
        "alias changes, predictions, labels, alerts -- is an event in Kafka; DuckDB views and "
        "the dashboard are derived from that log.\n\n"
        "Quickstart: `modelog up` in one terminal, `modelog demo` in another, then open the "
        "dashboard URL it prints."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
schemas_app = typer.Typer(help="JSON Schemas of the event catalogue, for non-Python producers.",
                          no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")

BrokerOpt = Annotated[
    str | None,
    typer.Option("--broker", "-b", envvar="MODELOG_BROKER", show_envvar=True,
                 help="Kafka bootstrap servers host:port[,...]. Default: the embedded broker "
                      "started by `modelog up`/`modelog broker` for this data dir, else "
                      "127.0.0.1:9092."),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", "-d", envvar="MODELOG_DATA_DIR", show_envvar=True,
                 help="Where DuckDB, artifacts and runtime files live. [default: ./.modelog]"),
]
PrefixOpt = Annotated[
    str | None,
    typer.Option("--topic-prefix", envvar="MODELOG_TOPIC_PREFIX", show_envvar=True,
                 help="Prefix of every topic. [default: modelog.]"),
]


@app.callback()
def _root(
    ctx: typer.Context,
    broker: BrokerOpt = None,
    data_dir: DataDirOpt = None,
    topic_prefix: PrefixOpt = None,
) -> None:
    """Global options apply to every command (security settings: see `MODELOG_*` in README)."""
    try:
        ctx.obj = Settings.from_env(broker=broker, data_dir=data_dir, topic_prefix=topic_prefix)
    except ModelogError as exc:
        _fail(exc)


def _settings(ctx: typer.Context) -> Settings:
    s = ctx.obj
    assert isinstance(s, Settings)
    return s


def _fail(exc: BaseException, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["MODELOG_DATA_DIR"] = str(settings.data_dir.resolve())
    env["MODELOG_TOPIC_PREFIX"] = settings.topic_prefix
    if settings.broker:
        env["MODELOG_BROKER"] = settings.broker
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# -- broker -------------------------------------------------------------------
@app.command()
def broker(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 9092,
    host: Annotated[str, typer.Option(help="Listen address (loopback by default).")] = "127.0.0.1",
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, memory only) until Ctrl-C.

    Other modelog commands using the same `--data-dir` find it automatically. It keeps
    nothing on disk: history survives in the projector's DuckDB file, not here.
    """
    from modelog.streams.broker import EmbeddedBroker
    from modelog.streams.topics import ensure_topics

    s = _settings(ctx)
    b = EmbeddedBroker(port=port, host=host, runtime_dir=s.data_dir)
    try:
        b.start()
        ensure_topics(s.replace(broker=b.bootstrap_servers))
    except ModelogError as exc:
        b.stop()
        _fail(exc)
    typer.echo(f"broker listening on {b.bootstrap_servers} (memory only; Ctrl-C to stop)")
    _wait_for_signal(lambda: not b.running())
    b.stop()


def _wait_for_signal(done: Any) -> None:
    stop = {"flag": False}

    def handler(signum: int, frame: Any) -> None:
        stop["flag"] = True

    old_int = signal.signal(signal.SIGINT, handler)
    old_term = signal.signal(signal.SIGTERM, handler)
    try:
        while not stop["flag"] and not done():
            time.sleep(0.2)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


# -- worker / projector / dashboard --------------------------------------------
@app.command()
def worker(
    ctx: typer.Context,
    session_timeout: Annotated[float, typer.Option(
        help="Kafka consumer-group session timeout in seconds (a join waits up to half).")] = 10.0,
) -> None:
    """Run the stream processor: joins predictions with labels, detects drift and anomalies,
    publishes alerts to the monitoring topic."""
    from modelog.streams.worker import run_worker

    try:
        run_worker(_settings(ctx), session_timeout=session_timeout)
    except ModelogError as exc:
        _fail(exc)


@app.command()
def project(
    ctx: typer.Context,
    rebuild: Annotated[bool, typer.Option(
        "--rebuild", help="Drop every view and re-derive it from the DuckDB event ledger, "
                          "then exit (no broker needed).")] = False,
) -> None:
    """Run the projector: consumes every topic into the DuckDB file (ledger + views) and
    serves read-only queries to `modelog query` and the dashboard."""
    from modelog.streams.projector import Projector

    s = _settings(ctx)
    try:
        projector = Projector(s)
        if rebuild:
            n = projector.rebuild()
            typer.echo(f"rebuilt the views from {n} events in {s.duckdb_path}")
            projector.close()
            return
        typer.echo(f"projecting into {s.duckdb_path} (Ctrl-C to stop)")
        projector.run()
    except ModelogError as exc:
        _fail(exc)


@app.command()
def dashboard(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="HTTP port of the dashboard.")] = 8501,
    address: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Run the Streamlit dashboard (live alerts, error rates, anomaly scores)."""
    from modelog.dashboard.launch import run_dashboard

    typer.echo(f"dashboard on http://{address}:{port}")
    raise typer.Exit(run_dashboard(_settings(ctx), port=port, address=address))


# -- up -------------------------------------------------------------------------
@app.command()
def up(
    ctx: typer.Context,
    broker_port: Annotated[int, typer.Option(
        help="Port of the embedded broker (ignored with --broker).")] = 9092,
    dashboard_port: Annotated[int, typer.Option(help="Port of the dashboard.")] = 8501,
    no_dashboard: Annotated[bool, typer.Option("--no-dashboard",
                                               help="Do not start the dashboard.")] = False,
) -> None:
    """Start everything: the embedded broker (unless --broker/MODELOG_BROKER is given), the
    worker, the projector and the dashboard. Ctrl-C stops them all cleanly."""
    s = _settings(ctx)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    logs = s.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    exe = [sys.executable, "-m", "modelog"]

    def spawn(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([*exe, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        procs.append((name, p))
        return p

    def stop_all() -> None:
        for _name, p in reversed(procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for name, p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            typer.echo(f"  stopped {name}")

    try:
        broker_restored = False
        if s.broker:
            typer.echo(f"using broker {s.broker}")
        else:
            from modelog.streams.broker import free_port, wait_for_port

            bp = broker_port
            if not _port_free(bp):
                typer.echo(f"port {bp} is busy; the embedded broker takes a free port instead")
                bp = free_port()
            # The child records itself in <data dir>/broker.json, where clients find it.
            spawn("broker", ["broker", "--port", str(bp)], _child_env(s))
            if not wait_for_port("127.0.0.1", bp, 15):
                raise ModelogError(f"the broker did not start; see {logs / 'broker.log'}")
            s = s.replace(broker=f"127.0.0.1:{bp}")
            broker_restored = True
            typer.echo(f"broker     127.0.0.1:{bp} (embedded, memory only)")
        from modelog.streams.topics import ensure_topics

        ensure_topics(s)
        if not s.broker or broker_restored:
            _restore(s)
        env = _child_env(s)
        spawn("projector", ["project"], env)
        typer.echo(f"projector  -> {s.duckdb_path}")
        spawn("worker", ["worker"], env)
        typer.echo("worker     monitors + registry (ready in ~10 s)")
        spawn("delivery", ["deliver"], env)
        typer.echo("delivery   alert webhooks (`modelog alerts subscribe URL`)")
        if not no_dashboard:
            spawn("dashboard", ["dashboard", "--port", str(dashboard_port)], env)
            typer.echo(f"dashboard  http://127.0.0.1:{dashboard_port}")
        typer.echo(f"logs       {logs}/")
        typer.echo("\nNext: `modelog demo` in another terminal, then watch the dashboard; "
                   "`modelog query \"select * from alerts\"` to ask the views. Ctrl-C stops all.")

        def any_died() -> bool:
            for name, p in procs:
                if p.poll() is not None:
                    typer.secho(f"{name} exited with code {p.returncode}; see {logs}/{name}.log",
                                fg=typer.colors.RED, err=True)
                    return True
            return False

        _wait_for_signal(any_died)
    except ModelogError as exc:
        stop_all()
        _fail(exc)
    typer.echo("stopping...")
    stop_all()


def _restore(s: Settings) -> None:
    """Refill a fresh (memory-only) broker from the DuckDB archive, if there is one."""
    from modelog.streams.archive import restore_to_broker

    report = restore_to_broker(s)
    if report.total:
        typer.echo(f"restored   {report.total:,} archived events into the fresh broker "
                   f"({', '.join(f'{t}: {n:,}' for t, n in report.restored.items() if n)})")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- demo -------------------------------------------------------------------------
@app.command()
def demo(
    ctx: typer.Context,
    predictions: Annotated[int, typer.Option(help="How many predictions to stream.")] = 20_000,
    drift_at: Annotated[int, typer.Option(
        help="Prediction index where the concept drifts (and one input, unless "
             "--feature-drift-at says otherwise).")] = 10_000,
    feature_drift_at: Annotated[int | None, typer.Option(
        help="Prediction index where one input ('spend') drifts; default: --drift-at.")]
    = None,
    online: Annotated[bool, typer.Option(
        "--online", help="Also register an online River model (v2, alias 'challenger') that "
                         "the worker trains on every labelled prediction.")] = False,
    rate: Annotated[float, typer.Option(
        help="Predictions per second; 0 streams as fast as possible.")] = 1_000.0,
    label_delay: Annotated[int, typer.Option(
        help="Labels arrive this many predictions after their prediction.")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    model: Annotated[str, typer.Option(help="Model name to use.")] = "demo-churn",
) -> None:
    """Simulate an application: log a dataset, a run, register and promote a model, then
    stream predictions and delayed labels with drift seeded at --drift-at.

    Example: `modelog demo --feature-drift-at 6000 --drift-at 12000 --online` drifts an
    input first and the concept later, with an online River challenger learning."""
    from modelog.streams.demo import DemoConfig, run_demo

    cfg = DemoConfig(predictions=predictions, drift_at=drift_at, rate=rate,
                     label_delay=label_delay, seed=seed, model=model,
                     feature_drift_at=feature_drift_at, online=online)
    try:
        run_demo(_settings(ctx), cfg, echo=typer.echo)
    except ModelogError as exc:
        _fail(exc)


# -- query ---------------------------------------------------------------------------
@app.command()
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

    try:
        table = Reader(_settings(ctx)).query(sql)
    except ModelogError as exc:
        _fail(exc)
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
        _fail(ModelogError(f"--format {fmt!r} is not one of table, csv, json"))


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


# -- alerts ------------------------------------------------------------------------------
alerts_app = typer.Typer(help="Alert subscriptions: webhooks that receive alerts.",
                         no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


@app.command()
def deliver(ctx: typer.Context) -> None:
    """Run the alert delivery worker: POSTs every matching alert to each subscribed webhook,
    exactly once in effect (a `Modelog-Event-Id` header lets receivers drop the rare repeat)."""
    from modelog.streams.delivery import run_delivery

    try:
        run_delivery(_settings(ctx))
    except ModelogError as exc:
        _fail(exc)


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
        help="Sign bodies with HMAC-SHA256 (Modelog-Signature header).")] = None,
) -> None:
    """Subscribe a webhook to alerts; prints the subscription id.

    Example: `modelog alerts subscribe https://hooks.example/ml --model churn --kind concept`
    """
    from modelog.streams.delivery import subscribe

    try:
        sid = subscribe(_settings(ctx), url, models=tuple(model or ()), kinds=tuple(kind or ()),
                        min_severity=min_severity, secret=secret)
    except ModelogError as exc:
        _fail(exc)
    typer.echo(sid)


@alerts_app.command("unsubscribe")
def alerts_unsubscribe(
    ctx: typer.Context,
    subscription_id: Annotated[str, typer.Argument(help="Id printed by `alerts subscribe`.")],
) -> None:
    """Remove a subscription (no further deliveries)."""
    from modelog.streams.delivery import unsubscribe

    try:
        unsubscribe(_settings(ctx), subscription_id)
    except ModelogError as exc:
        _fail(exc)
    typer.echo(f"removed {subscription_id}")


@alerts_app.command("subscriptions")
def alerts_subscriptions(ctx: typer.Context) -> None:
    """List the active subscriptions."""
    from modelog.streams.delivery import list_subscriptions

    try:
        subs = list_subscriptions(_settings(ctx))
    except ModelogError as exc:
        _fail(exc)
    if not subs:
        typer.echo("no subscriptions; add one with `modelog alerts subscribe URL`")
    for sub in subs:
        scope = ", ".join(sub.models) or "all models"
        kinds = ", ".join(sub.kinds) or "all kinds"
        typer.echo(f"{sub.subscription_id}  {sub.url}  [{scope}; {kinds}; "
                   f">= {sub.min_severity}]")


# -- monitor -----------------------------------------------------------------------------
monitor_app = typer.Typer(help="Monitoring configuration and backtests.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")


def _parse_time(value: str | None, option: str) -> Any:
    if value is None:
        return None
    import datetime as dt

    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        _fail(ModelogError(f"{option} {value!r} is not an ISO date or time "
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
    try:
        cfg = load_monitor_config(config)
        reader = Reader(_settings(ctx))
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
    except ModelogError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), default=str, indent=2))
    else:
        typer.echo(result.render())


# -- archive -------------------------------------------------------------------------
archive_app = typer.Typer(help="The durable archive of the log (the DuckDB ledger).",
                          no_args_is_help=True)
app.add_typer(archive_app, name="archive")


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

    s = _settings(ctx)
    try:
        ensure_topics(s)
        report = restore_to_broker(s, streams=tuple(stream or DEFAULT_STREAMS))
    except ModelogError as exc:
        _fail(exc)
    for topic, n in report.restored.items():
        typer.echo(f"{topic}: restored {n:,} events")
    for topic, why in report.skipped.items():
        typer.echo(f"{topic}: skipped ({why})")


# -- topics --------------------------------------------------------------------------
@app.command()
def topics(ctx: typer.Context) -> None:
    """Create modelog's topics on the broker (idempotent) and list them."""
    from modelog.streams.topics import Topics, ensure_topics

    s = _settings(ctx)
    try:
        created = ensure_topics(s)
    except ModelogError as exc:
        _fail(exc)
    for name in Topics.from_settings(s).all():
        typer.echo(f"{name}{'  (created)' if name in created else ''}")


# -- bench ----------------------------------------------------------------------------
@app.command()
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
) -> None:
    """Measure the SDK (predictions/s, cost per log_prediction call) and the projector
    (events/s into DuckDB); optionally experiment tracking against MLflow (--tracking) and
    the monitoring worker (--worker). Uses a fresh embedded broker unless --broker is given."""
    import tempfile

    from modelog.streams.bench.projector import bench_projector
    from modelog.streams.bench.sdk import bench_sdk
    from modelog.streams.broker import EmbeddedBroker

    s = _settings(ctx)
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
                mlflow_venv=_settings(ctx).data_dir.resolve() / "bench" / "mlflow-venv",
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


# -- lifecycle: runs, datasets, lineage, registry --------------------------------------
runs_app = typer.Typer(help="Tracked runs: search, inspect and compare (like `mlflow runs`).",
                       no_args_is_help=True)
datasets_app = typer.Typer(help="Versioned datasets: list versions and diff their profiles.",
                           no_args_is_help=True)
registry_app = typer.Typer(help="The model registry: versions, aliases and their history.",
                           no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(datasets_app, name="datasets")
app.add_typer(registry_app, name="registry")

FormatOpt = Annotated[str, typer.Option("--format", "-F", help="table, csv or json (one object "
                                                                 "per line).")]


def _reader(ctx: typer.Context) -> Any:
    from modelog.store.reader import Reader

    return Reader(_settings(ctx))


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if hasattr(value, "isoformat"):
        return str(value.isoformat(sep=" ", timespec="seconds"))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _print_frame(df: Any, fmt: str = "table", title: str | None = None,
                 empty: str | None = None) -> None:
    """Print a DataFrame as a rich table, CSV or JSON lines (``empty``: say so instead of
    printing an empty table)."""
    if empty is not None and df.empty and fmt == "table":
        typer.echo(empty)
    elif fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif fmt == "json":
        for row in df.to_dict("records"):
            clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
            sys.stdout.write(json.dumps(clean, default=str) + "\n")
    elif fmt == "table":
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, show_lines=False)
        for name in df.columns:
            t.add_column(str(name), overflow="fold")
        for row in df.itertuples(index=False):
            t.add_row(*(_cell(v) for v in row))
        Console(width=max(100, len(df.columns) * 14)).print(t)
    else:
        _fail(ModelogError(f"--format {fmt!r} is not one of table, csv, json"))


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
) -> None:
    """Search runs; params and latest metrics become `params.<k>`/`metrics.<k>` columns.

    Examples:

        modelog runs list --filter "metrics.f1 > 0.8 and status = 'finished'"

        modelog runs list --experiment churn --order-by "metrics.f1 DESC" --limit 5 -F csv
    """
    from modelog.store.queries import list_runs

    try:
        df = list_runs(_reader(ctx), filter_, order_by or (), experiment=experiment, limit=limit)
    except ModelogError as exc:
        _fail(exc)
    _print_frame(df, fmt, empty="no runs match")


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run id (or a unique prefix of it).")],
    fmt: Annotated[str, typer.Option("--format", "-F", help="text or json.")] = "text",
) -> None:
    """Everything about one run: attributes, params, latest metrics (and how many points),
    datasets, artifacts, child runs, registered models, code version and failure.

    Example: `modelog runs show 0190f3c2`
    """
    from modelog.store.queries import show_run

    try:
        run = show_run(_reader(ctx), run_id)
    except ModelogError as exc:
        _fail(exc)
    if fmt == "json":
        typer.echo(json.dumps(run, default=str, indent=2))
        return
    typer.echo(f"run {run['run_id']}  {run['name'] or ''}".rstrip())
    for key in ("experiment", "status", "started", "ended", "parent_run_id", "producer"):
        if run.get(key) is not None:
            typer.echo(f"  {key:<14}{_cell(run[key])}")
    if run["failure"]:
        typer.echo(f"  {'error':<14}{run['failure']['error']}")
        for line in str(run["failure"]["traceback"]).splitlines():
            typer.echo(f"    {line}")
    sections: list[tuple[str, list[str]]] = [
        ("code", [f"{k}: {_cell(v)}" for k, v in run["code"].items()]),
        ("tags", [f"{k} = {v}" for k, v in run["tags"].items()]),
        ("params", [f"{k} = {v}" for k, v in run["params"].items()]),
        ("metrics (latest)", [
            f"{k} = {_cell(v)}  ({run['metric_history'].get(k, {}).get('points', 0)} points, "
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
) -> None:
    """Params and latest metrics side by side, one column per run; `differs` flags rows
    where the runs disagree (a missing value differs).

    Example: `modelog runs compare run-a run-b --only-diff`
    """
    from modelog.store.queries import compare_runs

    try:
        df = compare_runs(_reader(ctx), run_ids)
    except ModelogError as exc:
        _fail(exc)
    if only_diff:
        df = df[df["differs"]]
    _print_frame(df, fmt)


@datasets_app.command("list")
def datasets_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="A dataset: list its versions.")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """List datasets (one line each), or the versions of dataset NAME.

    Versions are numbered 1, 2, ... by the first appearance of each content digest;
    logging the same content again creates no version.
    """
    from modelog.store.queries import list_datasets

    try:
        df = list_datasets(_reader(ctx), name)
    except ModelogError as exc:
        _fail(exc)
    _print_frame(df, fmt, empty="no datasets yet")


@datasets_app.command("diff")
def datasets_diff(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The dataset.")],
    v1: Annotated[str, typer.Argument(help="Old version: number (2, v2) or digest prefix.")],
    v2: Annotated[str, typer.Argument(help="New version: number or digest prefix.")],
    fmt: Annotated[str, typer.Option("--format", "-F", help="text or json.")] = "text",
) -> None:
    """What changed between two versions: rows, schema, and per-column shifts (PSI).

    Example: `modelog datasets diff churn-train 1 2`
    """
    from modelog.store.queries import dataset_diff

    try:
        diff = dataset_diff(_reader(ctx), name, v1, v2)
    except ModelogError as exc:
        _fail(exc)
    if fmt == "json":
        typer.echo(json.dumps(diff.to_dict(), default=str, indent=2))
    else:
        typer.echo(f"{name}: {v1} -> {v2}")
        typer.echo(diff.render().rstrip())


@app.command()
def lineage(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help=(
        "model@vN, model@alias, dataset@N, dataset@<digest prefix>, a run id, git:<commit>, "
        "or a prediction id with --prediction."))],
    up: Annotated[bool, typer.Option("--up", help="Only what REF came from.")] = False,
    down: Annotated[bool, typer.Option("--down", help="Only what came from REF.")] = False,
    prediction: Annotated[bool, typer.Option(
        "--prediction", help="REF is a prediction id: model version -> run -> datasets.")
    ] = False,
    depth: Annotated[int, typer.Option(help="Hops to follow.")] = 10,
    fmt: Annotated[str, typer.Option("--format", "-F", help="text or json (nodes + edges).")
                   ] = "text",
) -> None:
    """Where something came from and what came from it: datasets, runs, code commits,
    model versions, alias periods and served predictions.

    Examples:

        modelog lineage churn@production --up     # datasets and code behind the serving model

        modelog lineage churn-train@2 --down      # models trained on version 2

        modelog lineage 0190f3c2-... --prediction # why did this prediction happen
    """
    from modelog.store.queries import Direction, lineage_of_prediction
    from modelog.store.queries import lineage as lineage_of

    if up and down:
        _fail(ModelogError("give --up or --down, not both (neither shows both directions)"))
    direction: Direction = "up" if up else "down" if down else "both"
    try:
        tree = (lineage_of_prediction(_reader(ctx), ref, depth=depth) if prediction
                else lineage_of(_reader(ctx), ref, direction, depth=depth))
    except ModelogError as exc:
        _fail(exc)
    if fmt == "json":
        typer.echo(json.dumps(tree.to_dict(), indent=2))
    else:
        typer.echo(tree.render().rstrip())


@registry_app.command("show")
def registry_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The registered model.")],
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="ISO date or time (naive = UTC): the registry as it stood then.")
    ] = None,
) -> None:
    """A model's versions, where its aliases point (since when, who, why) and the full
    alias history.

    With --as-of: "what was in production on March 3rd at 14:00, and why":

        modelog registry show churn --as-of "2026-03-03 14:00"
    """
    from modelog.store.queries import parse_time, registry_history, registry_state

    reader = _reader(ctx)
    try:
        when = parse_time(as_of) if as_of else None
        state = registry_state(reader, name, as_of=when)
        history = registry_history(reader, name)
    except ModelogError as exc:
        _fail(exc)
    if when is not None:
        history = history[history["time"] <= when]
    at = f" as of {when.isoformat()}" if when is not None else ""
    versions = ", ".join(f"v{v}" for v in sorted(state.versions)) or "none"
    typer.echo(f"model {name}{at}: versions {versions}")
    typer.echo("aliases:" if state.aliases else "aliases: none")
    for alias in sorted(state.aliases):
        info = state.aliases[alias]
        who = f" by {info.actor}" if info.actor else ""
        why = f": {info.reason}" if info.reason else ""
        was = f" (was v{info.previous_version})" if info.previous_version is not None else ""
        typer.echo(f"  {alias} -> v{info.version} since {_cell(info.since)}{who}{why}{was}")
    if len(history):
        _print_frame(history.drop(columns=["command_id", "event_id"]), "table",
                     title="alias history")


def main() -> None:
    """Entry point of the ``modelog`` console script."""
    app()


if __name__ == "__main__":
    main()
