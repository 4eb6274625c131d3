-- Claim up to $2 ready operations (chosen by `claimable`, see migration 1,
-- with `FOR UPDATE SKIP LOCKED`) among the names this process handles
-- ($1) and, when $5 is not empty, the queues it serves; start their
-- attempts in the same statement, so that an attempt is committed (visible)
-- before its handler is called. $3 is the worker, $4 the lease in ms.
-- $6 is `workflow_system.idempotent_async_commit`: when on and every
-- operation claimed is idempotent, this transaction commits with
-- `synchronous_commit = off`; one non-idempotent operation among them
-- keeps the whole claim durable.
-- The lease, the attempt's start and `updated_at` are the clock's time,
-- not the transaction's: a claim chained into a transactional handler's
-- commit (see `Store::claim`) runs late in that transaction.
WITH claimed AS (
    UPDATE {schema}.operations o
    SET status = 'running',
        attempt = o.attempt + 1,
        lease_owner = $3,
        lease_expires_at = clock_timestamp() + $4 * interval '1 millisecond',
        updated_at = clock_timestamp()
    WHERE o.id IN (SELECT {schema}.claimable($1, $5::text[], $2))
    RETURNING o.id, o.name, o.payload, o.schema_hash, o.attempt, o.snoozes, o.max_attempts,
              o.idempotent, o.external_key, coalesce(o.root_id, o.id) AS root_id, o.run_at,
              o.workflow_id
), started AS (
    INSERT INTO {schema}.attempts (operation_id, operation_name, number, worker_id, started_at)
    SELECT id, name, attempt, $3, clock_timestamp() FROM claimed
    RETURNING id, operation_id
)
SELECT c.id, c.name, c.payload, c.schema_hash, c.attempt, c.snoozes, c.max_attempts, c.idempotent,
       c.external_key, c.root_id, c.workflow_id,
       extract(epoch FROM clock_timestamp() - c.run_at)::float8 AS waited_seconds,
       s.id AS attempt_id,
       -- A workflow step's dependencies, read with its claim so that its
       -- handler needs no other statement (`step_inputs`, migration 10).
       CASE WHEN c.workflow_id IS NOT NULL THEN {schema}.step_inputs(c.id) END AS inputs,
       CASE WHEN $6::boolean AND bool_and(c.idempotent) OVER ()
            THEN set_config('synchronous_commit', 'off', true) END AS relaxed
FROM claimed c JOIN started s ON s.operation_id = c.id
