"""The long-running services and the demo: ``broker``, ``worker``, ``project``,
``dashboard``, ``up``, ``deliver`` and ``demo``.

Imports :mod:`modelog.cli.common`, :mod:`modelog.config`, :mod:`modelog.errors`
and, inside each command, the layer that does the work (``streams``,
``dashboard``), so ``modelog --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from modelog.cli.common import exit_on_error, fail, settings_of
from modelog.config import Settings, env_for
from modelog.errors import ModelogError

__all__ = ["broker", "dashboard", "deliver", "demo", "project", "up", "worker"]


def _child_env(settings: Settings) -> dict[str, str]:
    """The environment of a process ``up`` starts: ours plus ``settings`` (flags included).

    The producer name is left to each child (``<program>@<host>``) unless
    ``MODELOG_PRODUCER_NAME`` is set.
    """
    env = {**os.environ, **env_for(settings, exclude={"producer_name"})}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# -- broker -------------------------------------------------------------------
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

    s = settings_of(ctx)
    b = EmbeddedBroker(port=port, host=host, runtime_dir=s.data_dir)
    try:
        b.start()
        ensure_topics(s.replace(broker=b.bootstrap_servers))
    except ModelogError as exc:
        b.stop()
        fail(exc)
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
def worker(
    ctx: typer.Context,
    session_timeout: Annotated[float, typer.Option(
        help="Kafka consumer-group session timeout in seconds (a join waits up to half).")] = 10.0,
    monitor_session_timeout: Annotated[float | None, typer.Option(
        help="Session timeout of the monitoring consumer in seconds (default: "
             "--session-timeout). A worker killed without leaving keeps its partitions this "
             "long, so it bounds the failover; `modelog up` passes 1 with the embedded "
             "broker. Apache Kafka accepts no less than 6 by default.")] = None,
) -> None:
    """Run the stream processor: joins predictions with labels, detects drift and anomalies,
    publishes alerts to the monitoring topic."""
    from modelog.streams.worker import run_worker

    with exit_on_error():
        run_worker(settings_of(ctx), session_timeout=session_timeout,
                   monitor_session_timeout=monitor_session_timeout)


def project(
    ctx: typer.Context,
    rebuild: Annotated[bool, typer.Option(
        "--rebuild", help="Drop every view and re-derive it from the DuckDB event ledger, "
                          "then exit (no broker needed).")] = False,
) -> None:
    """Run the projector: consumes every topic into the DuckDB file (ledger + views) and
    serves read-only queries to `modelog query` and the dashboard."""
    from modelog.streams.projector import Projector

    s = settings_of(ctx)
    with exit_on_error():
        projector = Projector(s)
        if rebuild:
            n = projector.rebuild()
            typer.echo(f"rebuilt the views from {n} events in {s.duckdb_path}")
            projector.close()
            return
        typer.echo(f"projecting into {s.duckdb_path} (Ctrl-C to stop)")
        projector.run()


def dashboard(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="HTTP port of the dashboard.")] = 8501,
    address: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Run the Streamlit dashboard (live alerts, error rates, anomaly scores)."""
    from modelog.dashboard.launch import check_address, run_dashboard

    s = settings_of(ctx)
    with exit_on_error():
        check_address(s, address)
    typer.echo(f"dashboard on http://{address}:{port}")
    raise typer.Exit(run_dashboard(s, port=port, address=address))


# -- up -------------------------------------------------------------------------
def up(
    ctx: typer.Context,
    broker_port: Annotated[int, typer.Option(
        help="Port of the embedded broker (ignored with --broker).")] = 9092,
    dashboard_port: Annotated[int, typer.Option(help="Port of the dashboard.")] = 8501,
    no_dashboard: Annotated[bool, typer.Option("--no-dashboard",
                                               help="Do not start the dashboard.")] = False,
    trainer: Annotated[list[str] | None, typer.Option(
        "--trainer", "-t", help="MODEL=package.module:function: a trainer for the retrain "
        "runner (repeatable; MODELOG_TRAINERS and the 'modelog.trainers' entry points "
        "work too).")] = None,
) -> None:
    """Start everything: the embedded broker (unless --broker/MODELOG_BROKER is given), the
    worker, the projector, alert delivery, the retrain runner and the dashboard. A child
    that dies is restarted (after 1 s, doubling up to 30 s while it keeps dying). Ctrl-C
    stops them all cleanly."""
    from modelog.streams.supervisor import RunLock, Supervisor
    from modelog.streams.topics import ensure_topics

    s = settings_of(ctx)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    logs = s.data_dir / "logs"
    logs.mkdir(exist_ok=True)
    exe = [sys.executable, "-m", "modelog"]
    try:  # one `up` per data directory; a killed one's children stop first
        lock = RunLock(s.data_dir / "up.lock").acquire()
    except RuntimeError as exc:
        fail(ModelogError(f"another `modelog up` runs on {s.data_dir}: {exc}; stop it first "
                          "(Ctrl-C in its terminal) or give this one another --data-dir"))
    if lock.leftovers:
        typer.echo(f"waited for {len(lock.leftovers)} processes of a previous `modelog up` "
                   "(killed?) to stop")

    def tell(line: str) -> None:  # a death goes to stderr, in red
        died = " exited " in line
        typer.secho(line, err=died, fg=typer.colors.RED if died else None)

    sup = Supervisor(echo=tell)

    def spawn(name: str, args: list[str], env: dict[str, str],
              after_restart: Any = None, on_exit: Any = None) -> None:
        sup.start(name, [*exe, *args], env=env, log=logs / f"{name}.log",
                  after_restart=after_restart, on_exit=on_exit)

    try:
        broker_restored = False
        worker_args = ["worker"]
        if s.broker:
            typer.echo(f"using broker {s.broker}")
        else:
            from modelog.streams.broker import free_port, wait_for_port

            bp = broker_port
            if not _port_free(bp):
                typer.echo(f"port {bp} is busy; the embedded broker takes a free port instead")
                bp = free_port()
            served = s.replace(broker=f"127.0.0.1:{bp}")

            def refill() -> None:  # a restarted broker is empty: topics, then the archive
                def work() -> None:
                    if wait_for_port("127.0.0.1", bp, 15):
                        with contextlib.suppress(ModelogError):
                            ensure_topics(served)
                            _restore(served, carry_snapshots=False)  # the worker runs

                # in the background: Ctrl-C must not wait for it
                threading.Thread(target=work, name="modelog-refill", daemon=True).start()

            def bury() -> None:  # its Tansu runs in a session of its own: end it too
                _end_orphaned_broker(s, bp)

            # The child records itself in <data dir>/broker.json, where clients find it.
            spawn("broker", ["broker", "--port", str(bp)], _child_env(s), refill, bury)
            if not wait_for_port("127.0.0.1", bp, 15):
                raise ModelogError(f"the broker did not start; see {logs / 'broker.log'}")
            s = served
            broker_restored = True
            # A worker killed without leaving hands its partitions over after 1 s.
            worker_args += ["--monitor-session-timeout", "1"]
            typer.echo(f"broker     127.0.0.1:{bp} (embedded, memory only)")
        ensure_topics(s)
        if not s.broker or broker_restored:
            _restore(s)
        env = _child_env(s)
        spawn("projector", ["project"], env)
        typer.echo(f"projector  -> {s.duckdb_path}")
        spawn("worker", worker_args, env)
        typer.echo("worker     monitors + registry (ready in ~10 s)")
        spawn("delivery", ["deliver"], env)
        typer.echo("delivery   alert webhooks (`modelog alerts subscribe URL`)")
        spawn("retrainer", ["retrainer", *(f"--trainer={t}" for t in trainer or [])], env)
        typer.echo("retrainer  one job per retrain request (`--trainer MODEL=pkg.mod:fit`)")
        spawn("mlflow", ["mlflow-server"], env)  # --port/--host: MODELOG_MLFLOW_PORT/_HOST
        typer.echo("mlflow     MLflow REST API: MLFLOW_TRACKING_URI=http://127.0.0.1:"
                   f"{os.environ.get('MODELOG_MLFLOW_PORT', '5000')}")
        spawn("archiver", ["archive", "export", "--follow"], env)
        typer.echo("archiver   the ledger as Parquet (`modelog query --archive ...`)")
        if not no_dashboard:
            spawn("dashboard", ["dashboard", "--port", str(dashboard_port)], env)
            typer.echo(f"dashboard  http://127.0.0.1:{dashboard_port}")
        lock.record(sup.pids())
        typer.echo(f"logs       {logs}/")
        typer.echo("\nNext: `modelog demo` in another terminal, then watch the dashboard; "
                   "`modelog query \"select * from alerts\"` to ask the views. Ctrl-C stops all.")

        def supervise() -> bool:
            sup.poll()
            lock.record(sup.pids())
            return False

        _wait_for_signal(supervise)
    except ModelogError as exc:
        sup.stop()
        fail(exc)
    typer.echo("stopping...")
    # producers first, then the projector once it has recorded what the broker holds (the
    # embedded broker's memory is the only other copy), then the broker
    sup.stop(last=("projector", "broker"),
             before_last=(lambda: _drain(s)) if broker_restored else None)
    lock.release()


def _restore(s: Settings, *, carry_snapshots: bool = True) -> None:
    """Refill a fresh (memory-only) broker from the DuckDB archive, if there is one."""
    from modelog.streams.archive import restore_to_broker
    from modelog.streams.replay import stderr_progress

    with stderr_progress("refilling") as progress:
        report = restore_to_broker(s, carry_snapshots=carry_snapshots, progress=progress)
    if report.total:
        typer.echo(f"restored   {report.total:,} archived events into the fresh broker in "
                   f"{report.seconds:.1f} s, {report.snapshots} worker snapshots carried over "
                   f"({', '.join(f'{t}: {n:,}' for t, n in report.restored.items() if n)})")


def _drain(s: Settings) -> None:
    from modelog.streams.archive import wait_until_projected

    if not wait_until_projected(s, timeout=15):
        typer.echo("the projector did not catch up with the broker within 15 s; what it had "
                   "not recorded is lost with the embedded broker", err=True)


def _end_orphaned_broker(s: Settings, port: int) -> None:
    """Kill the Tansu process a dead ``modelog broker`` on ``port`` left running, if any."""
    from modelog.config import BROKER_RUNTIME_FILE

    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        pid = int(json.loads((s.data_dir / BROKER_RUNTIME_FILE).read_text())["pid"])
        # only that very process (pids are reused): its command line names the port
        if f"tcp://127.0.0.1:{port}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        # connections of a previous broker lingering in TIME_WAIT do not make it busy (the
        # broker binds with SO_REUSEADDR too); a listener does
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- deliver ----------------------------------------------------------------------
def deliver(ctx: typer.Context) -> None:
    """Run the alert delivery worker: POSTs every matching alert to each subscribed webhook,
    exactly once in effect (a `Modelog-Event-Id` header lets receivers drop the rare repeat)."""
    from modelog.streams.delivery import run_delivery

    with exit_on_error():
        run_delivery(settings_of(ctx))


# -- demo -------------------------------------------------------------------------
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
    retrain: Annotated[bool, typer.Option(
        "--retrain", help="Close the loop: set the model's retrain policy, then wait for the "
                          "retrain runner to answer the drift with an evaluated candidate "
                          "version (built-in scikit-learn trainer for demo-churn) and print "
                          "it; exits 1 when no candidate came.")] = False,
    retrain_rows: Annotated[int, typer.Option(
        help="With --retrain: labelled predictions after the drift the job trains on.")]
    = 1_000,
    retrain_timeout: Annotated[float, typer.Option(
        help="With --retrain: seconds to wait for the runner's report (and with "
             "--auto-promote for the policy's decisions).")] = 300.0,
    auto_promote: Annotated[bool, typer.Option(
        "--auto-promote", help="With --retrain: serve through an SDK predictor, shadow the "
                               "retrained candidate, and let a promotion policy promote it "
                               "when it wins (and roll it back when it does worse).")] = False,
    degrade_at: Annotated[int | None, typer.Option(
        help="With --auto-promote: prediction index where the world turns against the "
             "retrained model, so the policy rolls it back.")] = None,
) -> None:
    """Simulate an application: log a dataset, a run, register and promote a model, then
    stream predictions and delayed labels with drift seeded at --drift-at.

    Example: `modelog demo --feature-drift-at 6000 --drift-at 12000 --online` drifts an
    input first and the concept later, with an online River challenger learning;
    `modelog demo --retrain` waits for the retrain runner's candidate after the drift."""
    from modelog.streams.demo import DemoConfig, run_demo

    cfg = DemoConfig(predictions=predictions, drift_at=drift_at, rate=rate,
                     label_delay=label_delay, seed=seed, model=model,
                     feature_drift_at=feature_drift_at, online=online, retrain=retrain,
                     retrain_rows=retrain_rows, retrain_timeout=retrain_timeout,
                     auto_promote=auto_promote, degrade_at=degrade_at)
    if auto_promote and not retrain:
        raise typer.BadParameter("it promotes the candidate a retrain produces: add --retrain",
                                 param_hint="--auto-promote")
    if degrade_at is not None and not auto_promote:
        raise typer.BadParameter("it shows the automatic rollback of a promoted version: add "
                                 "--retrain --auto-promote", param_hint="--degrade-at")
    with exit_on_error():
        sent = run_demo(settings_of(ctx), cfg, echo=typer.echo)
    if (retrain and not sent.get("retrain_status")) or \
            (auto_promote and not sent.get("rollout_status")):
        raise typer.Exit(1)
