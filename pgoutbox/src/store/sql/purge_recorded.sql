-- Delete up to $3 operations in statuses $1 that finished (or, for
-- `stalled`, last changed) more than $2 ms ago, as `purge.sql` does, and
-- record a `purge` action ($4 actor, $5 reason) for each deleted `dead` or
-- `stalled` operation, which only an operator may let go, in the same
-- statement. Returns how many operations were deleted.
WITH gone AS (
    DELETE FROM {schema}.operations
    WHERE id IN (
        SELECT id FROM {schema}.operations
        WHERE status = ANY($1)
          AND coalesce(finished_at, updated_at) < now() - $2 * interval '1 millisecond'
          AND {purgeable_step}
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, status
), recorded AS (
    INSERT INTO {schema}.operator_actions
        (operation_id, action, outcome, actor, reason, from_status, to_status)
    SELECT id, 'purge', 'applied', $4, $5, status, NULL
    FROM gone
    WHERE status IN ('dead', 'stalled')
    RETURNING id
{purged_step_edges}
)
SELECT count(*) FROM gone
