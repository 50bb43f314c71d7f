"""Dataset profiles and profile diffs (pure: pyarrow and numpy, no I/O).

:func:`profile_table` summarises a :class:`pyarrow.Table` column by column
into a JSON-serialisable dict -- counts and nulls for every column; min, max,
mean, std, quantiles and a histogram for numbers; distinct values and the top
categories for strings; true/false counts for booleans; the range of
timestamps. The dict travels in ``DatasetVersionCreated.profile`` and the
numeric histograms serve later as drift references (:func:`psi` needs the
reference bins).

:func:`diff_profiles` compares two profiles: schema changes, the row-count
delta and, per common column, shifts of mean, std and null fraction, the
population stability index (PSI) on the old bins, and new or vanished
categories. :meth:`ProfileDiff.render` prints it for ``modelog datasets diff``.

Examples
--------
>>> import pyarrow as pa
>>> old = profile_table(pa.table({"age": [20, 30, 40, 50], "plan": ["a", "b", "a", None]}))
>>> old["columns"]["age"]["mean"], old["columns"]["age"]["quantiles"]["p50"]
(35.0, 35.0)
>>> old["columns"]["plan"]["top"]
[{'value': 'a', 'count': 2}, {'value': 'b', 'count': 1}]
>>> new = profile_table(pa.table({"age": [60, 70, 80, 90], "plan": ["a", "c", "c", "c"]}))
>>> diff = diff_profiles(old, new)
>>> diff.columns["age"].mean_delta, diff.columns["plan"].new_categories
(40.0, ['c'])
>>> diff.columns["age"].psi > 0.2
True
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelog.models.errors import ModelsError, ProfileError
from modelog.models.tabular import PSI_EPSILON, rebin
from modelog.models.tabular import psi as _psi

__all__ = [
    "QUANTILES",
    "ColumnShift",
    "ProfileDiff",
    "diff_profiles",
    "profile_table",
    "psi",
    "rebin",
]

QUANTILES: dict[str, float] = {
    "p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99,
}
"""Quantiles every numeric column profile reports (linear interpolation, as numpy)."""

Kind = Literal["numeric", "string", "boolean", "temporal", "other"]


# -- profiling --------------------------------------------------------------------------------
def _kind(t: pa.DataType) -> Kind:
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_temporal(t) and not pa.types.is_interval(t):
        return "temporal"
    return "other"


def _num(value: Any) -> float | None:
    """A finite float, or ``None`` (JSON has no NaN)."""
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _histogram(values: np.ndarray[Any, np.dtype[np.float64]], bins: int
               ) -> dict[str, list[float] | list[int]]:
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:  # a constant column still gets a usable reference bin
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _numeric(col: pa.ChunkedArray, bins: int) -> dict[str, Any]:
    values = pc.cast(pc.drop_null(col), pa.float64())
    finite = pc.filter(values, pc.is_finite(values))
    out: dict[str, Any] = {"non_finite": len(values) - len(finite)}
    if len(finite) == 0:
        out.update(min=None, max=None, mean=None, std=None,
                   quantiles=dict.fromkeys(QUANTILES), histogram=None)
        return out
    mm = pc.min_max(finite)
    qs = pc.quantile(finite, q=list(QUANTILES.values()), interpolation="linear")
    out.update(
        min=_num(mm["min"].as_py()), max=_num(mm["max"].as_py()),
        mean=_num(pc.mean(finite).as_py()), std=_num(pc.stddev(finite, ddof=0).as_py()),
        quantiles={name: _num(q) for name, q in zip(QUANTILES, qs.to_pylist(), strict=True)},
        histogram=_histogram(finite.to_numpy(), bins),
    )
    return out


def _strings(col: pa.ChunkedArray, top_k: int) -> dict[str, Any]:
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    values = pc.drop_null(col)
    counts = pc.value_counts(values)
    pairs = sorted(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(),
                       strict=True), key=lambda vc: (-vc[1], vc[0]))
    top = [{"value": v, "count": int(c)} for v, c in pairs[:top_k]]
    total = len(values)
    other = total - sum(int(t["count"]) for t in top)
    lengths = pc.utf8_length(values) if len(values) else None
    return {
        "distinct": len(pairs),
        "top": top,
        "other_count": other,
        "other_fraction": other / total if total else 0.0,
        "min_length": None if lengths is None else int(pc.min(lengths).as_py()),
        "max_length": None if lengths is None else int(pc.max(lengths).as_py()),
    }


def _booleans(col: pa.ChunkedArray) -> dict[str, Any]:
    true = int(pc.sum(pc.cast(pc.drop_null(col), pa.int64())).as_py() or 0)
    false = col.length() - col.null_count - true
    present = true + false
    return {"true": true, "false": false, "true_fraction": true / present if present else None}


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)  # durations and other temporal types


def _temporal(col: pa.ChunkedArray) -> dict[str, Any]:
    if col.length() == col.null_count:
        return {"min": None, "max": None}
    mm = pc.min_max(col)
    return {"min": _iso(mm["min"].as_py()), "max": _iso(mm["max"].as_py())}


def profile_table(table: pa.Table, *, bins: int = 20, top_k: int = 10) -> dict[str, Any]:
    """Profile every column of ``table`` into a JSON-serialisable dict.

    Parameters
    ----------
    table
        The data.
    bins
        Number of equal-width histogram bins of numeric columns (their PSI reference).
    top_k
        How many of the most frequent values string columns keep.

    Returns
    -------
    dict
        ``{"num_rows", "num_columns", "bins", "top_k", "columns": {name: profile}}``.
        Every column profile has ``type`` (the Arrow type), ``kind`` (``numeric``,
        ``string``, ``boolean``, ``temporal`` or ``other``), ``count`` (non-null),
        ``nulls`` and ``null_fraction``; numeric ones add ``min``, ``max``, ``mean``,
        ``std`` (population), ``quantiles`` (:data:`QUANTILES`), ``histogram``
        (``edges``, ``counts``) and ``non_finite`` (NaN and infinities, left out of
        the statistics); strings add ``distinct``, ``top`` (``value``, ``count``),
        ``other_count``, ``other_fraction``, ``min_length``, ``max_length``;
        booleans ``true``, ``false``, ``true_fraction``; temporal ``min``, ``max``
        (ISO strings). Statistics of columns without values are ``None``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> p = profile_table(pa.table({"x": [1.0, None, 3.0], "ok": [True, False, True]}), bins=2)
    >>> x = p["columns"]["x"]
    >>> x["count"], x["nulls"], round(x["null_fraction"], 3), x["histogram"]
    (2, 1, 0.333, {'edges': [1.0, 2.0, 3.0], 'counts': [1, 1]})
    >>> p["columns"]["ok"]["true"], p["columns"]["ok"]["false"]
    (2, 1)
    """
    if bins < 1 or top_k < 0:
        raise ProfileError(f"bins must be >= 1 and top_k >= 0, got bins={bins}, top_k={top_k}; "
                           "pass positive values")
    columns: dict[str, Any] = {}
    rows = table.num_rows
    for name, col in zip(table.column_names, table.columns, strict=True):
        kind = _kind(col.type)
        nulls = col.null_count
        prof: dict[str, Any] = {
            "type": str(col.type), "kind": kind, "count": rows - nulls, "nulls": nulls,
            "null_fraction": nulls / rows if rows else 0.0,
        }
        if kind == "numeric":
            prof.update(_numeric(col, bins))
        elif kind == "string":
            prof.update(_strings(col, top_k))
        elif kind == "boolean":
            prof.update(_booleans(col))
        elif kind == "temporal":
            prof.update(_temporal(col))
        columns[name] = prof
    return {"num_rows": rows, "num_columns": table.num_columns, "bins": bins, "top_k": top_k,
            "columns": columns}


# -- PSI ----------------------------------------------------------------------------------------
def psi(expected: Sequence[float], actual: Sequence[float], *, epsilon: float = PSI_EPSILON
        ) -> float:
    """:func:`modelog.models.tabular.psi`, raising :class:`ProfileError` on mismatched bins.

    Examples
    --------
    >>> round(psi([50, 50], [90, 10]), 3)
    0.879
    """
    try:
        return _psi(expected, actual, epsilon=epsilon)
    except ModelsError as exc:
        raise ProfileError(str(exc)) from None


def _numeric_psi(old: Mapping[str, Any], new: Mapping[str, Any]) -> float | None:
    ho, hn = old.get("histogram"), new.get("histogram")
    if not ho or not hn:
        return None
    edges = ho["edges"]
    expected = [0.0, *map(float, ho["counts"]), 0.0]  # nothing below or above the old range
    actual = rebin(hn["edges"], hn["counts"], edges)
    return psi(expected, actual)


def _top(profile: Mapping[str, Any]) -> dict[Any, int]:
    return {t["value"]: int(t["count"]) for t in profile.get("top") or []}


def _categorical_psi(old: Mapping[str, Any], new: Mapping[str, Any]) -> float | None:
    """PSI over the old top categories plus an "other" bucket (exact when the tops are complete)."""
    top_old, top_new = _top(old), _top(new)
    if not top_old and not top_new:
        return None
    cats = list(top_old)
    expected = [float(top_old[c]) for c in cats] + [float(old.get("other_count") or 0)]
    actual = [float(top_new.get(c, 0)) for c in cats]
    actual.append(float(new.get("count") or 0) - sum(actual))
    return psi(expected, actual)


# -- diff -----------------------------------------------------------------------------------------
def _delta(old: Mapping[str, Any], new: Mapping[str, Any], key: str) -> float | None:
    a, b = old.get(key), new.get(key)
    return None if a is None or b is None else float(b) - float(a)


@dataclass(frozen=True, slots=True)
class ColumnShift:
    """How one column present in both profiles moved (``None`` where not applicable)."""

    name: str
    kind: str
    old_null_fraction: float
    new_null_fraction: float
    old_mean: float | None = None
    new_mean: float | None = None
    mean_delta: float | None = None
    std_delta: float | None = None
    psi: float | None = None
    new_categories: list[Any] = field(default_factory=list)
    vanished_categories: list[Any] = field(default_factory=list)

    @property
    def null_fraction_delta(self) -> float:
        """New minus old share of nulls."""
        return self.new_null_fraction - self.old_null_fraction

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        return {
            "name": self.name, "kind": self.kind,
            "old_null_fraction": self.old_null_fraction,
            "new_null_fraction": self.new_null_fraction,
            "null_fraction_delta": self.null_fraction_delta,
            "old_mean": self.old_mean, "new_mean": self.new_mean,
            "mean_delta": self.mean_delta, "std_delta": self.std_delta, "psi": self.psi,
            "new_categories": list(self.new_categories),
            "vanished_categories": list(self.vanished_categories),
        }


@dataclass(frozen=True, slots=True)
class ProfileDiff:
    """What changed between two dataset profiles.

    Attributes
    ----------
    added, removed
        Column name -> type of columns only in the new / only in the old profile.
    retyped
        Column name -> ``(old type, new type)``.
    old_rows, new_rows
        Row counts.
    columns
        Column name -> :class:`ColumnShift`, for columns in both with the same kind.
    """

    added: dict[str, str]
    removed: dict[str, str]
    retyped: dict[str, tuple[str, str]]
    old_rows: int
    new_rows: int
    columns: dict[str, ColumnShift]

    @property
    def row_delta(self) -> int:
        """New minus old row count."""
        return self.new_rows - self.old_rows

    @property
    def schema_changed(self) -> bool:
        """Whether any column was added, removed or retyped."""
        return bool(self.added or self.removed or self.retyped)

    def drifted(self, threshold: float = 0.2) -> list[str]:
        """Columns whose PSI exceeds ``threshold`` (0.2: a significant shift)."""
        return [n for n, c in self.columns.items() if c.psi is not None and c.psi > threshold]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        return {
            "added": dict(self.added), "removed": dict(self.removed),
            "retyped": {k: list(v) for k, v in self.retyped.items()},
            "old_rows": self.old_rows, "new_rows": self.new_rows, "row_delta": self.row_delta,
            "columns": {n: c.to_dict() for n, c in self.columns.items()},
        }

    def render(self, *, width: int = 120, psi_threshold: float = 0.2) -> str:
        """A readable text report: row counts, schema changes and a table of column shifts."""
        from rich.console import Console
        from rich.table import Table

        # No markup: column names and Arrow types ("timestamp[us]") are shown verbatim.
        console = Console(width=width, record=True, force_terminal=False, color_system=None,
                          file=io.StringIO(), markup=False, highlight=False, emoji=False)
        sign = "+" if self.row_delta >= 0 else ""
        pct = f" ({sign}{self.row_delta / self.old_rows:.1%})" if self.old_rows else ""
        console.print(f"rows: {self.old_rows} -> {self.new_rows}  {sign}{self.row_delta}{pct}")
        if not self.schema_changed:
            console.print("schema: unchanged")
        for name, typ in self.added.items():
            console.print(f"+ added column {name} ({typ})")
        for name, typ in self.removed.items():
            console.print(f"- removed column {name} ({typ})")
        for name, (a, b) in self.retyped.items():
            console.print(f"~ retyped column {name}: {a} -> {b}")
        if self.columns:
            table = Table(show_edge=False, header_style="bold")
            for title in ("column", "kind", "nulls", "mean", "std Δ", "PSI", "categories"):
                table.add_column(title, justify="left" if title in ("column", "kind",
                                                                    "categories") else "right")
            for c in self.columns.values():
                flag = " !" if c.psi is not None and c.psi > psi_threshold else ""
                table.add_row(
                    c.name, c.kind,
                    f"{c.old_null_fraction:.1%} -> {c.new_null_fraction:.1%}",
                    _fmt_mean(c), _fmt(c.std_delta, signed=True),
                    _fmt(c.psi) + flag, _fmt_categories(c),
                )
            console.print(table)
            drifted = self.drifted(psi_threshold)
            if drifted:
                console.print(f"shifted (PSI > {psi_threshold}): {', '.join(drifted)}")
        return console.export_text()


def _fmt(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _fmt_mean(c: ColumnShift) -> str:
    if c.old_mean is None and c.new_mean is None:
        return "-"
    return f"{_fmt(c.old_mean)} -> {_fmt(c.new_mean)} ({_fmt(c.mean_delta, signed=True)})"


def _fmt_categories(c: ColumnShift) -> str:
    parts = []
    if c.new_categories:
        parts.append("new: " + ", ".join(map(str, c.new_categories[:5])))
    if c.vanished_categories:
        parts.append("gone: " + ", ".join(map(str, c.vanished_categories[:5])))
    return "; ".join(parts) or "-"


def _column_shift(name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> ColumnShift:
    kind = str(new.get("kind", "other"))
    shift = ColumnShift(
        name=name, kind=kind, old_null_fraction=float(old.get("null_fraction") or 0.0),
        new_null_fraction=float(new.get("null_fraction") or 0.0),
    )
    if kind == "numeric":
        return replace(
            shift, old_mean=old.get("mean"),
            new_mean=new.get("mean"), mean_delta=_delta(old, new, "mean"),
            std_delta=_delta(old, new, "std"), psi=_numeric_psi(old, new),
        )
    if kind == "string":
        top_old, top_new = _top(old), _top(new)
        # Categories are only known within each top_k list: a "new" category
        # may have been in the old tail, so these lists are indicative.
        return replace(
            shift, psi=_categorical_psi(old, new),
            new_categories=[c for c in top_new if c not in top_old],
            vanished_categories=[c for c in top_old if c not in top_new],
        )
    if kind == "boolean":
        counts_old = [float(old.get("true") or 0), float(old.get("false") or 0)]
        counts_new = [float(new.get("true") or 0), float(new.get("false") or 0)]
        return replace(
            shift, old_mean=old.get("true_fraction"), new_mean=new.get("true_fraction"),
            mean_delta=_delta(old, new, "true_fraction"), psi=psi(counts_old, counts_new),
        )
    return shift


def diff_profiles(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    old_rows: int | None = None,
    new_rows: int | None = None,
) -> ProfileDiff:
    """Compare two profiles made by :func:`profile_table`.

    Parameters
    ----------
    old, new
        The profiles (``new`` is compared against ``old``; PSI uses the old bins).
    old_rows, new_rows
        Row counts (e.g. ``DatasetVersionCreated.num_rows``); default: the
        profiles' own ``num_rows``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> a = profile_table(pa.table({"x": [1, 2, 3]}))
    >>> b = profile_table(pa.table({"x": [1.0, 2.0, 3.0], "y": ["k", "l", "m"]}))
    >>> d = diff_profiles(a, b)
    >>> d.added, d.retyped, d.row_delta
    ({'y': 'string'}, {'x': ('int64', 'double')}, 0)
    """
    cols_old: Mapping[str, Any] = old.get("columns", {})
    cols_new: Mapping[str, Any] = new.get("columns", {})
    added = {n: str(p.get("type")) for n, p in cols_new.items() if n not in cols_old}
    removed = {n: str(p.get("type")) for n, p in cols_old.items() if n not in cols_new}
    retyped: dict[str, tuple[str, str]] = {}
    shifts: dict[str, ColumnShift] = {}
    for name, p_old in cols_old.items():
        p_new = cols_new.get(name)
        if p_new is None:
            continue
        if p_old.get("type") != p_new.get("type"):
            retyped[name] = (str(p_old.get("type")), str(p_new.get("type")))
        if p_old.get("kind") == p_new.get("kind"):  # int64 -> double still compares
            shifts[name] = _column_shift(name, p_old, p_new)
    return ProfileDiff(
        added=added, removed=removed, retyped=retyped,
        old_rows=int(old.get("num_rows", 0) if old_rows is None else old_rows),
        new_rows=int(new.get("num_rows", 0) if new_rows is None else new_rows),
        columns=shifts,
    )
