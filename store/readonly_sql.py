"""Read-only SQL over the projection: one statement, no writes, no escape.

Why user SQL cannot write or escape
-----------------------------------
The cursor shares the writer's database instance, and DuckDB has no read-only
mode per connection (``access_mode`` is fixed when a database is opened, and
the file cannot be attached a second time, read-only, in the same process).
So :func:`run_read_query` does not trust the SQL's text; the engine enforces:

1. **Writes** -- each query runs in ``BEGIN TRANSACTION READ ONLY`` and is
   rolled back. DuckDB refuses any change to the database file in such a
   transaction, wherever it hides: ``EXPLAIN ANALYZE DELETE``, a
   data-modifying ``WITH``, ``RETURNING``, ``nextval``.
2. **External access** -- ``SET enable_external_access = false`` on the
   database instance: no files (``read_text``, ``read_csv``, ``glob``,
   ``COPY``, ``EXPORT``, ``ATTACH`` of a file), no network, no ``INSTALL`` or
   ``LOAD``, no Python-object scans. DuckDB keeps allowing the database's own
   file, WAL and temp directory, so the writer works as before (it feeds its
   batches as registered Arrow tables).
3. **Settings** -- ``SET lock_configuration = true`` on the instance: no
   ``SET``/``RESET``, setting ``PRAGMA``\\s, or ``enable_logging()``-style
   functions. Both settings are global, cannot be undone, and are applied
   (:func:`lock_down`) before any user SQL reaches an instance: when the query
   server starts, and by every :func:`run_read_query`. The writer only changes
   settings when it opens the file, before it serves.

On top of that, checks that turn the engine's refusals into clear errors and
close what is left (:func:`read_statement`): exactly one statement per request
(the read-only transaction must not be ended by a ``COMMIT``), of a read type
(``SELECT``, ``EXPLAIN`` of a read -- the explained statement is parsed again
with DuckDB's tokenizer and parser -- and informational ``PRAGMA``\\s); and the
bound plan (``EXPLAIN (FORMAT JSON)``) may only call table functions that read
the catalog or generate rows, so ``checkpoint()``, ``truncate_duckdb_logs()``
or ``read_blob`` of the database's own file are refused too. (Left to the
checks alone, as the engine allows them on the writer's instance: ``ATTACH
':memory:'`` and ``CREATE TEMP``, which cannot hide inside a read statement.)

Refusals raise :class:`~modelog.store.errors.ReadOnlyQueryError` (a refused
statement type) or :class:`~modelog.store.errors.QueryRuleError` (a rule).
A row cap and a statement timeout keep the projector healthy. A reader
without a projector (:mod:`modelog.store.reader`) opens the file read-only
with the same instance settings and runs the same :func:`run_read_query`.

May import ``modelog.store.errors`` (and DuckDB, pyarrow).

Examples
--------
>>> read_statement("select 1;")
'select 1'
>>> read_statement("select 1; delete from events")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelog.store.errors.ReadOnlyQueryError: only read statements are allowed, got DELETE ...
>>> read_statement("explain analyze delete from events")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelog.store.errors.ReadOnlyQueryError: only read statements are allowed, got EXPLAIN DELETE ...
"""
from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from modelog.store.errors import QueryError, QueryRuleError, ReadOnlyQueryError

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_TIMEOUT",
    "LOCKED_CONFIG",
    "lock_down",
    "read_statement",
    "run_read_query",
]

DEFAULT_MAX_ROWS = 1_000_000
DEFAULT_TIMEOUT = 60.0

#: Database-instance settings under which user SQL runs (``duckdb.connect(config=...)``).
LOCKED_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "enable_external_access": False,
    "lock_configuration": True,
}

_READ_TYPES = frozenset({"SELECT", "EXPLAIN", "PRAGMA"})
_READ_PRAGMAS = frozenset({
    "table_info", "show", "show_tables", "show_tables_expanded", "database_size",
    "database_list", "storage_info", "version", "functions", "platform", "metadata_info",
    "user_agent", "collations",
})
_PRAGMA = re.compile(r"^\s*pragma\s+([A-Za-z_]+)", re.IGNORECASE)
#: Table functions a read may call: catalog introspection and row generators.
_READ_FUNCTIONS = frozenset({
    "seq_scan", "range", "generate_series", "unnest", "repeat", "repeat_row", "json_each",
    "json_tree", "summary", "test_all_types", "pg_timezone_names", "icu_calendar_names",
    "duckdb_columns", "duckdb_constraints", "duckdb_databases", "duckdb_dependencies",
    "duckdb_functions", "duckdb_indexes", "duckdb_keywords", "duckdb_schemas",
    "duckdb_sequences", "duckdb_settings", "duckdb_tables", "duckdb_types", "duckdb_views",
    "duckdb_optimizers", "duckdb_memory", "pragma_table_info", "pragma_show",
    "pragma_database_size", "pragma_storage_info", "pragma_metadata_info", "pragma_version",
    "pragma_platform", "pragma_user_agent", "pragma_collations",
})
_MAX_NESTING = 4
_EXTERNAL = "EXTERNAL ACCESS"
_EXTERNAL_REASON = ("it reaches outside the database (files, network, extensions, ATTACH, "
                    "COPY are off for queries)")


def _statements(sql: str) -> list[tuple[str, str]]:
    """``(TYPE, text)`` of each statement in ``sql``, as DuckDB's parser splits them."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"the SQL does not parse: {exc}") from None
    # DuckDB 1.x keeps the separator with the statement, 2.x may not.
    return [(st.type.name, st.query.strip().rstrip(";").strip()) for st in statements]


def _explained(text: str) -> str:
    """The statement that ``EXPLAIN [ANALYZE] [(options)] <statement>`` explains.

    Uses DuckDB's tokenizer, so comments and spacing between the keywords do not matter.
    """
    tokens = duckdb.tokenize(text)
    ends = [pos for pos, _ in tokens[1:]] + [len(text)]
    words = [(start, text[start:end].strip().lower())
             for (start, kind), end in zip(tokens, ends, strict=True)
             if kind != duckdb.token_type.comment]
    i = 1  # words[0] is EXPLAIN
    if i < len(words) and words[i][1] in ("analyze", "analyse"):
        i += 1
    depth = 0
    while i < len(words) and (depth or words[i][1].startswith("(")):
        depth += words[i][1].count("(") - words[i][1].count(")")
        i += 1
    if i >= len(words):
        raise QueryError(f"EXPLAIN of what? Nothing follows in {text!r}")
    return text[words[i][0]:]


def _check(kind: str, text: str, depth: int = 0) -> str | None:
    """Refuse a statement that is not a read; the read whose plan to check, if any."""
    if kind == "PRAGMA":
        m = _PRAGMA.match(text)
        if m is None or m.group(1).lower() not in _READ_PRAGMAS:
            raise ReadOnlyQueryError("PRAGMA (changing a setting)", text)
        return None
    if kind == "SELECT":
        return text
    if kind != "EXPLAIN" or depth >= _MAX_NESTING:
        raise ReadOnlyQueryError(kind, text)
    inner = _statements(_explained(text))
    if len(inner) != 1:
        raise QueryRuleError("MULTIPLE STATEMENTS", text,
                             "EXPLAIN must explain exactly one statement")
    inner_kind, inner_text = inner[0]
    if inner_kind not in _READ_TYPES:
        raise ReadOnlyQueryError(f"EXPLAIN {inner_kind}", text)
    return _check(inner_kind, inner_text, depth + 1)


def _checked(sql: str) -> tuple[str, str | None]:
    statements = _statements(sql)
    if not statements:
        raise QueryError("no SQL statement given; try `select * from alerts`")
    reads = [_check(kind, text) for kind, text in statements]
    if len(statements) > 1:
        raise QueryRuleError(
            "MULTIPLE STATEMENTS", sql,
            f"{len(statements)} statements given, one per request is served; send them "
            "one by one",
        )
    return statements[0][1], reads[0]


def read_statement(sql: str) -> str:
    """Check that ``sql`` is exactly one read statement; return it (without ``;``).

    Raises
    ------
    ReadOnlyQueryError
        Naming the first statement that is not a read (``QueryRuleError``: more
        than one statement).
    QueryError
        When ``sql`` does not parse or holds no statement.
    """
    return _checked(sql)[0]


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """Turn off external access and lock the settings of ``con``'s database instance, for good.

    Affects every connection of the instance (the writer's too): it keeps
    writing its own file and registered Arrow tables, but can no longer read
    other files or change a setting. Idempotent.
    """
    cur = con.cursor()  # the settings are the instance's; the writer may be busy
    try:
        current = dict(cur.execute(
            "SELECT name, value FROM duckdb_settings() "
            "WHERE name IN ('enable_external_access', 'lock_configuration')"
        ).fetchall())
        if str(current.get("enable_external_access")).lower() != "false":
            try:
                cur.execute("SET enable_external_access = false")
            except duckdb.Error as exc:
                raise QueryError(
                    f"cannot turn off external access for queries ({exc}); open the "
                    "database with modelog.store.readonly_sql.LOCKED_CONFIG"
                ) from None
        if str(current.get("lock_configuration")).lower() != "true":
            cur.execute("SET lock_configuration = true")
    finally:
        cur.close()


def _functions(plan: Any) -> Iterator[str]:
    """Every table function named in a JSON physical plan."""
    if isinstance(plan, list):
        for node in plan:
            yield from _functions(node)
    elif isinstance(plan, dict):
        extra = plan.get("extra_info")
        if isinstance(extra, dict) and isinstance(extra.get("Function"), str):
            yield extra["Function"].strip().lower()
        yield from _functions(plan.get("children", []))


def _check_plan(cur: duckdb.DuckDBPyConnection, read: str, params: Any, statement: str) -> None:
    """Refuse ``read`` when its bound plan calls a table function that is not a read."""
    for _, plan in cur.execute(f"EXPLAIN (FORMAT JSON) {read}", params).fetchall():
        for name in _functions(json.loads(plan)):
            if name not in _READ_FUNCTIONS:
                raise QueryRuleError(
                    f"TABLE FUNCTION {name}", statement,
                    f"table function {name}() does not read the projection (only catalog "
                    "functions such as duckdb_tables() and generators such as range() or "
                    "unnest() may be called)",
                )


def _refusal(exc: duckdb.Error, statement: str) -> QueryError:
    """The error for ``exc``, naming the rule when the engine refused on our behalf."""
    text = str(exc)
    if isinstance(exc, duckdb.PermissionException):
        return QueryRuleError(_EXTERNAL, statement, _EXTERNAL_REASON)
    if "read-only mode" in text or "read-only transaction" in text:
        return QueryRuleError("WRITE", statement,
                              "it would write to the database (queries run read-only)")
    if "configuration has been locked" in text:
        return QueryRuleError("SETTING", statement,
                              "it would change a setting (settings are locked for queries)")
    return QueryError(f"the query failed: {exc}")


def run_read_query(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[Any] | dict[str, Any] | None = None,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    timeout: float = DEFAULT_TIMEOUT,
) -> pa.Table:
    """Run one read statement on a fresh cursor of ``con`` (locked down first); its rows.

    Parameters
    ----------
    con
        A DuckDB connection; :func:`lock_down` is applied to its instance, and
        a cursor of it runs the query in a read-only transaction (safe from any
        thread).
    sql
        Exactly one read statement; ``params`` bind to it.
    max_rows
        Refuse results larger than this (add a ``LIMIT`` or aggregate).
    timeout
        Interrupt the query after this many seconds.

    Raises
    ------
    ReadOnlyQueryError
        The statement is not a read, or (``QueryRuleError``) breaks a rule.
    QueryError
        The query failed, timed out or returned too many rows.

    Examples
    --------
    >>> import duckdb
    >>> run_read_query(duckdb.connect(), "select 40 + ? as x", [2]).to_pylist()
    [{'x': 42}]
    >>> run_read_query(duckdb.connect(), "select * from read_text('/etc/passwd')")
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    modelog.store.errors.QueryRuleError: refused: it reaches outside the database ...
    """
    statement, read = _checked(sql)
    lock_down(con)
    cur = con.cursor()
    timer = threading.Timer(timeout, cur.interrupt)
    timer.daemon = True
    timer.start()
    try:
        cur.execute("BEGIN TRANSACTION READ ONLY")
        if read is not None:
            _check_plan(cur, read, params, statement)
        rel = cur.sql(statement, params=params)
        if rel is None:  # pragma: no cover - reads always return a relation
            return pa.table({})
        reader = rel.to_arrow_reader(65_536)
        batches: list[pa.RecordBatch] = []
        rows = 0
        for batch in reader:
            rows += batch.num_rows
            if rows > max_rows:
                raise QueryError(
                    f"the result has more than {max_rows:,} rows; add a LIMIT or aggregate "
                    "(e.g. `select count(*) ...`)"
                )
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException:
        raise QueryError(
            f"the query ran longer than {timeout:g} s and was stopped; narrow it down "
            "(filter on time or model) or aggregate"
        ) from None
    except duckdb.Error as exc:
        raise _refusal(exc, statement) from None
    finally:
        timer.cancel()
        with contextlib.suppress(duckdb.Error):
            cur.execute("ROLLBACK")
        cur.close()
