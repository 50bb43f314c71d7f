"""Benchmarks of serving through aliases (``modelog bench --predictor`` prints the figures).

:func:`bench_predictor_cost` times ``calls`` :meth:`Predictor.serve` calls one
by one (``time.perf_counter_ns`` around each) on an A/B policy
(``production=0.9 candidate=0.1``, a routing key per request, 8 features checked
against the version's signature, each answer logged as a ``PredictionMade``).
The model is negligible on purpose: ``predict_fn`` returns a constant without
looking at the (cached) scikit-learn object. Its own cost -- the same call
timed the same way, which also takes out the timer's overhead -- is measured
separately and subtracted, leaving the predictor's own cost per request:
routing, input check, output check, id and logging (target: median <= 20 us).

:func:`bench_alias_follow` runs ``predictors`` predictors of one model (each
following the registry in its own thread, as separate application processes
would) while a watcher thread sends each of them a request every millisecond;
``moves`` times it moves ``production`` to the other version and times, from
the registry's ``AliasSet`` event time to the moment the *last* of the
predictors answers with the new version (target: p99 under 1 s).

Figures depend on the machine and its load (``load_1m`` is returned); tests run
these at small sizes without asserting them. Needs the registry worker's
answers: both functions run a :class:`~modelog.streams.registry_agent.RegistryService`
in this process. May import :mod:`modelog.streams`, :mod:`modelog.store` and
:mod:`modelog.models`.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelog.config import Settings
from modelog.streams.bench.sdk import sample_inputs

if TYPE_CHECKING:
    from modelog.streams.sdk import Client

__all__ = ["bench_alias_follow", "bench_predictor", "bench_predictor_cost", "format_report"]


def _constant(model: object, inputs: object) -> float:
    """The benchmark's model call: a constant (the loaded model is not consulted)."""
    return 0.5


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[index])


def _register_two(client: Client, model: str) -> None:
    """Versions 1 and 2 of ``model`` (scikit-learn dummies over the 8 sample features)."""
    import pandas as pd
    from sklearn.dummy import DummyRegressor

    frame = pd.DataFrame(sample_inputs(50))
    for value in (0.0, 1.0):
        client.register_model(model, DummyRegressor(strategy="constant", constant=value)
                              .fit(frame, [value] * len(frame)), dataset=frame)


def bench_predictor_cost(settings: Settings, *, calls: int = 100_000,
                         warmup: int = 2_000) -> dict[str, float]:
    """The predictor's own cost per ``serve`` beyond the model's, in microseconds.

    Returns
    -------
    dict
        ``serve_median_us``, ``serve_p99_us`` (whole call), ``model_median_us``
        (the model call alone, timed the same way), ``own_median_us`` and
        ``own_p99_us`` (whole call minus the model's median), ``calls``,
        ``logged`` (predictions acknowledged by the broker) and ``load_1m``.
    """
    from modelog.streams.registry_agent import RegistryService
    from modelog.streams.sdk import connect

    xs = sample_inputs(1_000)
    keys = [f"user-{i}" for i in range(len(xs))]
    m = len(xs)
    clock = time.perf_counter_ns
    with RegistryService(settings), connect(settings=settings) as client:
        _register_two(client, "bench-serve")
        client.set_alias("bench-serve", "production", 1, reason="benchmark")
        client.set_alias("bench-serve", "candidate", 2, reason="benchmark")
        client.set_traffic("bench-serve", {"production": 0.9, "candidate": 0.1})
        with client.predictor("bench-serve", predict_fn=_constant,
                              code_version="bench") as predictor:
            serve = predictor.serve
            for i in range(warmup):  # loads both versions, fills the caches
                serve(xs[i % m], key=keys[i % m])
            client.flush(timeout=120.0)
            costs = [0] * calls
            for i in range(calls):
                t0 = clock()
                serve(xs[i % m], key=keys[i % m])
                costs[i] = clock() - t0
            model = None
            model_costs = [0] * calls
            for i in range(calls):
                t0 = clock()
                _constant(model, xs[i % m])
                model_costs[i] = clock() - t0
            served = predictor.stats.served
        client.flush(timeout=120.0)
        acked = client.stats.acked
    costs.sort()
    model_median = statistics.median(model_costs) / 1_000
    median = statistics.median(costs) / 1_000
    p99 = _percentile([float(c) for c in costs], 0.99) / 1_000
    return {
        "calls": float(calls), "served": float(served), "logged": float(acked),
        "serve_median_us": median, "serve_p99_us": p99, "model_median_us": model_median,
        "own_median_us": median - model_median, "own_p99_us": p99 - model_median,
        "load_1m": os.getloadavg()[0],
    }


def bench_alias_follow(settings: Settings, *, predictors: int = 3, moves: int = 30,
                       timeout: float = 10.0) -> dict[str, Any]:
    """Seconds from each ``AliasSet`` of ``production`` until every predictor serves it.

    Returns
    -------
    dict
        ``delays_s`` (one per move: the slowest predictor's), ``median_s``,
        ``p99_s``, ``max_s``, ``predictors``, ``moves`` and ``load_1m``.

    Raises
    ------
    BenchmarkError
        A predictor did not serve the new version within ``timeout`` seconds.
    """
    from modelog.streams.errors import BenchmarkError
    from modelog.streams.registry_agent import RegistryService
    from modelog.streams.sdk import connect

    inputs = sample_inputs(1)[0]
    delays: list[float] = []
    with RegistryService(settings), connect(settings=settings) as client, \
            connect(settings=settings) as app:  # the application's own producer: the
        _register_two(client, "bench-follow")   # registry commands' flushes never wait on it
        client.set_alias("bench-follow", "production", 1, reason="benchmark")
        running = [app.predictor("bench-follow", predict_fn=_constant, code_version="bench")
                   for _ in range(predictors)]
        try:
            for p in running:
                p.refresh()
            for move in range(moves):
                target = 2 if move % 2 == 0 else 1
                seen: dict[int, dt.datetime] = {}
                stop = threading.Event()

                def watch(target: int = target, seen: dict[int, dt.datetime] = seen,
                          stop: threading.Event = stop) -> None:
                    while len(seen) < len(running) and not stop.is_set():
                        for i, p in enumerate(running):
                            if i not in seen and p.serve(inputs).model_version == target:
                                seen[i] = dt.datetime.now(dt.UTC)
                        time.sleep(0.001)

                watcher = threading.Thread(target=watch, daemon=True)
                watcher.start()
                answer = client.set_alias("bench-follow", "production", target,
                                          reason=f"benchmark move {move}")
                watcher.join(timeout)
                stop.set()
                if len(seen) < len(running):
                    raise BenchmarkError(
                        f"only {len(seen)} of {len(running)} predictors served version {target} "
                        f"within {timeout:g} s of its AliasSet; is the broker overloaded?")
                delays.append((max(seen.values()) - answer.time).total_seconds())
        finally:
            for p in running:
                p.close()
    ordered = sorted(delays)
    return {
        "delays_s": delays, "median_s": statistics.median(ordered),
        "p99_s": _percentile(ordered, 0.99), "max_s": ordered[-1],
        "predictors": predictors, "moves": moves, "load_1m": os.getloadavg()[0],
    }


def bench_predictor(settings: Settings, *, calls: int = 100_000, predictors: int = 3,
                    moves: int = 30, echo: Callable[[str], object] = print) -> dict[str, Any]:
    """Run both benchmarks (each on its own topics under ``settings``' prefix); print the report."""
    cost = bench_predictor_cost(settings.replace(topic_prefix=settings.topic_prefix + "cost."),
                                calls=calls)
    follow = bench_alias_follow(
        settings.replace(topic_prefix=settings.topic_prefix + "follow."),
        predictors=predictors, moves=moves)
    result = {"cost": cost, "follow": follow}
    echo(format_report(result))
    return result


def format_report(r: dict[str, Any]) -> str:
    """The benchmark's lines, as ``modelog bench --predictor`` prints them.

    Examples
    --------
    >>> print(format_report({
    ...     "cost": {"calls": 100_000.0, "own_median_us": 6.1, "own_p99_us": 14.2,
    ...              "model_median_us": 0.2, "load_1m": 2.5},
    ...     "follow": {"predictors": 3, "moves": 30, "median_s": 0.05, "p99_s": 0.2,
    ...                "max_s": 0.2, "load_1m": 2.5}}))
    predictor           6.1 us median own cost per predict (routing, input check, logging),
    p99 14.2 us; 100,000 calls, model call 0.2 us subtracted  [target median <= 20 us]
    predictor         200.0 ms p99 from an alias change to all 3 predictors serving it (median
    50.0 ms, max 200.0 ms over 30 moves)  [target p99 < 1 s]  (load average 2.5)
    """
    c, f = r["cost"], r["follow"]
    return (f"predictor  {c['own_median_us']:>12.1f} us median own cost per predict (routing, "
            f"input check, logging),\np99 {c['own_p99_us']:.1f} us; {c['calls']:,.0f} calls, "
            f"model call {c['model_median_us']:.1f} us subtracted  [target median <= 20 us]\n"
            f"predictor  {f['p99_s'] * 1000:>12.1f} ms p99 from an alias change to all "
            f"{f['predictors']} predictors serving it (median\n{f['median_s'] * 1000:.1f} ms, "
            f"max {f['max_s'] * 1000:.1f} ms over {f['moves']} moves)  [target p99 < 1 s]  "
            f"(load average {f['load_1m']:.1f})")
