-- Migration 10: workflows. Steps that wait for other steps, released by
-- the transaction that records their last dependency's success.
--
-- A workflow is published at once (`publish_workflow`): its row here, one
-- operation per step, and one edge per dependency, which the steps' payloads
-- name (`Dep<O>` fields hold the dependency's operation id). A step with
-- dependencies is `waiting` (outside every claim index) and counts in
-- `waiting_for` the dependencies it still waits for. Everything that follows
-- from a step's change of state happens in the transaction that changes it,
-- by the trigger below: whichever statement records it (a worker's success,
-- a batch of successes, an operator's resolve or cancel).

ALTER TABLE {schema}.operations DROP CONSTRAINT operations_status_check;
ALTER TABLE {schema}.operations ADD CONSTRAINT operations_status_check CHECK (status IN
    ('pending', 'running', 'succeeded', 'retrying', 'dead', 'stalled', 'cancelled', 'waiting'));

CREATE TABLE {schema}.workflows (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL,
    -- The first step, whose id is every step's `root_id`.
    root_id     bigint      NOT NULL,
    -- The operation whose handler published the workflow, if one did.
    parent_id   bigint,
    steps       integer     NOT NULL,
    state       text        NOT NULL DEFAULT 'running',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    CONSTRAINT workflows_state_check CHECK (state IN
        ('running', 'succeeded', 'failed', 'stalled', 'cancelled')),
    CONSTRAINT workflows_name_check CHECK (name ~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$')
);

CREATE INDEX workflows_created_idx ON {schema}.workflows (created_at, id);
CREATE INDEX workflows_state_idx ON {schema}.workflows (state, created_at)
    WHERE state <> 'succeeded';

ALTER TABLE {schema}.operations ADD COLUMN workflow_id bigint;
-- Dependencies not yet met (succeeded, or ended at all for an opted-out
-- edge); NULL outside workflows.
ALTER TABLE {schema}.operations ADD COLUMN waiting_for integer;
ALTER TABLE {schema}.operations ADD CONSTRAINT operations_waiting_check
    CHECK (status <> 'waiting' OR (workflow_id IS NOT NULL AND waiting_for > 0));

-- A workflow's steps by state: the state probes of `workflow_settle` and
-- the graph view. Workflow steps only.
CREATE INDEX operations_workflow_idx ON {schema}.operations (workflow_id, status)
    WHERE workflow_id IS NOT NULL;

-- The dashboard's live counts of waiting steps, by name.
CREATE INDEX operations_waiting_idx ON {schema}.operations (name) WHERE status = 'waiting';

CREATE TABLE {schema}.workflow_edges (
    workflow_id   bigint  NOT NULL,
    -- The step that waits…
    operation_id  bigint  NOT NULL,
    -- …for this one.
    dependency_id bigint  NOT NULL,
    -- false: the step opted out (`Settled<O>`), and runs whatever way the
    -- dependency ends.
    required      boolean NOT NULL,
    PRIMARY KEY (dependency_id, operation_id)
);

CREATE INDEX workflow_edges_operation_idx ON {schema}.workflow_edges (operation_id);

-- A workflow's state, from its steps: `failed` when a step is dead,
-- otherwise `stalled` when one is, otherwise `running` while one has not
-- ended, otherwise `cancelled` when one was, otherwise `succeeded`. The
-- workflow's row is locked first, so that of two transactions ending its
-- last two steps at once, the second decides, and sees the first.
CREATE FUNCTION {schema}.workflow_settle(wf bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    current text;
    next text;
BEGIN
    SELECT state INTO current FROM {schema}.workflows WHERE id = wf FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    next := CASE
        WHEN EXISTS (SELECT 1 FROM {schema}.operations
                     WHERE workflow_id = wf AND status = 'dead') THEN 'failed'
        WHEN EXISTS (SELECT 1 FROM {schema}.operations
                     WHERE workflow_id = wf AND status = 'stalled') THEN 'stalled'
        WHEN EXISTS (SELECT 1 FROM {schema}.operations
                     WHERE workflow_id = wf
                       AND status IN ('waiting', 'pending', 'running', 'retrying')) THEN 'running'
        WHEN EXISTS (SELECT 1 FROM {schema}.operations
                     WHERE workflow_id = wf AND status = 'cancelled') THEN 'cancelled'
        ELSE 'succeeded'
    END;
    IF next IS DISTINCT FROM current THEN
        UPDATE {schema}.workflows
        SET state = next, updated_at = now(),
            finished_at = CASE WHEN next IN ('succeeded', 'failed', 'cancelled') THEN now() END
        WHERE id = wf;
    END IF;
END $$;

-- What a step's change of state does to its workflow (invariant 8):
-- - succeeded: each waiting dependent counts one dependency fewer; the one
--   that reaches zero is released (`pending`, ready now);
-- - dead or cancelled: opted-out dependents count it as met; the others,
--   and theirs transitively (up to an opted-out edge), are cancelled, each
--   with a reason naming the dependency;
-- - stalled: nothing; the dependents wait for the operator's decision.
-- Each counter is changed under the dependent's row lock, so two
-- dependencies succeeding at once on two workers release it exactly once.
-- The workflow's state is settled last, unless a running step succeeded
-- and has a dependent still open: then no step became dead or stalled or
-- stopped being one, and an open step remains, so the state cannot change;
-- that dependent ends later, in a transaction that settles it. (This keeps
-- a fan-in's dependencies off the workflow's row lock.)
CREATE FUNCTION {schema}.workflow_step_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    open_dependents integer := 0;
    woken_names integer := 0;
BEGIN
    IF NEW.status IN ('succeeded', 'dead', 'cancelled') THEN
        WITH met AS (
            UPDATE {schema}.operations d
            SET waiting_for = d.waiting_for - 1,
                status = CASE WHEN d.waiting_for = 1 THEN 'pending' ELSE 'waiting' END,
                run_at = CASE WHEN d.waiting_for = 1 THEN greatest(d.run_at, now()) ELSE d.run_at END,
                updated_at = now()
            FROM {schema}.workflow_edges e
            WHERE e.dependency_id = NEW.id AND d.id = e.operation_id AND d.status = 'waiting'
              AND (NEW.status = 'succeeded' OR NOT e.required)
            RETURNING d.name, d.status
        ), released AS (
            SELECT DISTINCT name FROM met WHERE status = 'pending'
        ), woken AS (
            -- The released names, announced on the channel of every worker
            -- still registered, coalesced as a publish's wake-up (one
            -- notifying transaction per channel, name and 10 ms slot).
            SELECT pg_notify(w.channel, r.name)
            FROM released r
            CROSS JOIN (SELECT DISTINCT channel FROM {schema}.workers
                        WHERE stopped_at IS NULL AND channel IS NOT NULL) w
            WHERE pg_try_advisory_xact_lock(
                hashtext('pgoutbox wake-up ' || w.channel || ' ' || r.name),
                (floor(extract(epoch FROM clock_timestamp()) * 100)::bigint % 2147483647)::integer)
        )
        SELECT (SELECT count(*) FROM met), (SELECT count(*) FROM woken)
        INTO open_dependents, woken_names;
    END IF;
    IF NEW.status IN ('dead', 'cancelled') THEN
        WITH RECURSIVE doomed(id, via) AS (
            SELECT e.operation_id, e.dependency_id
            FROM {schema}.workflow_edges e
            WHERE e.dependency_id = NEW.id AND e.required
            UNION
            SELECT e.operation_id, e.dependency_id
            FROM doomed d JOIN {schema}.workflow_edges e ON e.dependency_id = d.id AND e.required
        )
        UPDATE {schema}.operations o
        SET status = 'cancelled', finished_at = now(), updated_at = now(),
            last_error = CASE WHEN x.via = NEW.id
                THEN format('cancelled: its dependency %s (%s) is %s',
                            NEW.id, NEW.name, NEW.status)
                ELSE format('cancelled: its dependency %s was cancelled, because %s (%s) is %s',
                            x.via, NEW.id, NEW.name, NEW.status)
            END
        FROM (SELECT DISTINCT ON (id) id, via FROM doomed ORDER BY id, via) x
        WHERE o.id = x.id AND o.status = 'waiting';
    END IF;
    IF NEW.status <> 'succeeded' OR OLD.status <> 'running' OR open_dependents = 0 THEN
        PERFORM {schema}.workflow_settle(NEW.workflow_id);
    END IF;
    RETURN NULL;
END $$;

-- Only workflow steps, and only changes that can matter to the workflow
-- (into or out of an ended or stalled state): a claim, a retry's backoff
-- and every operation outside a workflow never call it.
CREATE TRIGGER operations_workflow_step AFTER UPDATE OF status ON {schema}.operations
    FOR EACH ROW
    WHEN (NEW.workflow_id IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status
          AND (NEW.status IN ('succeeded', 'dead', 'cancelled', 'stalled')
               OR OLD.status IN ('succeeded', 'dead', 'cancelled', 'stalled')))
    EXECUTE FUNCTION {schema}.workflow_step_changed();

-- What step `step`'s handler reads of its dependencies, for its claim
-- (`claim.sql`): `[id, name, status, last error, result]` each (the
-- result as `step_result` reads it); a dependency purged since has no name
-- or status. VOLATILE, and PL/pgSQL,
-- so that it reads with a snapshot of its own: the claim's statement may
-- take a step released after that statement began (`claimable` reads with
-- fresh snapshots), and must then see the dependency's end that released
-- it, not its state at the statement's start.
CREATE FUNCTION {schema}.step_inputs(step bigint) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN (
        SELECT coalesce(jsonb_agg(jsonb_build_array(
            e.dependency_id, d.name, d.status, d.last_error,
            {schema}.step_result(e.dependency_id))), '[]'::jsonb)
        FROM {schema}.workflow_edges e
        LEFT JOIN {schema}.operations d ON d.id = e.dependency_id
        WHERE e.operation_id = step
    );
END $$;

-- The channel each worker listens on, so that a step released by another
-- process's transaction is announced to it.
ALTER TABLE {schema}.workers ADD COLUMN channel text;

-- An operator's resolve of a stalled step as succeeded carries the result
-- its dependents read, when its output type is not `()`.
ALTER TABLE {schema}.operator_actions ADD COLUMN result jsonb;
ALTER TABLE {schema}.operator_actions ADD COLUMN result_schema_hash text;

-- A worker that runs workflows handles several names, and its claim takes
-- the several-names path of `claimable` (migration 7), whose generic plan
-- is estimated far above `jit_above_cost`: where PostgreSQL has JIT (on by
-- default when built with LLVM), every claim was compiled again, about
-- 15 ms of a 2 ms claim, which held W7's diamonds to a tenth of the
-- independent drain's rate. Its plans are short index walks that never
-- gain from JIT; the setting holds for the functions it calls too.
ALTER FUNCTION {schema}.claimable(text[], text[], integer) SET jit = off;

-- An operation's result, as its dependents and operators read it: its
-- succeeded attempt's, or the one an operator supplied resolving it as
-- succeeded; NULL for none. (SQL, so checked when created: after the
-- column it reads.)
CREATE FUNCTION {schema}.step_result(op bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT a.result FROM {schema}.attempts a
         WHERE a.operation_id = op AND a.outcome = 'succeeded'
         ORDER BY a.id DESC LIMIT 1),
        (SELECT x.result FROM {schema}.operator_actions x
         WHERE x.operation_id = op AND x.action = 'resolve' AND x.to_status = 'succeeded'
         ORDER BY x.id DESC LIMIT 1))
$$;
