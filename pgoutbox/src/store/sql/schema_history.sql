-- Every payload schema recorded for the name $1, oldest first.
SELECT name, schema_hash, json_schema, first_seen_at, last_seen_at
FROM {schema}.operation_types
WHERE name = $1
ORDER BY first_seen_at, schema_hash
