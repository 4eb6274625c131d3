), edges AS (
    -- Shared by purge.sql and purge_recorded.sql, after their `gone`: the
    -- edges of a purged step into its dependencies serve nothing more.
    DELETE FROM {schema}.workflow_edges WHERE operation_id IN (SELECT id FROM gone)