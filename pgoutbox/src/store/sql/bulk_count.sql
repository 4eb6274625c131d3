-- How many operations a bulk action would consider, and the highest id
-- among them (the run's upper bound); the filter as in `bulk_targets.sql`:
-- status in $1, name $2, queue $3, published within $4 ms.
SELECT count(*), max(id)
FROM {schema}.operations
WHERE status = ANY($1)
  AND ($2::text IS NULL OR name = $2)
  AND ($3::text IS NULL OR queue = $3)
  AND ($4::bigint IS NULL OR created_at >= now() - $4 * interval '1 millisecond')
