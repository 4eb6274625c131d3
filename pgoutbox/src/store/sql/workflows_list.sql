-- Workflows, newest first, each filter optional: $1 state, $2 name, $3
-- created at least this many ms ago, $4 created within this many ms, $5
-- ids below this one (the next page), $6 at most this many. The per-state
-- step counts are computed here, when read, from the steps' index: the
-- workflow's row is not written by each step (a wide fan-out's completions
-- would queue on its lock).
SELECT w.id, w.name, w.state, w.root_id, w.steps, w.created_at, w.updated_at, w.finished_at,
       w.failed_at, w.failure,
       c.counts
FROM {schema}.workflows w
CROSS JOIN LATERAL (
    SELECT coalesce(jsonb_object_agg(s.status, s.n), '{}'::jsonb) AS counts
    FROM (SELECT o.status, count(*) AS n FROM {schema}.operations o
          WHERE o.workflow_id = w.id GROUP BY o.status) s
) c
WHERE ($1::text IS NULL OR w.state = $1)
  AND ($2::text IS NULL OR w.name = $2)
  AND ($3::bigint IS NULL OR w.created_at <= now() - $3 * interval '1 millisecond')
  AND ($4::bigint IS NULL OR w.created_at >= now() - $4 * interval '1 millisecond')
  AND ($5::bigint IS NULL OR w.id < $5)
ORDER BY w.id DESC
LIMIT $6
