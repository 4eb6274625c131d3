-- The operators' actions on operation $1, applied or refused, in order.
SELECT operation_id, action, outcome, actor, reason, from_status, to_status,
       new_operation_id, created_at
FROM {schema}.operator_actions
WHERE operation_id = $1
ORDER BY id
