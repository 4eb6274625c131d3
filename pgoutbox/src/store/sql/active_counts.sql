-- Exact counts, by state and name, of the operations that are not
-- finished (pending, retrying, running) or that wait for an operator
-- (stalled, dead), and workflow steps waiting for their dependencies. Each
-- part reads its own partial index (ready, lease, stalled, dead, waiting),
-- so the cost follows these rows, not the finished ones
-- that pile up until retention removes them.
SELECT status, name, count(*) FROM {schema}.operations
WHERE status IN ('pending', 'retrying')
GROUP BY status, name
UNION ALL
SELECT 'running', name, count(*) FROM {schema}.operations
WHERE lease_expires_at IS NOT NULL AND status = 'running'
GROUP BY name
UNION ALL
SELECT 'stalled', name, count(*) FROM {schema}.operations
WHERE status = 'stalled'
GROUP BY name
UNION ALL
SELECT 'dead', name, count(*) FROM {schema}.operations
WHERE status = 'dead'
GROUP BY name
UNION ALL
SELECT 'waiting', name, count(*) FROM {schema}.operations
WHERE status = 'waiting'
GROUP BY name
ORDER BY 1, 2
