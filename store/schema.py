"""The DuckDB schema of the projection: the event ledger, derived tables and views.

Three kinds of objects live in the projector's DuckDB file:

* **Ledgers** -- ``events`` (every decoded event, upcast, keyed by its id),
  ``dead_letters`` (every record seen on the dead-letter topic) and
  ``consumer_positions`` (where the projector resumes). They are the
  projection's memory of the log and are never dropped by a rebuild.
* **Derived tables** -- ``predictions``, ``labels``, ``alerts`` and
  ``monitor_stats`` (hot data), and the lifecycle: ``run_state``,
  ``run_params``, ``run_metrics``, ``run_latest_metrics``, ``run_datasets``,
  ``run_artifacts``, ``dataset_versions``, ``model_versions`` and
  ``alias_history``; materialized from ``events`` by the SQL in
  :data:`DERIVATIONS`, both live (per batch) and on :func:`rebuild_projections`.
  Using the *same* statements for both guarantees a rebuild equals the live state.
  They have no key (an index costs more to maintain than the rest of the
  insert): each event is derived exactly once because the live path derives
  only the events that the same transaction newly added to the ``events``
  ledger, whose primary key is what deduplicates. Only ``run_state`` (by
  ``run_id``), ``run_params`` and ``run_latest_metrics`` (by ``(run_id, key)``)
  are keyed: they are upserts that merge the same way whatever order the
  events come in.
* **Views** -- over the small lifecycle tables: ``runs`` (``run_state``
  without its bookkeeping columns), ``datasets`` (one version per distinct ``(name,
  digest)``, numbered by first appearance), ``aliases`` (current holders) and
  ``lineage_edges``; plus ``prediction_quality`` and ``dead_letter_count``,
  computed at query time.

``schema_info`` records :data:`SCHEMA_VERSION`; bumping it means "rebuild the
derived objects" (the projector does so when it opens an older file).

Examples
--------
>>> import duckdb
>>> con = duckdb.connect()
>>> create_schema(con)
>>> con.execute("select version from schema_info where component = 'projection'").fetchall()
[(3,)]
>>> sorted(DERIVATIONS)[:6]
['alerts', 'alias_history', 'dataset_versions', 'labels', 'model_versions', 'monitor_stats']
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

SCHEMA_VERSION = 3
"""Version of the projection's tables and views; bump it when they change.

2: the derived tables lost their primary keys (the ledger's key deduplicates).
3: the lifecycle (runs, params, metrics, datasets, registry) became derived tables,
plus ``run_latest_metrics``, ``run_datasets``, ``run_artifacts`` and ``lineage_edges``."""

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
    -- zstd: checkpoints of JSON run ~25% faster than with the default string
    -- compression analysis, and the file is ~30% smaller
    payload JSON USING COMPRESSION zstd
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
    -- zstd, as the ledger's payload: cheaper checkpoints, smaller file
    inputs JSON USING COMPRESSION zstd,
    output JSON USING COMPRESSION zstd,
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
    # -- lifecycle (small: a few rows per run, dataset, version or alias change) --
    "run_state": """
CREATE TABLE IF NOT EXISTS run_state (
    run_id VARCHAR PRIMARY KEY,
    experiment VARCHAR,
    name VARCHAR,
    status VARCHAR,
    started TIMESTAMPTZ,
    ended TIMESTAMPTZ,
    code_commit VARCHAR,
    code_branch VARCHAR,
    code_dirty BOOLEAN,
    parent_run_id VARCHAR,
    tags JSON,
    error VARCHAR,
    producer VARCHAR,
    code JSON,
    traceback VARCHAR,
    started_event_id VARCHAR,
    last_type VARCHAR,
    last_time TIMESTAMPTZ,
    event_id VARCHAR
)""",
    "run_params": """
CREATE TABLE IF NOT EXISTS run_params (
    run_id VARCHAR,
    key VARCHAR,
    value VARCHAR,
    value_json JSON,
    time TIMESTAMPTZ,
    event_id VARCHAR,
    PRIMARY KEY (run_id, key)
)""",
    "run_metrics": """
CREATE TABLE IF NOT EXISTS run_metrics (
    run_id VARCHAR,
    key VARCHAR,
    value DOUBLE,
    step BIGINT,
    time TIMESTAMPTZ,
    event_id VARCHAR
)""",
    "run_latest_metrics": """
CREATE TABLE IF NOT EXISTS run_latest_metrics (
    run_id VARCHAR,
    key VARCHAR,
    value DOUBLE,
    step BIGINT,
    time TIMESTAMPTZ,
    event_id VARCHAR,
    PRIMARY KEY (run_id, key)
)""",
    "run_datasets": """
CREATE TABLE IF NOT EXISTS run_datasets (
    run_id VARCHAR,
    dataset VARCHAR,
    digest VARCHAR,
    context VARCHAR,
    time TIMESTAMPTZ,
    event_id VARCHAR
)""",
    "run_artifacts": """
CREATE TABLE IF NOT EXISTS run_artifacts (
    run_id VARCHAR,
    path VARCHAR,
    uri VARCHAR,
    digest VARCHAR,
    size BIGINT,
    time TIMESTAMPTZ,
    event_id VARCHAR
)""",
    "dataset_versions": """
CREATE TABLE IF NOT EXISTS dataset_versions (
    name VARCHAR,
    digest VARCHAR,
    num_rows BIGINT,
    uri VARCHAR,
    parents VARCHAR[],
    columns JSON,
    profile JSON,
    description VARCHAR,
    time TIMESTAMPTZ,
    producer VARCHAR,
    event_id VARCHAR
)""",
    "model_versions": """
CREATE TABLE IF NOT EXISTS model_versions (
    model VARCHAR,
    model_version INTEGER,
    run_id VARCHAR,
    flavor VARCHAR,
    artifact_uri VARCHAR,
    artifact_digest VARCHAR,
    signature JSON,
    description VARCHAR,
    online BOOLEAN,
    library_versions JSON,
    command_id VARCHAR,
    time TIMESTAMPTZ,
    producer VARCHAR,
    event_id VARCHAR
)""",
    "alias_history": """
CREATE TABLE IF NOT EXISTS alias_history (
    time TIMESTAMPTZ,
    model VARCHAR,
    alias VARCHAR,
    action VARCHAR,
    model_version INTEGER,
    previous_version INTEGER,
    actor VARCHAR,
    reason VARCHAR,
    command_id VARCHAR,
    producer VARCHAR,
    event_id VARCHAR
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
    "run_state": ("RunStarted", "RunFinished", "RunFailed"),
    "run_params": ("ParamsLogged",),
    "run_metrics": ("MetricsLogged",),
    "run_latest_metrics": ("MetricsLogged",),
    "run_datasets": ("RunDatasetUsed",),
    "run_artifacts": ("ArtifactLogged",),
    "dataset_versions": ("DatasetVersionCreated",),
    "model_versions": ("ModelVersionRegistered",),
    "alias_history": ("AliasSet", "AliasRemoved"),
}
"""Event types each derived table is filled from (its derivation reads no others)."""

# ``{src}`` is a relation with the columns of ``events``: the ledger itself on a
# rebuild, the batch being projected live. The hot paths parse each payload once
# (``json_transform``); JSON ``null`` becomes SQL NULL.
_METRIC_POINTS = """
SELECT run_id, point.key AS key, point.value AS value, coalesce(point.step, 0) AS step,
       coalesce(point.time, logged) AS time, id AS event_id
FROM (SELECT id, logged, r.run_id, unnest(r.metrics) AS point
      FROM (SELECT id, time AS logged, json_transform(payload, '{"run_id": "VARCHAR",
                "metrics": [{"key": "VARCHAR", "value": "DOUBLE", "step": "BIGINT",
                             "time": "TIMESTAMPTZ"}]}') AS r
            FROM {src} WHERE type = 'MetricsLogged'))"""
"""Every metric point of the ``MetricsLogged`` events of ``{src}`` (step 0, event time
by default)."""

_RUN_STARTED = ("experiment", "name", "started", "code_commit", "code_branch", "code_dirty",
                "parent_run_id", "tags", "producer", "code", "started_event_id")
_RUN_LATEST = ("status", "ended", "error", "traceback", "last_type", "last_time",
               "event_id")


def _run_state_upsert() -> str:
    """``run_state`` per run: the first ``RunStarted`` (by time, then id) gives the
    attributes, the latest run event the status; merged into the stored row the same
    way, so the order the batches come in does not matter."""
    earlier = ("excluded.started_event_id IS NOT NULL AND (run_state.started_event_id IS NULL "
               "OR (excluded.started, excluded.started_event_id) "
               "< (run_state.started, run_state.started_event_id))")
    later = ("(excluded.last_time, excluded.event_id) "
             "> (run_state.last_time, run_state.event_id)")
    sets = [f"{c} = CASE WHEN {earlier} THEN excluded.{c} ELSE run_state.{c} END"
            for c in _RUN_STARTED]
    sets += [f"{c} = CASE WHEN {later} THEN excluded.{c} ELSE run_state.{c} END"
             for c in _RUN_LATEST]
    return """
INSERT INTO run_state
SELECT run_id, s.experiment, s.name,
       CASE l.type WHEN 'RunFinished' THEN 'finished' WHEN 'RunFailed' THEN 'failed'
            ELSE 'running' END,
       s.time, CASE WHEN l.type <> 'RunStarted' THEN l.time END,
       s.code->>'$.commit', s.code->>'$.branch', CAST(s.code->>'$.dirty' AS BOOLEAN),
       s.parent_run_id, s.tags, l.error, s.producer, s.code, l.traceback,
       s.id, l.type, l.time, l.id
FROM (SELECT r.run_id AS run_id,
             arg_min({'id': id, 'time': time, 'producer': producer,
                      'experiment': r.experiment, 'name': r.name,
                      'parent_run_id': r.parent_run_id, 'tags': r.tags, 'code': r.code},
                     (time, id)) FILTER (WHERE type = 'RunStarted') AS s,
             arg_max({'id': id, 'time': time, 'type': type, 'error': r.error,
                      'traceback': r.traceback}, (time, id)) AS l
      FROM (SELECT id, type, time, producer, json_transform(payload, '{"run_id": "VARCHAR",
                "experiment": "VARCHAR", "name": "VARCHAR", "parent_run_id": "VARCHAR",
                "tags": "JSON", "code": "JSON", "error": "VARCHAR",
                "traceback": "VARCHAR"}') AS r
            FROM {src} WHERE type IN ('RunStarted', 'RunFinished', 'RunFailed'))
      GROUP BY r.run_id)
ON CONFLICT (run_id) DO UPDATE SET
    """ + ",\n    ".join(sets)

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
    # The lifecycle tables keyed by (run_id, key) are upserts: the newest row
    # wins (params: by time; metrics: by step, then time), whatever the order
    # the events arrive in, so a rebuild equals the live state.
    "run_state": _run_state_upsert(),
    "run_params": """
INSERT INTO run_params
SELECT run_id, kv.key,
       CASE WHEN json_type(kv.value) = 'VARCHAR' THEN kv.value->>'$'
            WHEN json_type(kv.value) = 'NULL' THEN NULL
            ELSE CAST(kv.value AS VARCHAR) END,
       kv.value, time, id
FROM (SELECT payload->>'$.run_id' AS run_id, time, id,
             unnest(map_entries(CAST(json_extract(payload, '$.params') AS MAP(VARCHAR, JSON))))
                 AS kv
      FROM {src} WHERE type = 'ParamsLogged')
QUALIFY row_number() OVER (PARTITION BY run_id, kv.key ORDER BY time DESC, id DESC) = 1
ON CONFLICT (run_id, key) DO UPDATE SET
    value = excluded.value, value_json = excluded.value_json, time = excluded.time,
    event_id = excluded.event_id
WHERE (excluded.time, excluded.event_id) > (run_params.time, run_params.event_id)""",
    "run_metrics": "INSERT INTO run_metrics " + _METRIC_POINTS,
    "run_latest_metrics": """
INSERT INTO run_latest_metrics
SELECT run_id, key, m.value, m.step, m.time, m.event_id
FROM (SELECT run_id, key,
             max({'step': step, 'time': time, 'event_id': event_id, 'value': value}) AS m
      FROM (""" + _METRIC_POINTS + """)
      GROUP BY run_id, key)
ON CONFLICT (run_id, key) DO UPDATE SET
    value = excluded.value, step = excluded.step, time = excluded.time,
    event_id = excluded.event_id
WHERE (excluded.step, excluded.time, excluded.event_id)
    > (run_latest_metrics.step, run_latest_metrics.time, run_latest_metrics.event_id)""",
    "run_datasets": """
INSERT INTO run_datasets
SELECT r.run_id, r.dataset, r.digest, coalesce(r.context, 'training'), time, id
FROM (SELECT id, time, json_transform(payload, '{"run_id": "VARCHAR", "dataset": "VARCHAR",
          "digest": "VARCHAR", "context": "VARCHAR"}') AS r
      FROM {src} WHERE type = 'RunDatasetUsed')""",
    "run_artifacts": """
INSERT INTO run_artifacts
SELECT r.run_id, r.path, r.uri, r.digest, r.size, time, id
FROM (SELECT id, time, json_transform(payload, '{"run_id": "VARCHAR", "path": "VARCHAR",
          "uri": "VARCHAR", "digest": "VARCHAR", "size": "BIGINT"}') AS r
      FROM {src} WHERE type = 'ArtifactLogged')""",
    "dataset_versions": """
INSERT INTO dataset_versions
SELECT r.name, r.digest, r.num_rows, r.uri, coalesce(r.parents, []), r.columns, r.profile,
       r.description, time, producer, id
FROM (SELECT id, time, producer, json_transform(payload, '{"name": "VARCHAR",
          "digest": "VARCHAR", "num_rows": "BIGINT", "uri": "VARCHAR", "parents": ["VARCHAR"],
          "columns": "JSON", "profile": "JSON", "description": "VARCHAR"}') AS r
      FROM {src} WHERE type = 'DatasetVersionCreated')""",
    "model_versions": """
INSERT INTO model_versions
SELECT r.model, r.model_version, r.run_id, r.flavor, r.artifact_uri, r.artifact_digest,
       r.signature, r.description, r.online, r.library_versions, r.command_id, time,
       producer, id
FROM (SELECT id, time, producer, json_transform(payload, '{"model": "VARCHAR",
          "model_version": "INTEGER", "run_id": "VARCHAR", "flavor": "VARCHAR",
          "artifact_uri": "VARCHAR", "artifact_digest": "VARCHAR", "signature": "JSON",
          "description": "VARCHAR", "online": "BOOLEAN", "library_versions": "JSON",
          "command_id": "VARCHAR"}') AS r
      FROM {src} WHERE type = 'ModelVersionRegistered')""",
    "alias_history": """
INSERT INTO alias_history
SELECT time, r.model, r.alias, CASE type WHEN 'AliasSet' THEN 'set' ELSE 'removed' END,
       CASE WHEN type = 'AliasSet' THEN r.model_version END, r.previous_version, r.actor,
       r.reason, r.command_id, producer, id
FROM (SELECT id, type, time, producer, json_transform(payload, '{"model": "VARCHAR",
          "alias": "VARCHAR", "model_version": "INTEGER", "previous_version": "INTEGER",
          "actor": "VARCHAR", "reason": "VARCHAR", "command_id": "VARCHAR"}') AS r
      FROM {src} WHERE type IN ('AliasSet', 'AliasRemoved'))
ORDER BY time, id""",
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
SELECT name, row_number() OVER (PARTITION BY name ORDER BY time, event_id) AS version,
       digest, num_rows, uri, parents, columns, profile, description, time, producer, event_id
FROM (SELECT * FROM dataset_versions
      -- re-logging the same content (name, digest) is a no-op: its first event counts
      QUALIFY row_number() OVER (PARTITION BY name, digest ORDER BY time, event_id) = 1)""",
    "runs": """
SELECT run_id, experiment, name, status, started, ended, code_commit, code_branch, code_dirty,
       parent_run_id, tags, error, producer, code, traceback
FROM run_state""",
    "aliases": """
SELECT model, alias, model_version, time AS since, actor, reason, event_id
FROM alias_history
QUALIFY row_number() OVER (PARTITION BY model, alias ORDER BY time DESC, event_id DESC) = 1
    AND action = 'set'""",
    "lineage_edges": """
WITH parent_refs AS (
    SELECT name || '@' || left(digest, 12) AS child, time, ref,
           CASE WHEN contains(ref, '@') THEN split_part(ref, '@', 1) ELSE ref END AS pname,
           CASE WHEN contains(ref, '@') THEN lower(split_part(ref, '@', 2)) END AS pref
    FROM (SELECT name, digest, time, unnest(parents) AS ref FROM datasets)
), parent_edges AS (
    -- "name@digest-prefix", "name@N" / "name@vN", or a bare name (its latest version then)
    SELECT coalesce(p.name || '@' || left(p.digest, 12), c.ref) AS src, c.child, c.time
    FROM parent_refs c LEFT JOIN datasets p ON p.name = c.pname AND CASE
        WHEN c.pref IS NULL THEN p.time <= c.time
        WHEN regexp_full_match(c.pref, 'v?[0-9]{1,6}')
            THEN p.version = CAST(ltrim(c.pref, 'v') AS BIGINT)
        ELSE starts_with(p.digest, c.pref) END
    QUALIFY row_number() OVER (PARTITION BY c.child, c.ref ORDER BY p.version DESC) = 1
), alias_periods AS (
    SELECT *, lead(time) OVER (PARTITION BY model, alias ORDER BY time, event_id) AS until
    FROM alias_history
)
SELECT 'dataset' AS src_kind, src AS src_id, 'dataset' AS dst_kind, child AS dst_id,
       'derived' AS relation, time, CAST(NULL AS TIMESTAMPTZ) AS until, CAST(NULL AS BIGINT) AS n
FROM parent_edges
UNION ALL
SELECT 'dataset', dataset || '@' || left(digest, 12), 'run', run_id, 'used:' || context, time,
       NULL, NULL
FROM run_datasets
UNION ALL
SELECT 'git', 'git:' || code_commit, 'run', run_id, 'code', started, NULL, NULL
FROM run_state WHERE code_commit IS NOT NULL
UNION ALL
SELECT 'run', run_id, 'model', model || '@v' || model_version, 'produced', time, NULL, NULL
FROM model_versions WHERE run_id IS NOT NULL
UNION ALL
SELECT 'model', model || '@v' || model_version, 'alias', model || '@' || alias, 'aliased',
       time, until, NULL
FROM alias_periods WHERE action = 'set'
UNION ALL
SELECT 'model', model || '@v' || model_version, 'predictions',
       model || '@v' || model_version || '/predictions', 'served', min(time), max(time),
       count(*)
FROM predictions WHERE model_version IS NOT NULL GROUP BY model, model_version""",
}
"""Views, in creation order (later views may use earlier ones)."""


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table and view that does not exist yet (idempotent).

    A new file gets ``schema_info`` at :data:`SCHEMA_VERSION`; an existing file
    keeps its recorded version (compare with :func:`stored_schema_version`).

    Examples
    --------
    >>> import duckdb
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
    """Drop the derived tables and the views (never the ledgers).

    An object is dropped as what it is in the file, so a view of an older
    schema version that became a table (or the reverse) goes too.
    """
    for name in [*reversed(list(VIEWS)), *DERIVED_TABLES]:
        kinds = con.execute(
            "SELECT 'VIEW' FROM duckdb_views() WHERE view_name = $1 AND NOT internal "
            "AND database_name = current_database() AND schema_name = current_schema() "
            "UNION ALL SELECT 'TABLE' FROM duckdb_tables() WHERE table_name = $1 "
            "AND database_name = current_database() AND schema_name = current_schema()",
            [name],
        ).fetchall()
        for (kind,) in kinds:
            con.execute(f"DROP {kind} IF EXISTS {name}")


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
    >>> import duckdb
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
    >>> import duckdb
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
