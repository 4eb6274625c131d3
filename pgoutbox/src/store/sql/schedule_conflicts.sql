-- Schedules that two live workers declare differently: a live worker whose
-- declaration is not the one in force while another live worker declares
-- the one in force. One row per dissenting worker, with what it declares
-- and what is in force. Live: not stopped, a heartbeat younger than the
-- worker's own lease ($1 ms for one that recorded none).
WITH live AS (
    SELECT w.id, w.host, w.pid, w.started_at
    FROM {schema}.workers w
    WHERE w.stopped_at IS NULL
      AND w.heartbeat_at > now() - coalesce(w.lease_ms, $1) * interval '1 millisecond'
)
SELECT s.name, s.operation AS in_force_operation, s.cron AS in_force_cron,
       s.time_zone AS in_force_time_zone, s.missed AS in_force_missed,
       d.worker_id, l.host, l.pid, d.operation, d.cron, d.time_zone, d.missed
FROM {schema}.schedules s
JOIN {schema}.schedule_declarations d ON d.schedule = s.name
JOIN live l ON l.id = d.worker_id
WHERE d.declaration <> s.declaration
  AND EXISTS (
      SELECT 1 FROM {schema}.schedule_declarations h JOIN live lh ON lh.id = h.worker_id
      WHERE h.schedule = s.name AND h.declaration = s.declaration
  )
ORDER BY s.name, l.started_at, d.worker_id
