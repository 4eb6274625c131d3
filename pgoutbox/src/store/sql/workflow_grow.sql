-- Grow the workflow of step $1 (whose handler adds steps at run time) by
-- $2 steps: its id, its root, whether it has failed, and the new steps'
-- ids from the operations' own sequence, ascending (the order of `add`).
-- No row when $1 is not a workflow step.
WITH grown AS (
    UPDATE {schema}.workflows w
    SET steps = w.steps + $2, updated_at = now()
    FROM {schema}.operations o
    WHERE o.id = $1 AND w.id = o.workflow_id
    RETURNING w.id, w.root_id, w.failed_at IS NOT NULL AS failed
), ids AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('{schema}.operations', 'id')) AS id
    FROM generate_series(1, $2)
    WHERE EXISTS (SELECT 1 FROM grown)
)
SELECT g.id, g.root_id, g.failed,
       coalesce((SELECT array_agg(id ORDER BY id) FROM ids), '{}') AS ids
FROM grown g
