"""Detection quality of the issue-13 monitors on synthetic streams with known ground truth.

The second half of the detection-quality suite (:mod:`modelog.streams.bench.quality`
owns the concept-drift half and the command line). Each :class:`MonitorScenario`
is a pair of streams drawn from one seed: a **changed** stream whose
ground truth changes at a known prediction, and its **stable** twin (the same
generator with no change), both replayed as the worker replays them -- through a
fresh :class:`~modelog.models.monitor.ServingMonitor` and
:class:`~modelog.models.quality_monitor.QualityMonitor`, after the scenario's
``MonitorConfigured`` and registry/dataset events (no broker). The scenarios:

* ``outliers-low-rate`` -- 3 gross outliers per 1,000 predictions against the
  training dataset's profile (point anomalies, ``AnomalyDetected`` of detector
  ``outliers``);
* ``correlation-flip`` -- two features' correlation goes from +0.8 to -0.8, every
  marginal stays N(0, 1) (``MultivariateDriftDetected``);
* ``confidence-drop`` -- a calibrated logistic classifier logging P(class 1),
  whose inputs move to its decision boundary; labels arrive 2,000 predictions
  late, so a detection with a shorter delay came before any label of the changed
  traffic (``PerformanceDropEstimated``);
* ``confidence-drop-classes`` -- the same for a three-class classifier that logs
  the class it answered with its class ``probabilities`` (``PredictionMade`` v3);
* ``segment-us`` -- the error of ``country=US`` (30% of traffic) goes from 10% to
  30%, the other countries stay at 10% (``SegmentDegraded`` naming ``country=US``).

Per scenario and seed: the **delay** (predictions from the change to the first
target alert at or after it), **false alarms** (any alert before the change, and
any alert on the stable stream), and the other monitors' alerts after the change
(context: the per-feature tests stay silent on the correlation flip).

Imports :mod:`modelog.models`, numpy, pyarrow (for a training profile) and
:mod:`modelog.streams.bench.quality`; no broker, no store.

Examples
--------
>>> r = run_monitor_scenario(MONITOR_SCENARIOS["correlation-flip"], seeds=[0])
>>> r.detected, r.median_delay, r.stable_false_alarms, sum(r.others_after.values())
(1, 249, 0, 0)
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from modelog.models.events import (
    ColumnSchema,
    DatasetVersionCreated,
    Event,
    LabelObserved,
    ModelVersionRegistered,
    MonitorConfigured,
    PredictionMade,
    RunDatasetUsed,
)
from modelog.models.ids import derived_id, epoch_ms
from modelog.models.monitor import ServingMonitor
from modelog.models.monitor_config import AnomalyConfig, MonitorConfig
from modelog.models.quality_monitor import QualityMonitor
from modelog.streams.bench.quality import T0

__all__ = ["ALERTS", "MONITOR_SCENARIOS", "MonitorResult", "MonitorScenario", "Row",
           "monitor_events", "monitor_table", "replay", "run_monitor_scenario"]

ALERTS: frozenset[str] = frozenset({
    "DriftDetected", "AnomalyDetected", "SkewDetected", "PerformanceDropEstimated",
    "MultivariateDriftDetected", "SegmentDegraded"})
"""Derived event types that count as an alert, from both processors."""

CHANGE = 5_250
"""Where the built-in scenarios change: mid-window for the 500-prediction windows, so a
delay includes the wait for the window to fill."""

Row = tuple[Any, ...]
"""One prediction: ``(inputs, output, label)`` (``label`` ``None``: never labelled), or
``(inputs, output, label, probabilities)`` for a classifier logging its class probabilities."""

Generator = Callable[[np.random.Generator, int, bool], list[Row]]
"""``(rng, change, changed) -> rows``: the stream; ``changed=False`` is the stable twin."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MonitorScenario:
    """A stream whose ground truth changes at prediction ``change``, and its stable twin.

    Parameters
    ----------
    name
        Also the model name of the generated events.
    monitor, alert
        The monitor under test and a description of its alert (for the table).
    target
        Whether a derived alert event is the detection this scenario expects.
    change, n
        The first changed prediction, and predictions per stream.
    generate
        The rows of one seed (:data:`Generator`).
    config
        The model's ``MonitorConfigured.config`` (sent first; ``{}``: defaults).
    training
        ``seed -> dataset profile`` the version is registered with (``None``: none).
    label_delay
        Each label arrives after this many later predictions.
    """

    name: str
    monitor: str
    alert: str
    target: Callable[[Event], bool]
    change: int
    n: int
    generate: Generator
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    training: Callable[[int], dict[str, Any]] | None = None
    label_delay: int = 0


@dataclasses.dataclass(frozen=True)
class MonitorResult:
    """One scenario over seeds: delays (``None``: missed) and alerts by type."""

    scenario: MonitorScenario
    seeds: tuple[int, ...]
    delays: tuple[int | None, ...]
    false_alarms: collections.Counter[str]        # before the change, all seeds
    stable_alarms: collections.Counter[str]       # on the stable streams, all seeds
    others_after: collections.Counter[str]        # non-target alerts after the change

    @property
    def detected(self) -> int:
        """Seeds on which the change was detected."""
        return sum(d is not None for d in self.delays)

    @property
    def median_delay(self) -> float | None:
        """Median delay over the detected seeds."""
        found = [d for d in self.delays if d is not None]
        return statistics.median(found) if found else None

    @property
    def stable_false_alarms(self) -> int:
        """Alerts on the stable streams (any monitor)."""
        return sum(self.stable_alarms.values())

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data."""
        return {"scenario": self.scenario.name, "monitor": self.scenario.monitor,
                "seeds": list(self.seeds), "delays": list(self.delays),
                "detected": self.detected, "median_delay": self.median_delay,
                "false_alarms": dict(self.false_alarms),
                "stable_false_alarms": dict(self.stable_alarms),
                "others_after": dict(self.others_after)}


# -- events -------------------------------------------------------------------------
def _lifecycle(model: str, profile: dict[str, Any]) -> list[Event]:
    """A training dataset with ``profile``, a run on it, version 1 registered from the run."""
    digest = "b" * 64
    return [
        DatasetVersionCreated(id=f"{model}-d", time=T0, aggregate=f"{model}-train",
                              name=f"{model}-train", digest=digest,
                              columns=[ColumnSchema("x0", "double")], num_rows=1,
                              uri="file:///train.parquet", profile=profile),
        RunDatasetUsed(id=f"{model}-u", time=T0, aggregate=f"{model}-run",
                       run_id=f"{model}-run", dataset=f"{model}-train", digest=digest),
        ModelVersionRegistered(id=f"{model}-m", time=T0, aggregate=model, model=model,
                               model_version=1, run_id=f"{model}-run", flavor="custom",
                               artifact_uri="", artifact_digest=""),
    ]


def monitor_events(scenario: MonitorScenario, seed: int, *, changed: bool = True
                   ) -> tuple[list[Event], list[Event]]:
    """``(setup, serving log)`` of one seed: the configuration and lifecycle, then the traffic.

    Prediction ``i`` is made at ``T0 + i`` s, with id ``"<seed>-<i>"``; its label
    (if any) half a second after prediction ``i + label_delay``.
    """
    name, tag = scenario.name, f"{seed}{'' if changed else 's'}"
    setup: list[Event] = []
    if scenario.config:
        setup.append(MonitorConfigured(id=f"{name}-cfg", time=T0, aggregate=name, model=name,
                                       config=scenario.config))
    if scenario.training is not None:
        setup += _lifecycle(name, scenario.training(seed))
    rows = scenario.generate(np.random.default_rng(seed), scenario.change, changed)
    log: list[Event] = []
    for i, row in enumerate(rows[:scenario.n]):
        inputs, output, label = row[0], row[1], row[2]
        at = T0 + dt.timedelta(seconds=i)
        pid = f"{seed}-{i}"
        log.append(PredictionMade(
            id=derived_id(epoch_ms(at), "quality-m", name, tag, "p", str(i)), time=at,
            aggregate=name, producer="modelog-quality", prediction_id=pid, model=name,
            model_version=1, inputs=inputs, output=output,
            probabilities=row[3] if len(row) > 3 else None))
        if label is not None:
            when = T0 + dt.timedelta(seconds=i + scenario.label_delay, milliseconds=500)
            log.append(LabelObserved(
                id=derived_id(epoch_ms(when), "quality-m", name, tag, "l", str(i)), time=when,
                aggregate=name, producer="modelog-quality", prediction_id=pid, model=name,
                label=label))
    return setup, sorted(log, key=lambda e: (e.time, e.id))


SERVING = MonitorConfig(anomaly=AnomalyConfig(enabled=False))
"""The serving monitor's defaults, without Half-Space Trees (slow; its false alarms are
the concept-drift table's business)."""


def replay(setup: Sequence[Event], log: Iterable[Event]) -> list[tuple[int, Event]]:
    """Both processors over ``setup`` then ``log``: ``(prediction index, alert)`` pairs."""
    serving, quality = ServingMonitor(SERVING), QualityMonitor()
    for event in setup:
        if isinstance(event, MonitorConfigured):
            parsed = quality.parse(event)
            serving.configure(event)
            quality.apply(event.model, parsed)
        else:
            serving.process(event)
    found: list[tuple[int, Event]] = []
    for event in log:
        derived = serving.process(event) + quality.process(event)
        alerts = [d for d in derived if d.type_name() in ALERTS]
        if alerts:
            index = int(str(getattr(event, "prediction_id", "")).rsplit("-", 1)[1])
            found += [(index, a) for a in alerts]
    return found


def _kind(event: Event) -> str:
    detector = getattr(event, "detector", "")
    return f"{event.type_name()}/{detector}" if event.type_name() == "AnomalyDetected" and \
        detector else event.type_name()


def run_monitor_scenario(scenario: MonitorScenario, seeds: Iterable[int] = range(5)
                         ) -> MonitorResult:
    """Replay the changed and the stable stream of every seed; detections and false alarms."""
    seeds = tuple(seeds)
    delays: list[int | None] = []
    before: collections.Counter[str] = collections.Counter()
    stable: collections.Counter[str] = collections.Counter()
    others: collections.Counter[str] = collections.Counter()
    for seed in seeds:
        alerts = replay(*monitor_events(scenario, seed))
        before.update(_kind(a) for i, a in alerts if i < scenario.change)
        hits = [i - scenario.change for i, a in alerts
                if i >= scenario.change and scenario.target(a)]
        delays.append(min(hits) if hits else None)
        others.update(_kind(a) for i, a in alerts
                      if i >= scenario.change and not scenario.target(a))
        stable.update(_kind(a) for _, a in replay(*monitor_events(scenario, seed,
                                                                   changed=False)))
    return MonitorResult(scenario, seeds, tuple(delays), before, stable, others)


def _counts(counter: collections.Counter[str]) -> str:
    total = sum(counter.values())
    if not total:
        return "0"
    return f"{total} ({', '.join(f'{k} {v}' for k, v in sorted(counter.items()))})"


def monitor_table(results: Sequence[MonitorResult]) -> str:
    """A markdown table of ``results``, one row per scenario.

    Examples
    --------
    >>> print(monitor_table([]).splitlines()[0].replace(" ", "")[:40])
    |scenario|monitor(alert)|change|seeds|de
    """
    lines = ["| scenario | monitor (alert) | change | seeds | detected | median delay "
             "| max delay | false alarms before the change | false alarms on the stable "
             "stream | other alerts after the change |", "|" + "---|" * 10]
    for r in results:
        s = r.scenario
        found = [d for d in r.delays if d is not None]
        median = "n/a" if r.median_delay is None else f"{r.median_delay:,.0f}"
        worst = f"{max(found):,}" if found else "n/a"
        lines.append(
            f"| {s.name} | {s.monitor} ({s.alert}) | at {s.change:,} of {s.n:,} "
            f"| {len(r.seeds)} | {r.detected}/{len(r.seeds)} | {median} | {worst} "
            f"| {_counts(r.false_alarms)} in {s.change:,} x {len(r.seeds)} "
            f"| {_counts(r.stable_alarms)} in {s.n:,} x {len(r.seeds)} "
            f"| {_counts(r.others_after)} |")
    return "\n".join(lines)


# -- built-in scenarios ---------------------------------------------------------------
def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def _gaussian_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` rows of the outlier scenario's features: age, income, tenure (independent)."""
    return np.column_stack([rng.normal(40, 10, n), rng.normal(3_000, 500, n),
                            rng.exponential(24, n)])


_OUTLIER_FEATURES = ("age", "income", "tenure")


def _outlier_profile(seed: int) -> dict[str, Any]:
    import pyarrow as pa

    from modelog.models.profile import profile_table

    data = _gaussian_rows(np.random.default_rng(10_000 + seed), 5_000)
    return profile_table(pa.table({f: data[:, j] for j, f in enumerate(_OUTLIER_FEATURES)}))


def _outliers(rng: np.random.Generator, change: int, changed: bool) -> list[Row]:
    """Training-like rows; from ``change`` on, 3 in 1,000 carry one value 20-40 scales out."""
    n = change + 3_000
    data = _gaussian_rows(rng, n)
    gross = rng.random(n) < 0.003
    feature = rng.integers(0, 3, n)
    push = rng.uniform(20, 40, n) * rng.choice([-1.0, 1.0], n)
    scales = (10.0, 500.0, 24.0)
    rows: list[Row] = []
    for i in range(n):
        values = [float(v) for v in data[i]]
        if changed and i >= change and gross[i]:
            j = int(feature[i])
            values[j] += float(push[i]) * scales[j]
        label = int(values[0] > 40)
        rows.append((dict(zip(_OUTLIER_FEATURES, values, strict=True)), label, label))
    return rows


def _correlation(rng: np.random.Generator, change: int, changed: bool) -> list[Row]:
    """x0, x1 correlated +0.8 (-0.8 from ``change``), x2, x3 independent; all N(0, 1)."""
    n = change + 2_000
    rho = np.where((np.arange(n) >= change) & changed, -0.8, 0.8)
    z0, z1 = rng.standard_normal(n), rng.standard_normal(n)
    x0, x1 = z0, rho * z0 + np.sqrt(1 - rho ** 2) * z1
    x2, x3 = rng.standard_normal(n), rng.standard_normal(n)
    noise = rng.random(n) < 0.1
    rows: list[Row] = []
    for i in range(n):
        out = int(x0[i] + x2[i] > 0)
        rows.append(({"x0": float(x0[i]), "x1": float(x1[i]), "x2": float(x2[i]),
                      "x3": float(x3[i])}, out, out ^ int(noise[i])))
    return rows


def _confidence(rng: np.random.Generator, change: int, changed: bool) -> list[Row]:
    """P(y = 1 | x) = sigmoid(2 x0 + 2 x1), and the model logs exactly that (calibrated).

    Inputs are N(0, 1) until ``change``; then they move along the decision
    boundary's direction (x0 ~ N(1.5, 0.5), x1 ~ N(-1.5, 0.5)), where the model
    is unsure: accuracy falls from ~0.82 to ~0.72 with no label to show it yet.
    """
    n = change + 3_000
    moved = (np.arange(n) >= change) & changed
    x0 = np.where(moved, rng.normal(1.5, 0.5, n), rng.standard_normal(n))
    x1 = np.where(moved, rng.normal(-1.5, 0.5, n), rng.standard_normal(n))
    p = _sigmoid(2 * x0 + 2 * x1)
    y = (rng.random(n) < p).astype(int)
    return [({"x0": float(x0[i]), "x1": float(x1[i])}, float(p[i]), int(y[i]))
            for i in range(n)]


_ANGLES = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
_PROTOTYPES = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)  # three unit vectors


def _classes(rng: np.random.Generator, change: int, changed: bool) -> list[Row]:
    """Three classes; P(y = k | x) = softmax(2 x . u_k) over three unit vectors ``u_k``,
    and the model logs exactly those probabilities with the most probable class.

    Inputs come from three clusters at ``1.5 u_k`` (sd 1) until ``change``; then half of
    them from near the origin (sd 0.5), where every class is about as likely: accuracy
    falls from ~0.87 to ~0.76 with no label to show it yet.
    """
    n = change + 3_000
    centre = _PROTOTYPES[rng.integers(0, 3, n)] * 1.5
    x = centre + rng.standard_normal((n, 2))
    near = rng.normal(0.0, 0.5, (n, 2))  # drawn either way: the stable twin is the same
    moved = (np.arange(n) >= change) & changed & (rng.random(n) < 0.5)
    x = np.where(moved[:, None], near, x)
    logits = 2.0 * x @ _PROTOTYPES.T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    truth = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    rows: list[Row] = []
    for i in range(n):
        probs = {str(k): float(p[i, k]) for k in range(3)}
        rows.append(({"x0": float(x[i, 0]), "x1": float(x[i, 1])}, int(np.argmax(p[i])),
                     int(min(truth[i], 2)), probs))
    return rows


_COUNTRIES = ("US", "DE", "FR", "GB", "ES")


def _segment(rng: np.random.Generator, change: int, changed: bool) -> list[Row]:
    """Errors at 10% in every country; from ``change`` on, 30% for country=US (30% of traffic)."""
    n = change + 4_000
    country = rng.choice(len(_COUNTRIES), n, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    x = rng.standard_normal(n)
    rate = np.where((np.arange(n) >= change) & changed & (country == 0), 0.3, 0.1)
    wrong = rng.random(n) < rate
    rows: list[Row] = []
    for i in range(n):
        out = int(x[i] > 0)
        rows.append(({"country": _COUNTRIES[int(country[i])], "x": float(x[i])}, out,
                     out ^ int(wrong[i])))
    return rows


_LEVELS = tuple(f"c{i}" for i in range(30))
_ZIPF = 1.0 / np.arange(1, 31) / float(np.sum(1.0 / np.arange(1, 31)))


def _mixed_columns(rng: np.random.Generator, n: int, kids_rate: float = 1.2
                   ) -> dict[str, list[Any]]:
    """Columns of every kind a tabular model sees: small-range and count integers, a
    bool, a long-tailed category (more levels than a profile's top 10), a bounded and
    a skewed float (3 % missing), independent of each other."""
    spend = rng.lognormal(3, 1, n)
    missing = rng.random(n) < 0.03
    return {
        "rooms": [int(v) for v in rng.integers(1, 7, n)],
        "kids": [int(v) for v in rng.poisson(kids_rate, n)],
        "vip": [bool(v) for v in rng.random(n) < 0.1],
        "country": [_LEVELS[int(i)] for i in rng.choice(30, n, p=_ZIPF)],
        "score": [float(v) for v in rng.beta(2, 5, n)],
        "spend": [None if m else float(v) for v, m in zip(spend, missing, strict=True)],
    }


def _mixed_profile(seed: int) -> dict[str, Any]:
    import pyarrow as pa

    from modelog.models.profile import profile_table

    return profile_table(pa.table(_mixed_columns(np.random.default_rng(20_000 + seed), 5_000)))


def _mixed(rng: np.random.Generator, change: int, changed: bool) -> list[Row]:
    """Training-like mixed rows; from ``change`` on, ``kids`` (a count) averages 2, not 1.2."""
    n = change + 3_000
    before = _mixed_columns(rng, change)
    after = _mixed_columns(rng, n - change, kids_rate=2.0 if changed else 1.2)
    noise = rng.random(n) < 0.1
    rows: list[Row] = []
    for i in range(n):
        cols, j = (before, i) if i < change else (after, i - change)
        inputs = {name: values[j] for name, values in cols.items()}
        out = int(float(inputs["score"]) > 0.3)
        rows.append((inputs, out, out ^ int(noise[i])))
    return rows


def _awkward(rng: np.random.Generator, change: int, changed: bool) -> list[Row]:
    """Columns a warm-up reference cannot cover (a user id, a page with a long tail of
    5,000 levels) next to a 0/1 flag, a small count and a float; from ``change`` on the
    flag is set half the time, not 30 %."""
    n = change + 3_000
    flag = rng.random(n) < np.where(np.arange(n) >= change, 0.5 if changed else 0.3, 0.3)
    users = rng.integers(0, 10**9, n)
    pages = rng.zipf(1.6, n) % 5_000
    clicks = rng.poisson(2.0, n)
    amount = rng.lognormal(3, 1, n)
    rows: list[Row] = []
    for i in range(n):
        inputs: dict[str, Any] = {
            "user": f"u{users[i]}", "page": f"p{pages[i]}", "flag": int(flag[i]),
            "clicks": int(clicks[i]), "amount": float(amount[i])}
        out = int(amount[i] > 20.0)
        rows.append((inputs, out, out))
    return rows


def _is(kind: str, detector: str | None = None, segment: str | None = None,
        feature: str | None = None) -> Callable[[Event], bool]:
    def target(event: Event) -> bool:
        if event.type_name() != kind:
            return False
        if detector is not None and getattr(event, "detector", None) != detector:
            return False
        if feature is not None and getattr(event, "feature", None) != feature:
            return False
        return segment is None or segment in getattr(event, "segments", ())
    return target


def _builtin() -> dict[str, MonitorScenario]:
    scenarios = [
        MonitorScenario(name="outliers-low-rate", monitor="point anomalies",
                        alert="AnomalyDetected/outliers", target=_is("AnomalyDetected",
                                                                     detector="outliers"),
                        change=CHANGE, n=CHANGE + 3_000, generate=_outliers,
                        training=_outlier_profile),
        MonitorScenario(name="correlation-flip", monitor="multivariate",
                        alert="MultivariateDriftDetected",
                        target=_is("MultivariateDriftDetected"), change=CHANGE, n=CHANGE + 2_000,
                        generate=_correlation),
        MonitorScenario(name="confidence-drop", monitor="performance estimation",
                        alert="PerformanceDropEstimated",
                        target=_is("PerformanceDropEstimated"), change=CHANGE, n=CHANGE + 3_000,
                        generate=_confidence, label_delay=2_000),
        MonitorScenario(name="confidence-drop-classes", monitor="performance estimation",
                        alert="PerformanceDropEstimated",
                        target=_is("PerformanceDropEstimated"), change=CHANGE, n=CHANGE + 3_000,
                        generate=_classes, label_delay=2_000),
        MonitorScenario(name="segment-us", monitor="segments", alert="SegmentDegraded",
                        target=_is("SegmentDegraded", segment="country=US"), change=CHANGE,
                        n=CHANGE + 4_000, generate=_segment,
                        config={"quality": {"segments": ["country"]}}),
        MonitorScenario(name="mixed-types-training", monitor="data drift, against training",
                        alert="DriftDetected/kids", target=_is("DriftDetected", feature="kids"),
                        change=CHANGE, n=CHANGE + 3_000, generate=_mixed,
                        training=_mixed_profile),
        MonitorScenario(name="ids-and-long-tail", monitor="data drift, against the warm-up",
                        alert="DriftDetected/flag", target=_is("DriftDetected", feature="flag"),
                        change=CHANGE, n=CHANGE + 3_000, generate=_awkward),
    ]
    return {s.name: s for s in scenarios}


MONITOR_SCENARIOS: dict[str, MonitorScenario] = _builtin()
"""The built-in scenarios by name (each changes at prediction :data:`CHANGE`)."""
