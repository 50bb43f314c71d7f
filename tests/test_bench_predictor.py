"""The predictor benchmarks run end to end and measure what they say (figures are not asserted)."""

from __future__ import annotations

import pytest

from modelog.config import Settings
from modelog.streams.bench.predictor import bench_predictor

pytestmark = [pytest.mark.broker]


def test_bench_predictor_measures_own_cost_and_alias_follow_delay(settings: Settings) -> None:
    lines: list[str] = []
    result = bench_predictor(settings, calls=2_000, predictors=2, moves=3, echo=lines.append)
    cost, follow = result["cost"], result["follow"]
    # every timed call was served and, with the warm-up, acknowledged by the broker
    assert cost["calls"] == 2_000 and cost["served"] == 4_000 and cost["logged"] >= 4_000
    assert 0 < cost["model_median_us"] < cost["serve_median_us"] <= cost["serve_p99_us"]
    assert cost["own_median_us"] == pytest.approx(
        cost["serve_median_us"] - cost["model_median_us"])
    # one delay per move, each the slowest predictor's: positive, ordered, well under the timeout
    assert follow["predictors"] == 2 and len(follow["delays_s"]) == 3
    assert all(0 < d < 10 for d in follow["delays_s"])
    assert follow["median_s"] <= follow["p99_s"] == follow["max_s"] == max(follow["delays_s"])
    report = lines[0]
    assert "own cost per predict" in report and "[target median <= 20 us]" in report
    assert "all 2 predictors serving it" in report and "[target p99 < 1 s]" in report
