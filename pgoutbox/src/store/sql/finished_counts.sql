-- Exact counts of the finished states (succeeded, cancelled), and whether
-- they are exact: the scan stops after $1 + 1 finished rows, and reads
-- them through the partial index of finished rows (`finished_at IS NOT
-- NULL`, which every transition to succeeded or cancelled sets), so its
-- cost stays bounded whatever the table's size and however many rows are
-- still unfinished. Above $1 (`exact` false) the caller shows the
-- statistics' estimate instead.
WITH bounded AS (
    SELECT status FROM {schema}.operations
    WHERE finished_at IS NOT NULL AND status IN ('succeeded', 'cancelled')
    LIMIT $1 + 1
)
SELECT s.status, count(b.status), (SELECT count(*) FROM bounded) <= $1 AS exact
FROM (VALUES ('cancelled'), ('succeeded')) AS s(status)
LEFT JOIN bounded b ON b.status = s.status
GROUP BY s.status
ORDER BY 1
