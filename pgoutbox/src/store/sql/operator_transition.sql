-- An operator's retry, cancel or resolve of operation $1 (a workflow
-- step's workflow locked first): applied only when
-- its status (read under a row lock, so concurrent operators serialize) is
-- one of $5; recorded in `operator_actions` either way, in the same
-- statement. $2 action, $3 actor, $4 reason, $6 the new status, $7 and $8
-- the result an operator supplied resolving as succeeded and its output
-- schema's hash (else NULL), recorded with an applied action. Returns no
-- row for an unknown id.
WITH {step_workflow_lock}, target AS (
    SELECT id, status FROM {schema}.operations
    WHERE id = $1 AND (SELECT count(*) FROM workflow_lock) >= 0
    FOR UPDATE
), changed AS (
    UPDATE {schema}.operations o
    SET status = $6,
        run_at = CASE WHEN $6 = 'pending' THEN now() ELSE o.run_at END,
        finished_at = CASE WHEN $6 IN ('succeeded', 'dead', 'cancelled') THEN now() END,
        lease_owner = NULL, lease_expires_at = NULL,
        updated_at = now()
    FROM target t
    WHERE o.id = t.id AND t.status = ANY($5)
    RETURNING o.id
), recorded AS (
    INSERT INTO {schema}.operator_actions
        (operation_id, action, outcome, actor, reason, from_status, to_status, result,
         result_schema_hash)
    SELECT t.id, $2,
           CASE WHEN EXISTS (SELECT 1 FROM changed) THEN 'applied' ELSE 'refused' END,
           $3, $4, t.status,
           CASE WHEN EXISTS (SELECT 1 FROM changed) THEN $6 END,
           CASE WHEN EXISTS (SELECT 1 FROM changed) THEN $7::jsonb END,
           CASE WHEN EXISTS (SELECT 1 FROM changed) THEN $8::text END
    FROM target t
    RETURNING id
)
SELECT t.status, EXISTS (SELECT 1 FROM changed) AS applied FROM target t
