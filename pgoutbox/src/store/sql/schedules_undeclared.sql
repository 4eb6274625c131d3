-- Schedules that no live worker declares (retired from the code, or every
-- worker declaring them gone): a schedule re-added later finds its missed
-- ticks from its old cursor, so operators are told (`stats`, the
-- dashboard, the gauge `pgoutbox_schedules_undeclared`) and may remove it.
-- `last_declared_at`: when a worker that declared it was last alive
-- (none once retention purged those workers). Live: not stopped, a
-- heartbeat younger than the worker's own lease ($1 ms for one that
-- recorded none).
SELECT s.name, s.operation, s.cron, s.time_zone, s.missed, s.next_tick, s.last_tick,
       s.paused,
       (SELECT max(coalesce(w.stopped_at, w.heartbeat_at))
        FROM {schema}.schedule_declarations d
        JOIN {schema}.workers w ON w.id = d.worker_id
        WHERE d.schedule = s.name) AS last_declared_at
FROM {schema}.schedules s
WHERE NOT EXISTS (
    SELECT 1
    FROM {schema}.schedule_declarations d
    JOIN {schema}.workers w ON w.id = d.worker_id
    WHERE d.schedule = s.name
      AND w.stopped_at IS NULL
      AND w.heartbeat_at > now() - coalesce(w.lease_ms, $1) * interval '1 millisecond'
)
ORDER BY s.name
