-- The first of operations $2 that is not a step of workflow $1 (or no
-- longer stored): a step added at run time may wait only for steps of its
-- own workflow.
SELECT d.id
FROM unnest($2::bigint[]) AS d(id)
WHERE NOT EXISTS (SELECT 1 FROM {schema}.operations o WHERE o.id = d.id AND o.workflow_id = $1)
ORDER BY d.id
LIMIT 1
