"""Benchmarks of the retrain path: request-to-start latency and training-data assembly.

:func:`bench_request_latency` starts a retrain runner in this process, sends
``requests`` ``RetrainRequested`` events one after the other and measures, for
each, the time from the request (its event time, set when it is sent) to its
job being marked running in the job table (target: under 5 s). The jobs then
end however they end (nothing is trained: no labelled traffic).

:func:`bench_training_data` fills an in-memory DuckDB projection with ``rows``
labelled predictions (four inputs each, one label each plus a few late
duplicate labels), then times :func:`modelog.store.training_data.assemble`
over it -- the join with the first label, the JSON-to-columns and the fetch
into Arrow -- and prints the rows per second (target: at least 1,000,000).
Never asserted in tests: the figure depends on the machine.

May import :mod:`modelog.store` and :mod:`modelog.models`.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

from modelog.config import Settings

__all__ = ["bench_request_latency", "bench_training_data"]


def bench_request_latency(settings: Settings, *, requests: int = 5, timeout: float = 60.0,
                          echo: Callable[[str], object] = print) -> dict[str, float]:
    """Seconds from ``RetrainRequested`` to its job's start (median and max); print them.

    ``settings`` must reach a broker and a data directory of its own (the
    runner's job table is created there).
    """
    import duckdb

    from modelog.models.retrain_job import trainer_table
    from modelog.store.retrain_jobs import JOB_TABLE_FILE, JobTable
    from modelog.store.schema import create_schema
    from modelog.streams.errors import BenchmarkError
    from modelog.streams.retrainer import Retrainer, request_retrain
    from modelog.streams.sdk import connect

    trainers = trainer_table(["bench-retrain=modelog.streams.bench.retrain:no_trainer"])
    with duckdb.connect(str(settings.duckdb_path)) as con:  # an empty projection: the jobs
        create_schema(con)                                 # find no rows and end at once
    stop = threading.Event()
    runner = Retrainer(settings, trainers, timeout=30.0, label_wait=0.0, io_retries=0)
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    latencies: list[float] = []
    try:
        with connect(settings=settings) as client, \
                JobTable(settings.data_dir / JOB_TABLE_FILE) as jobs:
            for _ in range(requests):
                request = request_retrain(client, "bench-retrain", reason="benchmark")
                deadline = time.monotonic() + timeout
                started = None
                while started is None and time.monotonic() < deadline:
                    job = jobs.get(request.id)
                    started = None if job is None else job.started_at
                    time.sleep(0.01)
                if started is None:
                    raise BenchmarkError(f"the runner did not start the job of {request.id} "
                                         f"within {timeout:g} s")
                latencies.append((started - request.time).total_seconds())
                while runner.busy:  # one job at a time: each starts on an idle runner
                    time.sleep(0.05)
    finally:
        stop.set()
        thread.join(60)
    out = {"median_s": statistics.median(latencies), "max_s": max(latencies)}
    echo(f"retrain start  {len(latencies)} requests: median {out['median_s']:.3f} s, max "
         f"{out['max_s']:.3f} s from RetrainRequested to the job's start (target < 5 s)")
    return out


def no_trainer(data: object, context: object) -> object:  # pragma: no cover - never reached
    """The benchmark's trainer (its jobs end before training: no labelled traffic)."""
    raise AssertionError("the benchmark trains nothing")


def bench_training_data(rows: int = 1_000_000, *, repeat: int = 3,
                        echo: Callable[[str], object] = print) -> dict[str, float]:
    """Time the assembly of ``rows`` labelled predictions; return and print the figures.

    Returns ``{"rows": ..., "seconds": best time, "rows_per_s": ...}``.
    """
    import duckdb

    from modelog.store.schema import create_schema
    from modelog.store.training_data import assemble, duckdb_query

    con = duckdb.connect()
    create_schema(con)
    con.execute(f"""
INSERT INTO predictions
SELECT 'e' || i, 'p' || i, 'bench', 1, NULL,
       TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_milliseconds(i),
       json_object('usage', round(random(), 4), 'tenure', round(random(), 4),
                   'spend', round(50 + random() * 10, 2),
                   'plan', ['basic', 'pro', 'team'][1 + i % 3]),
       CAST(i % 2 AS JSON), 'bench', NULL
FROM range({rows}) t(i);
INSERT INTO labels
SELECT 'l' || i, 'p' || i, 'bench', TIMESTAMPTZ '2026-01-02 00:00:00+00' + to_milliseconds(i),
       CAST((i * 7) % 2 AS JSON)
FROM range({rows}) t(i);
INSERT INTO labels  -- late corrections: only the first label counts
SELECT 'm' || i, 'p' || i, 'bench', TIMESTAMPTZ '2026-01-03 00:00:00+00', CAST(1 AS JSON)
FROM range(0, {rows}, 100) t(i);""")
    query = duckdb_query(con)
    best = float("inf")
    n = 0
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        data = assemble(query, "bench", holdout_share=0.2)
        best = min(best, time.perf_counter() - t0)
        n = data.table.num_rows
    con.close()
    rate = n / best if best > 0 else float("inf")
    echo(f"training data  {n:,} labelled predictions -> Arrow in {best:.3f} s: "
         f"{rate:,.0f} rows/s (target >= 1,000,000)")
    return {"rows": float(n), "seconds": best, "rows_per_s": rate}
