-- Workflow $1's steps in the order they were added (ids ascending): state,
-- attempts, the start of the first attempt, the result (`step_result`,
-- migration 10), the last error, and the steps each
-- waits for, with whether each is required; for a compensation, the step
-- it answers.
SELECT o.id, o.name, o.status, o.attempt, o.waiting_for, o.last_error, o.created_at,
       o.finished_at, o.compensates,
       {schema}.step_result(o.id) AS result,
       coalesce((SELECT array_agg(e.dependency_id ORDER BY e.dependency_id)
                 FROM {schema}.workflow_edges e WHERE e.operation_id = o.id), '{}') AS depends_on,
       coalesce((SELECT array_agg(e.required ORDER BY e.dependency_id)
                 FROM {schema}.workflow_edges e WHERE e.operation_id = o.id), '{}') AS required
FROM {schema}.operations o
WHERE o.workflow_id = $1
ORDER BY o.id
