-- The operators' actions on schedule $1 (pause, resume), applied or
-- refused, in order.
SELECT schedule, action, outcome, actor, reason, from_status, to_status, created_at
FROM {schema}.operator_actions
WHERE schedule = $1
ORDER BY id
