workflow_lock AS (
    -- Shared by operator_transition.sql and bulk_transition.sql: the row
    -- of operation $1's workflow, if it is a step, locked before the
    -- step's own (the target's condition reads it first), as every change
    -- that publishes or releases a compensation takes them (migration 11).
    SELECT w.id FROM {schema}.workflows w
    WHERE w.id = (SELECT o.workflow_id FROM {schema}.operations o WHERE o.id = $1)
    FOR UPDATE
)