-- Every schedule, by name, with the state of its last tick's operation (and
-- of its workflow, for a schedule that publishes one: the operation is the
-- workflow's first step) and the live workers that declare it (`in_force`: as the row says). Live:
-- not stopped, a heartbeat younger than the worker's own lease ($1 ms for
-- one that recorded none).
SELECT s.name, s.operation, s.cron, s.time_zone, s.missed, s.next_tick, s.last_tick,
       s.last_operation_id, o.status AS last_status, wf.id AS last_workflow_id,
       wf.state AS last_workflow_state, s.paused, s.paused_by, s.paused_reason,
       s.paused_at, s.created_at, s.updated_at,
       coalesce((
           SELECT jsonb_agg(jsonb_build_object(
                      'worker_id', d.worker_id, 'host', w.host, 'pid', w.pid,
                      'operation', d.operation, 'cron', d.cron, 'time_zone', d.time_zone,
                      'missed', d.missed, 'in_force', d.declaration = s.declaration)
                  ORDER BY w.started_at, d.worker_id)
           FROM {schema}.schedule_declarations d
           JOIN {schema}.workers w ON w.id = d.worker_id
           WHERE d.schedule = s.name
             AND w.stopped_at IS NULL
             AND w.heartbeat_at > now() - coalesce(w.lease_ms, $1) * interval '1 millisecond'
       ), '[]'::jsonb) AS declared_by
FROM {schema}.schedules s
LEFT JOIN {schema}.operations o ON o.id = s.last_operation_id
LEFT JOIN {schema}.workflows wf ON wf.id = o.workflow_id AND s.operation LIKE 'workflow %'
ORDER BY s.name
