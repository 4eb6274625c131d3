-- Publish many operations of one name in one statement: $2 holds the
-- payloads, every other column is shared. NOTIFY (`{notify}`, coalesced as
-- in insert_operation.sql) is sent once per transaction for identical channel and payload, so it costs no more for a
-- thousand rows than for one.
WITH known_schema AS (
    -- Usually known: one index probe, and $4 (the schema's canonical
    -- JSON, as text) is parsed only when it is not.
    INSERT INTO {schema}.operation_types (name, schema_hash, json_schema)
    SELECT $1, $3, $4::text::jsonb
    WHERE NOT EXISTS (
        SELECT 1 FROM {schema}.operation_types t WHERE t.name = $1 AND t.schema_hash = $3
    )
    ON CONFLICT (name, schema_hash) DO NOTHING
), inserted AS (
    INSERT INTO {schema}.operations
        (name, payload, schema_hash, priority, queue, run_at, max_attempts, idempotent, parent_id, root_id)
    SELECT $1, p.payload, $3, $5, $6, coalesce($7, now() + $8 * interval '1 microsecond', now()), $9, $10, $11,
           (SELECT coalesce(o.root_id, o.id) FROM {schema}.operations o WHERE o.id = $11)
    FROM unnest($2::jsonb[]) WITH ORDINALITY AS p(payload, n)
    ORDER BY p.n
    RETURNING id
)
SELECT id, {notify}::text AS notified FROM inserted ORDER BY id
