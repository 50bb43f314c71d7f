"""The DuckDB schema of the projection: the event ledger, derived tables and views.

Three kinds of objects live in the projector's DuckDB file:

* **Ledgers** -- ``events`` (every decoded event, upcast, keyed by its id),
  ``dead_letters`` (every record seen on the dead-letter topic) and
  ``consumer_positions`` (where the projector resumes). They are the
  projection's memory of the log and are never dropped by a rebuild.
* **Derived tables** -- ``predictions``, ``labels``, ``alerts`` and
  ``monitor_stats``: hot data, materialized from ``events`` by the SQL in
  :data:`DERIVATIONS`, both live (per batch) and on :func:`rebuild_projections`.
  Using the *same* statements for both guarantees a rebuild equals the live state.
  They have no key (an index costs more to maintain than the rest of the
  insert): each event is derived exactly once because the live path derives
  only the events that the same transaction newly added to the ``events``
  ledger, whose primary key is what deduplicates.
* **Views** -- the lifecycle (``datasets``, ``runs``, ``run_params``,
  ``run_metrics``, ``model_versions``, ``alias_history``, ``aliases``),
  ``prediction_quality`` and ``dead_letter_count``, computed at query time.

``schema_info`` records :data:`SCHEMA_VERSION`; bumping it means "rebuild the
derived objects" (the projector does so when it opens an older file).

Examples
--------
>>> from collections.abc import Collection

import duckdb
>>> con = duckdb.connect()
>>> create_schema(con)
>>> con.execute("select version from schema_info where component = 'projection'").fetchall()
[(2,)]
>>> sorted(DERIVATIONS)
['alerts', 'labels', 'monitor_stats', 'predictions']
"""

from __future__ import annotations

from collections.abc import Collection

import duckdb

__all__ = [
    "DERIVATIONS",
    "DERIVED_FROM",
    "DERIVED_TABLES",
    "LEDGER_TABLES",
    "SCHEMA_VERSION",
    "VIEWS",
    "create_schema",
    "derive",
    "drop_derived",
    "rebuild_projections",
    "stored_schema_version",
]

SCHEMA_VERSION = 2
"""Version of the projection's tables and views; bump it when they change.

2: the derived tables lost their primary keys (the ledger's key deduplicates)."""

LEDGER_TABLES: tuple[str, ...] = ("events", "consumer_positions", "dead_letters", "schema_info")
"""Tables that are the projection's memory of the log; a rebuild keeps them."""

_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS events (
    id VARCHAR PRIMARY KEY,
    type VARCHAR,
    schema_version INTEGER,
    time TIMESTAMPTZ,
    aggregate VARCHAR,
    producer VARCHAR,
    topic VARCHAR,
    partition INTEGER,
    "offset" BIGINT,
    projected_at TIMESTAMPTZ,
    payload JSON
);
CREATE TABLE IF NOT EXISTS consumer_positions (
    topic VARCHAR,
    partition INTEGER,
    next_offset BIGINT,
    cluster_id VARCHAR,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    topic VARCHAR,
    partition INTEGER,
    "offset" BIGINT,
    time TIMESTAMPTZ,
    reason VARCHAR,
    source_topic VARCHAR,
    source_partition INTEGER,
    source_offset BIGINT,
    consumer VARCHAR,
    key BLOB,
    value BLOB,
    PRIMARY KEY (topic, partition, "offset")
);
CREATE TABLE IF NOT EXISTS schema_info (
    component VARCHAR PRIMARY KEY,
    version INTEGER,
    updated_at TIMESTAMPTZ
);
"""

DERIVED_TABLES: dict[str, str] = {
    "predictions": """
CREATE TABLE IF NOT EXISTS predictions (
    event_id VARCHAR,
    prediction_id VARCHAR,
    model VARCHAR,
    model_version INTEGER,
    code_version VARCHAR,
    time TIMESTAMPTZ,
    inputs JSON,
    output JSON,
    producer VARCHAR
)""",
    "labels": """
CREATE TABLE IF NOT EXISTS labels (
    event_id VARCHAR,
    prediction_id VARCHAR,
    model VARCHAR,
    time TIMESTAMPTZ,
    label JSON
)""",
    "alerts": """
CREATE TABLE IF NOT EXISTS alerts (
    event_id VARCHAR,
    type VARCHAR,
    time TIMESTAMPTZ,
    model VARCHAR,
    model_version INTEGER,
    kind VARCHAR,
    feature VARCHAR,
    detector VARCHAR,
    statistic DOUBLE,
    threshold DOUBLE,
    severity VARCHAR,
    message VARCHAR,
    window_start TIMESTAMPTZ,
    window_end TIMESTAMPTZ,
    window_size INTEGER,
    prediction_ids VARCHAR[],
    params JSON,
    detected_id VARCHAR
)""",
    "monitor_stats": """
CREATE TABLE IF NOT EXISTS monitor_stats (
    event_id VARCHAR,
    time TIMESTAMPTZ,
    model VARCHAR,
    model_version INTEGER,
    window_end TIMESTAMPTZ,
    stats JSON
)""",
}
"""DDL of the tables derived from ``events`` (dropped and refilled by a rebuild)."""


ALERT_TYPES: tuple[str, ...] = (
    "DriftDetected", "DriftResolved", "AnomalyDetected", "SkewDetected", "RetrainRequested",
)
"""Event types that land in ``alerts``."""

DERIVED_FROM: dict[str, tuple[str, ...]] = {
    "predictions": ("PredictionMade",),
    "labels": ("LabelObserved",),
    "alerts": ALERT_TYPES,
    "monitor_stats": ("MonitorStatsReported",),
}
"""Event types each derived table is filled from (its derivation reads no others)."""

# ``{src}`` is a relation with the columns of ``events``: the ledger itself on a
# rebuild, the batch being projected live. The hot paths parse each payload once
# (``json_transform``); JSON ``null`` becomes SQL NULL.
DERIVATIONS: dict[str, str] = {
    "predictions": """
INSERT INTO predictions
SELECT id, r.prediction_id, r.model, r.model_version, r.code_version, time, r.inputs, r.output,
       producer
FROM (SELECT id, time, producer, json_transform(payload, '{"prediction_id": "VARCHAR",
          "model": "VARCHAR", "model_version": "INTEGER", "code_version": "VARCHAR",
          "inputs": "JSON", "output": "JSON"}') AS r
      FROM {src} WHERE type = 'PredictionMade')""",
    "labels": """
INSERT INTO labels
SELECT id, r.prediction_id, r.model, time, r.label
FROM (SELECT id, time, json_transform(payload, '{"prediction_id": "VARCHAR",
          "model": "VARCHAR", "label": "JSON"}') AS r
      FROM {src} WHERE type = 'LabelObserved')""",
    "alerts": """
INSERT INTO alerts
SELECT id, type, time, payload->>'$.model',
       CAST(payload->>'$.model_version' AS INTEGER),
       payload->>'$.kind', payload->>'$.feature', payload->>'$.detector',
       CAST(payload->>'$.statistic' AS DOUBLE), CAST(payload->>'$.threshold' AS DOUBLE),
       CASE WHEN type = 'DriftResolved' THEN 'info'
            WHEN type = 'RetrainRequested' THEN 'warning'
            ELSE payload->>'$.severity' END,
       coalesce(payload->>'$.message', payload->>'$.reason',
                CASE WHEN type = 'SkewDetected' THEN
                    'expected ' || coalesce(payload->>'$.expected', 'nothing')
                    || ', observed ' || coalesce(payload->>'$.observed', 'nothing') END),
       CAST(payload->>'$.window.start' AS TIMESTAMPTZ),
       CAST(payload->>'$.window.end' AS TIMESTAMPTZ),
       CAST(payload->>'$.window.size' AS INTEGER),
       coalesce(CAST(json_extract(payload, '$.prediction_ids') AS VARCHAR[]), []),
       coalesce(json_extract(payload, '$.params'), json_extract(payload, '$.policy')),
       coalesce(payload->>'$.detected_id', payload->>'$.trigger_id')
FROM {src}
WHERE type IN ('DriftDetected', 'DriftResolved', 'AnomalyDetected', 'SkewDetected',
               'RetrainRequested')""",
    "monitor_stats": """
INSERT INTO monitor_stats
SELECT id, time, payload->>'$.model', CAST(payload->>'$.model_version' AS INTEGER),
       CAST(payload->>'$.window.end' AS TIMESTAMPTZ), json_extract(payload, '$.stats')
FROM {src} WHERE type = 'MonitorStatsReported'""",
}
"""``INSERT ... SELECT`` per derived table, from a relation shaped like ``events``."""

VIEWS: dict[str, str] = {
    "dead_letter_count": """
SELECT count(DISTINCT (source_topic, source_partition, source_offset)) AS dead_letters
FROM dead_letters""",
    "prediction_quality": """
WITH first_label AS (
    SELECT model, prediction_id, label, time AS label_time
    FROM labels
    QUALIFY row_number() OVER (PARTITION BY model, prediction_id ORDER BY time, event_id) = 1
), joined AS (
    SELECT p.*, l.label, l.label_time,
           json_type(p.output) IN ('UBIGINT', 'BIGINT', 'DOUBLE')
           AND json_type(l.label) IN ('UBIGINT', 'BIGINT', 'DOUBLE') AS numeric_pair
    FROM predictions p
    LEFT JOIN first_label l ON l.model = p.model AND l.prediction_id = p.prediction_id
)
SELECT event_id, prediction_id, model, model_version, code_version, time, inputs, output,
       producer, label, label_time,
       CASE WHEN output IS NULL OR label IS NULL THEN NULL
            WHEN numeric_pair THEN CAST(output AS DOUBLE) = CAST(label AS DOUBLE)
            ELSE CAST(output AS VARCHAR) = CAST(label AS VARCHAR) END AS correct,
       CASE WHEN numeric_pair THEN abs(CAST(output AS DOUBLE) - CAST(label AS DOUBLE))
            END AS abs_error
FROM joined""",
    "datasets": """
SELECT payload->>'$.name' AS name,
       row_number() OVER (PARTITION BY payload->>'$.name' ORDER BY time, id) AS version,
       payload->>'$.digest' AS digest,
       CAST(payload->>'$.num_rows' AS BIGINT) AS num_rows,
       payload->>'$.uri' AS uri,
       coalesce(CAST(json_extract(payload, '$.parents') AS VARCHAR[]), []) AS parents,
       json_extract(payload, '$.columns') AS columns,
       payload->>'$.description' AS description,
       time, producer, id AS event_id
FROM events WHERE type = 'DatasetVersionCreated'""",
    "runs": """
WITH started AS (
    SELECT payload->>'$.run_id' AS run_id, payload->>'$.experiment' AS experiment,
           payload->>'$.name' AS name, payload->>'$.parent_run_id' AS parent_run_id,
           json_extract(payload, '$.tags') AS tags, time AS started,
           payload->>'$.code.commit' AS code_commit, payload->>'$.code.branch' AS code_branch,
           CAST(payload->>'$.code.dirty' AS BOOLEAN) AS code_dirty, producer
    FROM events WHERE type = 'RunStarted'
    QUALIFY row_number() OVER (PARTITION BY payload->>'$.run_id' ORDER BY time, id) = 1
), latest AS (
    SELECT payload->>'$.run_id' AS run_id, type, time, payload->>'$.error' AS error
    FROM events WHERE type IN ('RunStarted', 'RunFinished', 'RunFailed')
    QUALIFY row_number() OVER (PARTITION BY payload->>'$.run_id' ORDER BY time DESC, id DESC) = 1
)
SELECT latest.run_id, s.experiment, s.name,
       CASE latest.type WHEN 'RunFinished' THEN 'finished' WHEN 'RunFailed' THEN 'failed'
            ELSE 'running' END AS status,
       s.started,
       CASE WHEN latest.type <> 'RunStarted' THEN latest.time END AS ended,
       s.code_commit, s.code_branch, s.code_dirty, s.parent_run_id, s.tags, latest.error,
       s.producer
FROM latest LEFT JOIN started s USING (run_id)""",
    "run_params": """
WITH p AS (
    SELECT payload->>'$.run_id' AS run_id, time, id,
           unnest(map_entries(CAST(json_extract(payload, '$.params') AS MAP(VARCHAR, JSON))))
               AS kv
    FROM events WHERE type = 'ParamsLogged'
)
SELECT run_id, kv.key AS key,
       CASE WHEN json_type(kv.value) = 'VARCHAR' THEN kv.value->>'$'
            WHEN json_type(kv.value) = 'NULL' THEN NULL
            ELSE CAST(kv.value AS VARCHAR) END AS value,
       kv.value AS value_json, time, id AS event_id
FROM p""",
    "run_metrics": """
WITH m AS (
    SELECT payload->>'$.run_id' AS run_id, time AS logged, id,
           unnest(CAST(json_extract(payload, '$.metrics') AS JSON[])) AS point
    FROM events WHERE type = 'MetricsLogged'
)
SELECT run_id, point->>'$.key' AS key, CAST(point->>'$.value' AS DOUBLE) AS value,
       coalesce(CAST(point->>'$.step' AS BIGINT), 0) AS step,
       coalesce(CAST(point->>'$.time' AS TIMESTAMPTZ), logged) AS time, id AS event_id
FROM m""",
    "model_versions": """
SELECT payload->>'$.model' AS model,
       CAST(payload->>'$.model_version' AS INTEGER) AS model_version,
       payload->>'$.run_id' AS run_id, payload->>'$.flavor' AS flavor,
       payload->>'$.artifact_uri' AS artifact_uri,
       payload->>'$.artifact_digest' AS artifact_digest,
       json_extract(payload, '$.signature') AS signature,
       payload->>'$.description' AS description,
       CAST(payload->>'$.online' AS BOOLEAN) AS online,
       time, producer, id AS event_id
FROM events WHERE type = 'ModelVersionRegistered'""",
    "alias_history": """
SELECT time, payload->>'$.model' AS model, payload->>'$.alias' AS alias,
       CASE type WHEN 'AliasSet' THEN 'set' ELSE 'removed' END AS action,
       CAST(payload->>'$.model_version' AS INTEGER) AS model_version,
       CAST(payload->>'$.previous_version' AS INTEGER) AS previous_version,
       payload->>'$.actor' AS actor, payload->>'$.reason' AS reason,
       payload->>'$.command_id' AS command_id, producer, id AS event_id
FROM events WHERE type IN ('AliasSet', 'AliasRemoved')
ORDER BY time, id""",
    "aliases": """
SELECT model, alias, model_version, time AS since, actor, reason, event_id
FROM alias_history
QUALIFY row_number() OVER (PARTITION BY model, alias ORDER BY time DESC, event_id DESC) = 1
    AND action = 'set'""",
}
"""Views, in creation order (later views may use earlier ones)."""


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table and view that does not exist yet (idempotent).

    A new file gets ``schema_info`` at :data:`SCHEMA_VERSION`; an existing file
    keeps its recorded version (compare with :func:`stored_schema_version`).

    Examples
    --------
    >>> from collections.abc import Collection

import duckdb
    >>> con = duckdb.connect()
    >>> create_schema(con); create_schema(con)
    >>> con.execute("select count(*) from predictions").fetchall()
    [(0,)]
    """
    con.execute(_LEDGER_DDL)
    for ddl in DERIVED_TABLES.values():
        con.execute(ddl)
    for name, body in VIEWS.items():
        con.execute(f"CREATE VIEW IF NOT EXISTS {name} AS {body}")
    con.execute(
        "INSERT INTO schema_info VALUES ('projection', ?, now()) ON CONFLICT DO NOTHING",
        [SCHEMA_VERSION],
    )


def stored_schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The projection schema version recorded in the file (``None`` when new)."""
    rows = con.execute(
        "SELECT version FROM schema_info WHERE component = 'projection'"
    ).fetchall()
    return int(rows[0][0]) if rows else None


def drop_derived(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the derived tables and the views (never the ledgers)."""
    for name in reversed(list(VIEWS)):
        con.execute(f"DROP VIEW IF EXISTS {name}")
    for name in DERIVED_TABLES:
        con.execute(f"DROP TABLE IF EXISTS {name}")


def derive(
    con: duckdb.DuckDBPyConnection, src: str, types: Collection[str] | None = None
) -> None:
    """Fill every derived table from ``src``, a relation shaped like ``events``.

    Not idempotent on its own (the derived tables have no key): ``src`` must
    hold only events not derived before -- the whole ledger after the derived
    tables were emptied, or the events a transaction just added to the ledger.

    Parameters
    ----------
    con
        Connection to write with (the caller owns the transaction).
    src
        SQL relation with the columns of ``events``.
    types
        Event types present in ``src``, when known: derivations that read none
        of them are skipped (``None`` runs them all).

    Examples
    --------
    >>> from collections.abc import Collection

import duckdb
    >>> con = duckdb.connect()
    >>> create_schema(con)
    >>> derive(con, "events", types={"LabelObserved"})  # runs only the labels derivation
    >>> con.execute("select count(*) from labels").fetchall()
    [(0,)]
    """
    for table, sql in DERIVATIONS.items():
        if types is None or any(t in types for t in DERIVED_FROM[table]):
            con.execute(sql.replace("{src}", src))


def rebuild_projections(con: duckdb.DuckDBPyConnection) -> int:
    """Drop and re-derive every derived table and view from the ``events`` ledger.

    Runs in one transaction, so readers see the old state until it commits.
    Returns the number of events in the ledger.

    Examples
    --------
    >>> from collections.abc import Collection

import duckdb
    >>> con = duckdb.connect()
    >>> create_schema(con)
    >>> rebuild_projections(con)
    0
    """
    con.execute("BEGIN TRANSACTION")
    try:
        drop_derived(con)
        create_schema(con)
        derive(con, "events")
        con.execute(
            "INSERT OR REPLACE INTO schema_info VALUES ('projection', ?, now())",
            [SCHEMA_VERSION],
        )
        count = int(con.execute("SELECT count(*) FROM events").fetchall()[0][0])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return count
