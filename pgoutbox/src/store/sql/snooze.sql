-- Put a running operation back to `pending` after $5 ms without using up
-- an attempt: `attempt` keeps its value (numbers are never reused, so the
-- fence stays exact) and `snoozes` counts the attempt back (migration 2);
-- fenced like a success.
WITH done AS (
    UPDATE {schema}.operations
    SET status = 'pending', run_at = now() + $5 * interval '1 millisecond',
        snoozes = snoozes + 1, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE id = $1 AND status = 'running' AND lease_owner = $2 AND attempt = $3
    RETURNING id
), attempt AS (
    UPDATE {schema}.attempts
    SET outcome = 'snoozed', error = $6, finished_at = now()
    WHERE id = $4 AND outcome IS NULL AND EXISTS (SELECT 1 FROM done)
    RETURNING id
)
SELECT count(*) FROM done
