"""Throughput of the pure :class:`~modelog.models.monitor.ServingMonitor` with every monitor on.

:func:`bench_monitor` builds a synthetic serving log (predictions of one model
version with five inputs -- three numeric, two categorical -- and a class
output; every prediction labelled a few events later), then times
``ServingMonitor.process`` over it with concept drift, per-feature data drift,
prediction drift, skew (against a signature) and anomaly scoring on. Event
construction is not timed. ``anomaly_sample_every`` trades anomaly coverage
for speed (see :class:`~modelog.models.monitor_config.MonitorConfig`).

Run ``python -m modelog.streams.bench.monitor`` for the figures.

Examples
--------
>>> r = bench_monitor(n=2_000, anomaly_sample_every=4)
>>> r["predictions"], r["events"] > r["predictions"], r["events_per_s"] > 0
(2000, True, True)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import sys
import time
from typing import Any

from modelog.models.events import (
    ColumnSchema,
    Event,
    LabelObserved,
    ModelVersionRegistered,
    PredictionMade,
)
from modelog.models.monitor import ServingMonitor
from modelog.models.monitor_config import MonitorConfig

__all__ = ["bench_events", "bench_monitor", "main"]

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SIGNATURE = [("age", "double"), ("income", "double"), ("visits", "int64"),
             ("plan", "string"), ("region", "string")]


def bench_events(n: int, *, seed: int = 0, label_lag: int = 5) -> list[Event]:
    """``n`` predictions of model ``bench`` v1, each labelled ``label_lag`` predictions later."""
    rng = random.Random(seed)
    events: list[Event] = []
    outputs: list[int] = []
    plans, regions = ("basic", "pro", "team"), ("eu", "us", "apac", "latam")
    for i in range(n + label_lag):
        t = T0 + dt.timedelta(milliseconds=10 * i)
        if i < n:
            out = rng.randint(0, 1)
            outputs.append(out)
            events.append(PredictionMade(
                id=f"e{i}", time=t, aggregate="bench", producer="bench", prediction_id=f"p{i}",
                model="bench", model_version=1, output=out,
                inputs={"age": rng.gauss(40, 10), "income": rng.lognormvariate(10, 0.5),
                        "visits": rng.randint(0, 30), "plan": rng.choice(plans),
                        "region": rng.choice(regions)},
            ))
        j = i - label_lag
        if 0 <= j < n:
            wrong = rng.random() < 0.1
            events.append(LabelObserved(
                id=f"l{j}", time=t + dt.timedelta(milliseconds=5), aggregate="bench",
                producer="bench", prediction_id=f"p{j}", model="bench",
                label=1 - outputs[j] if wrong else outputs[j],
            ))
    return events


def bench_monitor(n: int = 50_000, *, anomaly: bool = True, anomaly_sample_every: int = 1,
                  seed: int = 0, config: MonitorConfig | None = None) -> dict[str, Any]:
    """Time :meth:`ServingMonitor.process` over ``n`` predictions and their labels.

    Returns
    -------
    dict
        ``predictions``, ``events`` (predictions + labels), ``seconds``,
        ``events_per_s``, ``predictions_per_s``, ``derived`` (events the
        monitor emitted), ``us_per_prediction`` and the settings used.
    """
    cfg = config or MonitorConfig()
    cfg = dataclasses.replace(cfg, anomaly=dataclasses.replace(
        cfg.anomaly, enabled=anomaly, sample_every=anomaly_sample_every))
    events = bench_events(n, seed=seed)
    monitor = ServingMonitor(cfg)
    monitor.process(ModelVersionRegistered(
        id="r1", time=T0, aggregate="bench", model="bench", model_version=1, flavor="river",
        artifact_uri="file:///bench", artifact_digest="0" * 64,
        signature=[ColumnSchema(name, typ) for name, typ in SIGNATURE],
    ))
    process = monitor.process
    derived = 0
    start = time.perf_counter()
    for event in events:
        derived += len(process(event))
    seconds = time.perf_counter() - start
    return {
        "predictions": n,
        "events": len(events),
        "seconds": seconds,
        "events_per_s": len(events) / seconds,
        "predictions_per_s": n / seconds,
        "us_per_prediction": seconds / n * 1e6,
        "derived": derived,
        "anomaly": anomaly,
        "anomaly_sample_every": anomaly_sample_every,
    }


def main(argv: list[str] | None = None) -> int:
    """Print the throughput with anomaly scoring off, on every input and sampled."""
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 50_000
    for anomaly, every in ((False, 1), (True, 1), (True, 4), (True, 10)):
        r = bench_monitor(n, anomaly=anomaly, anomaly_sample_every=every)
        label = f"anomaly 1/{every}" if anomaly else "anomaly off"
        print(f"{label:>12}: {r['events_per_s']:>9,.0f} events/s  "
              f"{r['predictions_per_s']:>9,.0f} predictions/s  "
              f"{r['us_per_prediction']:6.1f} µs/prediction  ({r['derived']} derived)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
