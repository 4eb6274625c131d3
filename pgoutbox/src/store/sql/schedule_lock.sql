-- Schedule $1 under its row lock, as worker $2 sees it: the declaration in
-- force, the cursor (`next_tick`, the first tick not yet handled), the
-- pause, the last tick decided and the last pause's window (migration 8),
-- the database's clock; since when live workers declaring the
-- declaration in force have run (`covered_since`: a tick from then on is
-- not missed; worker $2 counts as live whatever its heartbeat says, since
-- it is the one asking, when it declares it); and whether a live worker
-- other than $2 declares it (`held`). Live: not stopped, a heartbeat
-- younger than the worker's own lease ($3 ms for one that recorded none).
SELECT s.name, s.operation, s.cron, s.time_zone, s.missed, s.declaration, s.next_tick,
       s.last_tick, s.last_decided, s.held_from, s.held_until, s.paused, now() AS now,
       (SELECT min(w.started_at)
        FROM {schema}.schedule_declarations d
        JOIN {schema}.workers w ON w.id = d.worker_id
        WHERE d.schedule = s.name AND d.declaration = s.declaration
          AND (w.id = $2
               OR (w.stopped_at IS NULL
                   AND w.heartbeat_at > now() - coalesce(w.lease_ms, $3) * interval '1 millisecond'))
       ) AS covered_since,
       EXISTS (
           SELECT 1
           FROM {schema}.schedule_declarations d
           JOIN {schema}.workers w ON w.id = d.worker_id
           WHERE d.schedule = s.name AND d.declaration = s.declaration AND w.id <> $2
             AND w.stopped_at IS NULL
             AND w.heartbeat_at > now() - coalesce(w.lease_ms, $3) * interval '1 millisecond'
       ) AS held
FROM {schema}.schedules s
WHERE s.name = $1
FOR UPDATE OF s
