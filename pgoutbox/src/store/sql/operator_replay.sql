-- An operator's replay of operation $1: a new operation with the same
-- payload, linked to the original as its child, when the original's status
-- is one of $5; recorded either way. $3 actor, $4 reason.
WITH target AS (
    SELECT * FROM {schema}.operations WHERE id = $1 FOR UPDATE
), created AS (
    INSERT INTO {schema}.operations
        (name, payload, schema_hash, priority, queue, max_attempts, idempotent, parent_id, root_id,
         workflow_id)
    SELECT name, payload, schema_hash, priority, queue, max_attempts, idempotent, id, coalesce(root_id, id),
           workflow_id
    FROM target
    WHERE status = ANY($5)
    RETURNING id
{replay_in_workflow}
), recorded AS (
    INSERT INTO {schema}.operator_actions
        (operation_id, action, outcome, actor, reason, from_status, to_status, new_operation_id)
    SELECT t.id, $2,
           CASE WHEN EXISTS (SELECT 1 FROM created) THEN 'applied' ELSE 'refused' END,
           $3, $4, t.status, t.status, (SELECT id FROM created)
    FROM target t
    RETURNING id
)
SELECT t.status, (SELECT id FROM created) AS new_id FROM target t
