-- Ready operations (pending or retrying, run-at come) whose name some live
-- worker handles, but in a queue that none of those serves (a worker with
-- no queues serves them all); by queue and name. Live: not stopped, and a
-- heartbeat younger than the worker's own lease ($1 ms for a worker that
-- recorded none).
-- Names no live worker handles are `unhandled_names.sql`'s.
SELECT o.queue, o.name, count(*)
FROM {schema}.operations o
WHERE o.status IN ('pending', 'retrying') AND o.run_at <= now()
  AND EXISTS (
      SELECT 1 FROM {schema}.workers w
      WHERE w.stopped_at IS NULL
        AND w.heartbeat_at > now() - coalesce(w.lease_ms, $1) * interval '1 millisecond'
        AND o.name = ANY(w.names)
  )
  AND NOT EXISTS (
      SELECT 1 FROM {schema}.workers w
      WHERE w.stopped_at IS NULL
        AND w.heartbeat_at > now() - coalesce(w.lease_ms, $1) * interval '1 millisecond'
        AND o.name = ANY(w.names)
        AND (cardinality(w.queues) = 0 OR o.queue = ANY(w.queues))
  )
GROUP BY o.queue, o.name
ORDER BY o.queue, o.name
