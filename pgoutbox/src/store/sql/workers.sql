-- Workers with a heartbeat within the last $2 ms, live first: live when
-- not stopped and with a heartbeat younger than the worker's own lease
-- ($1 ms for a worker that recorded none).
SELECT id, host, pid, version, names, queues, n_workers, started_at, heartbeat_at, stopped_at,
       (stopped_at IS NULL
        AND heartbeat_at > now() - coalesce(lease_ms, $1) * interval '1 millisecond') AS live
FROM {schema}.workers
WHERE heartbeat_at > now() - greatest($2, coalesce(lease_ms, 0)) * interval '1 millisecond'
ORDER BY live DESC, heartbeat_at DESC
