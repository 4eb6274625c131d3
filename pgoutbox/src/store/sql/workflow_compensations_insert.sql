-- Declare the compensations of workflow $1's steps $2: $3 names, $4
-- payloads, $5 schema hashes, $6 priorities, $7 queues, $8 max attempts,
-- $9 idempotent, $10 the steps each payload names (a JSON array of ids).
-- Payload schemas maybe new: $11 names, $12 hashes, $13 canonical JSON.
WITH known_schema AS (
    INSERT INTO {schema}.operation_types (name, schema_hash, json_schema)
    SELECT t.name, t.hash, t.json::jsonb
    FROM unnest($11::text[], $12::text[], $13::text[]) AS t(name, hash, json)
    WHERE NOT EXISTS (
        SELECT 1 FROM {schema}.operation_types k WHERE k.name = t.name AND k.schema_hash = t.hash
    )
    ON CONFLICT (name, schema_hash) DO NOTHING
)
INSERT INTO {schema}.workflow_compensations
    (step_id, workflow_id, name, payload, schema_hash, priority, queue, max_attempts, idempotent,
     inputs)
SELECT c.step, $1, c.name, c.payload, c.hash, c.priority, c.queue, c.max_attempts, c.idempotent,
       ARRAY(SELECT jsonb_array_elements_text(c.inputs)::bigint)
FROM unnest($2::bigint[], $3::text[], $4::jsonb[], $5::text[], $6::smallint[], $7::text[],
            $8::integer[], $9::boolean[], $10::jsonb[])
    AS c(step, name, payload, hash, priority, queue, max_attempts, idempotent, inputs)
