-- One page of ready operations: up to $2 with ids above $1, in id order.
SELECT id, name, payload
FROM {schema}.operations
WHERE status IN ('pending', 'retrying') AND id > $1
ORDER BY id
LIMIT $2
