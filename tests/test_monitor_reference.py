"""The training dataset as the default monitoring reference, per model version (pure part).

The worker end to end (a real broker, the training data read off the runs and datasets
topics) is in tests/test_monitor_reference_worker.py.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from modelog.models.config_book import ConfigBook
from modelog.models.errors import MonitorConfigError
from modelog.models.events import (
    DatasetVersionCreated,
    DriftDetected,
    Event,
    ModelVersionRegistered,
    MonitorConfigured,
    PredictionMade,
    RunDatasetUsed,
)
from modelog.models.monitor import ServingMonitor
from tests.test_outliers import gaussian, lifecycle, profile_of

T0 = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)


def predictions(version: int, n: int, *, shift_from: int = 0, seed: int = 7,
                start: int = 0) -> list[PredictionMade]:
    """Predictions of churn ``version``; ``age`` moves by +2 sigma from ``shift_from``."""
    rng = random.Random(seed)
    out = []
    for i in range(start, start + n):
        row = gaussian(rng)
        if i >= shift_from:
            row["age"] += 20.0
        out.append(PredictionMade(
            id=f"e{version}-{i}", time=T0 + dt.timedelta(milliseconds=10 * i), aggregate="churn",
            prediction_id=f"v{version}-{i}", model="churn", model_version=version,
            inputs=row, output=1))
    return out


def drifts(events: list[Event], feature: str = "age") -> list[DriftDetected]:
    return [e for e in events if isinstance(e, DriftDetected) and e.kind == "data"
            and e.feature == feature]


def registration(version: int, run_id: str | None) -> ModelVersionRegistered:
    return ModelVersionRegistered(id=f"m{version}", time=T0, aggregate="churn", model="churn",
                                  model_version=version, run_id=run_id, flavor="custom",
                                  artifact_uri="", artifact_digest="")


def configured(config: dict[str, Any], version: int | None = None,
               n: list[int] = [0]) -> MonitorConfigured:  # noqa: B006 - a counter
    n[0] += 1
    return MonitorConfigured(id=f"cfg{n[0]}", time=T0, aggregate="churn", model="churn",
                             config=config, model_version=version)


@pytest.fixture(scope="module")
def profile() -> dict[str, Any]:
    return profile_of(gaussian, 5_000, seed=1)


def test_a_version_with_a_training_dataset_is_compared_with_it_from_the_first_predictions(
        profile: dict[str, Any]) -> None:
    """Wrong from day one: traffic differs from training from the first prediction. The
    warm-up reference would call this stable; the training reference alerts at the first
    full window (500 predictions), naming the dataset."""
    monitor = ServingMonitor()
    monitor.process_many(lifecycle(profile))
    out = monitor.process_many(predictions(1, 600))
    first = drifts(out)[0]
    assert first.prediction_ids[-1] == "v1-499"
    assert "against training dataset churn-train v1" in first.message
    assert first.params["reference"] == "training"
    assert first.params["reference_name"] == "training dataset churn-train v1"
    # the same traffic without the dataset: the warm-up absorbs the shift, nothing is said
    blind = ServingMonitor()
    assert drifts(blind.process_many(predictions(1, 2_000))) == []


def test_without_a_dataset_the_warm_up_is_the_reference_and_the_alert_says_so() -> None:
    monitor = ServingMonitor()
    monitor.process(registration(1, run_id=None))
    out = monitor.process_many(predictions(1, 1_800, shift_from=1_000))
    first = drifts(out)[0]
    assert "against the first 1000 predictions (no training dataset)" in first.message
    assert first.params["reference"] == "warm-up"


def test_the_reference_follows_the_lifecycle_in_any_order(profile: dict[str, Any]) -> None:
    """Registration and predictions first, the dataset later (another topic): the version's
    monitors restart on the training reference as soon as it is known."""
    dataset, used, registered = lifecycle(profile)
    monitor = ServingMonitor()
    monitor.process(registered)
    out = monitor.process_many(predictions(1, 300))
    monitor.process(used)
    out += monitor.process_many(predictions(1, 300, start=300))
    assert drifts(out) == []
    monitor.process(dataset)
    out = monitor.process_many(predictions(1, 600, start=600))
    assert "training dataset churn-train v1" in drifts(out)[0].message


def test_the_dataset_version_is_named_as_the_datasets_view_numbers_it(
        profile: dict[str, Any]) -> None:
    v1 = DatasetVersionCreated(id="d0", time=T0 - dt.timedelta(days=1), aggregate="churn-train",
                               name="churn-train", digest="b" * 64, columns=[], num_rows=1,
                               uri="file:///old.parquet", profile=profile)
    monitor = ServingMonitor()
    monitor.process_many([v1, *lifecycle(profile)])  # the run trained on the second content
    out = monitor.process_many(predictions(1, 600))
    assert "training dataset churn-train v2" in drifts(out)[0].message


def test_a_profile_the_monitors_refuse_falls_back_to_the_warm_up(
        profile: dict[str, Any]) -> None:
    broken = {"columns": {"age": {"kind": "numeric", "histogram": {"edges": [3, 2, 1],
                                                                   "counts": [1]}}}}
    monitor = ServingMonitor()
    monitor.process_many(lifecycle(broken))
    out = monitor.process_many(predictions(1, 1_800, shift_from=1_000))
    assert "(no training dataset)" in drifts(out)[0].message


def test_a_configuration_can_target_one_version(profile: dict[str, Any]) -> None:
    monitor = ServingMonitor()
    monitor.process_many(lifecycle(profile))
    monitor.process(ModelVersionRegistered(id="m2", time=T0, aggregate="churn", model="churn",
                                           model_version=2, run_id="r1", flavor="custom",
                                           artifact_uri="", artifact_digest=""))
    monitor.process(configured({"training_reference": False}, version=2))
    assert monitor.config_for("churn", 2).drift.training_reference is False
    assert monitor.config_for("churn", 1).drift.training_reference is True
    out = monitor.process_many(predictions(1, 600) + predictions(2, 600))
    assert {d.model_version for d in drifts(out)} == {1}  # v2 compares with its warm-up
    monitor.process(configured({"reset": True}, version=2))
    assert monitor.config_for("churn", 2) == monitor.config_for("churn")


def test_the_config_book_applies_model_then_version_settings_and_resets() -> None:
    book = ConfigBook()
    book.apply("churn", None, {"psi_threshold": 0.3, "check_every": 50})
    book.apply("churn", 3, {"check_every": 25})
    book.apply("churn", None, {"psi_threshold": 0.4})
    assert (book.config("churn", 3).drift.psi_threshold,
            book.config("churn", 3).drift.check_every) == (0.4, 25)
    assert book.settings("churn", 3) == {"psi_threshold": 0.4, "check_every": 25}
    assert book.versions("churn") == [3]
    with pytest.raises(MonitorConfigError) as err:
        book.apply("churn", 3, {"drift_window": 0})
    assert err.value.field == "drift_window"
    assert book.config("churn", 3).drift.window == 500  # unchanged
    with pytest.raises(MonitorConfigError) as err:
        book.apply("churn", None, {"reset": "yes"})
    assert err.value.field == "reset"
    book.apply("churn", None, {"reset": True, "stats_every": 100})
    assert book.versions("churn") == [] and book.settings("churn") == {"stats_every": 100}
    assert book.config("churn", 3).drift.psi_threshold == 0.2


def test_an_invalid_version_configuration_changes_nothing() -> None:
    monitor = ServingMonitor()
    with pytest.raises(MonitorConfigError):
        monitor.configure(configured({"outlier_margin": -1}, version=1))
    assert monitor.config_for("churn", 1) == monitor.config


def test_untrusted_references_from_other_runs_do_not_leak(profile: dict[str, Any]) -> None:
    """A dataset used for evaluation, or by another run, is not the version's reference."""
    dataset, _, registered = lifecycle(profile)
    evaluation = RunDatasetUsed(id="u9", time=T0, aggregate="r1", run_id="r1",
                                dataset="churn-train", digest="a" * 64, context="evaluation")
    other = RunDatasetUsed(id="u8", time=T0, aggregate="r2", run_id="r2",
                           dataset="churn-train", digest="a" * 64)
    monitor = ServingMonitor()
    monitor.process_many([dataset, evaluation, other, registered])
    out = monitor.process_many(predictions(1, 600))
    assert drifts(out) == []
