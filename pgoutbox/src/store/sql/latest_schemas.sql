-- The most recently seen payload schema of every name.
SELECT DISTINCT ON (name) name, schema_hash, json_schema, first_seen_at, last_seen_at
FROM {schema}.operation_types
ORDER BY name, last_seen_at DESC, first_seen_at DESC
