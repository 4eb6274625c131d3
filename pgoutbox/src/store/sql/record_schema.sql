-- Record a payload schema met by a worker at start-up.
INSERT INTO {schema}.operation_types (name, schema_hash, json_schema)
VALUES ($1, $2, $3)
ON CONFLICT (name, schema_hash) DO UPDATE SET last_seen_at = now()
