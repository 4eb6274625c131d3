-- How many operations are in each state, by name.
SELECT status, name, count(*)
FROM {schema}.operations
GROUP BY status, name
ORDER BY status, name
