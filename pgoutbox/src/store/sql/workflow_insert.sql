-- Insert a chunk of workflow $1's steps (its root is $2) and their
-- dependencies, in one statement. Steps: $3 ids, $4 names, $5 payloads, $6
-- schema hashes, $7 priorities, $8 queues, $9 run_at (NULL: now plus $10,
-- a delay in microseconds, or now), $11 max attempts, $12 idempotent, $13
-- how many dependencies each waits for (0: ready now, otherwise
-- `waiting`). Edges: $14 the waiting steps, $15 their dependencies, $16
-- whether each is required (false: `Settled`). Payload schemas maybe new:
-- $17 names, $18 hashes, $19 canonical JSON texts. Edges to published
-- steps (of steps a handler adds at run time): $20 the waiting steps, $21
-- their dependencies, $22 whether each is required; each counts in
-- `waiting_for` unless already met (succeeded; ended at all when not
-- required; purged). `{notify_each}` is the coalesced wake-up of
-- insert_operation.sql, once per name made ready.
WITH known_schema AS (
    INSERT INTO {schema}.operation_types (name, schema_hash, json_schema)
    SELECT t.name, t.hash, t.json::jsonb
    FROM unnest($17::text[], $18::text[], $19::text[]) AS t(name, hash, json)
    WHERE NOT EXISTS (
        SELECT 1 FROM {schema}.operation_types k WHERE k.name = t.name AND k.schema_hash = t.hash
    )
    ON CONFLICT (name, schema_hash) DO NOTHING
), published AS (
    SELECT e.operation_id, e.dependency_id, e.required,
           NOT coalesce(d.status = 'succeeded'
                        OR (NOT e.required AND d.status IN ('dead', 'cancelled')), true) AS open
    FROM unnest($20::bigint[], $21::bigint[], $22::boolean[]) AS e(operation_id, dependency_id, required)
    LEFT JOIN {schema}.operations d ON d.id = e.dependency_id
), published_open AS (
    SELECT operation_id, count(*)::integer AS n FROM published WHERE open GROUP BY operation_id
), steps AS (
    SELECT s.*, s.local_waiting + coalesce(p.n, 0) AS waiting
    FROM unnest($3::bigint[], $4::text[], $5::jsonb[], $6::text[], $7::smallint[], $8::text[],
                $9::timestamptz[], $10::bigint[], $11::integer[], $12::boolean[], $13::integer[])
        AS s(id, name, payload, hash, priority, queue, run_at, delay, max_attempts, idempotent, local_waiting)
    LEFT JOIN published_open p ON p.operation_id = s.id
), inserted AS (
    INSERT INTO {schema}.operations
        (id, name, payload, schema_hash, status, priority, queue, run_at, max_attempts, idempotent,
         root_id, workflow_id, waiting_for)
    OVERRIDING SYSTEM VALUE
    SELECT s.id, s.name, s.payload, s.hash, CASE WHEN s.waiting > 0 THEN 'waiting' ELSE 'pending' END,
           s.priority, s.queue, coalesce(s.run_at, now() + s.delay * interval '1 microsecond', now()),
           s.max_attempts, s.idempotent, $2, $1, s.waiting
    FROM steps s
    RETURNING name, status
), edges AS (
    INSERT INTO {schema}.workflow_edges (workflow_id, operation_id, dependency_id, required, counted)
    SELECT $1, e.operation_id, e.dependency_id, e.required, true
    FROM unnest($14::bigint[], $15::bigint[], $16::boolean[]) AS e(operation_id, dependency_id, required)
    UNION ALL
    -- An edge to a step that has ended does not count: nothing counts it down.
    SELECT $1, p.operation_id, p.dependency_id, p.required, p.open FROM published p
)
SELECT n.name, {notify_each}::text AS notified
FROM (SELECT DISTINCT name FROM inserted WHERE status = 'pending') n
