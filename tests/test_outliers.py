"""Point anomalies (models/outliers.py) and their place in the serving monitor: pure, no broker."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from modelog.models.errors import MonitorConfigError
from modelog.models.events import (
    AnomalyDetected,
    ColumnSchema,
    DatasetVersionCreated,
    Event,
    ModelVersionRegistered,
    PredictionMade,
    RunDatasetUsed,
)
from modelog.models.monitor import ServingMonitor
from modelog.models.monitor_config import MonitorConfig, parse_monitor_config
from modelog.models.outliers import OutlierConfig, OutlierMonitor
from modelog.models.profile import profile_table
from modelog.models.quality_events import PredictionsScored

T0 = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
Row = dict[str, Any]


def gaussian(rng: random.Random) -> Row:
    return {"age": rng.gauss(40, 10), "income": rng.gauss(3_000, 500),
            "plan": rng.choice(["basic", "pro", "team"])}


def heavy(rng: random.Random) -> Row:
    """Heavy and skewed tails: log-normal income, exponential waiting time."""
    return {"income": math.exp(rng.gauss(8, 1)), "wait": rng.expovariate(0.1),
            "plan": rng.choice(["basic", "pro", "team"])}


def profile_of(make: Callable[[random.Random], Row], n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    rows = [make(rng) for _ in range(n)]
    return profile_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}))


def lifecycle(profile: dict[str, Any], model: str = "churn") -> list[Event]:
    """A dataset version with its profile, a run that trained on it, a version from the run."""
    return [
        DatasetVersionCreated(id="d1", time=T0, aggregate="churn-train", name="churn-train",
                              digest="a" * 64, columns=[ColumnSchema("age", "double")],
                              num_rows=1, uri="file:///train.parquet", profile=profile),
        RunDatasetUsed(id="u1", time=T0, aggregate="r1", run_id="r1", dataset="churn-train",
                       digest="a" * 64),
        ModelVersionRegistered(id="m1", time=T0, aggregate=model, model=model, model_version=1,
                               run_id="r1", flavor="custom", artifact_uri="",
                               artifact_digest=""),
    ]


def stream(monitor: ServingMonitor, rows: list[Row], model: str = "churn") -> list[Event]:
    out: list[Event] = []
    for i, inputs in enumerate(rows):
        out += monitor.process(PredictionMade(
            id=f"e{i}", time=T0 + dt.timedelta(milliseconds=10 * i), aggregate=model,
            prediction_id=f"p{i}", model=model, model_version=1, inputs=inputs, output=1))
    return out


def outlier_alerts(events: list[Event]) -> list[AnomalyDetected]:
    return [e for e in events if isinstance(e, AnomalyDetected) and e.detector == "outliers"]


def scored_rows(events: list[Event]) -> dict[str, tuple[float, bool, list[str]]]:
    rows: dict[str, tuple[float, bool, list[str]]] = {}
    for e in events:
        if isinstance(e, PredictionsScored):
            for pid, score, flag, features in zip(e.prediction_ids, e.scores, e.outliers,
                                                  e.features, strict=True):
                rows[pid] = (score, flag, features)
    return rows


@pytest.mark.parametrize("make", [gaussian, heavy], ids=["gaussian", "heavy-tailed"])
def test_a_stable_stream_raises_no_outlier_alert(make: Callable[[random.Random], Row]) -> None:
    """20,000 predictions from the training distribution: scored, no alert, few flags."""
    monitor = ServingMonitor()
    monitor.process_many(lifecycle(profile_of(make, 5_000, seed=1)))
    rng = random.Random(2)
    out = stream(monitor, [make(rng) for _ in range(20_000)])
    assert outlier_alerts(out) == []
    rows = scored_rows(out)
    assert len(rows) >= 19_500  # every prediction scored from the first (the last batch pends)
    # heavy tails do reach far past the training range now and then -- at about the rate
    # the reference's own tail predicts, which is why no alert is raised
    assert sum(flag for _, flag, _ in rows.values()) <= (2 if make is gaussian else 20)


def test_a_few_gross_outliers_in_a_thousand_are_flagged_and_alerted() -> None:
    monitor = ServingMonitor()
    monitor.process_many(lifecycle(profile_of(gaussian, 5_000, seed=1)))
    rng = random.Random(3)
    rows = [gaussian(rng) for _ in range(1_000)]
    bad = {100: {"age": 400.0}, 300: {"income": -90_000.0}, 500: {"plan": "enterprise-xl"},
           700: {"age": 390.0}, 900: {"age": -300.0}}
    for i, change in bad.items():
        rows[i] = {**rows[i], **change}
    out = stream(monitor, rows + [gaussian(rng) for _ in range(200)])
    scored = scored_rows(out)
    flagged = {pid for pid, (_, flag, _) in scored.items() if flag}
    assert flagged == {f"p{i}" for i in bad}
    assert scored["p100"][2] == ["age"] and scored["p300"][2] == ["income"]
    assert scored["p500"] == (10.0, True, ["plan"])
    assert scored["p100"][0] > 30 and scored["p1"][0] < 5
    [alert] = outlier_alerts(out)
    assert alert.severity in ("warning", "critical")
    assert set(alert.prediction_ids) <= {f"p{i}" for i in bad} and "p700" in alert.prediction_ids
    assert "against training dataset churn-train v1" in alert.message
    assert alert.params["reference_name"] == "training dataset churn-train v1"
    stats = [e for e in out if e.type_name() == "MonitorStatsReported"][-1].stats
    # three gross; values just past the training range count too, without a flag
    assert stats["out_of_range.age"] >= 3 and stats["out_of_range.income"] >= 1
    assert stats["unseen_category.plan"] == 1 and stats["outliers"] == 5


def test_without_a_training_dataset_scoring_starts_after_the_warm_up() -> None:
    monitor = ServingMonitor(MonitorConfig(drift=parse_monitor_config(
        {"reference_size": 500}).drift))
    rng = random.Random(4)
    rows = [gaussian(rng) for _ in range(2_000)]
    rows[1_500] = {**rows[1_500], "age": 1_000.0}
    scored = [e for e in stream(monitor, rows) if isinstance(e, PredictionsScored)]
    assert scored[0].reference == "the first 500 predictions (no training dataset)"
    assert "p499" not in scored_rows(scored) and "p500" in scored_rows(scored)
    assert scored_rows(scored)["p1500"][1:] == (True, ["age"])


def test_the_scores_come_in_batches_not_one_event_per_prediction() -> None:
    monitor = ServingMonitor()
    monitor.process_many(lifecycle(profile_of(gaussian, 2_000, seed=1)))
    monitor.configure(_config({"outlier_batch": 250, "outlier_batch_seconds": 60}))
    rng = random.Random(5)
    batches = [e for e in stream(monitor, [gaussian(rng) for _ in range(1_000)])
               if isinstance(e, PredictionsScored)]
    assert [len(b.prediction_ids) for b in batches] == [250] * 4
    assert len({b.id for b in batches}) == 4


def test_outlier_settings_are_validated_with_the_field_named() -> None:
    with pytest.raises(MonitorConfigError) as err:
        parse_monitor_config({"outlier_alpha": 2})
    assert err.value.field == "outlier_alpha" and "between 0 and 1" in err.value.rule
    with pytest.raises(MonitorConfigError) as err:
        parse_monitor_config({"outlier_window": "big"})
    assert err.value.field == "outlier_window"
    assert parse_monitor_config({"outliers": False}).outliers.enabled is False


def test_an_untrusted_profile_never_breaks_the_scorer() -> None:
    broken = {"columns": {"age": {"kind": "numeric", "min": "x", "max": None},
                          "plan": {"kind": "string", "top": [{"count": "many"}, 3]},
                          "other": 5}}
    m = OutlierMonitor(OutlierConfig(), broken, reference_size=50)
    assert m.warming_up  # nothing usable: the warm-up reference instead
    for i in range(60):
        m.update({"age": float(i % 10), "plan": "a"}, f"k{i}")
    assert not m.warming_up
    scored = m.update({"age": 500.0, "plan": "a"}, "z")
    assert scored is not None and scored.outlier and scored.offending == ("age",)


def _config(config: dict[str, Any], version: int | None = None) -> Any:
    from modelog.models.events import MonitorConfigured

    return MonitorConfigured(id=f"c{len(config)}{version}", time=T0, aggregate="churn",
                             model="churn", config=config, model_version=version)


def test_round4_is_round_to_four_places_on_every_float() -> None:
    """Scores are rounded by ``round4`` (no decimal formatting): the same float as
    ``round(x, 4)`` on random magnitudes, ties and near-ties, and the edges."""
    import math
    import random

    from modelog.models.outliers import round4

    rng = random.Random(7)
    values = [rng.random() * 10 ** rng.uniform(-6, 7) for _ in range(100_000)]
    values += [k / 20_000 for k in range(40_000)]  # x.xxxx5: ties in decimal
    values += [(k + 0.5) / 10_000 + d for k in range(0, 100_000, 37)
               for d in (-1e-12, 0.0, 1e-12, 1e-9)]
    values += [0.0, 5e-5, 1.5e-4, 999_999.99995, 1e6, 1e300, math.inf]
    assert [round4(v) for v in values] == [round(v, 4) for v in values]
