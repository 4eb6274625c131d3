-- Ready or retrying operations whose name no live worker handles ($1: how
-- recent a heartbeat must be, in ms).
SELECT o.name, count(*)
FROM {schema}.operations o
WHERE o.status IN ('pending', 'retrying')
  AND NOT EXISTS (
      SELECT 1 FROM {schema}.workers w
      WHERE w.stopped_at IS NULL
        AND w.heartbeat_at > now() - $1 * interval '1 millisecond'
        AND o.name = ANY(w.names)
  )
GROUP BY o.name
ORDER BY o.name
