"""Training data from the log: a model's registered datasets plus its labelled traffic.

:func:`assemble` builds the training window of a retrain as one ``pyarrow.Table``:

* the **registered training datasets** of the model's production version (the
  datasets its run used, ``run_datasets`` joined with ``model_versions``), read
  from the artifact store -- rows with ``source = 'dataset'``, no event time;
* the **labelled traffic** in ``[start, end]``: every prediction of the model
  joined with its *first* label, inputs as columns (JSON to columns in DuckDB
  with ``json_transform``, fetched as Arrow), ``source = 'traffic'``, ordered
  by event time;
* a ``split`` column: ``holdout`` for the most recent ``holdout_share`` of the
  labelled traffic (time-ordered, never shuffled), ``train`` for the rest and
  for every dataset row.

The target column is named ``label`` (the dataset's own target column, the one
column of the dataset that is not in the model's signature, is renamed to it).
Bookkeeping columns are :data:`META_COLUMNS`; everything else is a feature.

Queries go through a ``query(sql, params) -> pyarrow.Table`` function: the
projection's :meth:`modelog.store.reader.Reader.query`, or :func:`duckdb_query`
over a connection (tests, benchmarks). Imports :mod:`modelog.store` and
:mod:`modelog.models` (and ``duckdb``/``pyarrow``), no Kafka client.

Examples
--------
>>> import duckdb
>>> from modelog.store.schema import create_schema
>>> con = duckdb.connect()
>>> create_schema(con)
>>> _ = con.execute(\"\"\"
...     INSERT INTO predictions SELECT 'e' || i, 'p' || i, 'churn', 1, NULL,
...         TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_minutes(i),
...         json_object('age', i, 'plan', 'pro'), '1', 'app', NULL FROM range(10) t(i);
...     INSERT INTO labels SELECT 'l' || i, 'p' || i, 'churn',
...         TIMESTAMPTZ '2026-01-01 01:00:00+00', CAST(i % 2 AS JSON) FROM range(10) t(i)\"\"\")
>>> data = assemble(duckdb_query(con), "churn", holdout_share=0.2)
>>> data.features, data.target, data.table.num_rows
(['age', 'plan'], 'label', 10)
>>> data.train.num_rows, data.holdout.column("age").to_pylist()
(8, [8, 9])
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modelog.store.errors import QueryError, StoreError

__all__ = [
    "META_COLUMNS",
    "TARGET",
    "Query",
    "SourceDataset",
    "TrainingData",
    "assemble",
    "duckdb_query",
    "labelled_traffic",
    "training_datasets",
]

Query = Callable[[str, list[Any]], pa.Table]
"""Runs one read statement with positional ``?`` parameters, returns Arrow."""

TARGET = "label"
"""Name of the target column of every assembled window."""

META_COLUMNS = ("event_time", "prediction_id", "served_version", "served_output", "source",
                "split")
"""Bookkeeping columns of an assembled window (not features)."""

# Arrow type names (as a dataset's columns record them) -> DuckDB JSON transform types.
_DUCK_TYPES = {
    "int8": "BIGINT", "int16": "BIGINT", "int32": "BIGINT", "int64": "BIGINT",
    "uint8": "BIGINT", "uint16": "BIGINT", "uint32": "BIGINT", "uint64": "UBIGINT",
    "float": "DOUBLE", "float16": "DOUBLE", "float32": "DOUBLE", "double": "DOUBLE",
    "float64": "DOUBLE", "bool": "BOOLEAN", "boolean": "BOOLEAN", "string": "VARCHAR",
    "large_string": "VARCHAR", "utf8": "VARCHAR",
}
_JSON_TYPES = {"UBIGINT": "BIGINT", "BIGINT": "BIGINT", "DOUBLE": "DOUBLE",
               "BOOLEAN": "BOOLEAN", "VARCHAR": "VARCHAR"}


@dataclasses.dataclass(frozen=True)
class SourceDataset:
    """A registered dataset version the production version was trained on."""

    name: str
    digest: str
    uri: str
    columns: tuple[tuple[str, str], ...]

    @property
    def ref(self) -> str:
        """``name@digest-prefix``, how dataset parents are written."""
        return f"{self.name}@{self.digest[:12]}"


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """An assembled training window.

    Attributes
    ----------
    table
        Every row: features, :data:`TARGET`, then :data:`META_COLUMNS`.
    features
        The feature columns, in order.
    target
        The target column's name (:data:`TARGET`).
    datasets
        The registered datasets whose rows are included.
    """

    table: pa.Table
    features: list[str]
    target: str = TARGET
    datasets: tuple[SourceDataset, ...] = ()

    @property
    def train(self) -> pa.Table:
        """The rows to train on (dataset rows and the older traffic)."""
        return self.table.filter(pc.equal(self.table.column("split"), "train"))

    @property
    def holdout(self) -> pa.Table:
        """The most recent labelled traffic, kept out of training."""
        return self.table.filter(pc.equal(self.table.column("split"), "holdout"))

    @property
    def traffic_rows(self) -> int:
        """How many labelled predictions the window holds."""
        return int(pc.sum(pc.equal(self.table.column("source"), "traffic")).as_py() or 0)


def duckdb_query(con: Any) -> Query:
    """A :data:`Query` over a DuckDB connection (Arrow without an extra copy)."""
    def query(sql: str, params: list[Any]) -> pa.Table:
        table: pa.Table = con.sql(sql, params=params or None).to_arrow_table()
        return table
    return query


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def training_datasets(query: Query, model: str, version: int | None) -> list[SourceDataset]:
    """The dataset versions the run that produced ``model`` v``version`` used for training."""
    if version is None:
        return []
    rows = query(
        "SELECT DISTINCT d.name, d.digest, d.uri, CAST(d.columns AS VARCHAR) AS columns "
        "FROM model_versions mv JOIN run_datasets rd ON rd.run_id = mv.run_id "
        "JOIN datasets d ON d.name = rd.dataset AND d.digest = rd.digest "
        "WHERE mv.model = ? AND mv.model_version = ? AND rd.context = 'training' "
        "ORDER BY d.name", [model, version]).to_pylist()
    out = []
    for r in rows:
        cols = json.loads(r["columns"] or "[]")
        out.append(SourceDataset(str(r["name"]), str(r["digest"]), str(r["uri"]),
                                 tuple((str(c["name"]), str(c["type"])) for c in cols)))
    return out


def _signature(query: Query, model: str, version: int | None) -> list[tuple[str, str]]:
    if version is None:
        return []
    rows = query("SELECT CAST(signature AS VARCHAR) AS s FROM model_versions "
                 "WHERE model = ? AND model_version = ? LIMIT 1", [model, version]).to_pylist()
    if not rows or not rows[0]["s"]:
        return []
    return [(str(c["name"]), str(c["type"])) for c in json.loads(rows[0]["s"])]


def _window_sql(start: dt.datetime | None, end: dt.datetime | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if start is not None:
        clauses.append("p.time >= CAST(? AS TIMESTAMPTZ)")
        params.append(start.isoformat())
    if end is not None:
        clauses.append("p.time <= CAST(? AS TIMESTAMPTZ)")
        params.append(end.isoformat())
    return "".join(f" AND {c}" for c in clauses), params


def _inferred_types(query: Query, model: str, where: str,
                    params: list[Any]) -> tuple[dict[str, str], str]:
    """Feature and label types from a sample of the labelled traffic (JSON structure)."""
    rows = query(
        "SELECT (SELECT CAST(json_group_structure(inputs) AS VARCHAR) FROM (SELECT p.inputs "
        f"FROM predictions p WHERE p.model = ?{where} LIMIT 10000)) AS i, "
        "(SELECT CAST(json_group_structure(label) AS VARCHAR) FROM (SELECT label "
        "FROM labels WHERE model = ? LIMIT 10000)) AS l", [model, *params, model]).to_pylist()
    structure = json.loads(rows[0]["i"] or "{}") if rows else {}
    label = json.loads(rows[0]["l"] or '"NULL"') if rows else "NULL"
    types = {str(k): _JSON_TYPES.get(str(v), "VARCHAR") for k, v in structure.items()
             if isinstance(v, str)} if isinstance(structure, dict) else {}
    return types, _JSON_TYPES.get(str(label), "VARCHAR")


_CAP = re.compile(r"the result has more than ([\d,]+) rows")


def labelled_traffic(query: Query, model: str, features: dict[str, str], label_type: str, *,
                     start: dt.datetime | None = None, end: dt.datetime | None = None,
                     page_rows: int | None = None) -> pa.Table:
    """The predictions of ``model`` in ``[start, end]`` joined with their first label.

    ``features`` maps input name -> DuckDB type (``BIGINT``, ``DOUBLE``,
    ``VARCHAR``, ``BOOLEAN``); the inputs JSON becomes those columns in SQL.
    Ordered by event time, then prediction id.

    ``page_rows`` reads the rows in pages of that many (keyset pagination on
    ``(time, prediction_id)``); ``None`` reads them in one statement. Either way,
    when the query server refuses a result over its row cap ("the result has
    more than N rows"), the rest is read in pages of N: the window is always
    complete.
    """
    if page_rows is not None and page_rows < 1:
        raise StoreError(f"page_rows={page_rows!r} must be at least 1")
    pages: list[pa.Table] = []
    after: tuple[Any, str] | None = None
    while True:
        try:
            page = _traffic_page(query, model, features, label_type, start, end, after,
                                 page_rows)
        except QueryError as exc:
            cap = _CAP.search(str(exc))
            limit = int(cap.group(1).replace(",", "")) if cap else 0
            if limit < 1 or (page_rows is not None and limit >= page_rows):
                raise
            page_rows = limit
            continue
        pages.append(page)
        if page_rows is None or page.num_rows < page_rows:
            break
        after = (page.column("event_time")[-1].as_py(),
                 str(page.column("prediction_id")[-1].as_py()))
    return pages[0] if len(pages) == 1 else pa.concat_tables(pages)


def _traffic_page(query: Query, model: str, features: dict[str, str], label_type: str,
                  start: dt.datetime | None, end: dt.datetime | None,
                  after: tuple[Any, str] | None, limit: int | None) -> pa.Table:
    where, params = _window_sql(start, end)
    if after is not None:
        where += (" AND (p.time > CAST(? AS TIMESTAMPTZ) OR (p.time = CAST(? AS TIMESTAMPTZ) "
                  "AND p.prediction_id > ?))")
        t = after[0].isoformat() if hasattr(after[0], "isoformat") else str(after[0])
        params += [t, t, after[1]]
    struct = json.dumps(features)
    cols = ", ".join(f"x.{_quote(f)} AS {_quote(f)}" for f in features)
    sql = f"""
WITH first_label AS (
    SELECT prediction_id, arg_min(label, (time, event_id)) AS label
    FROM labels WHERE model = ? GROUP BY prediction_id
), served AS (
    SELECT p.prediction_id, p.model_version, p.time, p.output,
           json_transform(p.inputs, ?) AS x, l.label
    FROM predictions p JOIN first_label l ON l.prediction_id = p.prediction_id
    WHERE p.model = ?{where}
)
SELECT {cols}{", " if cols else ""}json_transform(label, ?) AS {_quote(TARGET)},
       time AS event_time, prediction_id, model_version AS served_version,
       CAST(output AS VARCHAR) AS served_output
FROM served ORDER BY time, prediction_id{"" if limit is None else f" LIMIT {int(limit)}"}"""
    return query(sql, [model, struct, model, *params, json.dumps(label_type)])


def _dataset_rows(table: pa.Table, ds: SourceDataset, signature: set[str]) -> pa.Table:
    """A dataset's table with its target column renamed to :data:`TARGET`."""
    names = table.column_names
    if TARGET in names:
        target = TARGET
    else:
        extra = [n for n in names if n not in signature] if signature else []
        if len(extra) != 1:
            raise StoreError(
                f"cannot tell the target column of dataset {ds.ref} (columns: "
                f"{', '.join(names)}): register the model with its signature (target= in "
                f"register_model) or name the target column {TARGET!r}")
        target = extra[0]
    return table.rename_columns([TARGET if n == target else n for n in names])


def assemble(
    query: Query,
    model: str,
    *,
    version: int | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    holdout_share: float = 0.2,
    read_table: Callable[[str], pa.Table] | None = None,
    page_rows: int | None = None,
) -> TrainingData:
    """Assemble the training window of ``model`` (see the module docstring).

    Parameters
    ----------
    query
        Runs SQL over the projection (:data:`Query`).
    model, version
        The model, and the production version whose training datasets to include
        (``None``: no datasets).
    start, end
        The window of labelled traffic (inclusive; ``None``: unbounded).
    holdout_share
        Share of the labelled traffic, the most recent, that becomes the holdout.
    read_table
        Reads a dataset version by URI (the artifact store's ``read_table``);
        ``None``: datasets are left out.
    page_rows
        Read the labelled traffic in pages of this many rows (``None``: at once);
        a window over the query server's row cap is read in pages of the cap
        (:func:`labelled_traffic`).

    Raises
    ------
    StoreError
        A dataset whose target column cannot be told apart.
    """
    if not 0.0 <= holdout_share < 1.0:
        raise StoreError(f"holdout_share={holdout_share!r} must be in [0, 1)")
    datasets = training_datasets(query, model, version) if read_table is not None else []
    signature = _signature(query, model, version)
    where, params = _window_sql(start, end)
    inferred, label_type = _inferred_types(query, model, where, params)
    features: dict[str, str] = {}
    for name, typ in signature:
        features[name] = _DUCK_TYPES.get(typ, "VARCHAR")
    tables: list[pa.Table] = []
    for ds in datasets:
        assert read_table is not None
        t = _dataset_rows(read_table(ds.uri), ds, {n for n, _ in signature})
        tables.append(t)
        for name, typ in ds.columns:
            if name in t.column_names and name != TARGET:
                features.setdefault(name, _DUCK_TYPES.get(typ, "VARCHAR"))
        if TARGET in t.column_names and label_type == "VARCHAR":
            label_type = _DUCK_TYPES.get(str(t.schema.field(TARGET).type), "VARCHAR")
    for name, typ in inferred.items():
        features.setdefault(name, typ)
    traffic = labelled_traffic(query, model, features, label_type, start=start, end=end,
                               page_rows=page_rows)
    n = traffic.num_rows
    n_holdout = math.ceil(n * holdout_share) if n else 0
    index = np.zeros(n, dtype=np.int8)
    index[n - n_holdout:] = 1
    traffic = traffic.append_column("source", _repeat("traffic", n))
    traffic = traffic.append_column("split", pc.take(pa.array(["train", "holdout"]), index))
    schema = traffic.schema
    parts = [_conform(t, schema) for t in tables] + [traffic]
    table = pa.concat_tables(parts) if len(parts) > 1 else traffic
    return TrainingData(table=table, features=list(features), datasets=tuple(datasets))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Dataset rows in the traffic's schema (missing columns null, ``source='dataset'``)."""
    n = table.num_rows
    columns: list[pa.Array | pa.ChunkedArray] = []
    for field in schema:
        if field.name == "source":
            columns.append(_repeat("dataset", n))
        elif field.name == "split":
            columns.append(_repeat("train", n))
        elif field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(columns, schema=schema)



def _repeat(value: str, n: int) -> pa.Array:
    """A string column holding ``value`` ``n`` times (built in C++, not from a list)."""
    return pc.take(pa.array([value]), np.zeros(n, dtype=np.int8))
