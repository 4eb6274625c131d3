-- Ready operations (pending or retrying, run-at come) whose name no live
-- worker handles. Live: not stopped, and a heartbeat younger than the
-- worker's own lease ($1 ms for a worker that recorded none).
SELECT o.name, count(*)
FROM {schema}.operations o
WHERE o.status IN ('pending', 'retrying') AND o.run_at <= now()
  AND NOT EXISTS (
      SELECT 1 FROM {schema}.workers w
      WHERE w.stopped_at IS NULL
        AND w.heartbeat_at > now() - coalesce(w.lease_ms, $1) * interval '1 millisecond'
        AND o.name = ANY(w.names)
  )
GROUP BY o.name
ORDER BY o.name
