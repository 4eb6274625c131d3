-- One step of a bulk replay: a new operation with operation $1's payload,
-- linked to it as its child, only when the original, read under its row
-- lock, still matches the whole filter (status in $6, name $7, queue $8,
-- published within $9 ms, last error containing $10 (any case), in the workflow rooted at $11; NULL: any) and its status is one replay allows
-- ($5). Only an applied replay is recorded ($2 action, $3 actor, $4
-- reason). Returns (status, matches, new id when applied), no row for an
-- id that is gone.
WITH target AS (
    SELECT *,
           status = ANY($6)
             AND ($7::text IS NULL OR name = $7)
             AND ($8::text IS NULL OR queue = $8)
             AND ($9::bigint IS NULL OR created_at >= now() - $9 * interval '1 millisecond')
             AND ($10::text IS NULL OR strpos(lower(last_error), lower($10)) > 0)
             AND ($11::bigint IS NULL OR id = $11 OR root_id = $11)
             AS matches
    FROM {schema}.operations WHERE id = $1 FOR UPDATE
), created AS (
    INSERT INTO {schema}.operations
        (name, payload, schema_hash, priority, queue, max_attempts, idempotent, parent_id, root_id,
         workflow_id)
    SELECT name, payload, schema_hash, priority, queue, max_attempts, idempotent, id, coalesce(root_id, id),
           workflow_id
    FROM target
    WHERE matches AND status = ANY($5)
    RETURNING id
{replay_in_workflow}
), recorded AS (
    INSERT INTO {schema}.operator_actions
        (operation_id, action, outcome, actor, reason, from_status, to_status, new_operation_id)
    SELECT t.id, $2, 'applied', $3, $4, t.status, t.status, c.id
    FROM target t CROSS JOIN created c
    RETURNING id
)
SELECT t.status, t.matches, (SELECT id FROM created) AS new_id FROM target t
