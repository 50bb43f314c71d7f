"""Training-serving skew checks (pure)."""

from __future__ import annotations

import pytest

from modelog.models.errors import InvalidParameterError
from modelog.models.skew import SkewMonitor, accepted_types, type_family

SIGNATURE = {"age": "int64", "income": "double", "plan": "string", "active": "bool"}
GOOD = {"age": 40, "income": 1_000.5, "plan": "pro", "active": True}


def kinds(monitor: SkewMonitor) -> dict[tuple[str, str], tuple[str | None, str | None, int]]:
    return {(f.feature, f.kind): (f.expected, f.observed, f.count) for f in monitor.findings}


def test_type_families() -> None:
    assert [type_family(t) for t in ("int32", "uint8", "float", "double", "decimal128(5, 2)",
                                     "string", "large_string", "bool", "date32[day]")] == \
        ["integer", "integer", "floating", "floating", "floating", "string", "string",
         "boolean", None]
    assert accepted_types("double") == frozenset({float, int})
    assert accepted_types("timestamp[us]") is None


def test_conforming_inputs_raise_nothing() -> None:
    m = SkewMonitor(SIGNATURE, reference_size=10, window=10, block=10)
    for i in range(100):
        m.update({**GOOD, "income": i, "age": float(i)}, key=f"p{i}")  # int as double, 3.0 as int
        assert m.findings == () and not m.drift_detected
    assert sum(m.counts.values()) == 0


def test_missing_unexpected_and_type_are_reported_once_with_keys() -> None:
    m = SkewMonitor(SIGNATURE, max_keys=3, block=8)
    for i in range(5):
        x = {**GOOD, "income": "1000", "extra": 1}  # a string where double is expected
        del x["plan"]
        m.update(x, key=f"p{i}")
    m.update({**GOOD, "age": 1.5}, key="p5")  # a fraction where int64 is expected
    m.update({**GOOD, "active": 1}, key="p6")  # an int is not a bool
    assert not m.drift_detected  # checked every 8th input
    m.update({**GOOD, "age": True}, key="p7")  # a bool is not a number
    assert m.drift_detected
    found = {(f.feature, f.kind): f for f in m.findings}
    assert set(found) == {("income", "type"), ("extra", "unexpected"), ("plan", "missing"),
                          ("age", "type"), ("active", "type")}
    assert found["income", "type"].expected == "double"
    assert found["income", "type"].observed == "str"
    assert found["income", "type"].count == 5 and found["income", "type"].keys == ("p0", "p1", "p2")
    assert found["plan", "missing"].observed is None
    assert found["age", "type"].keys == ("p5", "p7")
    for i in range(8, 16):
        m.update({**GOOD, "income": "again"}, key=f"p{i}")
    assert m.findings == ()  # already reported: counted only
    assert m.counts["type"] == 16


def test_no_signature_means_no_structural_checks() -> None:
    m = SkewMonitor(None, block=1)
    m.update({"anything": "goes"}, key="p1")
    assert m.findings == () and not m.drift_detected


def test_null_share_against_the_reference_profile() -> None:
    m = SkewMonitor(SIGNATURE, {"income": 0.0, "plan": 0.5}, reference_size=100, window=200,
                    block=100, nulls_tolerance=0.15)
    for i in range(400):
        x = {**GOOD, "plan": None if i % 2 else "pro"}  # 50 % nulls as in training
        if i >= 200 and i % 4 == 0:
            x["income"] = None  # 25 % nulls vs 0 % in training
        m.update(x, key=f"p{i}")
        if i % 100 == 99:
            found = kinds(m)
            if i < 399:
                assert ("income", "nulls") not in found, i
    assert found == {("income", "nulls"): ("0.0% nulls", "25.0% nulls", 50)}
    assert m.null_shares()["plan"] == pytest.approx(0.5)


def test_null_share_reference_from_the_warm_up() -> None:
    m = SkewMonitor(None, reference_size=100, window=100, block=100)
    for i in range(300):
        m.update({"x": None if i >= 200 else 1.0}, key=f"p{i}")
        if i % 100 == 99:
            found = kinds(m)
    assert m.null_reference == {"x": 0.0}
    assert found == {("x", "nulls"): ("0.0% nulls", "100.0% nulls", 100)}


def test_bad_parameters_name_the_rule() -> None:
    with pytest.raises(InvalidParameterError, match="nulls_tolerance"):
        SkewMonitor(SIGNATURE, nulls_tolerance=1.5)
    with pytest.raises(InvalidParameterError, match="window"):
        SkewMonitor(SIGNATURE, window=0)


def test_remembered_clean_shapes_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs shaped as one seen clean skip the per-feature check: the outcome is the same."""
    import random

    import modelog.models.skew as skew

    rng = random.Random(7)
    variants = [
        GOOD, {**GOOD, "income": 3}, {**GOOD, "age": 4.0}, {**GOOD, "age": 4.5},
        {**GOOD, "plan": None}, {**GOOD, "extra": 1},
        {k: v for k, v in GOOD.items() if k != "plan"}, {**GOOD, "active": "yes"},
        dict(reversed(list(GOOD.items()))),
    ]
    stream = [rng.choices(variants, weights=[40, 10, 5, 2, 3, 2, 2, 2, 5])[0] for _ in range(3_000)]

    def run() -> tuple[object, ...]:
        m = SkewMonitor(SIGNATURE, reference_size=200, window=300, block=50)
        found = []
        for i, x in enumerate(stream):
            m.update(x, key=f"p{i}")
            found.append(kinds(m))
        return found, dict(m.counts), m.null_shares(), dict(m.null_reference), len(m._clean)

    cached = run()
    monkeypatch.setattr(skew, "MAX_CLEAN_SHAPES", 0)
    unchecked = run()
    assert cached[:4] == unchecked[:4]
    assert cached[4] == 3 and unchecked[4] == 0  # GOOD, the int income, GOOD reordered
    assert any(cached[0])  # the stream does raise findings
