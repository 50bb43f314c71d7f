"""Run filters: parsing, generated SQL and parameters, errors, and real DuckDB results."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import duckdb
import pytest

from modelog.store.errors import FilterSyntaxError, QueryError, StoreError
from modelog.store.filters import (
    Comparison,
    Field,
    Junction,
    Not,
    compile_filter,
    compile_order_by,
    parse_filter,
    parse_order_by,
    select_runs,
)

METRIC = "(SELECT value FROM run_latest_metrics m WHERE m.run_id = r.run_id AND m.key = ?)"
PARAM = "(SELECT value FROM run_params p WHERE p.run_id = r.run_id AND p.key = ?)"
TAG = "json_extract_string(r.tags, ?)"


@pytest.mark.parametrize(
    ("text", "sql", "params"),
    [
        ("metrics.f1 > 0.8 and params.model = 'rf'",
         f"({METRIC} > ? AND {PARAM} = ?)", ["f1", 0.8, "model", "rf"]),
        ("tags.team = 'fraud' AND metrics.rmse <= 3.5",
         f"({TAG} = ? AND {METRIC} <= ?)", ['$."team"', "fraud", "rmse", 3.5]),
        ("params.lr IN ('0.1', '0.01')", f"{PARAM} IN (?, ?)", ["lr", "0.1", "0.01"]),
        ("params.lr NOT IN (0.1, 1)", f"TRY_CAST({PARAM} AS DOUBLE) NOT IN (?, ?)",
         ["lr", 0.1, 1.0]),
        ("attributes.status = 'finished'", "r.status = ?", ["finished"]),
        ("name LIKE 'trial-%'", "r.name LIKE ?", ["trial-%"]),
        ("run_name NOT ILIKE 'TRIAL%'", "r.name NOT ILIKE ?", ["TRIAL%"]),
        ("metrics.acc >= 0.9 OR (params.depth = '6' AND NOT metrics.loss > 1)",
         f"({METRIC} >= ? OR ({PARAM} = ? AND (NOT {METRIC} > ?)))",
         ["acc", 0.9, "depth", "6", "loss", 1.0]),
        ("params.depth >= 6", f"TRY_CAST({PARAM} AS DOUBLE) >= ?", ["depth", 6.0]),
        ("tags.priority < 3", f"TRY_CAST({TAG} AS DOUBLE) < ?", ['$."priority"', 3.0]),
        ("params.x != 'a'", f"{PARAM} <> ?", ["x", "a"]),
        ("params.x <> 'a'", f"{PARAM} <> ?", ["x", "a"]),
        ("params.x == 'a'", f"{PARAM} = ?", ["x", "a"]),
        ("params.early_stop = true", f"{PARAM} = ?", ["early_stop", "true"]),
        ("params.seed = null", f"{PARAM} IS NULL", ["seed"]),
        ("tags.owner != null", f"{TAG} IS NOT NULL", ['$."owner"']),
        ("metrics.f1 IS NOT NULL", f"{METRIC} IS NOT NULL", ["f1"]),
        ("metrics.x>-1e-3", f"{METRIC} > ?", ["x", -0.001]),
        ("metrics.val.loss < 2", f"{METRIC} < ?", ["val.loss", 2.0]),
        ("metrics.`val loss` < 2", f"{METRIC} < ?", ["val loss", 2.0]),
        ('params."a b" = "x"', f"{PARAM} = ?", ["a b", "x"]),
        ("params.msg = 'it''s'", f"{PARAM} = ?", ["msg", "it's"]),
        (r"params.msg = 'it\'s \\ ok'", f"{PARAM} = ?", ["msg", "it's \\ ok"]),
        (r"name LIKE 'a\_%'", "r.name LIKE ?", [r"a\_%"]),
        ("started >= '2026-03-01T00:00:00+00:00'", "r.started >= CAST(? AS TIMESTAMPTZ)",
         ["2026-03-01T00:00:00+00:00"]),
        ("start_time < 1700000000000", "r.started < to_timestamp(CAST(? AS DOUBLE) / 1000.0)",
         [1.7e12]),
        ("experiment = 'churn' and run_id in ('a', 'b')",
         "(r.experiment = ? AND r.run_id IN (?, ?))", ["churn", "a", "b"]),
        ("status = 'failed' OR status = 'running' AND name = 'x'",
         "(r.status = ? OR (r.status = ? AND r.name = ?))", ["failed", "running", "x"]),
        ("", "TRUE", []),
        ("   ", "TRUE", []),
    ],
)
def test_valid_filters_compile(text: str, sql: str, params: list[object]) -> None:
    assert compile_filter(text) == (sql, params)


def test_parse_tree_and_precedence() -> None:
    tree = parse_filter("NOT status = 'a' OR metrics.f1 > 1 AND params.p IN ('x')")
    assert tree == Junction(
        "OR",
        Not(Comparison(Field("attribute", "status"), "=", "a")),
        Junction("AND", Comparison(Field("metric", "f1"), ">", 1),
                 Comparison(Field("param", "p"), "IN", ("x",))),
    )
    assert parse_filter("") is None


@pytest.mark.parametrize(
    "text",
    [
        "params.x = '1'; DROP TABLE runs; --'",
        "params.x = '1''; DROP TABLE runs; --'",
        "params.`x'); DROP TABLE runs; --` = '1'",
        "tags.`a\"b'c` = 'v'",
        "name = 'x'' OR 1=1 --'",
    ],
)
def test_injection_attempts_stay_in_parameters(text: str) -> None:
    try:
        sql, params = compile_filter(text)
    except FilterSyntaxError:
        return  # refused outright: also safe
    assert "DROP" not in sql and "1=1" not in sql and "'" not in sql
    assert sql.count("?") == len(params)


def test_injection_payloads_are_values() -> None:
    sql, params = compile_filter("params.x = '1''; DROP TABLE runs; --'")
    assert params == ["x", "1'; DROP TABLE runs; --"]
    assert sql == f"{PARAM} = ?"
    sql, params = compile_filter("params.`x'); DROP TABLE runs; --` = '1'")
    assert sql == f"{PARAM} = ?"
    assert params == ["x'); DROP TABLE runs; --", "1"]
    _, params = compile_filter("tags.`a\"b` = 'v'")
    assert params == ['$."a\\"b"', "v"]
    with pytest.raises(FilterSyntaxError) as err:
        compile_filter("params.x = '1'; DROP TABLE runs; --'")
    assert err.value.column == 15
    assert "expected AND, OR or the end of the filter" in str(err.value)


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("metrics.f1 > AND params.x = '1'", 14, "unexpected 'AND' at column 14: expected a value "
                                                "after '>'"),
        ("metrics.f1 > 0.8 )", 18, "expected AND, OR or the end of the filter"),
        ("(metrics.f1 > 0.8", 18, "unexpected end of filter at column 18: expected AND, OR or ')'"
                                  " to close the '(' at column 1"),
        ("f1 > 2", 1, "unexpected 'f1' at column 1: expected a field: metrics.<key>"),
        ("metrics.f1 = 'a'", 14, "expected a number: metrics.f1 is a metric"),
        ("metrics.f1 LIKE '1%'", 12, "metrics.f1 is not text"),
        ("params.x = 'open", 12, "unterminated string"),
        ("params.x IN (1, 'a')", 17, "only numbers or only strings"),
        ("params.x IN 'a'", 13, "'(' to open the IN list"),
        ("params.x IN ('a' 'b')", 18, "',' or ')' to close the IN list"),
        ("params.x IN ('a', null)", 19, "use IS NULL"),
        ("attributes.foo = 'x'", 1, "unexpected attribute 'foo' at column 1: expected one of"),
        ("metrics. > 1", 9, "a key after 'metrics.'"),
        ("status", 7, "unexpected end of filter at column 7: expected an operator"),
        ("status = 'a' and", 17, "expected a field"),
        ("started > 'yesterday'", 11, "an ISO timestamp"),
        ("name = 3", 8, "expected a quoted string: name is text"),
        ("params.x ~ 1", 10, "unexpected '~' at column 10: expected an operator"),
        ("params.x NOT = 1", 14, "IN, LIKE or ILIKE after 'params.x NOT'"),
        ("params.x IS 1", 13, "NULL after IS"),
        ("metrics.f1 > null", 14, "null only compares with = or !="),
        ("name LIKE 3", 11, "a quoted pattern after LIKE"),
        ("status = true", 10, "status is not a boolean"),
    ],
)
def test_errors_point_at_the_right_column(text: str, column: int, message: str) -> None:
    with pytest.raises(FilterSyntaxError) as err:
        compile_filter(text)
    assert err.value.column == column
    assert err.value.position == column - 1
    assert message in str(err.value)
    assert isinstance(err.value, StoreError)
    caret_line = str(err.value).splitlines()[-1]
    assert caret_line.index("^") - 2 == column - 1


def test_order_by() -> None:
    assert parse_order_by("metrics.f1 DESC, started") == [
        (Field("metric", "f1"), True), (Field("attribute", "started"), False)]
    sql, params = compile_order_by(["metrics.f1 desc", "tags.team ASC", "name"])
    assert sql == (f"{METRIC} DESC NULLS LAST, {TAG} ASC NULLS LAST, r.name ASC NULLS LAST")
    assert params == ["f1", '$."team"']
    assert compile_order_by("") == ("", [])
    assert compile_order_by([]) == ("", [])
    with pytest.raises(FilterSyntaxError, match="at column 12: expected ASC, DESC, ','"):
        compile_order_by("metrics.f1 DOWN")
    with pytest.raises(FilterSyntaxError, match="at column 6: expected a field"):
        compile_order_by("name,")


def test_select_runs_sql() -> None:
    sql, params = select_runs("metrics.f1 > 0.5", "metrics.f1 DESC", limit=3)
    assert sql == (f"SELECT r.* FROM runs r WHERE {METRIC} > ? "
                   f"ORDER BY {METRIC} DESC NULLS LAST, r.run_id LIMIT ?")
    assert params == ["f1", 0.5, "f1", 3]
    with pytest.raises(QueryError, match="limit must be >= 0"):
        select_runs(limit=-1)


# -- real DuckDB ------------------------------------------------------------------------------
T = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
RUNS = [
    # run_id, name, experiment, status, started (hours after T), tags
    ("r1", "trial-1", "churn", "finished", 0, '{"team": "fraud", "priority": "1"}'),
    ("r2", "trial-2", "churn", "finished", 1, '{"team": "growth", "we\\"ird": "yes"}'),
    ("r3", "baseline", "churn", "failed", 2, "{}"),
    ("r4", "trial-3", "fraud", "running", 3, '{"team": "fraud", "priority": "5"}'),
]
PARAMS = [("r1", "model", "rf"), ("r1", "lr", "0.1"), ("r1", "depth", "6"),
          ("r2", "model", "gbm"), ("r2", "lr", "0.01"), ("r2", "depth", "10"),
          ("r3", "model", "rf"), ("r4", "model", "rf"), ("r4", "lr", "1e-3")]
METRICS = [("r1", "f1", 0.85), ("r1", "loss", 0.4), ("r2", "f1", 0.91), ("r2", "loss", 1.3),
           ("r4", "f1", 0.7), ("r4", "val loss", 2.0)]


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    c.execute("CREATE TABLE runs (run_id VARCHAR, name VARCHAR, experiment VARCHAR, "
              "status VARCHAR, started TIMESTAMPTZ, ended TIMESTAMPTZ, tags JSON)")
    c.execute("CREATE TABLE run_params (run_id VARCHAR, key VARCHAR, value VARCHAR)")
    c.execute("CREATE TABLE run_latest_metrics (run_id VARCHAR, key VARCHAR, value DOUBLE)")
    for run_id, name, exp, status, hours, tags in RUNS:
        started = T + dt.timedelta(hours=hours)
        ended = None if status == "running" else started + dt.timedelta(minutes=30)
        c.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                  [run_id, name, exp, status, started, ended, tags])
    c.executemany("INSERT INTO run_params VALUES (?, ?, ?)", PARAMS)
    c.executemany("INSERT INTO run_latest_metrics VALUES (?, ?, ?)", METRICS)
    yield c
    c.close()


def ids(con: duckdb.DuckDBPyConnection, text: str, order_by: str = "run_id") -> list[str]:
    sql, params = select_runs(text, order_by)
    return [row[0] for row in con.execute(sql, params).fetchall()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics.f1 > 0.8 and params.model = 'rf'", ["r1"]),
        ("metrics.f1 > 0.8", ["r1", "r2"]),
        ("tags.team = 'fraud' AND metrics.f1 <= 0.85", ["r1", "r4"]),
        ("params.lr IN ('0.1', '0.01')", ["r1", "r2"]),
        ("params.lr < 0.05", ["r2", "r4"]),  # numeric: '1e-3' and '0.01', not text order
        ("params.depth > 7", ["r2"]),  # text comparison would say '6' > '10'
        ("params.depth > '5'", ["r1"]),  # ... and it does when asked to ('10' < '5')
        ("attributes.status = 'finished'", ["r1", "r2"]),
        ("name LIKE 'trial-%'", ["r1", "r2", "r4"]),
        ("name ILIKE 'TRIAL-%' and not name like '%3'", ["r1", "r2"]),
        ("metrics.f1 >= 0.9 OR (params.model = 'rf' AND NOT metrics.loss > 1)", ["r1", "r2"]),
        ("metrics.loss IS NULL", ["r3", "r4"]),
        ("ended = null", ["r4"]),
        ("started >= '2026-03-01T02:00:00+00:00'", ["r3", "r4"]),
        (f"start_time < {int((T + dt.timedelta(hours=1)).timestamp() * 1000)}", ["r1"]),
        ("tags.priority >= 2", ["r4"]),
        ("tags.`we\"ird` = 'yes'", ["r2"]),
        ("metrics.`val loss` = 2", ["r4"]),
        ("experiment != 'churn'", ["r4"]),
        ("params.model NOT IN ('rf')", ["r2"]),
        ("params.x = '1''; DROP TABLE runs; --'", []),
        ("", ["r1", "r2", "r3", "r4"]),
    ],
)
def test_generated_sql_runs_on_duckdb(con: duckdb.DuckDBPyConnection, text: str,
                                      expected: list[str]) -> None:
    assert ids(con, text) == expected


def test_order_by_on_duckdb(con: duckdb.DuckDBPyConnection) -> None:
    assert ids(con, "", "metrics.f1 DESC") == ["r2", "r1", "r4", "r3"]  # missing last
    assert ids(con, "", "params.model, started DESC") == ["r2", "r4", "r3", "r1"]
    assert ids(con, "status != 'running'", "") == ["r3", "r2", "r1"]  # newest first
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (4,)  # nothing dropped
