-- The test kit: how many operations named in $1 (only operation $2 when
-- not NULL) run, and how many are ready to run.
SELECT count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status IN ('pending', 'retrying') AND run_at <= now()) AS ready
FROM {schema}.operations
WHERE name = ANY($1) AND ($2::bigint IS NULL OR id = $2)
