-- Workflow $1's row, with its per-state step counts (as workflows_list.sql).
SELECT w.id, w.name, w.state, w.root_id, w.steps, w.created_at, w.updated_at, w.finished_at,
       w.failed_at, w.failure,
       (SELECT coalesce(jsonb_object_agg(s.status, s.n), '{}'::jsonb)
        FROM (SELECT o.status, count(*) AS n FROM {schema}.operations o
              WHERE o.workflow_id = w.id GROUP BY o.status) s) AS counts
FROM {schema}.workflows w
WHERE w.id = $1
