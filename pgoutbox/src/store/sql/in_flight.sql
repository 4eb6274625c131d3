-- How many operations each worker holds running now (its lease held),
-- read through `operations_lease_idx`.
SELECT lease_owner, count(*)
FROM {schema}.operations
WHERE lease_expires_at IS NOT NULL AND status = 'running' AND lease_owner IS NOT NULL
GROUP BY lease_owner
