"""Hyperparameter search as nested runs: one parent run, one child run per trial.

:func:`grid_search` tries every combination of a grid, :func:`random_search`
draws ``n_trials`` points of a space from a seeded generator (the same seed
gives the same trials). Both call ``fn(params, run)`` inside a child run of a
parent run named ``parent_name``; ``fn`` trains and returns the metric (a
float) or several (a mapping that contains ``metric``). Trial params and
metrics are logged on the child run. A trial that raises is recorded with its
error (its run ends as failed) and the search goes on. At the end the parent
run gets ``best_run_id`` and ``best_trial`` as params and ``best_<metric>`` as
a metric (and tags, if the run has ``set_tags``).

The client is anything with the SDK's ``start_run`` (see :class:`ClientLike`).

Examples
--------
>>> from sklearn.datasets import make_classification
>>> from sklearn.linear_model import LogisticRegression
>>> X, y = make_classification(n_samples=120, random_state=0)
>>> def train(params, run):
...     model = LogisticRegression(C=params["C"]).fit(X[:80], y[:80])
...     return model.score(X[80:], y[80:])
>>> result = grid_search(train, {"C": [0.01, 1.0]}, client=client,  # doctest: +SKIP
...                      experiment="churn", metric="accuracy")
>>> result.best.params                                               # doctest: +SKIP
{'C': 1.0}
"""

from __future__ import annotations

import itertools
import math
import numbers
import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from modelog.models.errors import SearchError, SearchSpaceError

__all__ = [
    "ClientLike",
    "Dimension",
    "SearchResult",
    "SearchRunLike",
    "Trial",
    "TrialFn",
    "grid_points",
    "grid_search",
    "log_uniform",
    "random_search",
    "sample_space",
]

Scalar = str | int | float | bool | None
Params = dict[str, Any]
TrialFn = Callable[[Params, "SearchRunLike"], "float | Mapping[str, float]"]
"""``fn(params, run)``: train with ``params``, return the metric or a mapping of metrics."""
Dimension = Sequence[Any] | tuple[float, float] | Callable[[random.Random], Any]
"""One dimension of a random-search space: choices, a ``(low, high)`` range or ``f(rng)``."""


@runtime_checkable
class SearchRunLike(Protocol):
    """What a search needs of a run (the SDK's ``Run`` fits)."""

    @property
    def run_id(self) -> str:
        """The run's id."""
        ...

    def log_params(self, params: Mapping[str, Scalar]) -> None:
        """Record hyperparameters."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Record several metric values at ``step``."""
        ...


class ClientLike(Protocol):
    """What a search needs of a client (the SDK's ``Client`` fits).

    ``start_run`` returns a context manager; entering it starts the run and
    gives a :class:`SearchRunLike`; leaving it with an exception marks the run
    failed and lets the exception propagate.
    """

    def start_run(
        self, experiment: str, name: str = "", *,
        tags: Mapping[str, str] | None = None, parent: Any = None,
    ) -> AbstractContextManager[SearchRunLike]:
        """A new run of ``experiment``, nested under ``parent`` when given."""
        ...


@dataclass(frozen=True)
class Trial:
    """One evaluated point: its params, metrics (empty when it failed), run and error."""

    index: int
    params: Params
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the trial completed and returned its metrics."""
        return self.error is None


@dataclass(frozen=True)
class SearchResult:
    """All trials in order, and the best successful one (``None`` if all failed)."""

    trials: tuple[Trial, ...]
    best: Trial | None
    metric: str
    mode: Literal["max", "min"]
    parent_run_id: str

    @property
    def failed(self) -> tuple[Trial, ...]:
        """The trials that raised."""
        return tuple(t for t in self.trials if not t.ok)


# -- spaces (pure) -----------------------------------------------------------------------
def _choices(name: str, values: Any) -> list[Any]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise SearchSpaceError(name, values, "must be a sequence of candidate values (a list)")
    if len(values) == 0:
        raise SearchSpaceError(name, values, "must contain at least one value")
    return list(values)


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[Params]:
    """Every combination of ``grid``, the last key varying fastest.

    Examples
    --------
    >>> grid_points({"depth": [2, 4], "lr": [0.1, 0.3]})
    [{'depth': 2, 'lr': 0.1}, {'depth': 2, 'lr': 0.3},
     {'depth': 4, 'lr': 0.1}, {'depth': 4, 'lr': 0.3}]
    """
    if not grid:
        raise SearchSpaceError("grid", grid, "must name at least one parameter")
    axes = {name: _choices(name, values) for name, values in grid.items()}
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def log_uniform(low: float, high: float) -> Callable[[random.Random], float]:
    """A dimension for :func:`random_search`: ``exp(uniform(log low, log high))``.

    Examples
    --------
    >>> draw = log_uniform(1e-4, 1e-1)
    >>> 1e-4 <= draw(random.Random(0)) <= 1e-1
    True
    """
    if not 0 < low < high:
        raise SearchSpaceError("log_uniform", (low, high), "needs 0 < low < high")
    lo, hi = math.log(low), math.log(high)
    return lambda rng: math.exp(rng.uniform(lo, hi))


def _is_range(values: Any) -> bool:
    return (
        isinstance(values, tuple) and len(values) == 2
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
    )


def _sampler(name: str, dim: Any) -> Callable[[random.Random], Any]:
    if callable(dim):
        return dim  # type: ignore[no-any-return]
    if _is_range(dim):
        low, high = dim
        if not low <= high:
            raise SearchSpaceError(name, dim, "a (low, high) range needs low <= high")
        if isinstance(low, numbers.Integral) and isinstance(high, numbers.Integral):
            return lambda rng: rng.randint(int(low), int(high))
        return lambda rng: rng.uniform(float(low), float(high))
    values = _choices(name, dim)
    return lambda rng: values[rng.randrange(len(values))]


def sample_space(space: Mapping[str, Dimension], n_trials: int, seed: int = 0) -> list[Params]:
    """``n_trials`` points of ``space`` drawn with ``random.Random(seed)``.

    Each dimension is one of:

    * a list (any sequence but a 2-tuple of numbers): one value, uniformly;
    * a ``(low, high)`` tuple of numbers: an int in ``[low, high]`` when both are
      ints, else a float in ``[low, high]``;
    * a callable ``f(rng)`` given the ``random.Random`` (e.g. :func:`log_uniform`).

    Dimensions are drawn in the order of ``space``, trial after trial.

    Examples
    --------
    >>> space = {"depth": (2, 8), "lr": (0.01, 0.3), "loss": ["log", "hinge"]}
    >>> pts = sample_space(space, 3, seed=1)
    >>> pts == sample_space(space, 3, seed=1)
    True
    >>> all(2 <= p["depth"] <= 8 and isinstance(p["depth"], int) for p in pts)
    True
    """
    if not space:
        raise SearchSpaceError("space", space, "must name at least one parameter")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise SearchSpaceError("n_trials", n_trials, "must be an int >= 1")
    samplers = {name: _sampler(name, dim) for name, dim in space.items()}
    rng = random.Random(seed)
    return [{name: draw(rng) for name, draw in samplers.items()} for _ in range(n_trials)]


# -- running trials ----------------------------------------------------------------------
def _loggable(params: Mapping[str, Any]) -> dict[str, Scalar]:
    """Params as run-loggable scalars: numpy scalars unwrapped, other objects as ``repr``."""
    out: dict[str, Scalar] = {}
    for key, value in params.items():
        if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
            value = value.item()
        out[key] = value if value is None or isinstance(value, str | int | float) else repr(value)
    return out


def _as_metrics(value: Any, metric: str) -> dict[str, float]:
    if isinstance(value, Mapping):
        metrics = {str(k): float(v) for k, v in value.items()}
        if metric not in metrics:
            raise SearchError(
                f"the trial function returned metrics {sorted(metrics)} without {metric!r}; "
                f"return it, or search on one of those with metric=..."
            )
        return metrics
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return {metric: float(value)}
    raise SearchError(
        f"the trial function returned {value!r} ({type(value).__name__}); "
        f"return a number (the {metric!r}) or a mapping of metric names to numbers"
    )


def _run_trial(
    fn: TrialFn, index: int, params: Params, *, client: ClientLike, experiment: str,
    metric: str, parent: SearchRunLike,
) -> Trial:
    run_id: str | None = None
    try:
        with client.start_run(experiment, name=f"trial-{index}", parent=parent) as run:
            run_id = run.run_id
            run.log_params(_loggable(params))
            metrics = _as_metrics(fn(dict(params), run), metric)
            if not math.isfinite(metrics[metric]):
                raise SearchError(f"trial {index} returned {metric}={metrics[metric]}: "
                                  "the searched metric must be a finite number")
            run.log_metrics(metrics)
    except Exception as exc:
        if run_id is None:  # the client could not start the run: not the trial's fault
            raise
        return Trial(index, dict(params), {}, run_id, f"{type(exc).__name__}: {exc}")
    return Trial(index, dict(params), metrics, run_id)


def _best(trials: Sequence[Trial], metric: str, mode: str) -> Trial | None:
    ok = [t for t in trials if t.ok]
    if not ok:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(ok, key=lambda t: (sign * t.metrics[metric], -t.index))  # ties: earliest


def _search(
    fn: TrialFn, points: Sequence[Params], search_params: Mapping[str, Scalar], *,
    client: ClientLike, experiment: str, metric: str, mode: Literal["max", "min"],
    parent_name: str,
) -> SearchResult:
    if mode not in ("max", "min"):
        raise SearchSpaceError("mode", mode, "must be 'max' or 'min'")
    if not isinstance(metric, str) or not metric:
        raise SearchSpaceError("metric", metric, "must be a non-empty metric name")
    with client.start_run(experiment, name=parent_name) as parent:
        parent.log_params({**search_params, "search_metric": metric, "search_mode": mode,
                           "search_trials": len(points)})
        trials = tuple(
            _run_trial(fn, i, p, client=client, experiment=experiment, metric=metric,
                       parent=parent)
            for i, p in enumerate(points)
        )
        best = _best(trials, metric, mode)
        parent.log_metrics({"failed_trials": float(sum(not t.ok for t in trials))})
        if best is not None:
            parent.log_params({"best_run_id": best.run_id, "best_trial": best.index})
            parent.log_metrics({f"best_{metric}": best.metrics[metric]})
            set_tags = getattr(parent, "set_tags", None)
            if callable(set_tags):
                set_tags({"best_run_id": str(best.run_id), "best_trial": str(best.index)})
        return SearchResult(trials, best, metric, mode, parent.run_id)


def grid_search(
    fn: TrialFn, grid: Mapping[str, Sequence[Any]], *, client: ClientLike, experiment: str,
    metric: str, mode: Literal["max", "min"] = "max", parent_name: str = "search",
) -> SearchResult:
    """Run ``fn`` on every combination of ``grid`` (see :func:`grid_points`).

    Parameters
    ----------
    fn
        ``fn(params, run) -> float | Mapping[str, float]``; the run is the trial's
        child run (log more to it if you like).
    grid
        ``{param: [values...]}``.
    client
        Opens the runs (:class:`ClientLike`).
    experiment
        The experiment of the parent and the trial runs.
    metric
        The metric that ranks trials.
    mode
        ``"max"`` if higher is better, ``"min"`` otherwise.
    parent_name
        Name of the parent run; trials are named ``trial-<i>``.
    """
    return _search(fn, grid_points(grid), {"search_kind": "grid"}, client=client,
                   experiment=experiment, metric=metric, mode=mode, parent_name=parent_name)


def random_search(
    fn: TrialFn, space: Mapping[str, Dimension], n_trials: int, seed: int = 0, *,
    client: ClientLike, experiment: str, metric: str, mode: Literal["max", "min"] = "max",
    parent_name: str = "search",
) -> SearchResult:
    """Run ``fn`` on ``n_trials`` points drawn from ``space`` (see :func:`sample_space`).

    The points are drawn before any trial runs, so the same ``seed`` gives
    the same trials whatever ``fn`` does. The seed is logged on the parent run.
    Other parameters as in :func:`grid_search`.
    """
    points = sample_space(space, n_trials, seed)
    return _search(fn, points, {"search_kind": "random", "search_seed": seed}, client=client,
                   experiment=experiment, metric=metric, mode=mode, parent_name=parent_name)
