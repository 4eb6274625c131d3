-- The workflow published under idempotency key $1, and the ids of the
-- steps it was published with, in the order of `Workflow::add`: the first
-- `published_steps` of its operations by id (ids were drawn in that order
-- when it was opened; steps added at run time and compensations come
-- later). A step purged since is missing.
SELECT w.id,
       array(SELECT o.id FROM {schema}.operations o
             WHERE o.workflow_id = w.id
             ORDER BY o.id LIMIT coalesce(w.published_steps, w.steps)) AS ids
FROM {schema}.workflows w
WHERE w.idempotency_key = $1
