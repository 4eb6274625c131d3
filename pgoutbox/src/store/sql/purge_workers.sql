-- Delete up to $2 `workers` rows that stopped, or whose heartbeat went
-- silent, more than $1 ms ago (the history retention): a live worker
-- renews its heartbeat every lease / 3, so it is never among them.
DELETE FROM {schema}.workers
WHERE id IN (
    SELECT w.id FROM {schema}.workers w
    WHERE coalesce(w.stopped_at, w.heartbeat_at) < now() - $1 * interval '1 millisecond'
      AND w.heartbeat_at < now() - $1 * interval '1 millisecond'
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
