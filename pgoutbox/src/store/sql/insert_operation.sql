-- Publish one operation, recording its payload schema in the history if
-- this hash is new. `{notify}` marks the transaction for the coalesced
-- wake-up (store/mod.rs, docs/tuning.md) when the publisher wakes workers:
-- migration 13's deferred trigger decides at COMMIT whether to notify;
-- `NULL` otherwise.
-- `$12` is a delay in microseconds, added to the database's clock.
-- `{on_conflict}` is rendered twice (store/mod.rs): empty, a plain INSERT,
-- for a publish without idempotency key ($9 NULL); and `ON CONFLICT (name,
-- idempotency_key) … DO NOTHING` for one with a key, which then inserts
-- nothing and returns no row when the key is taken (`find_by_idempotency_key`
-- finds the existing operation). The speculative insertion of ON CONFLICT
-- costs 10-30% of a publish, so only keyed publishes pay it.
WITH known_schema AS (
    -- Usually known: one index probe, and $11 (the schema's canonical
    -- JSON, as text) is parsed only when it is not.
    INSERT INTO {schema}.operation_types (name, schema_hash, json_schema)
    SELECT $1, $3, $11::text::jsonb
    WHERE NOT EXISTS (
        SELECT 1 FROM {schema}.operation_types t WHERE t.name = $1 AND t.schema_hash = $3
    )
    ON CONFLICT (name, schema_hash) DO NOTHING
), inserted AS (
    INSERT INTO {schema}.operations
        (name, payload, schema_hash, priority, queue, run_at, max_attempts,
         idempotent, idempotency_key, parent_id, root_id)
    VALUES ($1, $2, $3, $4, $5, coalesce($6, now() + $12 * interval '1 microsecond', now()),
            $7, $8, $9, $10,
            (SELECT coalesce(p.root_id, p.id) FROM {schema}.operations p WHERE p.id = $10))
    {on_conflict}
    RETURNING id
)
SELECT id, {notify}::text AS notified FROM inserted
