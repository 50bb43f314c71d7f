"""The SDK and projector benchmarks run end to end and count what they say they measured.

Figures are printed by ``modelog bench``, never asserted: these tests check that
each benchmark moved and acknowledged exactly the events it reports.
"""

from __future__ import annotations

import pytest

from modelog.config import Settings
from modelog.streams.bench.projector import bench_projector
from modelog.streams.bench.sdk import bench_sdk

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_bench_sdk_counts_every_acknowledged_prediction(settings: Settings) -> None:
    result = bench_sdk(settings, n=3_000)
    assert result["n"] == 3_000
    assert result["acked"] == 6_000  # two passes, each flushed
    assert result["predictions_per_s"] > 0 and result["accept_per_s"] >= result["predictions_per_s"]
    assert 0 < result["call_median_us"] <= result["call_p99_us"] <= result["call_max_us"]
    assert 300 < result["event_bytes"] < 600


def test_bench_projector_projects_every_event_including_the_sustained_run(
    settings: Settings,
) -> None:
    result = bench_projector(settings, n=2_000, repeat=2, sustained=5_000)
    assert result["events"] == 2_000 and result["runs"] == 2
    assert result["events_per_s"] >= result["events_per_s_median"] > 0
    # the sustained run produced the missing 3,000 and projected all 5,000
    assert result["sustained_events"] == 5_000 and result["sustained_per_s"] > 0
