-- For a relay about to send operation $1 again: how long ago, in
-- milliseconds of the database's clock, the earliest of its attempts whose
-- outcome is unknown (`lost`, `timed_out`, `aborted`: its message may be
-- in the stream) started, or NULL when none did. An attempt's send comes
-- after its start, so this errs towards a longer time. Only attempts after
-- the operator's latest applied retry count: that retry settled the
-- earlier ones.
SELECT floor(extract(epoch FROM now() - min(a.started_at)) * 1000)::bigint
FROM {schema}.attempts a
WHERE a.operation_id = $1
  AND a.outcome IN ('lost', 'timed_out', 'aborted')
  AND a.started_at > coalesce(
      (SELECT max(x.created_at) FROM {schema}.operator_actions x
       WHERE x.operation_id = $1 AND x.action = 'retry' AND x.outcome = 'applied'),
      '-infinity')
