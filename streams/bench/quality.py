"""Detection quality of the serving monitor on synthetic streams with known drift.

Each :class:`Scenario` draws a River synthetic stream whose concept changes at
a known sample (abruptly or over ``width`` samples), scores it with a frozen
"deployed model" -- a decision tree fitted on the *pre-drift* concept -- and
turns every sample into a ``PredictionMade`` followed by its
``LabelObserved``. Replaying those events through a fresh
:class:`~modelog.models.monitor.ServingMonitor` tells

* the **detection delay**: labelled events from the start of the drift to the
  first alert at or after it;
* the **detected share**: the fraction of seeds with such an alert;
* the **false alarms**: alerts raised before the drift started.

:func:`run_scenario` aggregates those over seeds into a :class:`ScenarioResult`
and :func:`quality_table` renders results as markdown (``python -m
modelog.streams.bench.quality`` prints the table of the built-in :data:`SCENARIOS`,
then that of the point-anomaly, multivariate, performance-estimation and segment
scenarios of :mod:`modelog.streams.bench.quality_monitors`).

Everything is deterministic for a given seed: the events have derived ids and
times, so the same scenario replayed twice -- directly or from the DuckDB
ledger after a trip through Kafka -- raises identical alerts.

Examples
--------
>>> from modelog.models.monitor_config import AnomalyConfig, MonitorConfig
>>> no_anomaly = MonitorConfig(anomaly=AnomalyConfig(enabled=False))
>>> result = run_scenario(SCENARIOS["agrawal-abrupt"], no_anomaly, seeds=[0])
>>> result.detected_share, result.false_alarms, result.delay_max < 200
(1.0, 0, True)
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import itertools
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from modelog.models.events import Event, LabelObserved, PredictionMade, Scalar
from modelog.models.ids import derived_id, epoch_ms
from modelog.models.monitor import ServingMonitor
from modelog.models.monitor_config import AnomalyConfig, ConceptDriftConfig, MonitorConfig

__all__ = [
    "ALERT_TYPES",
    "SCENARIOS",
    "Detection",
    "Scenario",
    "ScenarioResult",
    "SeedOutcome",
    "detect",
    "main",
    "quality_table",
    "run_scenario",
    "run_seed",
    "scenario_events",
]

Sample = tuple[dict[Any, Any], Any]
"""One ``(features, target)`` pair as River's generators yield it."""

ALERT_TYPES: frozenset[str] = frozenset(
    {"DriftDetected", "AnomalyDetected", "SkewDetected"}
)
"""Derived event types that count as an alert (statistics reports do not)."""

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
"""Event time of a scenario's first prediction; each later sample is one second later."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scenario:
    """A synthetic serving history with a drift at a known sample.

    Parameters
    ----------
    name
        Also the model name of the generated events.
    task
        ``"classification"`` (0/1 errors) or ``"regression"`` (absolute errors).
    drift
        ``"abrupt"``, ``"gradual"`` or ``"none"`` (a control without drift).
    drift_start
        Index of the first sample of the new concept (``None``: no drift).
        Alerts before it are false alarms; delays count from it.
    width
        Samples over which the concept changes (the new concept's share goes
        from ~0 to ~1 between ``drift_start`` and ``drift_start + width``).
    n
        Samples in the stream.
    stream
        ``seed -> iterator of (x, y)``: the stream with the drift.
    reference
        ``() -> iterator of (x, y)`` of the pre-drift concept, to fit the model on.
    label_delay
        Each label arrives after this many later predictions.
    n_train
        Samples of ``reference`` the model is fitted on.
    """

    name: str
    task: Literal["classification", "regression"]
    drift: Literal["abrupt", "gradual", "none"]
    drift_start: int | None
    width: int
    n: int
    stream: Callable[[int], Iterator[Sample]]
    reference: Callable[[], Iterator[Sample]]
    label_delay: int = 0
    n_train: int = 3_000

    def __post_init__(self) -> None:
        from modelog.models.errors import InvalidParameterError

        if self.n < 1:
            raise InvalidParameterError("Scenario", "n", self.n, "must be >= 1")
        if self.drift_start is not None and not 0 < self.drift_start < self.n:
            raise InvalidParameterError("Scenario", "drift_start", self.drift_start,
                                        f"must be inside the stream (0, n={self.n})")
        if self.label_delay < 0:
            raise InvalidParameterError("Scenario", "label_delay", self.label_delay,
                                        "must be >= 0")

    @property
    def pre_drift(self) -> int:
        """Samples before the drift starts (all of them without a drift)."""
        return self.n if self.drift_start is None else self.drift_start


@dataclasses.dataclass(frozen=True)
class Detection:
    """An alert the monitor raised, at the sample index of its triggering event."""

    index: int
    event: Event


@dataclasses.dataclass(frozen=True)
class SeedOutcome:
    """What the monitor did on one seed of a scenario."""

    seed: int
    alerts: tuple[Detection, ...]
    delay: int | None
    """Samples from the drift start to the first alert at or after it (``None``: missed)."""
    false_alarms: int


@dataclasses.dataclass(frozen=True)
class ScenarioResult:
    """Detection quality of one configuration on one scenario, over seeds.

    ``delay_mean``/``delay_max`` are over the seeds where the drift was
    detected (``None`` when it never was, or there is no drift);
    ``false_alarms`` is the total over all seeds.
    """

    scenario: Scenario
    detector: str
    outcomes: tuple[SeedOutcome, ...]
    delay_mean: float | None
    delay_max: int | None
    detected_share: float | None
    false_alarms: int

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data."""
        s = self.scenario
        return {
            "scenario": s.name, "task": s.task, "drift": s.drift, "drift_start": s.drift_start,
            "width": s.width, "n": s.n, "detector": self.detector,
            "seeds": [o.seed for o in self.outcomes], "delays": [o.delay for o in self.outcomes],
            "delay_mean": self.delay_mean, "delay_max": self.delay_max,
            "detected_share": self.detected_share, "false_alarms": self.false_alarms,
        }


# -- the deployed model -------------------------------------------------------------
def _feature_names(x: Mapping[Any, Any]) -> list[Any]:
    return sorted(x, key=str)


def _as_inputs(x: Mapping[Any, Any]) -> dict[str, Scalar]:
    """River features as event inputs: string keys (``x0`` for River's integer keys)."""
    return {(f"x{k}" if isinstance(k, int) else str(k)): v for k, v in x.items()}


_models: dict[str, tuple[list[Any], Any]] = {}


def _fitted_model(scenario: Scenario) -> tuple[list[Any], Any]:
    """A depth-8 decision tree fitted on the scenario's pre-drift concept (cached)."""
    cached = _models.get(scenario.name)
    if cached is not None:
        return cached
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    train = list(itertools.islice(scenario.reference(), scenario.n_train))
    names = _feature_names(train[0][0])
    features = [[float(x[k]) for k in names] for x, _ in train]
    targets = [float(y) if scenario.task == "regression" else int(y) for _, y in train]
    tree = DecisionTreeRegressor if scenario.task == "regression" else DecisionTreeClassifier
    model = tree(max_depth=8, min_samples_leaf=20, random_state=0).fit(features, targets)
    _models[scenario.name] = (names, model)
    return names, model


# -- events ---------------------------------------------------------------------

def scenario_events(scenario: Scenario, seed: int) -> list[Event]:
    """The serving log of one seed of ``scenario``: predictions and labels, in log order.

    Prediction ``i`` is made at ``T0 + i`` seconds; its label arrives half a
    second after prediction ``i + label_delay``. Ids are derived from the
    scenario, the seed and the sample, so the log is identical on every call.
    Prediction ids are ``"<seed>-<i>"``.
    """
    names, model = _fitted_model(scenario)
    samples = list(itertools.islice(scenario.stream(seed), scenario.n))
    outputs = model.predict([[float(x[k]) for k in names] for x, _ in samples])
    regression = scenario.task == "regression"
    name, tag = scenario.name, str(seed)
    predictions: list[Event] = []
    labels: list[Event] = []
    for i, ((x, y), out) in enumerate(zip(samples, outputs, strict=True)):
        at = T0 + dt.timedelta(seconds=i)
        pid = f"{seed}-{i}"
        predictions.append(PredictionMade(
            id=derived_id(epoch_ms(at), "quality", name, tag, "p", str(i)), time=at, aggregate=name,
            producer="modelog-quality", prediction_id=pid, model=name, model_version=1,
            inputs=_as_inputs(x), output=float(out) if regression else int(out),
        ))
        labelled = T0 + dt.timedelta(seconds=i + scenario.label_delay, milliseconds=500)
        labels.append(LabelObserved(
            id=derived_id(epoch_ms(labelled), "quality", name, tag, "l", str(i)), time=labelled,
            aggregate=name, producer="modelog-quality", prediction_id=pid, model=name,
            label=float(y) if regression else int(y),
        ))
    return sorted(predictions + labels, key=lambda e: (e.time, e.id))


def _sample_index(event: Event) -> int:
    pid = getattr(event, "prediction_id", "")
    return int(str(pid).rsplit("-", 1)[1])


def detect(events: Iterable[Event], config: MonitorConfig) -> list[Detection]:
    """Replay ``events`` through a fresh monitor; its alerts with their sample indices.

    The index of an alert is that of the prediction (or the labelled
    prediction) whose event triggered it.
    """
    monitor = ServingMonitor(config)
    found: list[Detection] = []
    for event in events:
        derived = monitor.process(event)
        if derived:
            index = _sample_index(event)
            found.extend(Detection(index, d) for d in derived if d.type_name() in ALERT_TYPES)
    return found


def run_seed(scenario: Scenario, config: MonitorConfig, seed: int) -> SeedOutcome:
    """Run one seed of ``scenario`` through a fresh monitor with ``config``."""
    alerts = tuple(detect(scenario_events(scenario, seed), config))
    start = scenario.drift_start
    false_alarms = sum(1 for a in alerts if start is None or a.index < start)
    delays = [a.index - start for a in alerts if start is not None and a.index >= start]
    return SeedOutcome(seed, alerts, delays[0] if delays else None, false_alarms)


def run_scenario(scenario: Scenario, config: MonitorConfig,
                 seeds: Iterable[int] = range(5)) -> ScenarioResult:
    """Detection delay, detected share and false alarms of ``config`` over ``seeds``."""
    outcomes = tuple(run_seed(scenario, config, seed) for seed in seeds)
    delays = [o.delay for o in outcomes if o.delay is not None]
    drifted = scenario.drift_start is not None
    return ScenarioResult(
        scenario=scenario,
        detector=config.concept.detector,
        outcomes=outcomes,
        delay_mean=statistics.fmean(delays) if delays else None,
        delay_max=max(delays) if delays else None,
        detected_share=len(delays) / len(outcomes) if drifted and outcomes else None,
        false_alarms=sum(o.false_alarms for o in outcomes),
    )


def _false_alarms(result: ScenarioResult) -> str:
    """``"0"`` or e.g. ``"2 (AnomalyDetected 2)"``: the false alarms by alert type."""
    start = result.scenario.drift_start
    by_type = collections.Counter(
        a.event.type_name() for o in result.outcomes for a in o.alerts
        if start is None or a.index < start)
    if not by_type:
        return "0"
    detail = ", ".join(f"{name} {count}" for name, count in sorted(by_type.items()))
    return f"{result.false_alarms} ({detail})"


def quality_table(results: Sequence[ScenarioResult]) -> str:
    """A markdown table of ``results``, one row each.

    Examples
    --------
    >>> print(quality_table([]).splitlines()[0].replace(" ", ""))
    |scenario|task|drift|detector|seeds|detected|meandelay|maxdelay|falsealarms|
    """
    header = ("| scenario | task | drift | detector | seeds | detected | mean delay | max delay "
              "| false alarms |")
    lines = [header, "|" + "---|" * 9]
    for r in results:
        s = r.scenario
        if s.drift_start is None:
            drift = "none"
        elif s.drift == "abrupt":
            drift = f"abrupt at {s.drift_start:,}"
        else:
            drift = f"gradual from {s.drift_start:,} over {s.width:,}"
        shown = "n/a" if r.detected_share is None else f"{r.detected_share:.0%}"
        mean = "n/a" if r.delay_mean is None else f"{r.delay_mean:,.0f}"
        worst = "n/a" if r.delay_max is None else f"{r.delay_max:,}"
        lines.append(
            f"| {s.name} | {s.task} | {drift} | {r.detector} | {len(r.outcomes)} | {shown} "
            f"| {mean} | {worst} | {_false_alarms(r)} in {s.pre_drift:,} x {len(r.outcomes)} |"
        )
    return "\n".join(lines)


# -- built-in scenarios ---------------------------------------------------------------
def _concept_drift(before: Callable[[int], Any], after: Callable[[int], Any],
                   start: int, width: int) -> Callable[[int], Iterator[Sample]]:
    """River's ``ConceptDriftStream`` changing concept from ``start`` over ``width`` samples.

    River's sigmoid is centred at ``position`` and goes from 12% to 88% over
    its ``width``; with ``position = start + width / 2`` and a River width of
    ``width / 2`` the new concept's share goes from 2% at ``start`` to 98% at
    ``start + width``, so nothing drifts noticeably before ``start``.
    ``width`` must be at least 100 (River's sigmoid overflows for steeper
    drifts thousands of samples in).
    """
    from river.datasets import synth

    def make(seed: int) -> Iterator[Sample]:
        stream = synth.ConceptDriftStream(before(seed), after(seed + 10_000),
                                          position=start + width // 2, width=width // 2,
                                          seed=seed)
        return iter(stream)

    return make


def _sea(variant: int) -> Callable[[int], Any]:
    """``seed -> River SEA dataset`` (10% label noise)."""
    from river.datasets import synth

    return lambda seed: synth.SEA(variant=variant, noise=0.1, seed=seed)


def _agrawal(function: int) -> Callable[[int], Any]:
    """``seed -> River Agrawal dataset``."""
    from river.datasets import synth

    return lambda seed: synth.Agrawal(classification_function=function, seed=seed)


def _friedman(drift_type: str, start: int, width: int) -> Callable[[int], Iterator[Sample]]:
    from river.datasets import synth

    def make(seed: int) -> Iterator[Sample]:
        kwargs: dict[str, Any] = {"transition_window": width} if drift_type == "gsg" else {}
        return iter(synth.FriedmanDrift(drift_type=drift_type, position=(start, 10**9),
                                        seed=seed, **kwargs))

    return make


def _friedman_reference() -> Iterator[Sample]:
    from river.datasets import synth

    return iter(synth.Friedman(seed=999_999))


def _builtin_scenarios() -> dict[str, Scenario]:
    start = 5_000
    sea0, sea3 = _sea(0), _sea(3)
    agr0, agr2 = _agrawal(0), _agrawal(2)

    def sea_reference() -> Iterator[Sample]:
        return iter(sea0(999_999))

    def agrawal_reference() -> Iterator[Sample]:
        return iter(agr0(999_999))

    def sea_stream(seed: int) -> Iterator[Sample]:
        return iter(sea0(seed))

    scenarios = [
        Scenario(name="sea-abrupt", task="classification", drift="abrupt", drift_start=start,
                 width=100, n=start + 2_000, stream=_concept_drift(sea0, sea3, start, 100),
                 reference=sea_reference),
        Scenario(name="sea-gradual", task="classification", drift="gradual", drift_start=start,
                 width=3_000, n=start + 4_500, stream=_concept_drift(sea0, sea3, start, 3_000),
                 reference=sea_reference),
        Scenario(name="agrawal-abrupt", task="classification", drift="abrupt",
                 drift_start=start, width=100, n=start + 1_000,
                 stream=_concept_drift(agr0, agr2, start, 100), reference=agrawal_reference),
        Scenario(name="agrawal-gradual", task="classification", drift="gradual",
                 drift_start=start, width=2_000, n=start + 3_000,
                 stream=_concept_drift(agr0, agr2, start, 2_000), reference=agrawal_reference),
        Scenario(name="friedman-abrupt", task="regression", drift="abrupt", drift_start=start,
                 width=1, n=start + 1_000, stream=_friedman("gra", start, 1),
                 reference=_friedman_reference),
        Scenario(name="friedman-gradual", task="regression", drift="gradual", drift_start=start,
                 width=1_000, n=start + 2_000, stream=_friedman("gsg", start, 1_000),
                 reference=_friedman_reference),
        Scenario(name="sea-no-drift", task="classification", drift="none", drift_start=None,
                 width=0, n=20_000, stream=sea_stream, reference=sea_reference),
    ]
    return {s.name: s for s in scenarios}


SCENARIOS: dict[str, Scenario] = _builtin_scenarios()
"""The built-in scenarios by name (drift starts after 5,000 samples)."""


# -- command line -------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Print the markdown quality table of the built-in scenarios."""
    parser = argparse.ArgumentParser(
        prog="python -m modelog.streams.bench.quality",
        description="Detection delay and false alarms of the serving monitor on synthetic "
                    "streams with drift at known positions.")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per scenario (default 5)")
    parser.add_argument("--detector", action="append", default=None,
                        help="concept drift detector (repeatable; default: adwin)")
    from modelog.streams.bench.quality_monitors import (
        MONITOR_SCENARIOS,
        monitor_table,
        run_monitor_scenario,
    )

    parser.add_argument("--scenario", action="append",
                        choices=sorted(SCENARIOS) + sorted(MONITOR_SCENARIOS), default=None,
                        help="scenario to run (repeatable; default: all, concept drift "
                             "then the point-anomaly, multivariate, performance-estimation "
                             "and segment scenarios)")
    parser.add_argument("--no-anomaly", dest="anomaly", action="store_false",
                        help="do not score inputs for anomalies (faster; by default the "
                             "monitor's anomaly alerts count as alarms too)")
    args = parser.parse_args(argv)
    chosen = args.scenario or [*SCENARIOS, *MONITOR_SCENARIOS]
    results = [
        run_scenario(SCENARIOS[name], MonitorConfig(
            concept=ConceptDriftConfig(detector=detector),
            anomaly=AnomalyConfig(enabled=args.anomaly)),
                     seeds=range(args.seeds))
        for detector in args.detector or ["adwin"]
        for name in chosen if name in SCENARIOS
    ]
    if results:
        print(quality_table(results))
    monitors = [run_monitor_scenario(MONITOR_SCENARIOS[name], seeds=range(args.seeds))
                for name in chosen if name in MONITOR_SCENARIOS]
    if monitors:
        print(("\n" if results else "") + monitor_table(monitors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
