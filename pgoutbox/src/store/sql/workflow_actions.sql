-- The operators' actions on workflow $1 as a whole, applied or refused, in
-- order (the step actions they made are in each step's trail).
SELECT action, outcome, actor, reason, from_status, to_status, created_at
FROM {schema}.operator_actions
WHERE workflow_id = $1 AND operation_id IS NULL
ORDER BY id
