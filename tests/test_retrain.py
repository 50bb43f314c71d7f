"""Retrain triggers: drift, cooldown, sustained data drift, metric floor, schedule."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from modelog.models import codec
from modelog.models.errors import InvalidParameterError
from modelog.models.events import (
    AnomalyDetected,
    DriftDetected,
    DriftResolved,
    MonitorStatsReported,
    RetrainRequested,
    Window,
)
from modelog.models.retrain import RetrainPolicy, RetrainTrigger

T0 = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def concept(i: int, minutes: float, *, model: str = "churn") -> DriftDetected:
    return DriftDetected(
        id=f"drift-{i}", time=at(minutes), aggregate=model, model=model, model_version=3,
        kind="concept", detector="adwin", statistic=0.42, threshold=0.1,
        window=Window(start=at(minutes - 10), end=at(minutes), size=200))


def data_drift(i: int, minutes: float, feature: str = "age") -> DriftDetected:
    return DriftDetected(id=f"data-{i}", time=at(minutes), aggregate="churn", model="churn",
                         model_version=3, kind="data", feature=feature, detector="ks",
                         statistic=0.3)


def stats(i: int, minutes: float, error: float | None, version: int = 3) -> MonitorStatsReported:
    return MonitorStatsReported(
        id=f"stats-{i}", time=at(minutes), aggregate="churn", model="churn",
        model_version=version, window=Window(start=at(minutes - 5), end=at(minutes), size=500),
        stats={"rolling_error": error, "predictions": 500.0})


def requests(trigger: RetrainTrigger, events: list[Any]) -> list[RetrainRequested]:
    return [r for e in events for r in trigger.process(e) if isinstance(r, RetrainRequested)]


def one(trigger: RetrainTrigger, event: Any) -> RetrainRequested | None:
    """The request ``event`` triggers, if any (``process`` returns at most one)."""
    out = trigger.process(event)
    assert len(out) <= 1 and all(isinstance(r, RetrainRequested) for r in out)
    return out[0] if out else None  # type: ignore[return-value]


def test_one_drift_one_request_cooldown_then_another() -> None:
    trigger = RetrainTrigger(RetrainPolicy(cooldown=HOUR, window_margin=dt.timedelta(minutes=30)))
    first = one(trigger, concept(1, 0))
    assert first is not None
    assert one(trigger, concept(2, 20)) is None       # same drift reported again
    assert one(trigger, concept(3, 59)) is None
    second = one(trigger, concept(4, 61))
    assert second is not None and second.trigger_id == "drift-4"
    assert trigger.counters("churn") == {"requests": 2, "suppressed": 2}

    # the request carries everything a trainer needs
    assert first.model == "churn" and first.aggregate == "churn"
    assert first.model_version == 3
    assert first.trigger_id == "drift-1"
    assert first.time == at(0)
    assert first.window.start == at(-10) - dt.timedelta(minutes=30)  # drift start - margin
    assert first.window.end == at(0) and first.window.size == 200
    assert "concept drift" in first.reason and "adwin" in first.reason and "v3" in first.reason
    assert first.policy["trigger"] == "concept_drift"
    assert first.policy["cooldown_s"] == 3600.0 and first.policy["window_margin_s"] == 1800.0
    codec.validate(first)
    assert codec.decode(codec.encode(first)) == first


def test_models_are_independent_and_ids_are_deterministic() -> None:
    events = [concept(1, 0), concept(2, 1, model="fraud"), concept(3, 2)]
    a = requests(RetrainTrigger(), events)
    b = requests(RetrainTrigger(), events)
    assert [r.model for r in a] == ["churn", "fraud"]
    assert [r.id for r in a] == [r.id for r in b]
    assert len({r.id for r in a}) == 2


def test_concept_drift_can_be_switched_off_and_own_requests_are_ignored() -> None:
    trigger = RetrainTrigger(RetrainPolicy(on_concept_drift=False))
    assert one(trigger, concept(1, 0)) is None
    own = one(RetrainTrigger(), concept(1, 0))
    assert own is not None
    fresh = RetrainTrigger()
    assert one(fresh, own) is None                    # reading its own output: no state
    assert one(fresh, concept(1, 0)) is not None


def test_sustained_data_drift_by_checks_and_resolution_resets() -> None:
    trigger = RetrainTrigger(RetrainPolicy(data_drift_sustained=3,
                                           window_margin=dt.timedelta(0)))
    assert requests(trigger, [data_drift(1, 0), data_drift(2, 5)]) == []
    resolved = DriftResolved(id="res", time=at(6), aggregate="churn", model="churn",
                             kind="data", feature="age", detector="ks", detected_id="data-1")
    assert one(trigger, resolved) is None
    # after a resolution the count starts again
    assert requests(trigger, [data_drift(3, 10), data_drift(4, 15)]) == []
    request = one(trigger, data_drift(5, 20, feature="plan"))
    assert request is not None
    assert request.trigger_id == "data-5"
    assert request.window.start == at(10) and request.window.end == at(20)
    assert "age, plan" in request.reason and "3 consecutive checks" in request.reason
    assert request.policy["trigger"] == "data_drift" and request.policy["data_drift_checks"] == 3


def test_sustained_data_drift_by_duration() -> None:
    trigger = RetrainTrigger(RetrainPolicy(data_drift_sustained=dt.timedelta(minutes=30),
                                           on_concept_drift=False))
    assert one(trigger, data_drift(1, 0)) is None
    assert one(trigger, stats(1, 29, 0.1)) is None
    request = one(trigger, stats(2, 31, 0.1))          # any later event measures time
    assert request is not None and request.policy["trigger"] == "data_drift"
    assert request.policy["data_drift_s"] == 1800.0
    assert "31 minutes" in request.reason


def test_metric_floor_must_be_sustained() -> None:
    policy = RetrainPolicy(metric_floor=0.25, metric_sustained=3, cooldown=HOUR)
    trigger = RetrainTrigger(policy)
    events = [stats(1, 0, 0.30), stats(2, 5, 0.31), stats(3, 10, 0.10),   # broken streak
              stats(4, 15, None),                                          # no value: no change
              stats(5, 20, 0.40), stats(6, 25, 0.41)]
    assert requests(trigger, events) == []
    request = one(trigger, stats(7, 30, 0.45))
    assert request is not None
    assert request.trigger_id == "stats-7" and request.model_version == 3
    assert request.window.start is None and request.window.end == at(30)  # first: all data
    assert request.window.size == 3
    assert "rolling_error = 0.45 above the floor 0.25 in 3 consecutive" in request.reason
    # still failing: suppressed in the cooldown, fires again on a check after it
    assert requests(trigger, [stats(8, 40, 0.5), stats(9, 50, 0.5), stats(10, 60, 0.5)]) == []
    again = one(trigger, stats(11, 95, 0.5))
    assert again is not None and again.window.start == at(30)  # since the last retrain


def test_metric_floor_for_a_higher_is_better_metric() -> None:
    trigger = RetrainTrigger(RetrainPolicy(metric_floor=0.8, metric_name="accuracy",
                                           higher_is_better=True, metric_sustained=1))
    ok = MonitorStatsReported(id="s1", time=at(0), aggregate="m", model="m",
                              stats={"accuracy": 0.9})
    bad = MonitorStatsReported(id="s2", time=at(1), aggregate="m", model="m",
                               stats={"accuracy": 0.7})
    assert one(trigger, ok) is None
    request = one(trigger, bad)
    assert request is not None and "below the floor" in request.reason
    assert request.model_version is None


def test_schedule_from_event_time() -> None:
    trigger = RetrainTrigger(RetrainPolicy(schedule=dt.timedelta(days=1), on_concept_drift=False))
    anomaly = AnomalyDetected(id="a1", time=at(0), aggregate="churn", model="churn",
                              model_version=4, detector="hst", statistic=0.2, threshold=0.1)
    assert one(trigger, anomaly) is None               # first seen: the clock starts
    assert one(trigger, stats(1, 23 * 60, 0.1, version=4)) is None
    request = one(trigger, stats(2, 24 * 60, 0.1, version=4))
    assert request is not None
    assert request.policy["trigger"] == "schedule" and request.policy["schedule_s"] == 86400.0
    assert request.model_version == 4 and request.window.start is None
    assert "scheduled retrain: 1 days since first seen" in request.reason
    assert one(trigger, stats(3, 47 * 60, 0.1)) is None
    nxt = one(trigger, stats(4, 48 * 60, 0.1))
    assert nxt is not None and nxt.window.start == at(24 * 60)
    assert "since the last request" in nxt.reason


@pytest.mark.parametrize("bad", [
    {"data_drift_sustained": 0}, {"data_drift_sustained": dt.timedelta(0)},
    {"schedule": dt.timedelta(seconds=-1)}, {"cooldown": -HOUR}, {"metric_sustained": 0},
])
def test_invalid_policies_name_the_parameter(bad: dict[str, Any]) -> None:
    [(name, _)] = bad.items()
    with pytest.raises(InvalidParameterError, match=name):
        RetrainPolicy(**bad)


def test_snapshot_mid_stream_then_restore_continues_identically() -> None:
    from modelog.models.processor import Processor

    policy = RetrainPolicy(cooldown=dt.timedelta(minutes=30), data_drift_sustained=3,
                           metric_floor=0.3, metric_sustained=2, schedule=dt.timedelta(hours=6))
    events: list[Any] = []
    for i in range(60):
        events += [concept(i, i * 20.0), data_drift(i, i * 20.0 + 1, feature=f"f{i % 3}"),
                   stats(i, i * 20.0 + 2, 0.5 if i % 5 else 0.1)]
    whole = RetrainTrigger(policy)
    assert isinstance(whole, Processor)
    expected = whole.process_many(events)
    assert len(expected) > 5
    for cut in (1, len(events) // 3, len(events) - 1):
        first = RetrainTrigger(policy)
        head = first.process_many(events[:cut])
        resumed = RetrainTrigger(policy)
        resumed.restore(first.snapshot())
        assert head + resumed.process_many(events[cut:]) == expected


def test_a_request_stamped_in_the_far_future_does_not_block_later_ones() -> None:
    trigger = RetrainTrigger(RetrainPolicy(cooldown=HOUR))
    skewed = concept(1, 0)
    skewed = DriftDetected(**{**{f: getattr(skewed, f) for f in skewed.__struct_fields__},
                              "time": dt.datetime(9999, 1, 1, tzinfo=dt.UTC)})
    assert one(trigger, skewed) is not None
    assert one(trigger, concept(2, 1)) is not None  # not held back until year 9999
    assert one(trigger, concept(3, 30)) is None     # the normal cooldown still applies
