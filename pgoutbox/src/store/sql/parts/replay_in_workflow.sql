), step_edges AS (
    -- Shared by operator_replay.sql and bulk_replay.sql, after their
    -- `created` (the new operation) and `target` (the original, $1).
    -- A workflow step's replay is a step of its workflow, after the same
    -- dependencies (they have ended: it is ready now, and reads their
    -- results); the workflow runs again (or compensates, once failed)
    -- unless it is stalled.
    INSERT INTO {schema}.workflow_edges (workflow_id, operation_id, dependency_id, required, counted)
    SELECT e.workflow_id, c.id, e.dependency_id, e.required, false
    FROM {schema}.workflow_edges e CROSS JOIN created c
    WHERE e.operation_id = $1
), step_workflow AS (
    UPDATE {schema}.workflows w
    SET steps = w.steps + 1, updated_at = now(),
        -- A step is open again: `workflow_settle`'s rule (migration 11).
        state = CASE WHEN w.state = 'stalled' THEN 'stalled'
                     WHEN w.failed_at IS NOT NULL THEN 'compensating'
                     ELSE 'running' END,
        finished_at = NULL
    FROM target t CROSS JOIN created c
    WHERE w.id = t.workflow_id