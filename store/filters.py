"""Safe run filters: MLflow-style filter strings -> parameterised DuckDB SQL.

A filter such as ``metrics.f1 > 0.8 and params.model = 'rf'`` is tokenised and
parsed by a small recursive-descent parser into a tree, and the tree is
rendered as a ``WHERE`` clause over the ``runs`` view aliased ``r``. Every
user value *and every key* travels as a ``?`` parameter; the only identifiers
written into the SQL come from fixed whitelists (the attribute columns).

Fields
------
``metrics.<key>``
    The latest value of a metric (``run_latest_metrics``), a number.
``params.<key>``
    A parameter, stored as text: compared as text, or numerically
    (``TRY_CAST(... AS DOUBLE)``) when the literal is a number.
``tags.<key>``
    A tag of the run (``json_extract_string(r.tags, '$."key"')``), text like params.
``attributes.<name>`` or bare ``<name>``
    ``status``, ``name``, ``experiment``, ``run_id``, ``started``, ``ended``
    (MLflow spellings ``run_name``, ``start_time``, ``end_time`` work too).
    ``started``/``ended`` compare with a timestamp string or epoch milliseconds.

Keys with unusual characters can be quoted: ``metrics.`val loss` `` or
``params."a b"``. Operators: ``= != <> < <= > >= LIKE ILIKE IN`` (and ``NOT``
forms of the last three), ``IS [NOT] NULL``, ``AND OR NOT`` and parentheses;
literals are single- or double-quoted strings (``''`` or backslash escapes),
numbers, ``true``, ``false`` and ``null`` (``= null`` means ``IS NULL``).
A missing metric, param or tag is NULL, so no comparison matches it.

Examples
--------
>>> sql, params = compile_filter("metrics.f1 > 0.8 and params.model = 'rf'")
>>> print(sql)
((SELECT value FROM run_latest_metrics m WHERE m.run_id = r.run_id AND m.key = ?) > ?
 AND (SELECT value FROM run_params p WHERE p.run_id = r.run_id AND p.key = ?) = ?)
>>> params
['f1', 0.8, 'model', 'rf']
>>> compile_filter("tags.team = 'fraud'")
('json_extract_string(r.tags, ?) = ?', ['$."team"', 'fraud'])
>>> print(compile_order_by("metrics.f1 DESC, started")[0])
(SELECT value FROM run_latest_metrics m WHERE m.run_id = r.run_id AND m.key = ?) DESC NULLS LAST,
r.started ASC NULLS LAST
>>> compile_filter("metrics.f1 > AND params.x = '1'")
Traceback (most recent call last):
...
modelog.store.errors.FilterSyntaxError: unexpected 'AND' at column 14: expected a value after '>'...
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from modelog.store.errors import FilterSyntaxError, QueryError

__all__ = [
    "ATTRIBUTES",
    "Comparison",
    "Field",
    "FilterSyntaxError",
    "Junction",
    "Not",
    "compile_filter",
    "compile_order_by",
    "parse_filter",
    "parse_order_by",
    "select_runs",
]

Value = str | int | float | bool | None
Kind = Literal["metric", "param", "tag", "attribute"]

ATTRIBUTES: dict[str, str] = {
    "status": "status",
    "name": "name",
    "run_name": "name",
    "experiment": "experiment",
    "experiment_name": "experiment",
    "run_id": "run_id",
    "id": "run_id",
    "started": "started",
    "start_time": "started",
    "ended": "ended",
    "end_time": "ended",
}
"""Attribute spellings accepted in filters -> column of the ``runs`` view."""

_TIME_COLUMNS = frozenset({"started", "ended"})
_PREFIXES: dict[str, Kind] = {
    "metrics": "metric", "metric": "metric",
    "params": "param", "param": "param", "parameters": "param",
    "tags": "tag", "tag": "tag",
    "attributes": "attribute", "attribute": "attribute", "attr": "attribute",
    "run": "attribute",
}
_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "LIKE", "ILIKE", "IS", "NULL", "TRUE", "FALSE",
                       "ASC", "DESC"})
_COMPARATORS = {"=": "=", "==": "=", "!=": "<>", "<>": "<>", "<": "<", "<=": "<=", ">": ">",
                ">=": ">="}
_FIELD_HELP = ("a field: metrics.<key>, params.<key>, tags.<key> or an attribute ("
               + ", ".join(sorted(set(ATTRIBUTES.values()))) + ")")


# -- tokens -------------------------------------------------------------------------------
TokenKind = Literal["field", "keyword", "word", "op", "string", "number", "lparen", "rparen",
                    "comma", "other", "end"]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: TokenKind
    text: str
    pos: int
    value: Value = None
    field: Field | None = None

    def shown(self) -> str:
        return "end of filter" if self.kind == "end" else repr(self.text)


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/:@]*")
_OPERATOR = re.compile(r"==|!=|<>|<=|>=|=|<|>")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "`": "`"}


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted string at ``start``; return its value and the offset after it."""
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            # Unknown escapes stay as written (LIKE patterns, Windows paths).
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
        elif ch == quote:
            if i + 1 < len(text) and text[i + 1] == quote:  # SQL-style doubled quote
                out.append(quote)
                i += 2
            else:
                return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise FilterSyntaxError(text, start, f"unterminated string {text[start:start + 20]!r}",
                            f"a closing {quote} to end the string")


def _tokenize(text: str) -> Iterator[_Token]:
    """Yield tokens lazily, so a syntax error ahead of a bad string is reported first."""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "'\"":
            value, end = _read_quoted(text, i)
            yield _Token("string", text[i:end], i, value)
            i = end
            continue
        single = {"(": "lparen", ")": "rparen", ",": "comma"}.get(ch)
        if single is not None:
            yield _Token(single, ch, i)  # type: ignore[arg-type]
            i += 1
            continue
        op = _OPERATOR.match(text, i)
        if op:
            yield _Token("op", op.group(), i)
            i = op.end()
            continue
        num = _NUMBER.match(text, i)
        if num and not (ch.isalpha() or ch == "_"):
            raw = num.group()
            number: int | float = (float(raw) if any(c in raw for c in ".eE") else int(raw))
            yield _Token("number", raw, i, number)
            i = num.end()
            continue
        word = _WORD.match(text, i)
        if word is None:  # the parser reports it, knowing what it expected there
            yield _Token("other", ch, i)
            i += 1
            continue
        tok = _word_token(text, word)
        yield tok
        i = tok.pos + len(tok.text)
    yield _Token("end", "", len(text))


def _word_token(text: str, word: re.Match[str]) -> _Token:
    """A keyword, a prefixed field (``metrics.f1``) or a bare attribute at ``word``."""
    start, end, name = word.start(), word.end(), word.group()
    upper = name.upper()
    if end < len(text) and text[end] == "." and name.lower() in _PREFIXES:
        kind = _PREFIXES[name.lower()]
        k = end + 1
        if k < len(text) and text[k] in "`\"'":
            key, after = _read_quoted(text, k)
        else:
            bare = _BARE_KEY.match(text, k)
            if bare is None:
                raise FilterSyntaxError(text, k, _found_at(text, k),
                                        f"a key after '{name}.' (quote odd keys: {name}.`my key`)")
            key, after = bare.group(), bare.end()
        if not key:
            raise FilterSyntaxError(text, k, "an empty key", f"a key after '{name}.'")
        return _Token("field", text[start:after], start, field=_field(text, start, kind, key))
    if upper in _KEYWORDS:
        return _Token("keyword", name, start, upper)
    if name.lower() in ATTRIBUTES:
        return _Token("field", name, start, field=_field(text, start, "attribute", name))
    return _Token("word", name, start)  # not a field: the parser says what it expected


def _found_at(text: str, pos: int) -> str:
    return repr(text[pos]) if pos < len(text) else "end of filter"


def _field(text: str, pos: int, kind: Kind, key: str) -> Field:
    if kind != "attribute":
        return Field(kind, key)
    column = ATTRIBUTES.get(key.lower())
    if column is None:
        raise FilterSyntaxError(text, pos, f"attribute {key!r}",
                                "one of " + ", ".join(sorted(ATTRIBUTES)))
    return Field("attribute", column)


# -- tree -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Field:
    """A filterable quantity of a run: ``kind`` and its key (the column for attributes)."""

    kind: Kind
    key: str


@dataclass(frozen=True, slots=True)
class Comparison:
    """``field op value``; ``op`` is one of ``= <> < <= > >= LIKE ILIKE IN IS`` (maybe ``NOT``).

    For ``IN`` the value is a tuple of literals; for ``IS`` it is ``None``.
    """

    field: Field
    op: str
    value: Value | tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Junction:
    """``left AND right`` (both hold) or ``left OR right`` (either holds)."""

    op: Literal["AND", "OR"]
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Not:
    """The operand does not hold."""

    operand: Expr


Expr = Comparison | Junction | Not


class _Parser:
    """Recursive descent over the grammar::

        or         := and ("OR" and)*
        and        := not ("AND" not)*
        not        := "NOT" not | "(" or ")" | comparison
        comparison := field (cmp value | ["NOT"] ("LIKE" | "ILIKE") string
                      | ["NOT"] "IN" "(" value ("," value)* ")" | "IS" ["NOT"] "NULL")
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._source = _tokenize(text)
        self.tokens: list[_Token] = []
        self.i = 0

    @property
    def tok(self) -> _Token:
        while len(self.tokens) <= self.i:
            self.tokens.append(next(self._source))
        return self.tokens[self.i]

    def at(self, kind: TokenKind) -> bool:
        """Whether the current token is of ``kind`` (a call, so type checkers do not narrow)."""
        return self.tok.kind == kind

    def advance(self) -> _Token:
        tok = self.tok
        if tok.kind != "end":
            self.i += 1
        return tok

    def fail(self, expected: str, tok: _Token | None = None) -> FilterSyntaxError:
        t = tok or self.tok
        return FilterSyntaxError(self.text, t.pos, t.shown(), expected)

    def is_keyword(self, *words: str) -> bool:
        return self.at("keyword") and self.tok.value in words

    def parse(self) -> Expr:
        if self.at("end"):
            raise self.fail(_FIELD_HELP)
        expr = self.parse_or()
        if not self.at("end"):
            raise self.fail("AND, OR or the end of the filter")
        return expr

    def parse_or(self) -> Expr:
        return self.parse_chain("OR", self.parse_and)

    def parse_and(self) -> Expr:
        return self.parse_chain("AND", self.parse_not)

    def parse_chain(self, op: Literal["AND", "OR"], operand: Callable[[], Expr]) -> Expr:
        """``operand (op operand)*``, grouped from the left."""
        expr = operand()
        while self.is_keyword(op):
            self.advance()
            expr = Junction(op, expr, operand())
        return expr

    def parse_not(self) -> Expr:
        if self.is_keyword("NOT"):
            self.advance()
            return Not(self.parse_not())
        if self.at("lparen"):
            opening = self.advance()
            expr = self.parse_or()
            if not self.at("rparen"):
                raise self.fail(f"AND, OR or ')' to close the '(' at column {opening.pos + 1}")
            self.advance()
            return expr
        return self.parse_comparison()

    def parse_comparison(self) -> Expr:
        if not self.at("field"):
            raise self.fail(_FIELD_HELP)
        field_tok = self.advance()
        assert field_tok.field is not None
        fld = field_tok.field
        negated = False
        if self.is_keyword("IS"):
            self.advance()
            if self.is_keyword("NOT"):
                self.advance()
                negated = True
            if not self.is_keyword("NULL"):
                raise self.fail("NULL after IS" + (" NOT" if negated else ""))
            self.advance()
            return Comparison(fld, "IS", None, negated)
        if self.is_keyword("NOT"):
            self.advance()
            negated = True
            if not self.is_keyword("IN", "LIKE", "ILIKE"):
                raise self.fail(f"IN, LIKE or ILIKE after '{field_tok.text} NOT'")
        if self.is_keyword("IN"):
            return self.parse_in(fld, field_tok, negated)
        if self.is_keyword("LIKE", "ILIKE"):
            op_tok = self.advance()
            if not self.at("string"):
                raise self.fail(f"a quoted pattern after {op_tok.text.upper()}")
            if fld.kind == "metric" or fld.key in _TIME_COLUMNS:
                raise self.fail(f"a comparison (= < > ...): {field_tok.text} is not text and "
                                f"cannot be matched with {op_tok.text.upper()}", op_tok)
            return Comparison(fld, str(op_tok.value), self.advance().value, negated)
        if not self.at("op"):
            raise self.fail(f"an operator (= != < <= > >= LIKE ILIKE IN IS) after "
                            f"'{field_tok.text}'")
        op_tok = self.advance()
        value = self.parse_value(f"a value after '{op_tok.text}'")
        op = _COMPARATORS[op_tok.text]
        if value.value is None:
            if op not in ("=", "<>"):
                raise self.fail(f"a non-null value after '{op_tok.text}' "
                                "(null only compares with = or !=)", value)
            return Comparison(fld, "IS", None, op == "<>")
        self.check_type(fld, field_tok, value)
        return Comparison(fld, op, value.value)

    def parse_in(self, fld: Field, field_tok: _Token, negated: bool) -> Expr:
        self.advance()
        if not self.at("lparen"):
            raise self.fail("'(' to open the IN list")
        self.advance()
        items: list[_Token] = [self.parse_value("a value in the IN list")]
        while self.at("comma"):
            self.advance()
            items.append(self.parse_value("a value after ','"))
        if not self.at("rparen"):
            raise self.fail("',' or ')' to close the IN list")
        self.advance()
        numeric = [isinstance(t.value, int | float) and not isinstance(t.value, bool)
                   for t in items]
        if any(numeric) and not all(numeric):
            raise self.fail("only numbers or only strings in one IN list", items[numeric.index(
                not numeric[0])])
        for t in items:
            if t.value is None:
                raise self.fail("a non-null value (use IS NULL to test for null)", t)
            self.check_type(fld, field_tok, t)
        return Comparison(fld, "IN", tuple(t.value for t in items), negated)

    def parse_value(self, expected: str) -> _Token:
        tok = self.tok
        if tok.kind in ("string", "number"):
            return self.advance()
        if tok.kind == "keyword" and tok.value in ("TRUE", "FALSE", "NULL"):
            self.advance()
            literal: Value = {"TRUE": True, "FALSE": False, "NULL": None}[str(tok.value)]
            return _Token("keyword", tok.text, tok.pos, literal)
        raise self.fail(expected)

    def check_type(self, fld: Field, field_tok: _Token, value: _Token) -> None:
        v = value.value
        if fld.kind == "metric" and not (isinstance(v, int | float) and not isinstance(v, bool)):
            raise self.fail(f"a number: {field_tok.text} is a metric", value)
        if fld.kind == "attribute" and isinstance(v, bool):
            raise self.fail(f"a string: {field_tok.text} is not a boolean", value)
        if fld.kind != "attribute":
            return
        if fld.key not in _TIME_COLUMNS and not isinstance(v, str):
            raise self.fail(f"a quoted string: {field_tok.text} is text", value)
        if fld.key in _TIME_COLUMNS and isinstance(v, str):
            try:
                dt.datetime.fromisoformat(v)
            except ValueError:
                raise self.fail(f"an ISO timestamp ('2026-03-03 14:00:00+00:00') or epoch "
                                f"milliseconds for {field_tok.text}", value) from None


def parse_filter(text: str) -> Expr | None:
    """Parse a filter string into a tree (``None`` for an empty filter).

    Raises
    ------
    FilterSyntaxError
        With the column of the offending token and what was expected there.
    """
    if not text.strip():
        return None
    return _Parser(text).parse()


# -- SQL --------------------------------------------------------------------------------------
_METRIC_SQL = "(SELECT value FROM run_latest_metrics m WHERE m.run_id = r.run_id AND m.key = ?)"
_PARAM_SQL = "(SELECT value FROM run_params p WHERE p.run_id = r.run_id AND p.key = ?)"
_TAG_SQL = "json_extract_string(r.tags, ?)"


def _json_path(key: str) -> str:
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'$."{escaped}"'


def _field_sql(fld: Field, params: list[Value]) -> str:
    """SQL for ``fld``, appending its key parameter (attributes are whitelisted columns)."""
    if fld.kind == "metric":
        params.append(fld.key)
        return _METRIC_SQL
    if fld.kind == "param":
        params.append(fld.key)
        return _PARAM_SQL
    if fld.kind == "tag":
        params.append(_json_path(fld.key))
        return _TAG_SQL
    if fld.key not in set(ATTRIBUTES.values()):  # pragma: no cover - guarded by the parser
        raise FilterSyntaxError(fld.key, 0, f"attribute {fld.key!r}", "a runs column")
    return f"r.{fld.key}"


def _is_number(v: Value) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _operand(fld: Field, value: Value, params: list[Value]) -> str:
    """The placeholder for ``value`` compared with ``fld``; appends the parameter."""
    if fld.kind == "attribute" and fld.key in _TIME_COLUMNS:
        if _is_number(value):  # epoch milliseconds, as MLflow's start_time
            params.append(float(value))  # type: ignore[arg-type]
            return "to_timestamp(CAST(? AS DOUBLE) / 1000.0)"
        params.append(value)
        return "CAST(? AS TIMESTAMPTZ)"
    if fld.kind in ("param", "tag") and isinstance(value, bool):
        params.append("true" if value else "false")
        return "?"
    if fld.kind == "metric" or _is_number(value):
        params.append(float(value))  # type: ignore[arg-type]
        return "?"
    params.append(value)
    return "?"


def _lhs(fld: Field, numeric: bool, params: list[Value]) -> str:
    sql = _field_sql(fld, params)
    if numeric and fld.kind in ("param", "tag"):
        return f"TRY_CAST({sql} AS DOUBLE)"
    return sql


def _render(expr: Expr, params: list[Value]) -> str:
    if isinstance(expr, Junction):
        return f"({_render(expr.left, params)} {expr.op} {_render(expr.right, params)})"
    if isinstance(expr, Not):
        return f"(NOT {_render(expr.operand, params)})"
    fld = expr.field
    if expr.op == "IS":
        return f"{_field_sql(fld, params)} IS {'NOT ' if expr.negated else ''}NULL"
    neg = "NOT " if expr.negated else ""
    if expr.op == "IN":
        assert isinstance(expr.value, tuple)
        lhs = _lhs(fld, _is_number(expr.value[0]), params)
        holes = ", ".join(_operand(fld, v, params) for v in expr.value)
        return f"{lhs} {neg}IN ({holes})"
    assert not isinstance(expr.value, tuple)
    lhs = _lhs(fld, _is_number(expr.value), params)
    if expr.op in ("LIKE", "ILIKE"):
        params.append(expr.value)
        return f"{lhs} {neg}{expr.op} ?"
    return f"{lhs} {expr.op} {_operand(fld, expr.value, params)}"


def compile_filter(text: str) -> tuple[str, list[Value]]:
    """Compile a filter string into ``(where_sql, params)`` over the ``runs`` view aliased ``r``.

    An empty filter gives ``("TRUE", [])``.

    Raises
    ------
    FilterSyntaxError
        The filter is malformed; the message names the column and what was expected.

    Examples
    --------
    >>> compile_filter("params.lr IN ('0.1', '0.01')")[1]
    ['lr', '0.1', '0.01']
    >>> compile_filter("attributes.status = 'finished' and name LIKE 'trial-%'")
    ('(r.status = ? AND r.name LIKE ?)', ['finished', 'trial-%'])
    >>> sql, params = compile_filter("params.depth >= 6")
    >>> print(sql)
    TRY_CAST((SELECT value FROM run_params p WHERE p.run_id = r.run_id AND p.key = ?) AS DOUBLE)
    >= ?
    >>> params
    ['depth', 6.0]
    """
    expr = parse_filter(text)
    if expr is None:
        return "TRUE", []
    params: list[Value] = []
    return _render(expr, params), params


# -- ORDER BY ---------------------------------------------------------------------------------
def parse_order_by(order_by: str | Sequence[str]) -> list[tuple[Field, bool]]:
    """Parse ``"metrics.f1 DESC, started"`` (or a list of such items) into ``(field, descending)``.

    Raises
    ------
    FilterSyntaxError
        An item is not ``<field> [ASC|DESC]``.
    """
    text = order_by if isinstance(order_by, str) else ", ".join(order_by)
    if not text.strip():
        return []
    p = _Parser(text)
    out: list[tuple[Field, bool]] = []
    while True:
        if not p.at("field"):
            raise p.fail(_FIELD_HELP)
        fld = p.advance().field
        assert fld is not None
        descending = False
        if p.is_keyword("ASC", "DESC"):
            descending = p.advance().value == "DESC"
        out.append((fld, descending))
        if p.at("end"):
            return out
        if not p.at("comma"):
            raise p.fail("ASC, DESC, ',' or the end of the order-by")
        p.advance()


def compile_order_by(order_by: str | Sequence[str]) -> tuple[str, list[Value]]:
    """Compile an order-by into ``(sql, params)``; missing values sort last.

    An empty order-by gives ``("", [])``.

    Examples
    --------
    >>> sql, params = compile_order_by(["params.lr ASC", "name"])
    >>> print(sql)
    (SELECT value FROM run_params p WHERE p.run_id = r.run_id AND p.key = ?) ASC NULLS LAST,
    r.name ASC NULLS LAST
    >>> params
    ['lr']
    """
    params: list[Value] = []
    parts = [f"{_field_sql(fld, params)} {'DESC' if desc else 'ASC'} NULLS LAST"
             for fld, desc in parse_order_by(order_by)]
    return ", ".join(parts), params


def select_runs(
    filter_string: str = "",
    order_by: str | Sequence[str] = (),
    *,
    limit: int | None = None,
) -> tuple[str, list[Value]]:
    """A complete ``SELECT r.* FROM runs r WHERE ... ORDER BY ... LIMIT ?`` with its parameters.

    Without an order-by, runs come newest first (``r.started DESC``).

    Examples
    --------
    >>> sql, params = select_runs("status = 'failed'", limit=5)
    >>> print(sql)
    SELECT r.* FROM runs r WHERE r.status = ? ORDER BY r.started DESC NULLS LAST, r.run_id LIMIT ?
    >>> params
    ['failed', 5]
    """
    where, params = compile_filter(filter_string)
    order, order_params = compile_order_by(order_by)
    sql = f"SELECT r.* FROM runs r WHERE {where} ORDER BY "
    sql += (order + ", r.run_id") if order else "r.started DESC NULLS LAST, r.run_id"
    params += order_params
    if limit is not None:
        if limit < 0:
            raise QueryError(f"limit must be >= 0, got {limit}; pass None for no limit")
        sql += " LIMIT ?"
        params.append(limit)
    return sql, params
