-- What a resolve as succeeded of operation $1 must know: its name and
-- status, whether it is a workflow step with dependents (or a declared
-- compensation) that read its
-- result, and its output's latest schema (as met by a worker at start-up).
SELECT o.name, o.status,
       EXISTS (SELECT 1 FROM {schema}.workflow_edges e WHERE e.dependency_id = o.id)
           OR EXISTS (SELECT 1 FROM {schema}.workflow_compensations c WHERE c.step_id = o.id)
           AS has_dependents,
       (SELECT t.json_schema FROM {schema}.operation_outputs t WHERE t.name = o.name
        ORDER BY t.last_seen_at DESC, t.first_seen_at DESC LIMIT 1) AS output_schema,
       (SELECT t.output_hash FROM {schema}.operation_outputs t WHERE t.name = o.name
        ORDER BY t.last_seen_at DESC, t.first_seen_at DESC LIMIT 1) AS output_hash
FROM {schema}.operations o
WHERE o.id = $1
