-- Attempts that ended in each of the last $1 minutes (the current minute
-- last), by outcome: succeeded; failed (failed or timed out); lost.
-- Attempts are found by their start, through `attempts_started_idx`, so
-- the cost follows the last hours' attempts, not the table: an attempt
-- that ran longer than an hour is not counted. (An index on `finished_at`
-- would make every attempt's end a non-HOT update; see `attempts`.)
WITH recent AS (
    SELECT date_trunc('minute', finished_at) AS minute, outcome
    FROM {schema}.attempts
    WHERE started_at >= date_trunc('minute', now()) - ($1 - 1) * interval '1 minute' - interval '1 hour'
      AND finished_at >= date_trunc('minute', now()) - ($1 - 1) * interval '1 minute'
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
