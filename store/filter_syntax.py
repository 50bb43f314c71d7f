"""The grammar of run filters: MLflow-style filter strings tokenised and parsed to a tree.

:func:`parse_filter` turns ``metrics.f1 > 0.8 and params.model = 'rf'`` into
:class:`Comparison`, :class:`Junction` and :class:`Not` nodes over
:class:`Field` s, with errors that name the position and what was expected.
:mod:`modelog.store.filters` renders the tree as parameterised SQL. Pure: no
database here.

May import ``modelog.store.errors``.

Examples
--------
>>> parse_filter("metrics.f1 > 0.8")
Comparison(field=Field(kind='metric', key='f1'), op='>', value=0.8, negated=False)
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from modelog.store.errors import FilterSyntaxError

__all__ = ["ATTRIBUTES", "Comparison", "Expr", "Field", "Junction", "Not", "Value",
           "parse_filter", "parse_order_by"]

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
