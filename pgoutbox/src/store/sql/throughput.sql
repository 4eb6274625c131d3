-- Attempts that ended in each of the last $1 minutes (the current minute
-- last), by outcome: succeeded; failed (failed or timed out); lost. Read
-- through `attempts_finished_idx` (migration 4), so the cost follows the
-- last hour's attempts, not the table.
WITH recent AS (
    SELECT date_trunc('minute', finished_at) AS minute, outcome
    FROM {schema}.attempts
    WHERE finished_at >= date_trunc('minute', now()) - ($1 - 1) * interval '1 minute'
)
SELECT m.minute,
       count(r.outcome) FILTER (WHERE r.outcome = 'succeeded') AS succeeded,
       count(r.outcome) FILTER (WHERE r.outcome IN ('failed', 'timed_out')) AS failed,
       count(r.outcome) FILTER (WHERE r.outcome = 'lost') AS lost
FROM generate_series(date_trunc('minute', now()) - ($1 - 1) * interval '1 minute',
                     date_trunc('minute', now()), interval '1 minute') AS m(minute)
LEFT JOIN recent r ON r.minute = m.minute
GROUP BY m.minute
ORDER BY m.minute
