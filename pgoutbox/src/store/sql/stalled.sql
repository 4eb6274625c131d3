-- The in-doubt queue: up to $2 stalled operations with ids above $1,
-- oldest first, each with its last attempt (number, worker, start, end,
-- outcome, error) and that worker's host, pid and last heartbeat when it
-- is still known. Read through `operations_stalled_idx` (migration 4).
SELECT o.id, o.name, o.queue, o.attempt, o.idempotent, o.created_at, o.updated_at,
       o.last_error,
       a.number AS attempt_number, a.worker_id, a.started_at, a.finished_at,
       a.outcome, a.error,
       w.host, w.pid, w.heartbeat_at, w.stopped_at
FROM {schema}.operations o
LEFT JOIN LATERAL (
    SELECT number, worker_id, started_at, finished_at, outcome, error
    FROM {schema}.attempts
    WHERE operation_id = o.id
    ORDER BY id DESC
    LIMIT 1
) a ON true
LEFT JOIN {schema}.workers w ON w.id = a.worker_id
WHERE o.status = 'stalled' AND o.id > $1
ORDER BY o.id
LIMIT $2
