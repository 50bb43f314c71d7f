"""Hostile serving records: the worker dead-letters what it cannot monitor and goes on.

The router is pure (no Kafka), so these tests feed it encoded records directly,
as the serving loop does, batch by batch (``prepare`` then ``route``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

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


def test_routing_a_batch_gives_what_routing_record_by_record_gives() -> None:
    """``route_records`` (the serving loop's path: runs of decoded serving records through
    the compiled loop) publishes exactly what ``route`` does record by record, over
    predictions, labels, hostile records, a processor failure and configurations
    interleaved on the monitoring topic."""
    from modelog.models.events import DatasetVersionCreated, MonitorConfigured

    events = list(serving_events("m", 700, seed=5, start=T0, drift_at=400))
    values: list[tuple[str, bytes | None]] = [(TOPICS.serving, codec.encode(e)) for e in events]
    hostile: list[tuple[str, bytes | None]] = [
        (TOPICS.serving, b"{not json"), (TOPICS.serving, None),
        (TOPICS.serving, codec.encode(_prediction(1, {"age": 10**30}))),
        (TOPICS.serving, codec.encode(DatasetVersionCreated(
            id="d", time=T0, aggregate="m", name="m", digest="a" * 64, columns=[],
            num_rows=0, uri="mem://"))),
        (TOPICS.monitoring, codec.encode(MonitorConfigured(
            id="c1", time=T0, aggregate="m", model="m", config={"check_every": 50}))),
        (TOPICS.monitoring, codec.encode(MonitorConfigured(
            id="c2", time=T0, aggregate="m", model="m", config={"check_every": "often"}))),
        (TOPICS.monitoring, b'{"type": "DriftDetected"}'),
        (TOPICS.serving, codec.encode(_prediction(7, {"age": 33.0}))),
    ]
    for k, record in enumerate(hostile):  # spread over the stream, some in a run of their own
        values.insert(300 + 97 * k, record)
    offsets = {TOPICS.serving: 0, TOPICS.monitoring: 0}
    records = []
    for topic, value in values:
        records.append((0, topic, 0, offsets[topic], b"m", value))
        offsets[topic] += 1

    def explode(real: Any) -> Any:
        def process(event: object) -> list[object]:
            if isinstance(event, PredictionMade) and event.prediction_id == "hp-7":
                raise RuntimeError("a bug in a processor")
            return real(event)  # type: ignore[no-any-return]
        return process

    outputs, routers = [], []
    for batched in (False, True):
        router = standard_router(TOPICS)
        router.observe_registry(_registration("m", T0))
        assert router.quality is not None
        router.quality.process = explode(router.quality.process)  # type: ignore[method-assign]
        out = []
        for start in range(0, len(records), 250):
            batch = records[start:start + 250]
            router.prepare([(r[5], r[3]) for r in batch if r[1] == TOPICS.serving])
            if batched:
                got = router.route_records(batch, 0)
            else:
                got = [o for r in batch for o in router.route(r[4], r[5], r[1], 0, r[3])]
            out += [(o.topic, o.key, o.value, o.headers) for o in got]
        outputs.append(out)
        routers.append(router)
    per_record, batched_out = outputs
    assert batched_out == per_record
    topics = [t for t, *_ in per_record]
    assert topics.count(TOPICS.dead_letter) == 6  # 4 hostile, the bad configuration, hp-7
    assert TOPICS.monitoring in topics  # the drift was found
    a, b = routers
    for name in RecordRouter._COUNTERS:
        assert getattr(a, name) == getattr(b, name), name
    assert a.failed == 1 and a.configs_applied == 1 and a.last_ids == b.last_ids
    assert a.monitor.counters("m") == b.monitor.counters("m")


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


# -- nesting and out-of-range versions -----------------------------------------------------
def _deep_records() -> dict[str, bytes]:
    """Records nested far deeper than Python's recursion allows, or beyond what fits."""
    good = codec.encode(_prediction(900, {"age": 41.0}))
    return {
        # msgspec skips an unknown field recursively: this exhausted the recursion
        "unknown field": good[:-1] + b',"zz":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}",
        "input value": good.replace(b'"inputs":{', b'"inputs":{"x":' + b"[" * 50_000
                                    + b"]" * 50_000 + b",", 1),
        "whole record": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "version 2**31": good.replace(b'"model_version":1', b'"model_version":2147483648', 1),
        "reserved input": good.replace(b'"inputs":{', b'"inputs":{"__output__":1.0,', 1),
    }


def test_records_nested_too_deeply_are_dead_lettered_and_the_partition_goes_on() -> None:
    feed = Feed()
    stream = [codec.encode(e) for e in serving_events("m", 1_500, seed=2, start=T0)]
    feed(stream[:1_500])
    bad = list(_deep_records().values())
    assert all(b != codec.encode(_prediction(900, {"age": 41.0})) for b in bad)
    out = feed(bad + stream[1_500:])
    dead = [(value, headers) for topic, value, headers in out if topic == TOPICS.dead_letter]
    assert [v for v, _ in dead] == bad  # each one, with its original bytes
    reasons = [DeadLetter.from_headers(list(h.items())).reason for _, h in dead]
    assert all("nested too deeply" in r for r in reasons[:3]), reasons
    assert "2147483647" in reasons[3] and "model_version" in reasons[3]
    assert "inputs.__output__ is reserved" in reasons[4]
    counters = feed.router.monitor.counters("m")
    assert (counters["predictions"], counters["labels"]) == (1_500, 1_500)
    assert feed.router.failed == 0 and feed.router.snapshot()


def test_the_projector_sorts_out_deep_records_and_keeps_the_rest() -> None:
    import importlib.util
    from pathlib import Path

    from modelog.store.ledger import build_batch

    spec = importlib.util.spec_from_file_location(  # its record stand-in, by path
        "_hostile_projector", Path(__file__).with_name("test_projector.py"))
    assert spec is not None and spec.loader is not None
    projector_tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(projector_tests)
    rec = projector_tests._Rec

    bad = list(_deep_records().values())
    good = codec.encode(_prediction(1, {"age": 41.0}))
    batch = build_batch([rec(TOPICS.serving, i, v) for i, v in enumerate([*bad, good])],
                        TOPICS.dead_letter)
    assert [r.offset for r in batch.invalid] == [0, 1, 2, 3]  # the projector records the 5th
    assert all("nested too deeply" in r.reason for r in batch.invalid[:3])
    assert batch.events.column("id").to_pylist() == ["h-900", "h-1"]


def test_free_form_fields_nest_at_most_max_nesting_levels() -> None:
    from modelog.models.errors import EventDecodeError
    from modelog.models.event_base import MAX_NESTING
    from modelog.models.events import DatasetVersionCreated, MonitorConfigured

    deep: object = 1.0
    for _ in range(MAX_NESTING):
        deep = {"a": deep}
    config = MonitorConfigured(id="c", time=T0, aggregate="m", model="m", config={"x": 1})
    # the SDK's side: refused at construction, naming the field
    with pytest.raises(EventValidationError) as info:
        MonitorConfigured(id="c", time=T0, aggregate="m", model="m", config={"x": deep})
    assert info.value.field == "config.x" and f"{MAX_NESTING} levels" in info.value.rule
    with pytest.raises(EventValidationError, match=r"profile\.columns"):
        DatasetVersionCreated(id="d", time=T0, aggregate="ds", name="ds", digest="ab" * 8,
                              columns=[], num_rows=1, uri="file:///d", profile={"columns": deep})
    # just within the limit is fine, and a record from another client is refused on read
    within = deep["a"]  # type: ignore[index]
    ok = MonitorConfigured(id="c", time=T0, aggregate="m", model="m", config={"x": within})
    assert codec.decode(codec.encode(ok)) == ok
    raw = codec.encode(config).replace(
        b'{"x":1}', b'{"x":' + b'{"a":' * MAX_NESTING + b"1" + b"}" * MAX_NESTING + b"}")
    with pytest.raises(EventDecodeError, match=r"'config\.x' breaks the rule: lists and objects"):
        codec.decode(raw)


def test_the_sdk_refuses_a_version_beyond_what_the_registry_numbers() -> None:
    import msgspec

    event = _prediction(1, {"age": 41.0})
    with pytest.raises(EventValidationError) as info:
        codec.validate(msgspec.structs.replace(event, model_version=2**31))
    assert info.value.field == "model_version" and "2147483647" in info.value.rule
    assert codec.validate(msgspec.structs.replace(event, model_version=2**31 - 1))
