), edges AS (
    -- Shared by purge.sql and purge_recorded.sql, after their `gone`: the
    -- edges of a purged step into its dependencies serve nothing more, nor
    -- the compensation it declared (its workflow has ended).
    DELETE FROM {schema}.workflow_edges WHERE operation_id IN (SELECT id FROM gone)
), answers AS (
    DELETE FROM {schema}.workflow_compensations WHERE step_id IN (SELECT id FROM gone)