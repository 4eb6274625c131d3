-- Renew this worker's ($1) heartbeat and the leases of the attempts it
-- runs, given as parallel arrays of operation ids ($3), attempt numbers
-- ($4) and attempt ids ($5); returns the attempt ids whose lease it renewed.
-- An attempt is still this worker's only while its operation is running,
-- leased by this worker at that number, and its attempt row is still open:
-- a snooze gives the number back, so the number alone would also match the
-- next claim of the same operation.
WITH worker AS (
    UPDATE {schema}.workers SET heartbeat_at = now() WHERE id = $1 RETURNING id
), mine AS (
    SELECT r.id, r.number, r.attempt_id
    FROM unnest($3::bigint[], $4::integer[], $5::bigint[]) AS r(id, number, attempt_id)
    JOIN {schema}.attempts a
      ON a.id = r.attempt_id AND a.operation_id = r.id AND a.outcome IS NULL
)
UPDATE {schema}.operations o
SET lease_expires_at = now() + $2 * interval '1 millisecond'
FROM mine m
WHERE o.id = m.id AND o.attempt = m.number AND o.status = 'running' AND o.lease_owner = $1
RETURNING m.attempt_id
