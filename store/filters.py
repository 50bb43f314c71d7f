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

from collections.abc import Sequence

from modelog.store.errors import FilterSyntaxError, QueryError
from modelog.store.filter_syntax import (
    _TIME_COLUMNS,
    ATTRIBUTES,
    Comparison,
    Expr,
    Field,
    Junction,
    Not,
    Value,
    parse_filter,
    parse_order_by,
)

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
