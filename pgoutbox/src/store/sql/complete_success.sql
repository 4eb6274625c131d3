-- Record a success, fenced by the lease owner ($2) and attempt ($3) the
-- worker read, and, for a transactional handler ($5), by the transaction
-- the dispatcher opened for attempt $4 (marked by `Store::begin_attempt`:
-- a handler that ended it through raw SQL leaves no mark); $6 is what the
-- attempt produced (a handler's result, a relay's receipt, or NULL), $7 the
-- hash of the output schema a handler's result was written with. Returns
-- the number of operations changed: 0 means the worker no longer owns the
-- attempt (or the handler ended the transaction) and must not commit.
WITH done AS (
    UPDATE {schema}.operations
    SET status = 'succeeded', lease_owner = NULL, lease_expires_at = NULL,
        last_error = NULL, finished_at = now(), updated_at = now()
    WHERE id = $1 AND status = 'running' AND lease_owner = $2 AND attempt = $3
      AND (NOT $5 OR current_setting('pgoutbox.attempt', true) = $4::text)
    RETURNING id
), attempt AS (
    UPDATE {schema}.attempts
    SET outcome = 'succeeded', finished_at = now(), result = $6, result_schema_hash = $7
    WHERE id = $4 AND outcome IS NULL AND EXISTS (SELECT 1 FROM done)
    RETURNING id
)
SELECT count(*) FROM done
