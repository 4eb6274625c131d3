-- Renew this worker's ($1) heartbeat and the leases of the attempts it
-- runs, given as parallel arrays of operation ids ($3), attempt numbers
-- ($4) and attempt ids ($5). Returns, for each attempt still this
-- worker's, its id and whether its lease was renewed: a row locked
-- elsewhere (an operator's `SELECT … FOR UPDATE`, a commit hanging on a
-- half-open connection) is skipped, not waited for, so that one lock does
-- not stop the renewal of every other lease. An attempt is still this
-- worker's only while its operation is running, leased by this worker at
-- that number, and its attempt row is still open: a snooze gives the
-- number back, so the number alone would also match the next claim of the
-- same operation. An attempt not returned is no longer this worker's.
WITH worker AS (
    UPDATE {schema}.workers SET heartbeat_at = now() WHERE id = $1 RETURNING id
), mine AS (
    SELECT r.id, r.number, r.attempt_id
    FROM unnest($3::bigint[], $4::integer[], $5::bigint[]) AS r(id, number, attempt_id)
    JOIN {schema}.attempts a
      ON a.id = r.attempt_id AND a.operation_id = r.id AND a.outcome IS NULL
    JOIN {schema}.operations o
      ON o.id = r.id AND o.attempt = r.number AND o.status = 'running' AND o.lease_owner = $1
), renewable AS (
    SELECT o.id
    FROM {schema}.operations o
    WHERE (o.id, o.attempt) IN (SELECT id, number FROM mine)
      AND o.status = 'running' AND o.lease_owner = $1
    FOR UPDATE SKIP LOCKED
), renewed AS (
    UPDATE {schema}.operations o
    SET lease_expires_at = now() + $2 * interval '1 millisecond'
    WHERE o.id IN (SELECT id FROM renewable)
    RETURNING o.id
)
SELECT m.attempt_id, EXISTS (SELECT 1 FROM renewed r WHERE r.id = m.id) AS renewed
FROM mine m
