-- The test kit: how many operations named in $1 are in each state.
SELECT status, count(*) AS n
FROM {schema}.operations
WHERE name = ANY($1)
GROUP BY status
