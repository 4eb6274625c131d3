-- Operation $1's place in its workflow (no row: it is not a workflow
-- step): the workflow, the step's state and how many dependencies it still
-- waits for, and each dependency (ids ascending) with its name and state
-- (NULL: purged by retention) and whether the step needs its success.
SELECT w.id, w.name, w.state, o.status, o.waiting_for,
       coalesce(d.ids, '{}') AS dependency_ids,
       coalesce(d.names, '{}') AS dependency_names,
       coalesce(d.statuses, '{}') AS dependency_statuses,
       coalesce(d.required, '{}') AS dependency_required
FROM {schema}.operations o
JOIN {schema}.workflows w ON w.id = o.workflow_id
LEFT JOIN LATERAL (
    SELECT array_agg(e.dependency_id ORDER BY e.dependency_id) AS ids,
           array_agg(p.name ORDER BY e.dependency_id) AS names,
           array_agg(p.status ORDER BY e.dependency_id) AS statuses,
           array_agg(e.required ORDER BY e.dependency_id) AS required
    FROM {schema}.workflow_edges e
    LEFT JOIN {schema}.operations p ON p.id = e.dependency_id
    WHERE e.operation_id = o.id
) d ON true
WHERE o.id = $1
