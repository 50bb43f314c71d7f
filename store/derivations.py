"""What the projection derives from the ``events`` ledger: the derived tables and their SQL.

:data:`DERIVED_TABLES` is the DDL of each table derived from ``events``,
:data:`DERIVED_FROM` the event types each one reads, and :data:`DERIVATIONS` the
``INSERT ... SELECT`` that fills it from a relation shaped like ``events`` --
the same statements live (per batch) and on a rebuild
(:func:`modelog.store.schema.rebuild_projections`), so a rebuild equals the
live state. The ``alerts`` table takes the alert types of
:mod:`modelog.models.alerts`. Imports :mod:`modelog.models` only.

Examples
--------
>>> sorted(DERIVATIONS) == sorted(DERIVED_TABLES) == sorted(DERIVED_FROM)
True
>>> DERIVED_FROM["alerts"][:2]
('DriftDetected', 'DriftResolved')
"""

from __future__ import annotations

import textwrap

from modelog.models.alerts import ALERT_TYPE_NAMES, IMPLIED_SEVERITY
from modelog.models.registry import PRODUCER as REGISTRY_PRODUCER

__all__ = ["DERIVATIONS", "DERIVED_FROM", "DERIVED_TABLES"]

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
    producer VARCHAR,
    -- class -> probability, when the model gave them (PredictionMade v3)
    probabilities JSON
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


DERIVED_FROM: dict[str, tuple[str, ...]] = {
    "predictions": ("PredictionMade",),
    "labels": ("LabelObserved",),
    "alerts": ALERT_TYPE_NAMES,
    "monitor_stats": ("MonitorStatsReported",),
    "run_state": ("RunStarted", "RunFinished", "RunFailed"),
    "run_params": ("ParamsLogged",),
    "run_metrics": ("MetricsLogged",),
    "run_latest_metrics": ("MetricsLogged",),
    "run_datasets": ("RunDatasetUsed",),
    "run_artifacts": ("ArtifactLogged",),
    "dataset_versions": ("DatasetVersionCreated",),
    "model_versions": ("ModelVersionRegistered", "ModelVersionRequested"),
    "alias_history": ("AliasSet", "AliasRemoved", "AliasChangeRequested"),
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

def _implied_severity_case() -> str:
    """The ``WHEN`` branches giving the alert types without a ``severity`` field theirs."""
    return "\n            ".join(f"WHEN type = '{t}' THEN '{s}'"
                                   for t, s in IMPLIED_SEVERITY.items())


def _alert_types_list() -> str:
    """The alert type names as an SQL ``IN`` list body (known names, safe to inline)."""
    return textwrap.fill(", ".join(f"'{t}'" for t in ALERT_TYPE_NAMES), width=88,
                         initial_indent=" " * 15, subsequent_indent=" " * 15).lstrip()


def _verified_answers(sql: str, command_type: str, answer_types: str,
                      repeated: tuple[str, ...]) -> str:
    """Fill the placeholders of a registry derivation (see the comment in :data:`DERIVATIONS`):
    ``{commands}`` the first command of each (model, command_id), ``{new}`` "the answer
    or its command is in ``{src}``", ``{repeats}`` the answer repeats the command's
    ``repeated`` fields, comes from the registry and is the first answer to it."""
    commands = f"""(SELECT id, payload, payload->>'$.model' AS model,
             payload->>'$.command_id' AS command_id
      FROM events WHERE type = {command_type}
      QUALIFY row_number() OVER (PARTITION BY payload->>'$.model', payload->>'$.command_id'
                                 ORDER BY time, id) = 1)"""
    same = "\n  AND ".join(
        f"CAST(a.payload->'$.{f}' AS VARCHAR) IS NOT DISTINCT FROM "
        f"CAST(c.payload->'$.{f}' AS VARCHAR)" for f in repeated)
    repeats = f"""a.producer = '{REGISTRY_PRODUCER}'
  AND {same}
  AND NOT EXISTS (SELECT 1 FROM events o WHERE o.type IN ({answer_types})
                  AND o.aggregate = r.model AND o.payload->>'$.command_id' = r.command_id
                  AND (o.time, o.id) < (a.time, a.id))"""
    new = "(a.id IN (SELECT id FROM {src}) OR c.id IN (SELECT id FROM {src}))"
    return (sql.replace("{commands}", commands).replace("{repeats}", repeats)
            .replace("{new}", new))


DERIVATIONS: dict[str, str] = {
    "predictions": """
INSERT INTO predictions
SELECT id, r.prediction_id, r.model, r.model_version, r.code_version, time, r.inputs, r.output,
       producer, r.probabilities
FROM (SELECT id, time, producer, json_transform(payload, '{"prediction_id": "VARCHAR",
          "model": "VARCHAR", "model_version": "INTEGER", "code_version": "VARCHAR",
          "inputs": "JSON", "output": "JSON", "probabilities": "JSON"}') AS r
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
       CASE {implied_severity}
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
WHERE type IN ({alert_types})"""
    .replace("{implied_severity}", _implied_severity_case())
    .replace("{alert_types}", _alert_types_list()),
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
    # The registry tables take only the registry worker's answers to recorded
    # commands (see modelog.models.registry_fold): an answer counts when the
    # ledger holds a command of its model with its command_id whose fields it
    # repeats, written by the registry, and it is the first answer to that
    # command. The rest of the decision (version numbers, preconditions) is
    # re-checked in Python by modelog.store.registry. An answer projected before
    # its command is derived when the command comes, hence the join of the
    # whole ledger, run only for batches that hold registry events or commands.
    "model_versions": _verified_answers("""
INSERT INTO model_versions
SELECT r.model, r.model_version, r.run_id, r.flavor, r.artifact_uri, r.artifact_digest,
       r.signature, r.description, r.online, r.library_versions, r.command_id, a.time,
       a.producer, a.id
FROM (SELECT id, time, producer, payload, json_transform(payload, '{"model": "VARCHAR",
          "model_version": "INTEGER", "run_id": "VARCHAR", "flavor": "VARCHAR",
          "artifact_uri": "VARCHAR", "artifact_digest": "VARCHAR", "signature": "JSON",
          "description": "VARCHAR", "online": "BOOLEAN", "library_versions": "JSON",
          "command_id": "VARCHAR"}') AS r
      FROM events WHERE type = 'ModelVersionRegistered') a
JOIN {commands} c ON c.model = r.model AND c.command_id = r.command_id
WHERE {new} AND NOT EXISTS (SELECT 1 FROM model_versions v WHERE v.event_id = a.id)
  AND {repeats}""", "'ModelVersionRequested'", "'ModelVersionRegistered'",
        ("run_id", "flavor", "artifact_uri", "artifact_digest", "signature", "description",
         "online", "library_versions")),
    "alias_history": _verified_answers("""
INSERT INTO alias_history
SELECT a.time, r.model, r.alias, CASE a.type WHEN 'AliasSet' THEN 'set' ELSE 'removed' END,
       CASE WHEN a.type = 'AliasSet' THEN r.model_version END, r.previous_version, r.actor,
       r.reason, r.command_id, a.producer, a.id
FROM (SELECT id, type, time, producer, payload, json_transform(payload, '{"model": "VARCHAR",
          "alias": "VARCHAR", "model_version": "INTEGER", "previous_version": "INTEGER",
          "actor": "VARCHAR", "reason": "VARCHAR", "command_id": "VARCHAR"}') AS r
      FROM events WHERE type IN ('AliasSet', 'AliasRemoved')) a
JOIN {commands} c ON c.model = r.model AND c.command_id = r.command_id
WHERE {new} AND NOT EXISTS (SELECT 1 FROM alias_history h WHERE h.event_id = a.id)
  AND {repeats}
  AND CASE a.type WHEN 'AliasSet' THEN c.payload->>'$.model_version' = CAST(r.model_version
      AS VARCHAR) ELSE c.payload->>'$.model_version' IS NULL END
ORDER BY a.time, a.id""", "'AliasChangeRequested'",
        "'AliasSet', 'AliasRemoved', 'AliasChangeRejected'", ("alias", "actor", "reason")),
}
"""``INSERT ... SELECT`` per derived table, from a relation shaped like ``events``."""
