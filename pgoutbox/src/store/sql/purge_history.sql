-- Delete up to $2 attempts (started) and operator actions (made) more
-- than $1 ms ago whose operation is gone. Actions on schedules (no
-- operation) stay.
WITH attempts AS (
    DELETE FROM {schema}.attempts
    WHERE id IN (
        SELECT a.id FROM {schema}.attempts a
        WHERE a.started_at < now() - $1 * interval '1 millisecond'
          AND NOT EXISTS (SELECT 1 FROM {schema}.operations o WHERE o.id = a.operation_id)
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    RETURNING 1
), actions AS (
    DELETE FROM {schema}.operator_actions
    WHERE id IN (
        SELECT x.id FROM {schema}.operator_actions x
        WHERE x.created_at < now() - $1 * interval '1 millisecond'
          AND x.operation_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM {schema}.operations o WHERE o.id = x.operation_id)
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    RETURNING 1
)
SELECT (SELECT count(*) FROM attempts) + (SELECT count(*) FROM actions)
