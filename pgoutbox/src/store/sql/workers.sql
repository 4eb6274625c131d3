-- Workers with a heartbeat within the last $2 ms, live first: live when
-- not stopped and with a heartbeat within the last $1 ms.
SELECT id, host, pid, version, names, n_workers, started_at, heartbeat_at, stopped_at,
       (stopped_at IS NULL AND heartbeat_at > now() - $1 * interval '1 millisecond') AS live
FROM {schema}.workers
WHERE heartbeat_at > now() - $2 * interval '1 millisecond'
ORDER BY live DESC, heartbeat_at DESC
