-- Record an attempt that did not succeed, fenced like a success. $5 is the
-- attempt's outcome, $6 the operation's next status ('retrying', 'dead' or
-- 'stalled'), $7 the retry delay in ms, $8 the error, $9 its chain.
WITH done AS (
    UPDATE {schema}.operations
    SET status = $6,
        run_at = CASE WHEN $6 = 'retrying' THEN now() + $7 * interval '1 millisecond' ELSE run_at END,
        lease_owner = NULL, lease_expires_at = NULL,
        last_error = $8,
        finished_at = CASE WHEN $6 = 'dead' THEN now() END,
        updated_at = now()
    WHERE id = $1 AND status = 'running' AND lease_owner = $2 AND attempt = $3
    RETURNING id
), attempt AS (
    UPDATE {schema}.attempts
    SET outcome = $5, error = $8, error_chain = $9, finished_at = now()
    WHERE id = $4 AND outcome IS NULL AND EXISTS (SELECT 1 FROM done)
    RETURNING id
)
SELECT count(*) FROM done
