"""MLflow searches over the endpoint's fold: filter strings, order-by, page tokens.

Filter strings are parsed by modelog's run-filter grammar
(:func:`modelog.store.filter_syntax.parse_filter`, MLflow's syntax: ``metrics.f1 >
0.8 and params.model = 'rf'``, backticks, ``LIKE``/``ILIKE``, ``IN``, ``IS NULL``)
and evaluated here on the in-memory records: :func:`matches` takes a lookup
``(kind, key) -> value`` so runs, registered models and versions share it.
A parse error becomes MLflow's ``INVALID_PARAMETER_VALUE``. Page tokens are
opaque base64 JSON offsets.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.

Examples
--------
>>> values = {("metric", "f1"): 0.9, ("param", "model"): "rf"}
>>> matches(parse("metrics.f1 > 0.8 and params.model LIKE 'r%'"), lambda k, f: values.get((k, f)))
True
>>> decode_token(encode_token(40))
40
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from modelog.store.errors import FilterSyntaxError
from modelog.store.filter_syntax import Comparison, Expr, Field, Junction, Not, parse_filter
from modelog.streams.errors import MlflowApiError

__all__ = ["Lookup", "decode_token", "encode_token", "matches", "page", "parse", "sort_key"]

T = TypeVar("T")
Lookup = Callable[[str, str], Any]
"""``(kind, key) -> value`` of one record (``None``: it has no such field)."""

_TIME_KEYS = frozenset({"started", "ended"})


EXTRA = "modelog.attribute."
"""Tag-key prefix standing for an attribute the run grammar does not know (see :func:`parse`)."""
_QUOTED = re.compile(r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`)")


def parse(text: str | None, extra: Sequence[str] = ()) -> Expr | None:
    """The filter's tree (``None`` when empty); a bad filter is ``INVALID_PARAMETER_VALUE``.

    ``extra`` names bare attributes beyond the run grammar's (``source_path``,
    ``version_number`` of model versions): outside quotes they are read as
    ``tags.`modelog.attribute.<name>``` and the caller's lookup answers them.

    >>> parse("version_number > 2", extra=["version_number"]).field.key
    'modelog.attribute.version_number'
    """
    text = text or ""
    if extra:
        words = re.compile(r"(?<![\w.`])(?:attributes?\.)?(" + "|".join(map(re.escape, extra))
                           + r")(?![\w`])")
        parts = _QUOTED.split(text)
        text = "".join(part if i % 2 else words.sub(rf"tags.`{EXTRA}\1`", part)
                       for i, part in enumerate(parts))
    try:
        return parse_filter(text)
    except FilterSyntaxError as exc:
        raise MlflowApiError("INVALID_PARAMETER_VALUE", f"invalid filter: {exc}") from None


def _like(pattern: str, value: str, ignore_case: bool) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) \
        is not None


def _millis(value: Any) -> Any:
    if isinstance(value, str):
        t = dt.datetime.fromisoformat(value)
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
        return int(t.timestamp() * 1000)
    return value


def _compare(c: Comparison, actual: Any, absent_differs: bool) -> bool:
    if c.op == "IS":
        return (actual is not None) if c.negated else (actual is None)
    if actual is None:
        return absent_differs and c.op == "<>" and c.field.kind == "tag"
    want: Any = c.value
    if c.field.kind == "attribute" and c.field.key in _TIME_KEYS:
        want = tuple(_millis(v) for v in want) if isinstance(want, tuple) else _millis(want)
    if c.op == "IN":
        assert isinstance(want, tuple)
        hit = any(_equal(actual, v) for v in want)
        return hit != c.negated
    if c.op in ("LIKE", "ILIKE"):
        hit = _like(str(want), str(actual), c.op == "ILIKE")
        return hit != c.negated
    if isinstance(want, int | float) and not isinstance(want, bool):
        try:
            a: Any = float(actual)
        except (TypeError, ValueError):
            return False
        w: Any = float(want)
    else:
        a, w = str(actual), str(want)
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda x, y: x == y, "<>": lambda x, y: x != y, "<": lambda x, y: x < y,
        "<=": lambda x, y: x <= y, ">": lambda x, y: x > y, ">=": lambda x, y: x >= y}
    return ops[c.op](a, w)


def _equal(actual: Any, want: Any) -> bool:
    if isinstance(want, int | float) and not isinstance(want, bool):
        try:
            return float(actual) == float(want)
        except (TypeError, ValueError):
            return False
    return str(actual) == str(want)


def matches(expr: Expr | None, lookup: Lookup, *, absent_differs: bool = False) -> bool:
    """Whether the record ``lookup`` describes satisfies ``expr``.

    A missing field satisfies nothing but ``IS NULL`` -- except, with
    ``absent_differs`` (MLflow's registry searches), ``tags.k != 'v'`` holds
    for a record without the tag: the client's own ``tag.`mlflow.prompt.is_prompt`
    != 'true'`` must keep ordinary models.
    """
    if expr is None:
        return True
    if isinstance(expr, Junction):
        left = matches(expr.left, lookup, absent_differs=absent_differs)
        if expr.op == "AND":
            return left and matches(expr.right, lookup, absent_differs=absent_differs)
        return left or matches(expr.right, lookup, absent_differs=absent_differs)
    if isinstance(expr, Not):
        return not matches(expr.operand, lookup, absent_differs=absent_differs)
    return _compare(expr, lookup(expr.field.kind, expr.field.key), absent_differs)


def sort_key(order: Sequence[tuple[Field, bool]], lookup: Lookup) -> tuple[Any, ...]:
    """A key that sorts records by ``order`` (missing values last, either direction)."""
    out: list[Any] = []
    for fld, descending in order:
        v = lookup(fld.kind, fld.key)
        if v is None:
            out.append((1, 0))
            continue
        if isinstance(v, int | float) and not isinstance(v, bool):
            out.append((0, -v if descending else v))
        else:
            s = str(v)
            out.append((0, _Reversed(s) if descending else s))
    return tuple(out)


class _Reversed:
    """A string that sorts backwards (for ``DESC`` on text)."""

    __slots__ = ("s",)

    def __init__(self, s: str) -> None:
        self.s = s

    def __lt__(self, other: _Reversed) -> bool:
        return self.s > other.s

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.s == other.s

    def __hash__(self) -> int:
        return hash(self.s)


def encode_token(offset: int) -> str:
    """An opaque page token for the next page starting at ``offset``."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_token(token: str | None) -> int:
    """The offset a page token stands for (0 for none); a bad one is ``INVALID_PARAMETER_VALUE``."""
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
        if type(offset) is not int or offset < 0:
            raise ValueError(offset)
        return offset
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        raise MlflowApiError("INVALID_PARAMETER_VALUE",
                             f"invalid page_token {token!r}: pass the next_page_token of the "
                             "previous answer unchanged") from None


def page(items: list[T], max_results: int, token: str | None,
         limit: int = 50_000) -> tuple[list[T], str | None]:
    """One page of ``items`` and the token of the next (``None`` at the end)."""
    if max_results < 1 or max_results > limit:
        raise MlflowApiError("INVALID_PARAMETER_VALUE",
                             f"Invalid value {max_results} for parameter 'max_results' "
                             f"supplied: it must be between 1 and {limit}")
    start = decode_token(token)
    chunk = items[start:start + max_results]
    nxt = start + max_results
    return chunk, (encode_token(nxt) if nxt < len(items) else None)
