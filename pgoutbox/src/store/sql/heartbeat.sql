-- Renew this worker's heartbeat and the leases of the operations it runs
-- ($3); returns those it still owns: any other was rescued meanwhile.
WITH worker AS (
    UPDATE {schema}.workers SET heartbeat_at = now() WHERE id = $1 RETURNING id
)
UPDATE {schema}.operations
SET lease_expires_at = now() + $2 * interval '1 millisecond'
WHERE id = ANY($3) AND status = 'running' AND lease_owner = $1
RETURNING id
