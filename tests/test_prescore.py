"""Scoring anomaly inputs a batch ahead changes nothing but the cost."""

from __future__ import annotations

import random

import pytest

from modelog.models.anomaly import AnomalyMonitor
from modelog.models.events import PredictionMade
from modelog.models.monitor import ServingMonitor
from modelog.models.monitor_config import MonitorConfig
from modelog.streams.bench.monitor import bench_events


def _inputs(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    for i in range(n):
        shift = 5.0 if i > 5_000 else 0.0
        x: dict[str, object] = {"a": rng.gauss(shift, 1), "b": rng.gauss(shift, 1),
                                "n": rng.randint(0, 30), "flag": rng.random() < 0.3,
                                "plan": rng.choice(("x", "y"))}
        if i % 97 == 13:
            del x["a"]  # a split feature missing: scored one by one
        if i % 89 == 7:
            x["b"] = None
        out.append(x)
    return out


@pytest.mark.parametrize(("learn_every", "batch"), [(1, 300), (4, 700), (4, 2_500)])
def test_prescored_scores_and_decisions_equal_one_by_one(learn_every: int, batch: int) -> None:
    xs = _inputs(8_000, seed=learn_every + batch)
    alone = AnomalyMonitor(seed=5, learn_every=learn_every, warm_up=800)
    ahead = AnomalyMonitor(seed=5, learn_every=learn_every, warm_up=800)

    def step(monitor: AnomalyMonitor, x: dict[str, object],
             key: str) -> tuple[object, float | None]:
        monitor.update(x, key)
        return tuple(monitor.findings), monitor.last_score

    want = [step(alone, x, f"k{i}") for i, x in enumerate(xs)]
    got: list[tuple[object, float | None]] = []
    prescored = 0
    for start in range(0, len(xs), batch):
        chunk = [(f"k{i}", xs[i]) for i in range(start, min(start + batch, len(xs)))]
        prescored += ahead.prescore(chunk[::2] + chunk[1::2])  # order of the hint is free
        got += [step(ahead, x, k) for k, x in chunk]
    assert got == want
    assert prescored > 5_000  # the fast path was really taken
    assert any(findings for findings, _ in want)  # and decisions were compared


def test_serving_monitor_prescore_gives_the_same_derived_events() -> None:
    events = bench_events(6_000, seed=11)
    plain, batched = ServingMonitor(MonitorConfig()), ServingMonitor(MonitorConfig())
    want = [d for e in events for d in plain.process(e)]
    got = []
    for start in range(0, len(events), 1_000):
        chunk = events[start:start + 1_000]
        scored = batched.prescore(chunk)  # labels among them are skipped
        got += [d for e in chunk for d in batched.process(e)]
        if start >= 2_000:  # past the warm-up: the fast path is taken
            assert 0 < scored <= sum(isinstance(e, PredictionMade) for e in chunk)
    assert got == want and len(want) > 10


def test_a_key_given_twice_in_a_batch_is_scored_when_it_comes() -> None:
    """Two inputs under one key (a prediction id sent twice, with other inputs) in one batch:
    each is scored on its own, as without the batch hint, not with the other's row."""
    xs = _inputs(3_000, seed=3)
    alone = AnomalyMonitor(seed=2, warm_up=500)
    ahead = AnomalyMonitor(seed=2, warm_up=500)
    keys = [f"k{i}" if i % 250 != 7 else f"k{i - 1}" for i in range(len(xs))]  # repeats
    want, got = [], []
    for k, x in zip(keys, xs, strict=True):
        alone.update(x, k)
        want.append(alone.last_score)
    for start in range(0, len(xs), 400):
        chunk = list(zip(keys[start:start + 400], xs[start:start + 400], strict=True))
        ahead.prescore(chunk)
        for k, x in chunk:
            ahead.update(x, k)
            got.append(ahead.last_score)
    assert got == want
