"""The worker benchmark runs end to end and measures what it says (figures are not asserted)."""

from __future__ import annotations

import pytest

from modelog.config import Settings
from modelog.streams.bench.worker import bench_worker, format_report

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_bench_worker_measures_throughput_and_alert_latency(settings: Settings) -> None:
    result = bench_worker(settings, predictions=4_000, latency_models=4, latency_rate=6_000)
    assert 0 < result["records"] <= 8_000
    assert result["records_per_s"] > 0 and result["predictions_per_s"] > 0
    # every live model drifts once: at least one concept alert each arrives and is timed
    assert result["alerts"] >= 4
    assert 0 < result["latency_median_s"] <= result["latency_p99_s"] <= result["latency_max_s"]
    report = format_report(result)
    assert "predictions/s per worker" in report and "alert latency" in report
    assert isinstance(result["compiled"], int)


def test_the_report_names_several_worker_processes_and_keeps_the_target_for_one() -> None:
    base = {"records": 10, "predictions": 5, "seconds": 1.0, "records_per_s": 24_000.0,
            "predictions_per_s": 12_000.0, "alerts": 0, "latency_median_s": None,
            "latency_p99_s": None, "latency_max_s": None}
    one = format_report({**base, "processes": 1})
    two = format_report({**base, "processes": 2})
    assert "12,000 predictions/s per worker" in one and "[target >= 20,000]" in one
    assert "through 2 worker processes in one group" in two and "target is for one" in two


def test_the_report_says_whether_the_worker_ran_compiled() -> None:
    base = {"records": 10, "predictions": 5, "seconds": 1.0, "records_per_s": 24_000.0,
            "predictions_per_s": 12_000.0, "alerts": 0, "latency_median_s": None,
            "latency_p99_s": None, "latency_max_s": None, "processes": 1}
    assert "compiled hot path" in format_report({**base, "compiled": 22})
    assert "plain Python: MODELOG_PURE" in format_report({**base, "compiled": 0})


def test_the_benchmark_stream_exercises_every_monitor() -> None:
    """The backlog's predictions log their class with its probabilities, so label-free
    estimation runs beside the others; replayed through the worker's two processors,
    every kind of per-window output comes out."""
    import datetime as dt

    from modelog.models.monitor import ServingMonitor
    from modelog.models.quality_monitor import QualityMonitor
    from modelog.streams.bench.worker import serving_events

    serving, quality = ServingMonitor(), QualityMonitor()
    kinds: set[str] = set()
    for event in serving_events("bench-0", 3_000, seed=0, drift_at=2_000,
                                start=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)):
        kinds.update(e.type_name() for e in serving.process(event) + quality.process(event))
    assert {"PerformanceEstimated", "PerformanceRealized", "MultivariateDriftReported",
            "PredictionsScored", "MonitorStatsReported", "DriftDetected"} <= kinds, kinds
