"""Benchmark of the producer SDK's hot path (``modelog bench`` prints the figures).

One process logs representative predictions (8 features, ~450-byte JSON
events: the envelope alone takes ~250) as fast as it can through
:meth:`Client.log_prediction`: once timing every call with
``time.perf_counter_ns``, once for throughput. Throughput counts the final
flush, so it is what the broker actually acknowledged.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from modelog.config import Settings

__all__ = ["bench_sdk", "sample_inputs"]


def sample_inputs(count: int = 1_000, seed: int = 7) -> list[dict[str, Any]]:
    """``count`` feature dicts typical of a tabular model (8 features, mixed types).

    Examples
    --------
    >>> xs = sample_inputs(2)
    >>> len(xs), sorted(xs[0])[:3]
    (2, ['age', 'country', 'has_card'])
    """
    rng = random.Random(seed)
    return [
        {
            "age": rng.randint(18, 90),
            "income": round(rng.lognormvariate(10.5, 0.6), 2),
            "tenure_months": rng.randint(0, 240),
            "monthly_usage": round(rng.gammavariate(2.0, 15.0), 3),
            "plan": rng.choice(("basic", "pro", "team", "enterprise")),
            "country": rng.choice(("DE", "FR", "US", "BR", "IN", "JP")),
            "has_card": rng.random() < 0.7,
            "support_calls": rng.randint(0, 12),
        }
        for _ in range(count)
    ]


def _percentile(sorted_values: list[int], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[index])


def bench_sdk(settings: Settings, n: int = 200_000) -> dict[str, float]:
    """Log ``n`` predictions twice through a fresh client and return the measurements.

    The first pass times every call (``time.perf_counter_ns`` around each
    ``log_prediction``); the second measures throughput without that
    instrumentation. Both end with a flush.

    Returns
    -------
    dict
        ``predictions_per_s`` (accepted *and acknowledged*: the clock stops
        after the final flush), ``accept_per_s`` (calls per second, without the
        flush), ``flush_s``, ``call_median_us``, ``call_p99_us``,
        ``call_p999_us``, ``call_max_us`` (application-side cost of one call),
        ``event_bytes`` (size of one encoded event), ``acked`` and ``n``.
    """
    from modelog.models import codec
    from modelog.models.events import PredictionMade
    from modelog.streams import sdk

    xs = sample_inputs()
    outputs = [round(random.Random(i).random(), 4) for i in range(len(xs))]
    m = len(xs)
    costs = [0] * n
    clock = time.perf_counter_ns
    with sdk.connect(settings=settings) as client:
        sample = codec.encode(PredictionMade(
            id=client.new_id(), time=client.new_id.time, aggregate="churn-gbm",
            producer=settings.producer_name, prediction_id=client.new_id(), model="churn-gbm",
            model_version=12, code_version="abc1234", inputs=xs[0], output=outputs[0],
        ))
        log = client.log_prediction
        for i in range(n):  # pass 1: cost of each call
            t0 = clock()
            log("churn-gbm", 12, xs[i % m], outputs[i % m], code_version="abc1234")
            costs[i] = clock() - t0
        client.flush(timeout=120.0)
        start = time.perf_counter()
        for i in range(n):  # pass 2: throughput
            log("churn-gbm", 12, xs[i % m], outputs[i % m], code_version="abc1234")
        accepted = time.perf_counter()
        client.flush(timeout=120.0)
        done = time.perf_counter()
        acked = client.stats.acked
    costs.sort()
    return {
        "n": float(n),
        "acked": float(acked),
        "predictions_per_s": n / (done - start),
        "accept_per_s": n / (accepted - start),
        "flush_s": done - accepted,
        "call_median_us": statistics.median(costs) / 1_000,
        "call_p99_us": _percentile(costs, 0.99) / 1_000,
        "call_p999_us": _percentile(costs, 0.999) / 1_000,
        "call_max_us": costs[-1] / 1_000,
        "event_bytes": float(len(sample)),
    }
