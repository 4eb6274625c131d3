-- Record an output type's schema met by a worker at start-up.
INSERT INTO {schema}.operation_outputs (name, output_hash, json_schema)
VALUES ($1, $2, $3)
ON CONFLICT (name, output_hash) DO UPDATE SET last_seen_at = now()
