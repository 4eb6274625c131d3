-- Successes in each of the last $1 minutes, oldest first.
SELECT (SELECT count(*) FROM {schema}.operations
        WHERE status = 'succeeded'
          AND finished_at >= now() - (m + 1) * interval '1 minute'
          AND finished_at < now() - m * interval '1 minute')
FROM generate_series($1 - 1, 0, -1) AS m
