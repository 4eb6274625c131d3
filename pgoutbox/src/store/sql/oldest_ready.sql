-- How long, in seconds, the oldest ready operation has waited; NULL when
-- none is ready.
SELECT extract(epoch FROM now() - min(run_at))::float8
FROM {schema}.operations
WHERE status IN ('pending', 'retrying') AND run_at <= now()
