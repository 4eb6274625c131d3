-- Record a success, fenced by the lease owner ($2) and attempt ($3) the
-- worker read, and, for a transactional handler, by the transaction it
-- opened ($5, `pg_current_xact_id()`; NULL for a plain handler). Returns
-- the number of operations changed: 0 means the worker no longer owns the
-- attempt (or the handler ended the transaction) and must not commit.
WITH done AS (
    UPDATE {schema}.operations
    SET status = 'succeeded', lease_owner = NULL, lease_expires_at = NULL,
        last_error = NULL, finished_at = now(), updated_at = now()
    WHERE id = $1 AND status = 'running' AND lease_owner = $2 AND attempt = $3
      AND ($5::text IS NULL OR pg_current_xact_id()::text = $5)
    RETURNING id
), attempt AS (
    UPDATE {schema}.attempts
    SET outcome = 'succeeded', finished_at = now()
    WHERE id = $4 AND outcome IS NULL AND EXISTS (SELECT 1 FROM done)
    RETURNING id
)
SELECT count(*) FROM done
