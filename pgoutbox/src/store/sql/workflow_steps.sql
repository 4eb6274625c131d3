-- Workflow $1's steps in the order they were added (ids ascending): state,
-- attempts, the start of the first attempt, the result (of the succeeded
-- attempt, or supplied by an operator), the last error, and the steps each
-- waits for, with whether each is required.
SELECT o.id, o.name, o.status, o.attempt, o.waiting_for, o.last_error, o.created_at,
       o.finished_at,
       coalesce(
           (SELECT a.result FROM {schema}.attempts a
            WHERE a.operation_id = o.id AND a.outcome = 'succeeded'
            ORDER BY a.id DESC LIMIT 1),
           (SELECT x.result FROM {schema}.operator_actions x
            WHERE x.operation_id = o.id AND x.action = 'resolve' AND x.to_status = 'succeeded'
            ORDER BY x.id DESC LIMIT 1)
       ) AS result,
       coalesce((SELECT array_agg(e.dependency_id ORDER BY e.dependency_id)
                 FROM {schema}.workflow_edges e WHERE e.operation_id = o.id), '{}') AS depends_on,
       coalesce((SELECT array_agg(e.required ORDER BY e.dependency_id)
                 FROM {schema}.workflow_edges e WHERE e.operation_id = o.id), '{}') AS required
FROM {schema}.operations o
WHERE o.workflow_id = $1
ORDER BY o.id
