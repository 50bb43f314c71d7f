"""The MLflow half of the tracking benchmark (see :mod:`modelog.streams.bench.tracking`).

A standalone script run by the *MLflow* virtualenv's Python, never imported by
modelog (it imports only the standard library and MLflow)::

    <venv>/bin/python mlflow_side.py --workdir /tmp/x --metrics 100000 --runs 10000

It uses MLflow's SQLite tracking store (``sqlite:///<workdir>/mlflow.db``) and
measures, in this order:

1. ``log_metric_per_s``: single ``mlflow.log_metric`` calls per second, on a
   sample of ``--calls`` calls (100,000 of them would take minutes; the rate is
   what extrapolates);
2. ``log_batch_per_s``: metrics per second logging ``--metrics`` metrics with
   ``MlflowClient.log_batch`` in batches of ``--batch`` (MLflow's maximum is 1,000);
3. ``runs_per_s``: creating ``--runs`` runs, each with params ``model`` and
   ``depth`` and a metric ``f1`` (create, one ``log_batch``, terminate);
4. ``search_s``: the median of ``--repeats`` calls of ``mlflow.search_runs``
   with the filter ``--filter`` over those runs (after one warm-up call).

The runs are the ones :func:`modelog.streams.bench.tracking.run_spec` describes;
the names of the runs the search returned are reported so the orchestrator
can check MLflow found exactly the expected runs.

The result is printed as ONE JSON line on stdout (the last line); progress
goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from typing import Any

MODELS = ("rf", "gbm", "lr")
GOLDEN = 0.618033988749895


def run_spec(i: int) -> tuple[str, str, int, float]:
    """``(name, model, depth, f1)`` of benchmark run ``i`` (same as modelog's side)."""
    return f"run-{i:05d}", MODELS[i % 3], 2 + (i // 3) % 8, round((i * GOLDEN) % 1.0, 6)


def _say(message: str) -> None:
    print(f"[mlflow side] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the MLflow measurements; print and return the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="directory for mlflow.db")
    parser.add_argument("--metrics", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--filter", default="metrics.f1 > 0.8 and params.model = 'rf'")
    args = parser.parse_args(argv)

    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)

    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    os.makedirs(args.workdir, exist_ok=True)
    uri = f"sqlite:///{os.path.abspath(os.path.join(args.workdir, 'mlflow.db'))}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    begin = time.perf_counter()
    metrics_exp = client.create_experiment("bench-metrics")  # creates the schema
    setup_s = time.perf_counter() - begin

    _say(f"{args.calls:,} log_metric calls ...")
    with mlflow.start_run(experiment_id=metrics_exp, run_name="log-metric"):
        start = time.perf_counter()
        for i in range(args.calls):
            mlflow.log_metric(f"m{i % 10}", 1.0 / (1 + i), step=i // 10)
        call_s = time.perf_counter() - start

    _say(f"{args.metrics:,} metrics with log_batch({args.batch}) ...")
    run_id = client.create_run(metrics_exp, run_name="log-batch").info.run_id
    now_ms = int(time.time() * 1000)
    start = time.perf_counter()
    for first in range(0, args.metrics, args.batch):
        batch = [Metric(f"m{i % 10}", 1.0 / (1 + i), now_ms, i // 10)
                 for i in range(first, min(first + args.batch, args.metrics))]
        client.log_batch(run_id, metrics=batch)
    batch_s = time.perf_counter() - start
    client.set_terminated(run_id)

    _say(f"{args.runs:,} runs with params and an f1 metric ...")
    search_exp = client.create_experiment("bench-search")
    start = time.perf_counter()
    for i in range(args.runs):
        name, model, depth, f1 = run_spec(i)
        rid = client.create_run(search_exp, run_name=name).info.run_id
        client.log_batch(rid, metrics=[Metric("f1", f1, int(time.time() * 1000), 0)],
                         params=[Param("model", model), Param("depth", str(depth))])
        client.set_terminated(rid)
        if i and i % 2_000 == 0:
            _say(f"  {i:,} runs")
    runs_s = time.perf_counter() - start

    _say(f"search_runs({args.filter!r}) x {args.repeats} ...")

    def search() -> Any:
        return mlflow.search_runs(experiment_ids=[search_exp], filter_string=args.filter,
                                  max_results=max(args.runs, 1))

    found = search()  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        found = search()
        times.append(time.perf_counter() - start)
    names = sorted(str(n) for n in found["tags.mlflow.runName"].tolist()) if len(found) else []

    result = {
        "mlflow_version": mlflow.__version__,
        "tracking_uri": uri,
        "setup_s": setup_s,
        "log_metric_calls": args.calls,
        "log_metric_s": call_s,
        "log_metric_per_s": args.calls / call_s if call_s > 0 else 0.0,
        "log_batch_metrics": args.metrics,
        "log_batch_size": args.batch,
        "log_batch_s": batch_s,
        "log_batch_per_s": args.metrics / batch_s if batch_s > 0 else 0.0,
        "runs": args.runs,
        "runs_s": runs_s,
        "runs_per_s": args.runs / runs_s if runs_s > 0 else 0.0,
        "search_filter": args.filter,
        "search_s": statistics.median(times),
        "search_times_s": times,
        "search_matches": len(names),
        "search_names": names,
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
