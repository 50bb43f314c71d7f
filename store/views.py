"""The projection's views: the lifecycle (runs, datasets, aliases, lineage) and query-time figures.

:data:`VIEWS` maps each view to its ``SELECT``, in creation order (later views
may use earlier ones): ``dead_letter_count`` and ``prediction_quality`` are
computed at query time over the ledgers and hot tables; ``datasets``, ``runs``,
``aliases`` and ``lineage_edges`` read the small lifecycle tables of
:mod:`modelog.store.derivations` (``lineage_edges`` also the retrain requests in
``alerts`` and the ``RetrainJobEnded`` reports of the ``events`` ledger).
:func:`modelog.store.schema.create_schema` creates them. Pure data (no imports).

Examples
--------
>>> list(VIEWS)
['dead_letter_count', 'prediction_quality', 'datasets', 'runs', 'aliases', 'lineage_edges']
"""

from __future__ import annotations

__all__ = ["VIEWS"]

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
), retrain_requests AS (
    -- RetrainRequested events are alerts; detected_id is the request's trigger_id
    SELECT event_id AS request_id, time, left(message, 120) AS reason,
           detected_id AS trigger_id,
           coalesce(strftime(timezone('UTC', window_start), '%Y-%m-%d %H:%M'), 'start')
           || ' -> ' || coalesce(strftime(timezone('UTC', window_end), '%Y-%m-%d %H:%M'), 'now')
               AS span
    FROM alerts WHERE type = 'RetrainRequested'
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
FROM predictions WHERE model_version IS NOT NULL GROUP BY model, model_version
UNION ALL
-- retraining: the alert that caused a request, the request's job runs (tagged with its id
-- by the retrain runner) and the data window the job recorded as a dataset version
SELECT 'alert', r.trigger_id, 'retrain', r.request_id,
       'triggered' || coalesce(': ' || a.type || coalesce(' ' || a.kind, '')
                               || coalesce(' on ' || a.feature, ''), ''),
       r.time, NULL, NULL
FROM retrain_requests r LEFT JOIN alerts a ON a.event_id = r.trigger_id
WHERE r.trigger_id IS NOT NULL AND r.trigger_id <> ''
UNION ALL
SELECT 'retrain', r.request_id, 'run', s.run_id,
       'requested: ' || coalesce(r.reason, '') || ' (window ' || r.span || ')', r.time, NULL,
       NULL
FROM run_state s JOIN retrain_requests r ON r.request_id = s.tags->>'$.retrain_request'
UNION ALL
SELECT 'retrain', payload->>'$.request_id', 'dataset', payload->>'$.dataset', 'window', time,
       NULL, NULL
FROM events WHERE type = 'RetrainJobEnded' AND payload->>'$.dataset' IS NOT NULL""",
}
"""Views, in creation order (later views may use earlier ones)."""
