-- Turn up to $1 expired leases into `lost` attempts. The outcome is
-- unknown, so only an idempotent operation with attempts left is retried;
-- the others (an idempotent one out of attempts too) wait, `stalled`, for
-- an operator. Snoozed attempts do not count (`attempt - snoozes`).
WITH expired AS (
    SELECT id FROM {schema}.operations
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), rescued AS (
    UPDATE {schema}.operations o
    SET status = CASE
            WHEN o.idempotent AND o.attempt - o.snoozes < o.max_attempts THEN 'retrying'
            ELSE 'stalled'
        END,
        run_at = now(), lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
        last_error = 'lease expired: the worker running attempt ' || o.attempt
                     || ' stopped renewing it; its outcome is unknown',
        finished_at = NULL
    FROM expired e
    WHERE o.id = e.id
    RETURNING o.id, o.attempt, o.status, o.last_error
), lost AS (
    UPDATE {schema}.attempts a
    SET outcome = 'lost', finished_at = now(), error = r.last_error
    FROM rescued r
    WHERE a.operation_id = r.id AND a.number = r.attempt AND a.outcome IS NULL
    RETURNING a.id
)
SELECT id, status FROM rescued
