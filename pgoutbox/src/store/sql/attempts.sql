-- The attempts of operation $1, in order.
SELECT number, worker_id, started_at, finished_at, outcome, error, error_chain, result,
       result_schema_hash
FROM {schema}.attempts
WHERE operation_id = $1
ORDER BY id
