"""Shadow predictions (scored off the request path, never labelled) are left to the rollout's
comparison: the serving and quality monitors ignore them, so they raise no alert, hold no
pending-label state and do not skew the production version's statistics."""

from __future__ import annotations

import datetime as dt

from modelog.models.events import PredictionMade
from modelog.models.monitor import ServingMonitor
from modelog.models.quality_monitor import QualityMonitor

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _prediction(i: int, *, shadow: bool) -> PredictionMade:
    spend = 50.0 + (i % 7) + (400.0 if i > 1_200 else 0.0)  # gross shift after 1,200
    return PredictionMade(id=f"e{i}-{shadow}", time=T0 + dt.timedelta(seconds=i),
                          aggregate="churn", prediction_id=f"p{i}-{shadow}", model="churn",
                          model_version=2, inputs={"spend": spend, "usage": (i % 11) / 10},
                          output={"0": 0.3, "1": 0.7}, alias="candidate", shadow=shadow,
                          paired_with=f"p{i}-False" if shadow else None)


def test_monitors_ignore_shadow_predictions_and_keep_no_state_for_them() -> None:
    serving, quality = ServingMonitor(), QualityMonitor()
    before = (serving.snapshot(), quality.snapshot())
    out = [e for i in range(3_000) for m in (serving, quality)
           for e in m.process(_prediction(i, shadow=True))]
    assert out == []
    assert (serving.snapshot(), quality.snapshot()) == before


def test_the_same_traffic_served_is_monitored() -> None:
    serving = ServingMonitor()
    out = [e for i in range(3_000) for e in serving.process(_prediction(i, shadow=False))]
    assert any(e.type_name() in ("DriftDetected", "AnomalyDetected") for e in out), \
        sorted({e.type_name() for e in out})


def test_a_shadow_scored_after_the_label_is_still_compared() -> None:
    """Shadow scoring runs off the request path and may lag behind the label: the pair
    still counts, exactly once."""
    from modelog.models.events import LabelObserved
    from modelog.models.policy_events import TrafficPolicySet
    from modelog.models.rollout import RolloutProcessor

    rollout = RolloutProcessor()
    # shadows are scored because the traffic policy names them (the registry's answer)
    rollout.process(TrafficPolicySet(id="tp", time=T0, aggregate="churn", model="churn",
                                     arms={"production": 1.0}, shadows=["candidate"]))
    out = []
    for i in range(300):
        t = T0 + dt.timedelta(seconds=i)
        served = PredictionMade(id=f"s{i}", time=t, aggregate="churn", prediction_id=f"p{i}",
                                model="churn", model_version=1, inputs={"x": 1.0},
                                output=i % 2, alias="production")
        truth = 1 if i % 3 else 0
        out += rollout.process(served)
        out += rollout.process(LabelObserved(id=f"l{i}", time=t, aggregate="churn",
                                             prediction_id=f"p{i}", model="churn", label=truth))
        shadow = PredictionMade(id=f"h{i}", time=t, aggregate="churn", prediction_id=f"q{i}",
                                model="churn", model_version=2, inputs={"x": 1.0},
                                output=truth, alias="candidate", shadow=True,
                                paired_with=f"p{i}")
        out += rollout.process(shadow)
        out += rollout.process(shadow)  # a repeat does not pair twice
    reports = [e for e in out if e.type_name() == "ComparisonReported"]
    assert reports, sorted({e.type_name() for e in out})
    last = reports[-1]
    assert (last.baseline_version, last.challenger_version) == (1, 2)  # type: ignore[attr-defined]
    assert last.pairs == 300 and last.effect > 0.3  # type: ignore[attr-defined]


def test_the_rollout_page_shows_the_traffic_split_in_force() -> None:
    import json

    import duckdb

    from modelog.dashboard.data import ConnectionSource
    from modelog.dashboard.rollout_page import traffic_split
    from modelog.store.schema import create_schema

    con = duckdb.connect()
    create_schema(con)
    for k, (arms, shadows) in enumerate([({"production": 1.0}, []),
                                         ({"production": 0.9, "candidate": 0.1}, ["shadow"])]):
        payload = json.dumps({"model": "churn", "arms": arms, "shadows": shadows,
                              "reason": f"step {k}"})
        con.execute("INSERT INTO events (id, type, schema_version, time, aggregate, producer, "
                    "topic, partition, \"offset\", payload) VALUES (?, 'TrafficPolicySet', 1, "
                    "?, 'churn', 'registry', 'registry', 0, ?, ?)",
                    [f"e{k}", T0 + dt.timedelta(minutes=k), k, payload])
    rows = traffic_split(ConnectionSource(con)).to_dict("records")
    assert [(r["alias"], r["role"]) for r in rows] == [
        ("candidate", "arm"), ("production", "arm"), ("shadow", "shadow")]
    assert [round(r["share"], 3) for r in rows[:2]] == [0.1, 0.9]
    assert {r["reason"] for r in rows} == {"step 1"}
