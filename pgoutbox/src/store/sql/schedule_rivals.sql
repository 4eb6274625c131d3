-- Live workers other than $2 that declare schedule $1 otherwise than
-- declaration $3, oldest first. Live: not stopped, a heartbeat younger
-- than the worker's own lease ($4 ms for one that recorded none).
SELECT d.worker_id, w.host, w.pid, d.operation, d.cron, d.time_zone, d.missed
FROM {schema}.schedule_declarations d
JOIN {schema}.workers w ON w.id = d.worker_id
WHERE d.schedule = $1 AND d.worker_id <> $2 AND d.declaration <> $3
  AND w.stopped_at IS NULL
  AND w.heartbeat_at > now() - coalesce(w.lease_ms, $4) * interval '1 millisecond'
ORDER BY w.started_at, d.worker_id
