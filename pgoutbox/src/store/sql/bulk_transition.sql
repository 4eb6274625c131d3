-- One step of a bulk retry, cancel or resolve: operation $1 changes to $6
-- only when, read under its row lock, it still matches the whole filter
-- (status in $7, name $8, queue $9, published within $10 ms, last error containing $11 (any case), in the workflow rooted at $12; NULL: any)
-- and its status is one the action allows ($5). Only an applied change is
-- recorded (with $2 action, $3 actor, $4 reason), in the same statement: a
-- row that no longer matches, or whose state the action does not allow, is
-- left alone and counted by the caller. Returns (status, matches, applied),
-- no row for an id that is gone.
WITH {step_workflow_lock}, target AS (
    SELECT id, status,
           status = ANY($7)
             AND ($8::text IS NULL OR name = $8)
             AND ($9::text IS NULL OR queue = $9)
             AND ($10::bigint IS NULL OR created_at >= now() - $10 * interval '1 millisecond')
             AND ($11::text IS NULL OR strpos(lower(last_error), lower($11)) > 0)
             AND ($12::bigint IS NULL OR id = $12 OR root_id = $12)
             AS matches
    FROM {schema}.operations WHERE id = $1 AND (SELECT count(*) FROM workflow_lock) >= 0
    FOR UPDATE
), changed AS (
    UPDATE {schema}.operations o
    SET status = $6,
        run_at = CASE WHEN $6 = 'pending' THEN now() ELSE o.run_at END,
        finished_at = CASE WHEN $6 IN ('succeeded', 'dead', 'cancelled') THEN now() END,
        lease_owner = NULL, lease_expires_at = NULL,
        updated_at = now()
    FROM target t
    WHERE o.id = t.id AND t.matches AND t.status = ANY($5)
    RETURNING o.id
), recorded AS (
    INSERT INTO {schema}.operator_actions
        (operation_id, action, outcome, actor, reason, from_status, to_status)
    SELECT t.id, $2, 'applied', $3, $4, t.status, $6
    FROM target t
    WHERE EXISTS (SELECT 1 FROM changed)
    RETURNING id
)
SELECT t.status, t.matches, EXISTS (SELECT 1 FROM changed) AS applied FROM target t
