-- Exact counts of the finished states (succeeded, cancelled), and whether
-- they are exact: the scan stops after $1 + 1 finished rows, so its cost
-- stays bounded whatever the table's size. Above $1 finished operations
-- (`exact` false) the caller shows the statistics' estimate instead.
WITH bounded AS (
    SELECT status FROM {schema}.operations
    WHERE status IN ('succeeded', 'cancelled')
    LIMIT $1 + 1
)
SELECT s.status, count(b.status), (SELECT count(*) FROM bounded) <= $1 AS exact
FROM (VALUES ('cancelled'), ('succeeded')) AS s(status)
LEFT JOIN bounded b ON b.status = s.status
GROUP BY s.status
ORDER BY 1
