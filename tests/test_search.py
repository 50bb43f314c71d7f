"""Hyperparameter search logic, against an in-memory client implementing ClientLike."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import numpy as np
import pytest

from modelog.models.errors import ModelsError, SearchSpaceError
from modelog.models.search import (
    ClientLike,
    Dimension,
    SearchRunLike,
    grid_points,
    grid_search,
    log_uniform,
    random_search,
    sample_space,
)


class MemoryRun:
    """A run kept in memory, behaving like the SDK's: params are write-once."""

    def __init__(self, run_id: str, experiment: str, name: str, parent: MemoryRun | None) -> None:
        self.run_id = run_id
        self.experiment = experiment
        self.name = name
        self.parent_run_id = parent.run_id if parent is not None else None
        self.params: dict[str, Any] = {}
        self.metrics: dict[str, float] = {}
        self.tags: dict[str, str] = {}
        self.status = "created"

    def __enter__(self) -> MemoryRun:
        self.status = "running"
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.status = "failed" if exc is not None else "finished"

    def log_params(self, params: Mapping[str, Any]) -> None:
        assert self.status == "running"
        for k, v in params.items():
            assert isinstance(v, str | int | float | bool | type(None)), (k, v)
            assert self.params.get(k, v) == v, f"param {k} changed"
            self.params[k] = v

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        assert self.status == "running"
        self.metrics.update(metrics)


class TaggedRun(MemoryRun):
    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)


class MemoryClient:
    def __init__(self, run_class: type[MemoryRun] = MemoryRun) -> None:
        self.runs: list[MemoryRun] = []
        self.run_class = run_class

    def start_run(self, experiment: str, name: str = "", *,
                  tags: Mapping[str, str] | None = None, parent: Any = None) -> MemoryRun:
        run = self.run_class(f"run-{len(self.runs)}", experiment, name, parent)
        self.runs.append(run)
        return run

    def children(self) -> list[MemoryRun]:
        return [r for r in self.runs if r.parent_run_id is not None]


def _typed(client: MemoryClient) -> ClientLike:
    return client  # checked by mypy: MemoryClient satisfies the protocol


def quadratic(params: dict[str, Any], run: SearchRunLike) -> float:
    return float(-((params["x"] - 2) ** 2) - (params["y"] - 1) ** 2)


def test_grid_covers_every_combination_and_finds_max() -> None:
    client = MemoryClient(TaggedRun)
    grid = {"x": [0, 1, 2, 3], "y": [0, 1, 2]}
    result = grid_search(quadratic, grid, client=_typed(client), experiment="exp",
                         metric="score", parent_name="grid")
    seen = [(t.params["x"], t.params["y"]) for t in result.trials]
    assert seen == list(itertools.product(grid["x"], grid["y"]))
    parent, children = client.runs[0], client.children()
    assert parent.name == "grid" and parent.status == "finished"
    assert [c.name for c in children] == [f"trial-{i}" for i in range(12)]
    assert all(c.parent_run_id == parent.run_id and c.status == "finished" for c in children)
    assert [c.params for c in children] == [t.params for t in result.trials]
    assert [c.metrics for c in children] == [{"score": t.metrics["score"]} for t in result.trials]
    assert result.best is not None and result.best.params == {"x": 2, "y": 1}
    assert parent.params["best_run_id"] == result.best.run_id
    assert parent.params["best_trial"] == result.best.index
    assert parent.metrics["best_score"] == 0.0
    assert parent.tags == {"best_run_id": result.best.run_id, "best_trial": str(result.best.index)}
    assert result.parent_run_id == parent.run_id


def test_min_mode_and_mapping_results() -> None:
    client = MemoryClient()

    def fn(params: dict[str, Any], run: SearchRunLike) -> dict[str, float]:
        return {"loss": abs(params["lr"] - 0.1), "aux": 1.0}

    result = grid_search(fn, {"lr": [0.5, 0.12, 0.01, 0.3]}, client=client, experiment="e",
                         metric="loss", mode="min")
    assert result.best is not None and result.best.params == {"lr": 0.12}
    assert client.runs[0].metrics["best_loss"] == pytest.approx(0.02)
    assert client.children()[1].metrics == {"loss": pytest.approx(0.02), "aux": 1.0}
    assert client.runs[0].tags == {}  # MemoryRun has no set_tags: skipped


def test_failing_trial_is_recorded_and_search_goes_on() -> None:
    client = MemoryClient()

    def fn(params: dict[str, Any], run: SearchRunLike) -> Any:
        if params["depth"] == 3:
            raise RuntimeError("diverged")
        if params["depth"] == 4:
            return {"other": 1.0}  # forgets the searched metric
        return float(params["depth"])

    result = grid_search(fn, {"depth": [1, 2, 3, 4, 5]}, client=client, experiment="e",
                         metric="acc")
    assert len(result.trials) == 5
    assert [t.ok for t in result.trials] == [True, True, False, False, True]
    assert result.trials[2].error == "RuntimeError: diverged"
    assert result.trials[2].run_id == client.children()[2].run_id
    assert "'acc'" in (result.trials[3].error or "")
    assert [c.status for c in client.children()] == [
        "finished", "finished", "failed", "failed", "finished"]
    assert result.failed == (result.trials[2], result.trials[3])
    assert result.best is not None and result.best.params == {"depth": 5}
    assert client.runs[0].metrics["failed_trials"] == 2.0


def test_all_trials_failing_gives_no_best() -> None:
    client = MemoryClient()

    def fn(params: dict[str, Any], run: SearchRunLike) -> float:
        raise ValueError("bad")

    result = grid_search(fn, {"a": [1, 2]}, client=client, experiment="e", metric="m")
    assert result.best is None and len(result.failed) == 2
    assert "best_run_id" not in client.runs[0].params


def test_random_search_is_seeded_reproducible() -> None:
    space: dict[str, Dimension] = {
        "lr": log_uniform(1e-4, 1e-1), "depth": (2, 9), "frac": (0.1, 0.9),
        "loss": ["log", "hinge", "huber"],
    }

    def run_once(seed: int) -> list[dict[str, Any]]:
        result = random_search(lambda p, r: p["frac"], space, 8, seed, client=MemoryClient(),
                               experiment="e", metric="m")
        return [t.params for t in result.trials]

    first = run_once(7)
    assert first == run_once(7)
    assert first != run_once(8)
    assert len(first) == 8
    for p in first:
        assert 1e-4 <= p["lr"] <= 1e-1
        assert isinstance(p["depth"], int) and 2 <= p["depth"] <= 9
        assert isinstance(p["frac"], float) and 0.1 <= p["frac"] <= 0.9
        assert p["loss"] in space["loss"]  # type: ignore[operator]
    assert first == sample_space(space, 8, seed=7)


def test_random_search_logs_seed_and_best() -> None:
    client = MemoryClient()
    result = random_search(lambda p, r: -abs(p["x"] - 0.5), {"x": (0.0, 1.0)}, 20, seed=3,
                           client=client, experiment="e", metric="m", mode="max")
    best = max(result.trials, key=lambda t: t.metrics["m"])
    assert result.best == best
    assert client.runs[0].params["search_seed"] == 3
    assert client.runs[0].params["search_kind"] == "random"


def test_params_are_made_loggable_but_fn_gets_originals() -> None:
    client = MemoryClient()
    received: list[dict[str, Any]] = []

    def fn(params: dict[str, Any], run: SearchRunLike) -> float:
        received.append(params)
        return 1.0

    grid_search(fn, {"layers": [(64, 32)], "alpha": [np.float64(0.5)]}, client=client,
                experiment="e", metric="m")
    assert received == [{"layers": (64, 32), "alpha": 0.5}]
    assert client.children()[0].params == {"layers": "(64, 32)", "alpha": 0.5}


def test_space_errors_name_field_value_and_rule() -> None:
    with pytest.raises(SearchSpaceError, match=r"'depth'.*at least one value"):
        grid_points({"depth": []})
    with pytest.raises(SearchSpaceError, match="sequence"):
        grid_points({"loss": "hinge"})
    with pytest.raises(SearchSpaceError, match="low <= high"):
        sample_space({"x": (5, 1)}, 2)
    with pytest.raises(SearchSpaceError, match="n_trials"):
        sample_space({"x": [1]}, 0)
    with pytest.raises(SearchSpaceError, match="mode"):
        grid_search(quadratic, {"x": [1], "y": [1]}, client=MemoryClient(), experiment="e",
                    metric="m", mode="best")  # type: ignore[arg-type]
    assert issubclass(SearchSpaceError, ModelsError)


def test_callable_dimension_gets_the_rng() -> None:
    pts = sample_space({"k": lambda rng: rng.choice([10, 20, 30])}, 5, seed=11)
    rng = random.Random(11)
    assert [p["k"] for p in pts] == [rng.choice([10, 20, 30]) for _ in range(5)]
