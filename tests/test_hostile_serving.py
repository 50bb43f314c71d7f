"""Hostile serving records: the worker dead-letters what it cannot monitor and goes on.

The router is pure (no Kafka), so these tests feed it encoded records directly,
as the serving loop does, batch by batch (``prepare`` then ``route``).
"""

from __future__ import annotations

import datetime as dt

import pytest

from modelog.models import codec
from modelog.models.deadletter import DeadLetter
from modelog.models.errors import EventValidationError
from modelog.models.events import LabelObserved, PredictionMade
from modelog.models.validation import INT_RULE, check_output, check_scalars
from modelog.streams.bench.worker import _registration, serving_events
from modelog.streams.topics import Topics
from modelog.streams.worker import RecordRouter, standard_router

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TOPICS = Topics("hostile.")


class Feed:
    """A router fed batch by batch, with its outputs split by topic."""

    def __init__(self) -> None:
        self.router: RecordRouter = standard_router(TOPICS)
        self.router.observe_registry(_registration("m", T0))
        self.offset = 0

    def __call__(self, values: list[bytes]) -> list[tuple[str, bytes, dict[str, bytes]]]:
        records = [(v, self.offset + i) for i, v in enumerate(values)]
        self.router.prepare(records)
        out = []
        for value, offset in records:
            for rec in self.router.route(b"m", value, TOPICS.serving, 0, offset):
                out.append((rec.topic, rec.value, dict(rec.headers or [])))
        self.offset += len(values)
        return out


def _prediction(i: int, inputs: dict[str, object], output: object = 1) -> PredictionMade:
    return PredictionMade(id=f"h-{i}", time=T0 + dt.timedelta(hours=1, seconds=i),
                          aggregate="m", prediction_id=f"hp-{i}", model="m", model_version=1,
                          inputs=inputs, output=output)  # type: ignore[arg-type]


HUGE = [10**30, -(10**400), 2**63, -(2**63) - 1]


@pytest.mark.parametrize("huge", HUGE, ids=["1e30", "-1e400", "2**63", "-2**63-1"])
def test_an_integer_beyond_64_bits_is_dead_lettered_and_the_partition_goes_on(huge: int) -> None:
    feed = Feed()
    stream = [codec.encode(e) for e in serving_events("m", 4_500, seed=1, start=T0)]
    feed(stream[:5_000])  # past every warm-up: the anomaly trees score batches ahead
    bad = [_prediction(1, {"age": huge, "income": 3.0}),
           _prediction(2, {"age": 40.0}, output=huge),
           LabelObserved(id="h-l", time=T0 + dt.timedelta(hours=2), aggregate="m",
                         prediction_id="hp-x", model="m", label=huge)]
    out = feed([codec.encode(e) for e in bad] + stream[5_000:])
    dead = [(value, headers) for topic, value, headers in out if topic == TOPICS.dead_letter]
    assert len(dead) == 3
    reasons = [DeadLetter.from_headers(list(h.items())).reason for _, h in dead]
    assert [r.split(" breaks")[0] for r in reasons] == [
        "PredictionMade.inputs.age", "PredictionMade.output", "LabelObserved.label"]
    assert all(INT_RULE in r for r in reasons)
    assert [v for v, _ in dead] == [codec.encode(e) for e in bad]  # the original bytes
    # the records after them were monitored, and nothing of the bad ones was
    counters = feed.router.monitor.counters("m")
    assert (counters["predictions"], counters["labels"]) == (4_500, 4_500)
    assert counters["orphan_labels"] == 0
    assert feed.router.failed == 0 and feed.router.snapshot()


def test_a_processor_failure_dead_letters_that_record_only() -> None:
    feed = Feed()
    feed([codec.encode(e) for e in serving_events("m", 50, seed=3, start=T0)])

    class BrokenError(Exception):
        pass

    def explode(event: object) -> list[object]:
        if isinstance(event, PredictionMade) and event.prediction_id == "hp-7":
            raise BrokenError("a bug in a processor")
        return real(event)

    assert feed.router.quality is not None
    real = feed.router.quality.process
    feed.router.quality.process = explode  # type: ignore[method-assign]
    out = feed([codec.encode(_prediction(i, {"age": 30.0 + i})) for i in range(10)])
    dead = [h for t, _, h in out if t == TOPICS.dead_letter]
    assert len(dead) == 1 and feed.router.failed == 1
    reason = DeadLetter.from_headers(list(dead[0].items())).reason
    assert "BrokenError: a bug in a processor" in reason and "PredictionMade" in reason
    assert feed.router.monitor.counters("m")["predictions"] == 50 + 10


@pytest.mark.parametrize("huge", HUGE, ids=["1e30", "-1e400", "2**63", "-2**63-1"])
def test_the_sdk_checks_refuse_integers_beyond_64_bits(huge: int) -> None:
    with pytest.raises(EventValidationError) as info:
        check_scalars({"age": huge}, "PredictionMade", "inputs")
    assert info.value.field == "inputs.age" and info.value.rule == INT_RULE
    with pytest.raises(EventValidationError, match="64 bits"):
        check_output(huge, "LabelObserved", "label")
    assert check_scalars({"age": 2**63 - 1, "flag": True}, "PredictionMade", "inputs") == {
        "age": 2**63 - 1, "flag": True}


def test_an_integer_too_long_to_print_still_gets_a_message() -> None:
    with pytest.raises(EventValidationError) as info:
        check_scalars({"age": 10**5000}, "PredictionMade", "inputs")
    assert "more than" in str(info.value) and "digits" in str(info.value)
