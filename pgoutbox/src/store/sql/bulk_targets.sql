-- One page of a bulk action's targets, in id order, without payloads: up
-- to $7 operations with ids above $5 and at most $6 (the highest id when
-- the run began, so rows published meanwhile, replays included, are not
-- taken) that match the filter: status in $1, name $2, queue $3 (each when
-- not NULL), published within $4 ms, last error containing $8 (any case), in the workflow rooted at $9 (when not NULL).
SELECT id, name, status, queue, created_at
FROM {schema}.operations
WHERE id > $5 AND id <= $6
  AND status = ANY($1)
  AND ($2::text IS NULL OR name = $2)
  AND ($3::text IS NULL OR queue = $3)
  AND ($4::bigint IS NULL OR created_at >= now() - $4 * interval '1 millisecond')
  AND ($8::text IS NULL OR strpos(lower(last_error), lower($8)) > 0)
  AND ($9::bigint IS NULL OR id = $9 OR root_id = $9)
ORDER BY id
LIMIT $7
