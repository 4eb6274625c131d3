-- The test kit: how many operations named in $1 (only operation $2 when
-- not NULL) run, and how many are ready to run. A retry due within $3 ms
-- (the harness's longest backoff) counts as ready: the worker is about to
-- run it, and a test waiting for idleness must not stop in that gap.
SELECT count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE (status = 'pending' AND run_at <= now())
                           OR (status = 'retrying'
                               AND run_at <= now() + $3 * interval '1 millisecond')) AS ready
FROM {schema}.operations
WHERE name = ANY($1) AND ($2::bigint IS NULL OR id = $2)
