-- An operator removes schedule $1 (its row locked by `schedule_target`):
-- applied only when no live worker declares it, since that worker would
-- record it again at once; recorded in `operator_actions` either way, in
-- the same statement, as `remove` by actor $2 for reason $3, from
-- `active` or `paused` to `removed` when applied. The trail names the
-- schedule by text, so it outlives the row; the declarations of workers
-- no longer live go with it. Returns whether it was removed and the live
-- workers that declare it. Live: not stopped, a heartbeat younger than
-- the worker's own lease ($4 ms for one that recorded none).
WITH target AS (
    SELECT name, paused, declaration FROM {schema}.schedules WHERE name = $1
), declarers AS (
    SELECT d.worker_id, w.host, w.pid, d.operation, d.cron, d.time_zone, d.missed,
           d.declaration = t.declaration AS in_force, w.started_at
    FROM {schema}.schedule_declarations d
    JOIN {schema}.workers w ON w.id = d.worker_id
    JOIN target t ON t.name = d.schedule
    WHERE w.stopped_at IS NULL
      AND w.heartbeat_at > now() - coalesce(w.lease_ms, $4) * interval '1 millisecond'
), removed AS (
    DELETE FROM {schema}.schedules s
    USING target t
    WHERE s.name = t.name AND NOT EXISTS (SELECT 1 FROM declarers)
    RETURNING s.name
), recorded AS (
    INSERT INTO {schema}.operator_actions
        (schedule, action, outcome, actor, reason, from_status, to_status)
    SELECT t.name, 'remove',
           CASE WHEN EXISTS (SELECT 1 FROM removed) THEN 'applied' ELSE 'refused' END,
           $2, $3,
           CASE WHEN t.paused THEN 'paused' ELSE 'active' END,
           CASE WHEN EXISTS (SELECT 1 FROM removed) THEN 'removed' END
    FROM target t
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM removed) AS applied,
       coalesce((
           SELECT jsonb_agg(jsonb_build_object(
                      'worker_id', d.worker_id, 'host', d.host, 'pid', d.pid,
                      'operation', d.operation, 'cron', d.cron, 'time_zone', d.time_zone,
                      'missed', d.missed, 'in_force', d.in_force)
                  ORDER BY d.started_at, d.worker_id)
           FROM declarers d
       ), '[]'::jsonb) AS declared_by
FROM target t
