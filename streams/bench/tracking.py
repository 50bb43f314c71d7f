"""Benchmark: experiment tracking, modelog against MLflow on the same machine.

Run it with ``python -m modelog.streams.bench.tracking`` (an embedded broker is
started unless ``MODELOG_BROKER`` is set) or through ``modelog bench --tracking``.

What is measured, on both sides:

* **logging metrics**: ``metrics`` (default 100,000) values logged to one run.
  modelog: ``run.log_metric(key, value, step)`` in a loop (the SDK batches
  the points into ``MetricsLogged`` events of :data:`~modelog.streams.run.METRIC_BATCH`),
  the clock stopping when ``client.flush()`` returns, i.e. when Kafka
  acknowledged every event; then the end-to-end rate until all points are
  in DuckDB's ``run_metrics`` through the projector (started after the
  logging, its one-off start-up not counted). MLflow (SQLite store):
  single ``log_metric`` calls on a sample (extrapolated: 100,000 would take
  minutes) and ``log_batch`` in batches of 1,000.
* **searching runs**: ``runs`` (default 10,000) runs, each with params
  ``model`` (rf/gbm/lr) and ``depth`` and a metric ``f1`` (:func:`run_spec`),
  then the median time of 5 searches (after a warm-up) with
  :data:`SEARCH_FILTER`: modelog's :func:`~modelog.store.filters.select_runs`
  SQL on the projector's DuckDB connection and through
  :class:`~modelog.store.reader.Reader` (the HTTP query server), MLflow's
  ``mlflow.search_runs``. Both sides must return exactly the expected runs
  (:func:`expected_matches`).

MLflow runs in its own virtualenv (``<data_dir>/bench/mlflow-venv``, created
on first use with ``pip install mlflow``), so modelog's environment never
depends on it; :mod:`modelog.streams.bench.mlflow_side` is the script it runs.
Its SQLite file goes on a tmpfs (``/dev/shm``) when there is one, as the
embedded broker's log lives in memory too (on this machine's virtual disk every
MLflow commit waits for an fsync, about 3x slower).
When MLflow cannot be installed, only modelog's figures are reported, with
the reason.

Use a fresh topic prefix: the search covers every run on the run topic.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from modelog.config import Settings
from modelog.streams.errors import BenchmarkError, MlflowUnavailableError

__all__ = [
    "MLFLOW_SIDE_SCRIPT",
    "SEARCH_FILTER",
    "TARGET_RATIO",
    "TARGET_SEARCH_S",
    "RunSpec",
    "bench_tracking",
    "ensure_mlflow_venv",
    "expected_matches",
    "format_report",
    "main",
    "run_mlflow_side",
    "run_spec",
]

SEARCH_FILTER = "metrics.f1 > 0.8 and params.model = 'rf'"
"""The filter both sides search with (the issue's example)."""
TARGET_RATIO = 20.0
"""modelog's acknowledged metrics/s must be at least this multiple of MLflow's batched rate."""
TARGET_SEARCH_S = 0.050
"""A filtered search over 10,000 runs must take less than this (seconds)."""
MLFLOW_SIDE_SCRIPT = Path(__file__).with_name("mlflow_side.py")
"""The standalone script the MLflow virtualenv runs."""

_MODELS = ("rf", "gbm", "lr")
_GOLDEN = 0.618033988749895
_METRICS_EXPERIMENT = "bench-metrics"
_SEARCH_EXPERIMENT = "bench-search"
_LATEST_METRICS_VIEW = (
    "CREATE VIEW IF NOT EXISTS run_latest_metrics AS "
    "SELECT run_id, key, arg_max(value, (step, time)) AS value FROM run_metrics GROUP BY ALL"
)
"""Stand-in until the projection provides ``run_latest_metrics`` (then this is a no-op)."""


class RunSpec(NamedTuple):
    """What benchmark run ``i`` logs (the MLflow side builds the same runs)."""

    name: str
    model: str
    depth: int
    f1: float


def run_spec(i: int) -> RunSpec:
    """The name, params and ``f1`` of benchmark run ``i`` (deterministic, ~20% have f1 > 0.8).

    Examples
    --------
    >>> run_spec(0)
    RunSpec(name='run-00000', model='rf', depth=2, f1=0.0)
    >>> run_spec(4)
    RunSpec(name='run-00004', model='gbm', depth=3, f1=0.472136)
    """
    return RunSpec(f"run-{i:05d}", _MODELS[i % 3], 2 + (i // 3) % 8,
                   round((i * _GOLDEN) % 1.0, 6))


def expected_matches(runs: int) -> list[str]:
    """Sorted names of the runs among the first ``runs`` that :data:`SEARCH_FILTER` selects.

    Examples
    --------
    >>> expected_matches(30)
    ['run-00003', 'run-00021', 'run-00024']
    """
    specs = (run_spec(i) for i in range(runs))
    return sorted(s.name for s in specs if s.f1 > 0.8 and s.model == "rf")


# -- modelog side ----------------------------------------------------------------------
def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Call ``fn`` once to warm up, then ``repeats`` times; (median s, all times, last result)."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def _project_until(projector: Any, sql: str, params: Sequence[Any], target: int,
                   timeout: float) -> int:
    """``project_once`` until ``sql`` (a count) reaches ``target``; return the count."""
    deadline = time.monotonic() + timeout
    count = -1
    while True:
        consumed = projector.project_once(timeout=0.1)
        if consumed or count < 0:
            count = int(projector.connection.execute(sql, list(params)).fetchall()[0][0])
        if count >= target:
            return count
        if time.monotonic() > deadline:
            raise BenchmarkError(
                f"only {count:,} of {target:,} rows reached DuckDB after {timeout:.0f} s "
                f"({sql!r}); is the broker at {projector.settings.bootstrap_servers} healthy, "
                "and is the topic prefix fresh?"
            )


def _log_metrics(client: Any, n: int) -> tuple[str, float, float]:
    """Log ``n`` metric values to one run; (run id, accept s, acknowledged s)."""
    with client.start_run(_METRICS_EXPERIMENT, "log-metric", capture_code=False) as run:
        log = run.log_metric
        start = time.perf_counter()
        for i in range(n):
            log(f"m{i % 10}", 1.0 / (1 + i), i // 10)
        accepted = time.perf_counter() - start
    client.flush(timeout=120.0)
    return run.run_id, accepted, time.perf_counter() - start


def _log_runs(client: Any, n: int) -> float:
    """Create ``n`` finished runs (:func:`run_spec`); seconds until acknowledged."""
    start = time.perf_counter()
    for i in range(n):
        spec = run_spec(i)
        with client.start_run(_SEARCH_EXPERIMENT, spec.name, capture_code=False) as run:
            run.log_params({"model": spec.model, "depth": spec.depth})
            run.log_metric("f1", spec.f1)
    client.flush(timeout=120.0)
    return time.perf_counter() - start


def _bench_modelog(settings: Settings, db_dir: Path, metrics: int, runs: int,
                   repeats: int) -> dict[str, Any]:
    from modelog.store.filters import select_runs
    from modelog.store.reader import Reader
    from modelog.streams import sdk
    from modelog.streams.projector import Projector
    from modelog.streams.topics import ensure_topics

    ensure_topics(settings)
    out: dict[str, Any] = {"metrics": metrics, "runs": runs}
    store = settings.replace(data_dir=db_dir)
    projector = Projector(store, serve=True)
    try:
        with sdk.connect(settings=settings, create_topics=False) as client:
            # 1. metrics: acknowledged by Kafka, then visible in DuckDB. The projector
            # starts afterwards (its consumer would prefetch on the same 2 cores) and
            # its start-up, a one-off, is not counted.
            run_id, accept_s, acked_s = _log_metrics(client, metrics)
            begin = time.perf_counter()
            projector.start()
            out["projector_start_s"] = time.perf_counter() - begin
            start = time.perf_counter()
            _project_until(projector, "SELECT count(*) FROM run_metrics WHERE run_id = ?",
                           [run_id], metrics, timeout=60.0 + metrics / 1_000)
            project_s = time.perf_counter() - start
            out.update(
                log_metric_accept_per_s=metrics / accept_s,
                log_metric_s=acked_s,
                log_metric_per_s=metrics / acked_s,
                project_metrics_s=project_s,
                e2e_metrics_s=acked_s + project_s,
                e2e_metrics_per_s=metrics / (acked_s + project_s),
            )
            # 2. runs with params and f1, projected
            runs_s = _log_runs(client, runs)
        start = time.perf_counter()
        _project_until(
            projector, "SELECT count(*) FROM runs WHERE experiment = ? AND status = 'finished'",
            [_SEARCH_EXPERIMENT], runs, timeout=60.0 + runs / 200,
        )
        out.update(runs_s=runs_s, runs_per_s=runs / runs_s,
                   project_runs_s=time.perf_counter() - start)
        # 3. the filtered search, on the writer's connection and over HTTP
        con = projector.connection
        con.execute(_LATEST_METRICS_VIEW)
        sql, params = select_runs(SEARCH_FILTER)
        name_col = [d[0] for d in con.execute(sql, params).description].index("name")
        search_s, times, rows = _median_time(lambda: con.execute(sql, params).fetchall(),
                                             repeats)
        reader = Reader(store.replace(query_url=projector.query_url))
        reader_s, reader_times, table = _median_time(lambda: reader.query(sql, params), repeats)
        expected = expected_matches(runs)
        names = sorted(str(r[name_col]) for r in rows)
        reader_names = sorted(str(n) for n in table.column("name").to_pylist())
        out.update(
            search_filter=SEARCH_FILTER, search_s=search_s, search_times_s=times,
            search_reader_s=reader_s, search_reader_times_s=reader_times,
            search_matches=len(names), search_expected=len(expected),
            search_correct=names == expected and reader_names == expected,
        )
    finally:
        projector.close()
    return out


# -- MLflow side -----------------------------------------------------------------------
def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_mlflow_venv(venv: Path, *, timeout: float = 1_800.0) -> Path:
    """The Python of a virtualenv at ``venv`` with MLflow installed (created when missing).

    Raises
    ------
    MlflowUnavailableError
        The virtualenv could not be created or ``pip install mlflow`` failed
        (no network, no wheel for this platform); the message has pip's last lines.
    """
    python = venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    check = [str(python), "-c", "import mlflow; print(mlflow.__version__)"]
    if python.exists() and subprocess.run(check, capture_output=True, timeout=120).returncode == 0:
        return python
    print(f"installing MLflow into {venv} (once; takes a few minutes) ...", file=sys.stderr)
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              "mlflow"]]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MlflowUnavailableError(f"`{' '.join(step)}` failed: {exc}") from None
        if done.returncode != 0:
            raise MlflowUnavailableError(
                f"`{' '.join(step)}` exited with {done.returncode}: {_tail(done.stderr)}. "
                "Check network access to PyPI (or a pip index/proxy), then run again; the "
                f"virtualenv is reused from {venv} once it works."
            )
    return python


def run_mlflow_side(python: Path, workdir: Path, *, metrics: int, runs: int,
                    calls: int = 2_000, batch: int = 1_000, repeats: int = 5,
                    timeout: float = 3_600.0) -> dict[str, Any]:
    """Run :data:`MLFLOW_SIDE_SCRIPT` with ``python``; return its JSON result.

    Raises
    ------
    MlflowUnavailableError
        The script failed, timed out or printed no JSON result.
    """
    cmd = [str(python), str(MLFLOW_SIDE_SCRIPT), "--workdir", str(workdir),
           "--metrics", str(metrics), "--runs", str(runs), "--calls", str(calls),
           "--batch", str(batch), "--repeats", str(repeats), "--filter", SEARCH_FILTER]
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True,
                              timeout=timeout, cwd=workdir)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MlflowUnavailableError(f"the MLflow side failed: {exc}") from None
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise MlflowUnavailableError(
            f"the MLflow side exited with {done.returncode} and no result (its errors are "
            f"above); stdout: {_tail(done.stdout)!r}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _bench_mlflow(venv: Path, workdir: Path, metrics: int, runs: int, calls: int,
                  repeats: int) -> dict[str, Any]:
    python = ensure_mlflow_venv(venv)
    result = run_mlflow_side(python, workdir, metrics=metrics, runs=runs, calls=calls,
                             repeats=repeats)
    names = result.pop("search_names", [])
    result["search_expected"] = len(expected_matches(runs))
    result["search_correct"] = names == expected_matches(runs)
    return result


def _memory_dir() -> Path | None:
    """A writable tmpfs (``/dev/shm``), if there is one.

    MLflow's SQLite file goes there: the embedded broker keeps the log in
    memory too, and without it every SQLite commit waits for the disk (about
    3x slower on this machine's virtual disk), which would flatter modelog.
    """
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


# -- orchestration ------------------------------------------------------------------
def bench_tracking(
    settings: Settings,
    *,
    metrics: int = 100_000,
    runs: int = 10_000,
    mlflow: bool = True,
    mlflow_venv: Path | None = None,
    log_metric_calls: int = 2_000,
    repeats: int = 5,
    db_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the tracking benchmark; return modelog's and MLflow's figures and the ratios.

    Parameters
    ----------
    settings
        Broker and a *fresh* topic prefix; ``data_dir`` holds the benchmark's
        files (``bench/``).
    metrics, runs
        Metric values to log, runs to create and search.
    mlflow
        Also measure MLflow (in its own virtualenv).
    mlflow_venv
        Where that virtualenv is (default ``<data_dir>/bench/mlflow-venv``);
        reused across runs.
    log_metric_calls
        Single ``mlflow.log_metric`` calls to time (its rate is extrapolated).
    repeats
        Timed searches per side (the median is reported), after one warm-up.
    db_dir
        Data directory of the benchmark's projector (and DuckDB file); kept
        afterwards when given, else a temporary directory that is removed.

    Returns
    -------
    dict
        ``modelog`` (figures, see :func:`format_report`), ``mlflow`` (figures or
        ``None``), ``mlflow_skipped`` (why, or ``None``), ``ratios`` and ``targets``
        (``{"value", "target", "met"}`` per target; ``met`` is ``None`` when unknown).

    Raises
    ------
    BenchmarkError
        modelog's side did not complete (the data never reached DuckDB).
    """
    if metrics < 1 or runs < 1:
        raise BenchmarkError(f"metrics and runs must be >= 1, got {metrics} and {runs}")
    bench_dir = settings.data_dir / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if db_dir is None:
            db_dir = Path(tempfile.mkdtemp(prefix="tracking-", dir=bench_dir))
            stack.callback(shutil.rmtree, db_dir, True)
        ours = _bench_modelog(settings, db_dir, metrics, runs, repeats)
        theirs: dict[str, Any] | None = None
        skipped: str | None = "not requested (mlflow=False)"
        if mlflow:
            workdir = Path(tempfile.mkdtemp(prefix="modelog-bench-mlflow-",
                                            dir=_memory_dir() or bench_dir))
            stack.callback(shutil.rmtree, workdir, True)
            try:
                theirs = _bench_mlflow(mlflow_venv or bench_dir / "mlflow-venv", workdir,
                                       metrics, runs, log_metric_calls, repeats)
                theirs["db_in_memory"] = workdir.is_relative_to("/dev/shm")
                skipped = None
            except MlflowUnavailableError as exc:
                skipped = str(exc)
    return {"modelog": ours, "mlflow": theirs, "mlflow_skipped": skipped,
            **_compare(ours, theirs)}


def _compare(ours: dict[str, Any], theirs: dict[str, Any] | None) -> dict[str, Any]:
    """Ratios and targets (pure)."""
    ratios: dict[str, float] = {}
    if theirs is not None:
        ratios = {
            "acked_vs_log_batch": ours["log_metric_per_s"] / theirs["log_batch_per_s"],
            "acked_vs_log_metric": ours["log_metric_per_s"] / theirs["log_metric_per_s"],
            "e2e_vs_log_batch": ours["e2e_metrics_per_s"] / theirs["log_batch_per_s"],
            "runs_created": ours["runs_per_s"] / theirs["runs_per_s"],
            "search_speedup": theirs["search_s"] / ours["search_s"],
        }
    ratio = ratios.get("acked_vs_log_batch")
    targets = {
        "ratio": {"value": ratio, "target": TARGET_RATIO,
                  "met": None if ratio is None else ratio >= TARGET_RATIO},
        "search_s": {"value": ours["search_s"], "target": TARGET_SEARCH_S,
                     "met": ours["search_s"] < TARGET_SEARCH_S and ours["search_correct"]},
    }
    return {"ratios": ratios, "targets": targets}


# -- report --------------------------------------------------------------------------
def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:,.1f} ms"


def _times(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}x"


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("PASS" if met else "FAIL")


def format_report(result: dict[str, Any]) -> str:
    """The benchmark result as a table with the targets.

    Examples
    --------
    >>> ours = {"metrics": 10, "runs": 3, "log_metric_per_s": 1e6,
    ...         "log_metric_accept_per_s": 2e6, "e2e_metrics_per_s": 5e5, "runs_per_s": 1e4,
    ...         "search_s": 0.004, "search_reader_s": 0.006, "search_matches": 1,
    ...         "search_expected": 1, "search_correct": True, "projector_start_s": 0.5}
    >>> print(format_report({"modelog": ours, "mlflow": None, "mlflow_skipped": "no network",
    ...                      **_compare(ours, None)}))  # doctest: +ELLIPSIS
    tracking benchmark: 10 metrics, 3 runs ...
    MLflow skipped: no network
    ...
      search over 10,000 runs < 50 ms ... 4.0 ms  PASS (measured over 3 runs)
    """
    ours, theirs = result["modelog"], result.get("mlflow")
    t = theirs or {}
    ratios, targets = result.get("ratios", {}), result["targets"]
    where = " (file on tmpfs)" if t.get("db_in_memory") else ""
    version = f"MLflow {t['mlflow_version']} on SQLite{where}" if theirs else "without MLflow"
    lines = [f"tracking benchmark: {ours['metrics']:,} metrics, {ours['runs']:,} runs "
             f"({version})"]
    if result.get("mlflow_skipped"):
        lines.append(f"MLflow skipped: {result['mlflow_skipped']}")
    calls = f" (x{t['log_metric_calls']:,})" if theirs else ""
    row = "  {:<44}{:>16}{:>16}{:>10}".format
    lines += [
        row("", "modelog", "MLflow", "ratio"),
        row("metrics/s, acked by Kafka vs log_batch(1000)", _rate(ours["log_metric_per_s"]),
            _rate(t.get("log_batch_per_s")), _times(ratios.get("acked_vs_log_batch"))),
        row(f"metrics/s, vs one log_metric per call{calls}", _rate(ours["log_metric_per_s"]),
            _rate(t.get("log_metric_per_s")), _times(ratios.get("acked_vs_log_metric"))),
        row("metrics/s, until visible in DuckDB", _rate(ours["e2e_metrics_per_s"]),
            _rate(t.get("log_batch_per_s")), _times(ratios.get("e2e_vs_log_batch"))),
        row("metrics/s, SDK calls accepted (no flush)", _rate(ours["log_metric_accept_per_s"]),
            "", ""),
        row("runs/s created (params + f1, finished)", _rate(ours["runs_per_s"]),
            _rate(t.get("runs_per_s")), _times(ratios.get("runs_created"))),
        row("search, median (DuckDB connection)", _ms(ours["search_s"]),
            _ms(t.get("search_s")), _times(ratios.get("search_speedup"))),
        row("search, through the query server (HTTP)", _ms(ours["search_reader_s"]), "", ""),
        row("runs found / expected",
            f"{ours['search_matches']:,}/{ours['search_expected']:,}",
            f"{t['search_matches']:,}/{t['search_expected']:,}" if theirs else "-", ""),
        f"  filter: {SEARCH_FILTER}",
    ]
    if theirs:
        lines.append(f"  MLflow's log_metric rate is extrapolated from {t['log_metric_calls']:,} "
                     "calls (100,000 would take minutes)")
    for side, figures in (("modelog", ours), ("MLflow", theirs)):
        if figures is not None and not figures["search_correct"]:
            lines.append(f"  WARNING: {side}'s search did not return exactly the expected runs")
    ratio, search = targets["ratio"], targets["search_s"]
    scale = "" if ours["runs"] == 10_000 else f" (measured over {ours['runs']:,} runs)"
    lines += [
        "targets:",
        f"  ratio >= {TARGET_RATIO:.0f}x MLflow's batched rate ..... "
        f"{_times(ratio['value'])}  {_verdict(ratio['met'])}",
        f"  search over 10,000 runs < {TARGET_SEARCH_S * 1e3:.0f} ms ....... "
        f"{_ms(search['value'])}  {_verdict(search['met'])}{scale}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``python -m modelog.streams.bench.tracking [--metrics N] [--runs N] [--no-mlflow]``.

    Uses ``MODELOG_BROKER`` or a fresh embedded broker, a fresh topic prefix,
    and ``MODELOG_DATA_DIR`` for the (reused) MLflow virtualenv.
    """
    import argparse

    from modelog.streams.broker import EmbeddedBroker

    parser = argparse.ArgumentParser(description="modelog vs MLflow tracking benchmark")
    parser.add_argument("--metrics", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--no-mlflow", action="store_true", help="measure modelog only")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    with contextlib.ExitStack() as stack:
        if not settings.broker:
            broker = stack.enter_context(EmbeddedBroker())
            settings = settings.replace(broker=broker.bootstrap_servers)
        settings = settings.replace(topic_prefix=f"bench{int(time.time())}.")
        result = bench_tracking(settings, metrics=args.metrics, runs=args.runs,
                                mlflow=not args.no_mlflow)
    print(format_report(result))
    return result


if __name__ == "__main__":
    main()
