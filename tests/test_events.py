"""The event model: envelope, round trips, upcasting, validation, JSON Schemas."""

from __future__ import annotations

import datetime as dt
import json
import math
import re

import jsonschema
import msgspec
import pytest

from modelog.models import codec, events, ids
from modelog.models.errors import EventDecodeError, EventValidationError, UnknownEventTypeError

T0 = dt.datetime(2026, 3, 3, 14, 0, tzinfo=dt.UTC)


def _prediction(**kw: object) -> events.PredictionMade:
    base: dict[str, object] = dict(
        id=ids.new_id(), time=T0, aggregate="churn", producer="test",
        prediction_id="p-1", model="churn", model_version=3, code_version="abc123",
        inputs={"age": 41, "plan": "pro", "spend": 12.5, "churned_before": False, "x": None},
        output=0.83,
    )
    base.update(kw)
    return events.PredictionMade(**base)  # type: ignore[arg-type]


def test_every_event_has_the_envelope_and_a_stream() -> None:
    for name, cls in events.CATALOGUE.items():
        fields = {f.name for f in msgspec.structs.fields(cls)}
        assert {"id", "time", "aggregate", "producer", "schema_version"} <= fields, name
        assert cls.stream, f"{name} has no stream"
        assert cls.__struct_config__.frozen, f"{name} is not frozen"
        assert name == cls.type_name()


def test_events_are_frozen() -> None:
    ev = _prediction()
    with pytest.raises(AttributeError):
        ev.model = "other"  # type: ignore[misc]


def test_round_trip_every_type_through_json_schema_examples() -> None:
    ev = _prediction()
    raw = codec.encode(ev)
    record = json.loads(raw)
    assert record["type"] == "PredictionMade"
    assert record["schema_version"] == 3
    assert "modelog" not in raw.decode().split('"type"')[0]  # no class paths
    assert codec.decode(raw) == ev


def test_ids_are_unique_and_time_sortable() -> None:
    made = [ids.new_id() for _ in range(10_000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    assert abs(ids.id_time_ms(made[-1]) - now_ms) < 5_000


def test_derived_ids_are_deterministic_and_distinct() -> None:
    a = ids.derived_id(1_000, "concept", "churn", "p-1")
    assert a == ids.derived_id(1_000, "concept", "churn", "p-1")
    assert a != ids.derived_id(1_000, "concept", "churn", "p-2")
    assert ids.id_time_ms(a) == 1_000


def test_v1_prediction_is_upcast_on_read() -> None:
    v1 = {
        "type": "PredictionMade", "schema_version": 1, "id": "e-1",
        "time": "2026-03-03T14:00:00Z", "aggregate": "churn", "producer": "old-app",
        "prediction_id": "p-9", "model": "churn", "model_version": 1,
        "features": {"age": 30}, "prediction": 1,
    }
    ev = codec.decode(json.dumps(v1).encode())
    assert isinstance(ev, events.PredictionMade)
    assert ev.schema_version == 3
    assert ev.inputs == {"age": 30}
    assert ev.output == 1
    assert ev.code_version is None
    assert ev.probabilities is None
    # Re-encoding writes the current version only.
    assert json.loads(codec.encode(ev))["schema_version"] == 3


def test_v2_prediction_is_upcast_to_v3_without_probabilities() -> None:
    """v2 (before class probabilities) reads as v3 with none; its dict output stays as it was."""
    current = _prediction(output={"no": 0.3, "yes": 0.7})
    v2 = json.loads(codec.encode(current))
    v2["schema_version"] = 2
    del v2["probabilities"]
    ev = codec.decode(json.dumps(v2).encode())
    assert isinstance(ev, events.PredictionMade)
    assert (ev.schema_version, ev.probabilities, ev.output) == (3, None, {"no": 0.3, "yes": 0.7})
    assert ev == current


def test_a_v3_prediction_carries_its_class_probabilities_checked_on_read() -> None:
    good = _prediction(output="yes", probabilities={"no": 0.25, "yes": 0.75})
    assert codec.decode(codec.encode(good)) == good
    record = json.loads(codec.encode(good))
    for bad, where in [({"no": 1.5, "yes": 0.1}, "<= 1.0"), ({"no": -0.1, "yes": 1.0}, ">= 0.0"),
                       ({"yes": 1.0}, "length >= 2"), ({"": 0.5, "x": 0.5}, "length >= 1"),
                       ([0.2, 0.8], "Expected `object | null`"), ({"a": "0.5", "b": 0.5}, "float")]:
        with pytest.raises(EventDecodeError, match=re.escape(where)):
            codec.decode(json.dumps(dict(record, probabilities=bad)).encode())


def test_a_record_without_schema_version_is_read_as_version_1() -> None:
    """A missing schema_version means 1 (the oldest writers), even when the body would also
    read as the current version (a nested key of that name changes nothing)."""
    record = json.loads(codec.encode(_prediction(inputs={"schema_version": 2, "age": 3})))
    del record["schema_version"]
    ev = codec.decode(json.dumps(record).encode())
    assert isinstance(ev, events.PredictionMade) and ev.schema_version == 3
    assert ev.inputs == {}  # upcast from v1: its inputs were "features", absent here


def test_newer_schema_version_is_refused_with_advice() -> None:
    raw = codec.encode(_prediction()).replace(b'"schema_version":3', b'"schema_version":9')
    with pytest.raises(EventDecodeError, match="upgrade modelog"):
        codec.decode(raw)


@pytest.mark.parametrize(
    ("raw", "error", "reason"),
    [
        (b"{not json", EventDecodeError, "not a modelog event"),
        (b'{"type": "Bogus", "schema_version": 1}', UnknownEventTypeError, "unknown event type"),
        (b'{"type": "LabelObserved", "id": "x"}', EventDecodeError, "invalid LabelObserved"),
        (
            b'{"type":"LabelObserved","id":"x","time":"2026-01-01T00:00:00",'
            b'"aggregate":"m","prediction_id":"p","model":"m","label":1}',
            EventDecodeError,
            "timezone",
        ),
        (
            b'{"type":"LabelObserved","id":"x","time":"2026-01-01T00:00:00Z",'
            b'"aggregate":"m","prediction_id":"p","model":"bad name","label":1}',
            EventDecodeError,
            "regex",
        ),
    ],
)
def test_decode_rejects_bad_records_with_a_reason(raw: bytes, error: type, reason: str) -> None:
    with pytest.raises(error) as info:
        codec.decode(raw)
    assert reason in info.value.reason


def test_validation_names_field_value_and_rule() -> None:
    with pytest.raises(EventValidationError) as info:
        codec.validate(_prediction(model_version=0))
    err = info.value
    assert (err.event_type, err.field, err.value) == ("PredictionMade", "model_version", 0)
    assert ">= 1" in err.rule
    assert "model_version" in str(err) and "0" in str(err)


@pytest.mark.parametrize("model", ["no spaces!", "-leading", "x" * 129, "é", "", "churn\n"])
def test_a_served_name_keeps_the_name_rule_on_every_path(model: str) -> None:
    """Prediction and label model names are checked after decoding, not by msgspec (see
    ``ServedName``): decode, the upcast path, validate, the ledger and the JSON Schema
    refuse what the name pattern refuses."""
    from modelog.store.ledger import build_batch

    good = json.loads(codec.encode(_prediction()))
    raw = json.dumps(dict(good, model=model)).encode()
    with pytest.raises(EventDecodeError, match=r"invalid PredictionMade: .*`\$\.model`"):
        codec.decode(raw)
    v1 = dict(good, model=model, schema_version=1, features={"a": 1}, prediction=1)
    with pytest.raises(EventDecodeError, match="invalid PredictionMade"):
        codec.decode(json.dumps(v1).encode())
    with pytest.raises(EventValidationError) as info:
        codec.validate(_prediction(model=model))
    assert (info.value.field, info.value.value) == ("model", model)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(dict(good, model=model), codec.json_schemas()["PredictionMade"])

    class Rec:
        def topic(self) -> str: return "m.serving"
        def partition(self) -> int: return 0
        def offset(self) -> int: return 3
        def key(self) -> bytes: return b"churn"
        def value(self) -> bytes: return codec.encode(_prediction(model=model))  # canonical
        def headers(self) -> None: return None
        def timestamp(self) -> tuple[int, int]: return (1, 0)

    batch = build_batch([Rec()], "m.dead-letter")
    assert batch.events.num_rows == 0 and [r.offset for r in batch.invalid] == [3]
    assert "invalid PredictionMade" in batch.invalid[0].reason


def test_a_trailing_newline_is_not_part_of_any_name_or_digest() -> None:
    """Python's ``$`` matches before a final newline; the patterns refuse it, as JSON Schema
    does (the lookahead of NAME_PATTERN), and so do the checks that use them."""
    from modelog.models.validation import check_name
    from modelog.store.artifacts import _check_digest
    from modelog.store.errors import ArtifactPathError

    label = json.loads(codec.encode(events.LabelObserved(
        id="l", time=T0, aggregate="churn", prediction_id="p", model="churn", label=1)))
    with pytest.raises(EventDecodeError, match="regex"):
        codec.decode(json.dumps(dict(label, model="churn\n")).encode())
    dataset = json.loads(codec.encode(events.DatasetVersionCreated(
        id="d", time=T0, aggregate="churn", name="churn", digest="a" * 64, columns=[],
        num_rows=0, uri="mem://")))
    codec.decode(json.dumps(dataset).encode())
    for field, value in [("name", "churn\n"), ("digest", "a" * 64 + "\n")]:
        with pytest.raises(EventDecodeError, match="regex"):
            codec.decode(json.dumps(dict(dataset, **{field: value})).encode())
    with pytest.raises(EventValidationError):
        check_name("churn\n", "PredictionMade", "model")
    with pytest.raises(ArtifactPathError):
        _check_digest("a" * 64 + "\n")


def test_served_names_seen_to_pass_are_remembered_within_a_bound() -> None:
    codec.valid_names.clear()
    for i in range(codec._NAMES_REMEMBERED + 10):
        assert codec.name_violation(_prediction(model=f"m-{i}")) is None
    assert 0 < len(codec.valid_names) <= codec._NAMES_REMEMBERED
    assert codec.name_violation(_prediction(model="bad name")) == ("model", "bad name")
    assert "bad name" not in codec.valid_names


def _outcome(decode: object, raw: bytes) -> object:
    try:
        return decode(raw)  # type: ignore[operator]
    except EventDecodeError as exc:
        return type(exc), str(exc)


def test_the_workers_one_pass_decode_agrees_with_decode_on_every_record() -> None:
    """``decode_serving`` (the worker's fast path) returns what ``codec.decode`` returns, or
    raises what it raises, for any record: versions, names seen or new, hostile input."""
    from modelog.models.serving_path import decode_serving

    pred = json.loads(codec.encode(_prediction(inputs={"schema_version": 2, "age": 3})))
    label = json.loads(codec.encode(events.LabelObserved(
        id="l", time=T0, aggregate="churn", prediction_id="p-1", model="churn", label=1)))
    unversioned_pred = {k: v for k, v in pred.items() if k != "schema_version"}
    unversioned_label = {k: v for k, v in label.items() if k != "schema_version"}
    v1 = dict(unversioned_pred, schema_version=1, features={"a": 1}, prediction=1)
    records = [
        pred, label, unversioned_pred, unversioned_label, v1,
        dict(pred, schema_version=9), dict(label, schema_version=2),
        dict(pred, schema_version=2), {k: v for k, v in pred.items() if k != "probabilities"},
        dict(pred, output=1, probabilities={"0": 0.4, "1": 0.6}),
        dict(pred, schema_version=2, probabilities={"0": 0.4, "1": 0.6}),
        dict(pred, probabilities={"0": 1.4, "1": 0.6}), dict(pred, probabilities={"1": 1.0}),
        dict(pred, model="bad name"), dict(label, model="churn\n"),
        dict(pred, model="first-seen"), dict(label, model="x" * 129),
        dict(pred, extra={"schema_version": 2, "deep": [[[1]]]}),
        dict(label, time="2026-01-01T00:00:00"), dict(label, label=2**70),
        dict(pred, model_version=0), {k: v for k, v in pred.items() if k != "inputs"},
        json.loads(codec.encode(events.DatasetVersionCreated(
            id="d", time=T0, aggregate="churn", name="churn", digest="a" * 64, columns=[],
            num_rows=0, uri="mem://"))),
        {"type": "Bogus", "schema_version": 1},
    ]
    raws = [json.dumps(r).encode() for r in records] + [
        b"", b"{not json", b"[]", b'{"type": "LabelObserved", "id": "x"}',
        json.dumps(label).encode().replace(b'"label": 1', b'"label": NaN'),
        b'{"type":"PredictionMade","inputs":' + b"[" * 5000 + b"]" * 5000 + b"}",
    ]
    for cold in (True, False):  # names not yet seen to pass, then seen
        if cold:
            codec.valid_names.clear()
        for raw in raws:
            fast = _outcome(decode_serving, raw)
            assert fast == _outcome(codec.decode, raw), raw[:120]
    assert isinstance(_outcome(decode_serving, raws[2]), events.PredictionMade)
    assert _outcome(decode_serving, raws[2]).inputs == {}  # type: ignore[attr-defined]


def test_validation_rejects_non_finite_numbers_in_nested_fields() -> None:
    with pytest.raises(EventValidationError) as info:
        codec.validate(_prediction(inputs={"age": math.nan}))
    assert info.value.field == "inputs.age"
    assert "finite" in info.value.rule


def test_validation_requires_timezone_aware_time() -> None:
    with pytest.raises(EventValidationError, match="timezone"):
        codec.validate(_prediction(time=dt.datetime(2026, 1, 1)))


def test_json_schemas_validate_real_events_and_reject_bad_ones() -> None:
    schemas = codec.json_schemas()
    assert set(schemas) == set(events.CATALOGUE)
    schema = schemas["PredictionMade"]
    assert schema["x-modelog-topic"] == "serving"
    good = json.loads(codec.encode(_prediction()))
    jsonschema.validate(good, schema)
    bad = dict(good, model_version=0)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    old = dict(good, schema_version=1)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(old, schema)
    # Every schema is itself a valid JSON Schema.
    for s in schemas.values():
        jsonschema.Draft202012Validator.check_schema(s)
