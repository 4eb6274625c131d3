-- How many operations a bulk action would consider, and the highest id
-- among them (the run's upper bound); the filter as in `bulk_targets.sql`:
-- status in $1, name $2, queue $3, published within $4 ms, last error containing $5 (any case), in the workflow rooted at $6.
SELECT count(*), max(id)
FROM {schema}.operations
WHERE status = ANY($1)
  AND ($2::text IS NULL OR name = $2)
  AND ($3::text IS NULL OR queue = $3)
  AND ($4::bigint IS NULL OR created_at >= now() - $4 * interval '1 millisecond')
  AND ($5::text IS NULL OR strpos(lower(last_error), lower($5)) > 0)
  AND ($6::bigint IS NULL OR id = $6 OR root_id = $6)
