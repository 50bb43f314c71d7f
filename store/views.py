"""The projection's views: the lifecycle (runs, datasets, aliases, lineage) and query-time figures.

:data:`VIEWS` maps each view to its ``SELECT``, in creation order (later views
may use earlier ones): ``dead_letter_count`` and ``prediction_quality`` are
computed at query time over the ledgers and hot tables; ``datasets``, ``runs``,
``aliases`` and ``lineage_edges`` read the small lifecycle tables of
:mod:`modelog.store.derivations` (``lineage_edges`` also the retrain requests in
``alerts`` and the ``RetrainJobEnded`` reports of the ``events`` ledger);
``performance_estimates`` and ``segment_metrics`` read the quality monitor's
events (``PerformanceEstimated``/``PerformanceRealized``, ``SegmentMetricsReported``).
``prediction_anomalies`` has a row per prediction scored against its reference
(``PredictionsScored``).
:func:`modelog.store.schema.create_schema` creates them. Pure data (no imports).

Examples
--------
>>> list(VIEWS)[:6]
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
    # issue 13: estimated accuracy per window (before labels) beside the realized one
    "performance_estimates": """
WITH est AS (
    SELECT id AS event_id, time, payload->>'$.model' AS model,
           CAST(payload->>'$.model_version' AS INTEGER) AS model_version,
           CAST(payload->>'$.index' AS INTEGER) AS window_index,
           CAST(payload->>'$.window.start' AS TIMESTAMPTZ) AS window_start,
           CAST(payload->>'$.window.end' AS TIMESTAMPTZ) AS window_end,
           CAST(payload->>'$.window.size' AS INTEGER) AS window_size,
           CAST(payload->>'$.accuracy' AS DOUBLE) AS estimated_accuracy,
           CAST(payload->>'$.f1' AS DOUBLE) AS estimated_f1,
           CAST(payload->>'$.calibrated' AS BOOLEAN) AS calibrated,
           CAST(payload->>'$.reference_accuracy' AS DOUBLE) AS reference_accuracy,
           CAST(payload->>'$.threshold' AS DOUBLE) AS threshold
    FROM events WHERE type = 'PerformanceEstimated'
), realized AS (
    SELECT payload->>'$.model' AS model,
           CAST(payload->>'$.model_version' AS INTEGER) AS model_version,
           CAST(payload->>'$.index' AS INTEGER) AS window_index,
           CAST(payload->>'$.window.start' AS TIMESTAMPTZ) AS window_start,
           CAST(payload->>'$.realized_accuracy' AS DOUBLE) AS realized_accuracy,
           CAST(payload->>'$.realized_f1' AS DOUBLE) AS realized_f1,
           CAST(payload->>'$.labelled' AS INTEGER) AS labelled, time AS realized_time
    FROM events WHERE type = 'PerformanceRealized'
)
SELECT e.*, r.realized_accuracy, r.realized_f1, r.labelled, r.realized_time,
       r.realized_accuracy - e.estimated_accuracy AS gap,
       coalesce(e.estimated_accuracy < e.threshold, false) AS below_threshold
FROM est e LEFT JOIN realized r
    ON r.model = e.model AND r.model_version IS NOT DISTINCT FROM e.model_version
    AND r.window_index = e.window_index AND r.window_start IS NOT DISTINCT FROM e.window_start""",
    # issue 13: per-segment figures of every SegmentMetricsReported; latest: the newest report
    "segment_metrics": """
SELECT event_id, time, model, model_version, seg.feature, seg.value, seg.predictions,
       seg.labelled, seg.error, seg.accuracy, seg.share, seg.reference_share, seg.psi,
       CAST(json_extract(mix, '$."' || replace(seg.feature, '"', '') || '"') AS DOUBLE)
           AS feature_psi,
       list_contains(degraded, seg.feature || '=' || seg.value) AS degraded,
       rank() OVER (PARTITION BY model, model_version ORDER BY time DESC, event_id DESC) = 1
           AS latest
FROM (SELECT id AS event_id, time, payload->>'$.model' AS model,
             CAST(payload->>'$.model_version' AS INTEGER) AS model_version,
             coalesce(CAST(json_extract(payload, '$.degraded') AS VARCHAR[]), []) AS degraded,
             json_extract(payload, '$.mix_psi') AS mix,
             unnest(json_transform(json_extract(payload, '$.segments'),
                 '[{"feature": "VARCHAR", "value": "VARCHAR", "predictions": "BIGINT",
                    "labelled": "BIGINT", "error": "DOUBLE", "accuracy": "DOUBLE",
                    "share": "DOUBLE", "reference_share": "DOUBLE", "psi": "DOUBLE"}]'))
                 AS seg
      FROM events WHERE type = 'SegmentMetricsReported')""",
    # issue 12: challengers compared with production (one row per ComparisonReported) and
    # the promotion policy's decisions with the registry's answer to their command
    "comparisons": """
SELECT time, aggregate AS model,
       CAST(payload->>'$.baseline_version' AS BIGINT) AS baseline_version,
       CAST(payload->>'$.challenger_version' AS BIGINT) AS challenger_version,
       payload->>'$.baseline_alias' AS baseline_alias,
       payload->>'$.challenger_alias' AS challenger_alias, payload->>'$.metric' AS metric,
       payload->>'$.test' AS test, CAST(payload->>'$.pairs' AS BIGINT) AS pairs,
       CAST(payload->>'$.baseline_value' AS DOUBLE) AS baseline_value,
       CAST(payload->>'$.challenger_value' AS DOUBLE) AS challenger_value,
       CAST(payload->>'$.effect' AS DOUBLE) AS effect,
       CAST(payload->>'$.ci_low' AS DOUBLE) AS ci_low,
       CAST(payload->>'$.ci_high' AS DOUBLE) AS ci_high,
       CAST(payload->>'$.confidence' AS DOUBLE) AS confidence,
       CAST(payload->>'$.p_value' AS DOUBLE) AS p_value, id AS event_id
FROM events WHERE type = 'ComparisonReported'""",
    "rollout_decisions": """
SELECT d.time, d.aggregate AS model, d.payload->>'$.action' AS action,
       CAST(d.payload->>'$.from_version' AS BIGINT) AS from_version,
       CAST(d.payload->>'$.to_version' AS BIGINT) AS to_version,
       d.payload->>'$.reason' AS reason, d.payload->>'$.evidence_id' AS evidence_id,
       d.payload->>'$.command_id' AS command_id,
       CASE WHEN s.event_id IS NOT NULL THEN 'applied'
            WHEN r.id IS NOT NULL THEN 'rejected: ' || (r.payload->>'$.reason')
            ELSE 'pending' END AS outcome,
       d.id AS event_id
FROM events d
LEFT JOIN alias_history s ON s.command_id = d.payload->>'$.command_id' AND s.action = 'set'
LEFT JOIN events r ON r.type = 'AliasChangeRejected'
    AND r.payload->>'$.command_id' = d.payload->>'$.command_id'
WHERE d.type = 'RolloutDecided'""",
    # issue 13: one row per scored prediction (PredictionsScored batches of the worker):
    # its anomaly score against the reference, whether a gross outlier, offending features
    "prediction_anomalies": """
SELECT model, model_version, prediction_id, score, outlier, features, reference,
       time AS scored_at, event_id
FROM (SELECT s.model AS model, s.model_version AS model_version, s.reference AS reference,
             unnest(s.prediction_ids) AS prediction_id, unnest(s.scores) AS score,
             unnest(s.outliers) AS outlier, unnest(s.features) AS features, time,
             id AS event_id
      FROM (SELECT id, time, json_transform(payload, '{"model": "VARCHAR",
                "model_version": "INTEGER", "reference": "VARCHAR",
                "prediction_ids": ["VARCHAR"], "scores": ["DOUBLE"], "outliers": ["BOOLEAN"],
                "features": [["VARCHAR"]]}') AS s
            FROM events WHERE type = 'PredictionsScored'))
QUALIFY row_number() OVER (PARTITION BY model, prediction_id ORDER BY time, event_id) = 1""",
}
"""Views, in creation order (later views may use earlier ones)."""
