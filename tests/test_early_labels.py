"""A label logged before its prediction is held, then joined when the prediction comes.

The router is pure (no Kafka): these tests feed it encoded records, as the serving
loop does.
"""

from __future__ import annotations

import datetime as dt
import pickle

import pytest

from modelog.models import codec
from modelog.models.early_labels import EarlyLabels
from modelog.models.errors import InvalidParameterError
from modelog.models.events import Event, LabelObserved, PredictionMade
from modelog.streams.bench.worker import _registration, serving_events
from modelog.streams.topics import Topics
from modelog.streams.worker import RecordRouter, standard_router

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TOPICS = Topics("early.")


def _router() -> RecordRouter:
    router = standard_router(TOPICS)
    router.observe_registry(_registration("m", T0))
    return router


def _labels_first(events: list[Event], ahead: int) -> list[Event]:
    """The same events, each label moved ``ahead`` places before its prediction."""
    out = [e for e in events if isinstance(e, PredictionMade)]
    labels = {e.prediction_id: e for e in events if isinstance(e, LabelObserved)}
    for pred in list(out):
        label = labels[pred.prediction_id]
        out.insert(max(0, out.index(pred) - ahead), label)
    return out


def _route(router: RecordRouter, events: list[Event], start: int = 0) -> list[Event]:
    derived = []
    for i, ev in enumerate(events):
        for rec in router.route(b"m", codec.encode(ev), TOPICS.serving, 0, start + i):
            if rec.topic != TOPICS.dead_letter:
                derived.append(codec.decode(rec.value))
    return derived


def test_labels_logged_before_their_predictions_are_joined_and_drift_is_found() -> None:
    events = list(serving_events("m", 3_000, seed=4, start=T0, drift_at=1_500))
    router = _router()
    derived = _route(router, _labels_first(events, ahead=3))
    counters = router.monitor.counters("m")
    assert (counters["labels"], counters["orphan_labels"]) == (3_000, 0)
    assert router.early.released == 3_000 and len(router.early) == 0
    concept = [e for e in derived if e.type_name() == "DriftDetected"
               and getattr(e, "kind", "") == "concept"]
    assert concept, "the concept drift of the labels went unseen"
    # the same stream in the usual order finds it at the same prediction
    usual = [e for e in _route(_router(), events) if e.type_name() == "DriftDetected"
             and getattr(e, "kind", "") == "concept"]
    assert [e.id for e in concept[:1]] == [e.id for e in usual[:1]]


def test_a_label_whose_prediction_never_comes_is_an_orphan_once_pushed_out() -> None:
    router = _router()
    router.early = EarlyLabels(max_held=10)
    lost = [LabelObserved(id=f"l{i}", time=T0 + dt.timedelta(seconds=i), aggregate="m",
                          prediction_id=f"never-{i}", model="m", label=1) for i in range(25)]
    _route(router, list(lost))
    assert router.monitor.counters("m")["orphan_labels"] == 15 and len(router.early) == 10
    # a held label more than the TTL older than the newest is pushed out too
    late = LabelObserved(id="late", time=T0 + dt.timedelta(days=2), aggregate="m",
                         prediction_id="never-late", model="m", label=1)
    _route(router, [late], start=100)
    assert router.monitor.counters("m")["orphan_labels"] == 25 and len(router.early) == 1


def test_a_second_early_label_for_one_prediction_is_not_held_twice() -> None:
    router = _router()
    label = LabelObserved(id="l1", time=T0, aggregate="m", prediction_id="p1", model="m",
                          label=1)
    again = LabelObserved(id="l2", time=T0, aggregate="m", prediction_id="p1", model="m",
                          label=0)
    pred = PredictionMade(id="e1", time=T0, aggregate="m", prediction_id="p1", model="m",
                          model_version=1, inputs={"age": 3.0}, output=1)
    _route(router, [label, again, pred])
    counters = router.monitor.counters("m")
    assert (counters["labels"], counters["orphan_labels"]) == (1, 1)
    assert router.monitor.rolling_error("m", 1) == 0.0  # the first label (1) was joined


def test_held_labels_survive_a_snapshot_and_restore() -> None:
    events = _labels_first(list(serving_events("m", 400, seed=5, start=T0)), ahead=5)
    whole = _router()
    expected = _route(whole, events)
    first = _router()
    _route(first, events[:201])
    assert len(first.early) > 0  # the cut falls between some labels and their predictions
    second = _router()
    second.restore(first.snapshot())
    rest = _route(second, events[201:], start=201)
    assert [e.id for e in _route(_router(), events[:201])] + [e.id for e in rest] == \
        [e.id for e in expected]
    assert second.monitor.counters("m") == whole.monitor.counters("m")
    assert pickle.loads(pickle.dumps(second.early)).released == whole.early.released


def test_bounds_are_checked() -> None:
    with pytest.raises(InvalidParameterError, match="max_held"):
        EarlyLabels(max_held=0)
