SELECT id FROM {schema}.operations WHERE name = $1 AND idempotency_key = $2
