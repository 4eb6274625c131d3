-- Shared by purge.sql and purge_recorded.sql: a workflow step whose
-- dependents have not run yet is not purged, for they read its result and
-- how it ended.
NOT EXISTS (
              SELECT 1 FROM {schema}.workflow_edges e
              JOIN {schema}.operations d ON d.id = e.operation_id
              WHERE e.dependency_id = operations.id
                AND d.status IN ('waiting', 'pending', 'running', 'retrying', 'stalled')
          )