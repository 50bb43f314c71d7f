"""Dataset profiles (checked against numpy) and profile diffs with PSI."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from modelog.models.errors import ProfileError
from modelog.models.profile import (
    QUANTILES,
    diff_profiles,
    profile_table,
    psi,
    rebin,
)

RNG = np.random.default_rng(7)
N = 4000
X = RNG.normal(10.0, 2.0, N)
COLOURS = np.array(["red", "green", "blue", "cyan", "pink"])[RNG.choice(5, N, p=[.4, .3, .15,
                                                                                 .1, .05])]


def base_table(x: np.ndarray[Any, Any] = X) -> pa.Table:
    return pa.table({
        "x": x,
        "n": pa.array(np.arange(len(x)), pa.int32()),
        "colour": COLOURS[: len(x)],
        "flag": np.arange(len(x)) % 4 == 0,
    })


@pytest.fixture(scope="module")
def base_profile() -> dict[str, Any]:
    return profile_table(base_table())


def test_numeric_matches_numpy(base_profile: dict[str, Any]) -> None:
    x = base_profile["columns"]["x"]
    assert (x["type"], x["kind"], x["count"], x["nulls"], x["null_fraction"]) == (
        "double", "numeric", N, 0, 0.0)
    assert x["min"] == pytest.approx(X.min())
    assert x["max"] == pytest.approx(X.max())
    assert x["mean"] == pytest.approx(X.mean())
    assert x["std"] == pytest.approx(X.std())
    for name, q in QUANTILES.items():
        assert x["quantiles"][name] == pytest.approx(np.quantile(X, q)), name
    counts, edges = np.histogram(X, bins=20)
    assert x["histogram"]["edges"] == pytest.approx(edges.tolist())
    assert x["histogram"]["counts"] == counts.tolist()
    n = base_profile["columns"]["n"]
    assert (n["type"], n["min"], n["max"], n["mean"]) == ("int32", 0.0, N - 1.0, (N - 1) / 2)
    assert base_profile["num_rows"] == N and base_profile["num_columns"] == 4


def test_profile_is_json_serialisable(base_profile: dict[str, Any]) -> None:
    assert json.loads(json.dumps(base_profile, allow_nan=False)) == base_profile


def test_nulls_nan_and_infinities() -> None:
    values = [1.0, None, 3.0, float("nan"), None, float("inf"), 5.0]
    prof = profile_table(pa.table({"v": pa.array(values, pa.float64())}), bins=2)
    v = prof["columns"]["v"]
    assert (v["count"], v["nulls"], v["non_finite"]) == (5, 2, 2)
    assert v["null_fraction"] == pytest.approx(2 / 7)
    assert (v["min"], v["max"], v["mean"]) == (1.0, 5.0, 3.0)
    assert v["std"] == pytest.approx(np.std([1.0, 3.0, 5.0]))
    assert v["histogram"] == {"edges": [1.0, 3.0, 5.0], "counts": [1, 2]}
    json.dumps(prof, allow_nan=False)


def test_all_null_and_constant_columns() -> None:
    prof = profile_table(pa.table({"none": pa.nulls(3, pa.float64()), "s": pa.nulls(3, pa.string()),
                                   "b": pa.nulls(3, pa.bool_()), "c": [7, 7, 7]}))
    none = prof["columns"]["none"]
    assert (none["count"], none["nulls"], none["null_fraction"]) == (0, 3, 1.0)
    assert none["mean"] is None and none["histogram"] is None
    assert set(none["quantiles"].values()) == {None}
    s = prof["columns"]["s"]
    assert (s["distinct"], s["top"], s["other_fraction"], s["min_length"]) == (0, [], 0.0, None)
    assert prof["columns"]["b"]["true_fraction"] is None
    c = prof["columns"]["c"]
    assert (c["std"], c["histogram"]["counts"][10], sum(c["histogram"]["counts"])) == (0.0, 3, 3)
    assert c["histogram"]["edges"][0] == 6.5 and c["histogram"]["edges"][-1] == 7.5
    json.dumps(prof, allow_nan=False)


def test_empty_table() -> None:
    prof = profile_table(base_table().slice(0, 0))
    assert prof["num_rows"] == 0
    x = prof["columns"]["x"]
    assert (x["count"], x["nulls"], x["null_fraction"], x["mean"]) == (0, 0, 0.0, None)
    assert prof["columns"]["colour"]["distinct"] == 0
    assert prof["columns"]["flag"]["true"] == 0
    assert profile_table(pa.table({}))["columns"] == {}


def test_strings_top_k_and_other(base_profile: dict[str, Any]) -> None:
    values, counts = np.unique(COLOURS, return_counts=True)
    expected = sorted(zip(values.tolist(), counts.tolist(), strict=True), key=lambda p: -p[1])
    prof = profile_table(base_table(), top_k=3)["columns"]["colour"]
    assert prof["distinct"] == 5
    assert [(t["value"], t["count"]) for t in prof["top"]] == expected[:3]
    other = sum(c for _, c in expected[3:])
    assert (prof["other_count"], prof["other_fraction"]) == (other, pytest.approx(other / N))
    assert (prof["min_length"], prof["max_length"]) == (3, 5)
    full = base_profile["columns"]["colour"]
    assert full["other_count"] == 0 and len(full["top"]) == 5


def test_dictionary_booleans_and_timestamps() -> None:
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    table = pa.table({
        "cat": pa.array(["a", "b", "a", None]).dictionary_encode(),
        "ok": [True, False, True, None],
        "at": pa.array([t0, t0 + dt.timedelta(days=2), None, t0 + dt.timedelta(hours=1)]),
        "day": pa.array([dt.date(2026, 1, 2), dt.date(2025, 12, 31), None, None]),
        "tags": pa.array([["x"], [], None, ["y"]]),
    })
    cols = profile_table(table)["columns"]
    assert cols["cat"]["kind"] == "string"
    assert cols["cat"]["top"] == [{"value": "a", "count": 2}, {"value": "b", "count": 1}]
    assert (cols["ok"]["true"], cols["ok"]["false"], cols["ok"]["nulls"]) == (2, 1, 1)
    assert cols["ok"]["true_fraction"] == pytest.approx(2 / 3)
    assert (cols["at"]["min"], cols["at"]["max"]) == (t0.isoformat(),
                                                      (t0 + dt.timedelta(days=2)).isoformat())
    assert (cols["day"]["min"], cols["day"]["max"]) == ("2025-12-31", "2026-01-02")
    assert (cols["tags"]["kind"], cols["tags"]["count"], cols["tags"]["nulls"]) == ("other", 3, 1)


def test_bad_arguments() -> None:
    with pytest.raises(ProfileError, match="bins must be >= 1"):
        profile_table(base_table(), bins=0)
    with pytest.raises(ProfileError, match="same bins"):
        psi([1, 2], [1, 2, 3])


def test_psi_and_rebin() -> None:
    assert psi([10, 20, 30], [20, 40, 60]) == pytest.approx(0.0)
    e, a = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    assert psi([50, 50], [90, 10]) == pytest.approx(float(np.sum((a - e) * np.log(a / e))))
    assert psi([0, 0], [1, 1]) == 0.0
    assert rebin([0, 2, 4], [10, 20], [0, 2, 4]) == [0.0, 10.0, 20.0, 0.0]
    assert rebin([0, 4], [8], [-10, 1, 2]) == [0.0, 2.0, 2.0, 4.0]
    assert sum(rebin([0, 1, 2], [3, 5], [0.5, 1.5])) == pytest.approx(8)


def test_identical_profiles_have_zero_psi(base_profile: dict[str, Any]) -> None:
    diff = diff_profiles(base_profile, profile_table(base_table()), old_rows=N, new_rows=N)
    assert not diff.schema_changed
    assert (diff.added, diff.removed, diff.retyped, diff.row_delta) == ({}, {}, {}, 0)
    for name in ("x", "n", "colour", "flag"):
        assert diff.columns[name].psi == pytest.approx(0.0, abs=1e-9), name
    assert diff.columns["x"].mean_delta == 0.0
    assert diff.drifted() == []
    text = diff.render()
    assert "schema: unchanged" in text and "shifted" not in text


def test_diff_detects_schema_changes_and_a_shifted_mean(base_profile: dict[str, Any]) -> None:
    shifted_x = RNG.normal(12.0, 2.0, N - 500)  # mean moves by one std
    new = base_table(shifted_x)
    new = new.drop_columns(["flag"]).append_column("score", pa.array(shifted_x * 2))
    new = new.set_column(new.schema.get_field_index("n"), "n",
                         pa.array(np.arange(N - 500), pa.float64()))
    diff = diff_profiles(base_profile, profile_table(new), old_rows=N, new_rows=N - 500)
    assert diff.added == {"score": "double"}
    assert diff.removed == {"flag": "bool"}
    assert diff.retyped == {"n": ("int32", "double")}
    assert diff.row_delta == -500
    x = diff.columns["x"]
    assert x.mean_delta == pytest.approx(shifted_x.mean() - X.mean())
    assert x.mean_delta == pytest.approx(2.0, abs=0.2)
    assert x.psi is not None and x.psi > 0.2
    assert "x" in diff.drifted()
    assert "n" in diff.columns  # int -> double still compares numerically
    text = diff.render()
    for expected in ("rows: 4000 -> 3500", "+ added column score (double)",
                     "- removed column flag (bool)", "~ retyped column n: int32 -> double",
                     "shifted (PSI > 0.2): x"):
        assert expected in text
    assert json.loads(json.dumps(diff.to_dict()))["columns"]["x"]["psi"] == pytest.approx(x.psi)


def test_diff_categories_and_nulls() -> None:
    old = profile_table(pa.table({"c": ["a"] * 50 + ["b"] * 50, "v": [1.0] * 100}))
    new_values = ["a"] * 50 + ["z"] * 40 + [None] * 10
    new = profile_table(pa.table({"c": new_values, "v": [1.0] * 90 + [None] * 10}))
    diff = diff_profiles(old, new)
    c = diff.columns["c"]
    assert (c.new_categories, c.vanished_categories) == (["z"], ["b"])
    assert c.null_fraction_delta == pytest.approx(0.1)
    assert c.psi is not None and c.psi > 1.0
    assert diff.columns["v"].null_fraction_delta == pytest.approx(0.1)
    assert diff.columns["v"].psi == pytest.approx(0.0)
    assert "new: z; gone: b" in diff.render()


def test_new_values_outside_old_range_count_in_psi() -> None:
    old = profile_table(pa.table({"v": np.linspace(0, 1, 1000)}), bins=10)
    new = profile_table(pa.table({"v": np.linspace(5, 6, 1000)}), bins=10)
    assert diff_profiles(old, new).columns["v"].psi > 5
