-- Delete up to $3 operations in statuses $1 that finished (or, for
-- `stalled`, last changed) more than $2 ms ago. Attempts and operator
-- actions are kept: they follow their own retention. Returns how many
-- operations were deleted.
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
    RETURNING id
{purged_step_edges}
)
SELECT count(*) FROM gone
