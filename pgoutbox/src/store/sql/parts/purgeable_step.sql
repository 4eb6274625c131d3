-- Shared by purge.sql and purge_recorded.sql: a workflow step whose
-- dependents have not run yet is not purged, for they read its result and
-- how it ended; nor a step that declares a compensation while its workflow
-- may still fail or compensate it (not ended), for its compensation is
-- published from it.
NOT EXISTS (
              SELECT 1 FROM {schema}.workflow_edges e
              JOIN {schema}.operations d ON d.id = e.operation_id
              WHERE e.dependency_id = operations.id
                AND d.status IN ('waiting', 'pending', 'running', 'retrying', 'stalled')
          )
          AND NOT EXISTS (
              SELECT 1 FROM {schema}.workflow_compensations c
              JOIN {schema}.workflows w ON w.id = c.workflow_id
              WHERE c.step_id = operations.id
                AND w.state IN ('running', 'stalled', 'compensating')
          )
