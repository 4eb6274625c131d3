-- Every output schema recorded for the name $1, oldest first, in the shape
-- of a payload schema's version (`output_hash` as `schema_hash`).
SELECT name, output_hash AS schema_hash, json_schema, first_seen_at, last_seen_at
FROM {schema}.operation_outputs
WHERE name = $1
ORDER BY first_seen_at, output_hash
