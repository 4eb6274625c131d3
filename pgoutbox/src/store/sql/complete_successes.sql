-- Record many plain successes of one worker ($4) at once, each fenced by
-- its attempt: $1 ids, $2 attempt numbers, $3 attempt ids, $6 what each
-- attempt produced (a handler's result, a relay's receipt, or NULL), $7
-- the hash of the output schema each result was written with. Returns the
-- attempt ids whose success was recorded; any other was no longer this
-- worker's. The answer names attempts, not operations: a stale completion
-- of attempt 1 batched with attempt 2's of the same operation must not be
-- told that it was recorded. $5 is
-- `workflow_system.idempotent_async_commit`: when on and every success
-- recorded is an idempotent operation's, this transaction commits with
-- `synchronous_commit = off`.
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::integer[], $3::bigint[], $6::jsonb[], $7::text[])
        AS t(id, attempt, attempt_id, result, result_schema_hash)
), done AS (
    UPDATE {schema}.operations o
    SET status = 'succeeded', lease_owner = NULL, lease_expires_at = NULL,
        last_error = NULL, finished_at = now(), updated_at = now()
    FROM input i
    WHERE o.id = i.id AND o.status = 'running' AND o.lease_owner = $4 AND o.attempt = i.attempt
    RETURNING i.attempt_id, o.idempotent
), attempt AS (
    UPDATE {schema}.attempts a
    SET outcome = 'succeeded', finished_at = now(), result = i.result,
        result_schema_hash = i.result_schema_hash
    FROM input i
    WHERE a.id = i.attempt_id AND a.outcome IS NULL
      AND i.attempt_id IN (SELECT attempt_id FROM done)
    RETURNING a.id
)
SELECT attempt_id,
       CASE WHEN $5::boolean AND bool_and(idempotent) OVER ()
            THEN set_config('synchronous_commit', 'off', true) END AS relaxed
FROM done
