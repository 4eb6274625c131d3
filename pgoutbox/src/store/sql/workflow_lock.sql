-- Workflow $1's state, failure and compensate flag, its row locked: an
-- operator's action on it serializes with the transactions that settle it.
SELECT state, failure, failed_at IS NOT NULL AS failed
FROM {schema}.workflows
WHERE id = $1
FOR UPDATE
