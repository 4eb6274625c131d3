-- Migration 11: sagas. A step may carry the operation that answers it
-- (its compensation: a refund for a charge), published only if its
-- workflow fails after it succeeded; and a workflow's failure is now a
-- recorded fact (when, why, by whom), from which everything follows:
-- - in the transaction that records it, the steps that have not started
--   are cancelled, not compensated (on a step's failure, those waiting for
--   a dependency opted out with `Settled` are left to their release rules:
--   they run however it ends);
-- - once no step of its own is waiting, ready or running any more (in that
--   transaction, or in the one that ends the last of them), the
--   compensations of the steps that succeeded are published, in reverse
--   dependency order: a step's compensation waits for the compensation of
--   every later step that succeeded;
-- - a step `stalled` then holds its own compensation (and those of the
--   steps before it): published when an operator resolves it as
--   succeeded, never when it ends otherwise.
-- Every change of a step of a failed workflow that can publish or release
-- a compensation runs under the workflow's row lock (`workflow_settle`; an
-- operator's action on a step takes it first), so that what a publish
-- reads of the steps cannot change under it.

ALTER TABLE {schema}.workflows DROP CONSTRAINT workflows_state_check;
ALTER TABLE {schema}.workflows ADD CONSTRAINT workflows_state_check CHECK (state IN
    ('running', 'succeeded', 'failed', 'stalled', 'cancelled', 'compensating'));

-- When and why the workflow failed (NULL: it has not); `cancelled`: an
-- operator cancelled it (it ends `cancelled`, not `failed`);
-- `compensate`: whether what succeeded is compensated.
ALTER TABLE {schema}.workflows ADD COLUMN failed_at timestamptz;
ALTER TABLE {schema}.workflows ADD COLUMN failure text;
ALTER TABLE {schema}.workflows ADD COLUMN cancelled boolean NOT NULL DEFAULT false;
ALTER TABLE {schema}.workflows ADD COLUMN compensate boolean NOT NULL DEFAULT true;

-- Workflows that failed or were cancelled before this migration keep their
-- state: their failure is recorded as having happened when they ended.
UPDATE {schema}.workflows
SET failed_at = coalesce(finished_at, updated_at),
    failure = 'recorded before migration 11',
    cancelled = (state = 'cancelled')
WHERE state IN ('failed', 'cancelled');

-- The step an operation compensates (NULL for every other operation).
ALTER TABLE {schema}.operations ADD COLUMN compensates bigint;
CREATE INDEX operations_compensates_idx ON {schema}.operations (compensates) WHERE compensates IS NOT NULL;

-- Whether an edge counts in its step's `waiting_for` (its dependency had
-- not ended when the edge was made). Always so, but for the edges a
-- compensation takes to steps that had ended: in a batch of successes,
-- the compensations published by the first row's trigger may name a step
-- of the same batch whose own trigger has yet to run; it must not count
-- them down.
ALTER TABLE {schema}.workflow_edges ADD COLUMN counted boolean NOT NULL DEFAULT true;

-- A step's declared compensation, as data: the operation to publish if its
-- workflow fails after it succeeded.
CREATE TABLE {schema}.workflow_compensations (
    step_id      bigint   PRIMARY KEY,
    workflow_id  bigint   NOT NULL,
    name         text     NOT NULL,
    payload      jsonb    NOT NULL,
    schema_hash  text     NOT NULL,
    priority     smallint NOT NULL,
    queue        text     NOT NULL,
    max_attempts integer  NOT NULL,
    idempotent   boolean  NOT NULL,
    -- The other steps its payload names, whose results its handler reads.
    inputs       bigint[] NOT NULL DEFAULT '{}'
);

CREATE INDEX workflow_compensations_workflow_idx ON {schema}.workflow_compensations (workflow_id);

-- Operator actions on a whole workflow (no operation, no schedule; its
-- state in `from_status`/`to_status`), and the step actions they made.
ALTER TABLE {schema}.operator_actions ADD COLUMN workflow_id bigint;
ALTER TABLE {schema}.operator_actions DROP CONSTRAINT operator_actions_target_check;
ALTER TABLE {schema}.operator_actions ADD CONSTRAINT operator_actions_target_check
    CHECK (num_nonnulls(operation_id, schedule) = 1
           OR (operation_id IS NULL AND schedule IS NULL AND workflow_id IS NOT NULL));
CREATE INDEX operator_actions_workflow_idx ON {schema}.operator_actions (workflow_id, id) WHERE workflow_id IS NOT NULL;

-- Announces operations of `name` made ready by this transaction to every
-- registered worker, coalesced as a publish's wake-up (one notifying
-- transaction per channel, name and 10 ms slot).
CREATE FUNCTION {schema}.wake_workers(name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(w.channel, wake_workers.name)
    FROM (SELECT DISTINCT channel FROM {schema}.workers
          WHERE stopped_at IS NULL AND channel IS NOT NULL) w
    WHERE pg_try_advisory_xact_lock(
        hashtext('pgoutbox wake-up ' || w.channel || ' ' || wake_workers.name),
        (floor(extract(epoch FROM clock_timestamp()) * 100)::bigint % 2147483647)::integer);
END $$;

-- Whether a step is not ended: it may still succeed (a stalled one, once
-- an operator resolves it).
CREATE FUNCTION {schema}.step_open(status text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT status IN ('waiting', 'pending', 'running', 'retrying', 'stalled')
$$;

-- Publishes the compensation of succeeded step `step`, if it declares one
-- and none stands yet (one that an operator's workflow retry cancelled
-- before it ran does not count): exactly once per success.
--
-- It waits (an opted-out edge: for any end) for each later step, reachable
-- from `step` through the workflow's own edges, that is still open (only
-- a stalled one: it is called once no step runs), and for the
-- compensation of each that succeeded, so compensations run in reverse
-- dependency order; and it takes edges to `step` and to the steps its
-- payload names, whose results its handler reads. Compensations that wait
-- for `step` itself (it was stalled when they were published) now wait
-- for this one too: called after the release of `step`'s dependents, under
-- the workflow's row lock.
CREATE FUNCTION {schema}.compensate_step(step bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    c {schema}.workflow_compensations%ROWTYPE;
    root bigint;
    comp bigint;
    waits integer;
BEGIN
    SELECT * INTO c FROM {schema}.workflow_compensations WHERE step_id = step;
    IF NOT FOUND OR EXISTS (SELECT 1 FROM {schema}.operations
                            WHERE compensates = step AND status <> 'cancelled') THEN
        RETURN NULL;
    END IF;
    UPDATE {schema}.workflows SET steps = steps + 1, updated_at = now()
    WHERE id = c.workflow_id RETURNING root_id INTO root;
    comp := nextval(pg_get_serial_sequence('{schema}.operations', 'id'));
    WITH RECURSIVE later(id) AS (
        SELECT e.operation_id
        FROM {schema}.workflow_edges e
        JOIN {schema}.operations o ON o.id = e.operation_id AND o.compensates IS NULL
        WHERE e.dependency_id = step
        UNION
        SELECT e.operation_id
        FROM later l
        JOIN {schema}.workflow_edges e ON e.dependency_id = l.id
        JOIN {schema}.operations o ON o.id = e.operation_id AND o.compensates IS NULL
    ), awaited AS (
        SELECT CASE WHEN {schema}.step_open(o.status) THEN o.id ELSE k.id END AS id
        FROM later l
        JOIN {schema}.operations o ON o.id = l.id
        LEFT JOIN {schema}.operations k ON k.compensates = l.id AND k.status <> 'cancelled'
        UNION
        SELECT step
        UNION
        SELECT unnest(c.inputs)
    ), edges AS (
        INSERT INTO {schema}.workflow_edges
            (workflow_id, operation_id, dependency_id, required, counted)
        SELECT c.workflow_id, comp, a.id, false, coalesce({schema}.step_open(d.status), false)
        FROM awaited a LEFT JOIN {schema}.operations d ON d.id = a.id
        WHERE a.id IS NOT NULL
        RETURNING counted
    )
    SELECT count(*) FILTER (WHERE counted) INTO waits FROM edges;
    INSERT INTO {schema}.operations
        (id, name, payload, schema_hash, status, priority, queue, run_at, max_attempts, idempotent,
         root_id, workflow_id, waiting_for, compensates)
    OVERRIDING SYSTEM VALUE
    VALUES (comp, c.name, c.payload, c.schema_hash,
            CASE WHEN waits > 0 THEN 'waiting' ELSE 'pending' END,
            c.priority, c.queue, now(), c.max_attempts, c.idempotent,
            root, c.workflow_id, waits, step);
    IF waits = 0 THEN
        PERFORM {schema}.wake_workers(c.name);
    END IF;
    -- Compensations published while `step` was open wait for this one.
    WITH waiting AS (
        SELECT e.operation_id AS id
        FROM {schema}.workflow_edges e
        JOIN {schema}.operations y ON y.id = e.operation_id
        WHERE e.dependency_id = step AND y.compensates IS NOT NULL AND y.id <> comp
          AND y.status IN ('waiting', 'pending') AND y.attempt = 0
    ), linked AS (
        INSERT INTO {schema}.workflow_edges (workflow_id, operation_id, dependency_id, required)
        SELECT c.workflow_id, w.id, comp, false FROM waiting w
        ON CONFLICT DO NOTHING
        RETURNING operation_id
    )
    UPDATE {schema}.operations y
    SET waiting_for = coalesce(y.waiting_for, 0) + 1, status = 'waiting', updated_at = now()
    FROM linked l WHERE y.id = l.operation_id;
    RETURN comp;
END $$;

-- Records workflow `wf`'s failure (`why`; by an operator when `by_operator`,
-- compensating what succeeded when `compensate`), once. Whether it did.
CREATE FUNCTION {schema}.workflow_mark_failed(
    wf bigint, why text, by_operator boolean, compensate boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {schema}.workflows
    SET failed_at = now(), failure = why, cancelled = by_operator,
        compensate = workflow_mark_failed.compensate, updated_at = now()
    WHERE id = wf AND failed_at IS NULL;
    RETURN FOUND;
END $$;

-- What follows a workflow's failure, at once: its steps that have not
-- started are cancelled (on a step's failure, not those that wait for a
-- dependency opted out with `Settled`: they run however it ends; an
-- operator's cancel takes them too). The compensations follow from
-- `workflow_settle`.
CREATE FUNCTION {schema}.workflow_wind_down(wf bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    w {schema}.workflows%ROWTYPE;
BEGIN
    SELECT * INTO w FROM {schema}.workflows WHERE id = wf;
    UPDATE {schema}.operations o
    SET status = 'cancelled', finished_at = now(), updated_at = now(),
        last_error = CASE WHEN w.cancelled
            THEN format('cancelled: workflow %s was cancelled: %s', wf, w.failure)
            ELSE format('cancelled: workflow %s failed: %s', wf, w.failure)
        END
    WHERE o.workflow_id = wf AND o.compensates IS NULL
      AND o.status IN ('waiting', 'pending', 'retrying')
      AND (w.cancelled OR NOT EXISTS (
          SELECT 1 FROM {schema}.workflow_edges e WHERE e.operation_id = o.id AND NOT e.required));
END $$;

-- Publishes the compensations of workflow `wf`'s succeeded steps that have
-- none standing, the latest step's first (ids grow in the order steps are
-- added, and a step can depend only on earlier ones), so that each can
-- wait for those of the steps after it. Called by `workflow_settle`, under
-- the workflow's row lock, once it failed and no step of its own is open.
CREATE FUNCTION {schema}.workflow_compensate(wf bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s bigint;
BEGIN
    FOR s IN
        SELECT c.step_id
        FROM {schema}.workflow_compensations c
        JOIN {schema}.operations o ON o.id = c.step_id AND o.status = 'succeeded'
        WHERE c.workflow_id = wf
          AND NOT EXISTS (SELECT 1 FROM {schema}.operations k
                          WHERE k.compensates = c.step_id AND k.status <> 'cancelled')
        ORDER BY c.step_id DESC
    LOOP
        PERFORM {schema}.compensate_step(s);
    END LOOP;
END $$;

-- A workflow's state, from its failure and its steps, after publishing
-- the compensations due (a failed workflow none of whose own steps is
-- open: see `workflow_compensate`). Not failed: `stalled`
-- when a step is, otherwise `running` while one is open, otherwise
-- `succeeded` (a step that ended dead or cancelled with only opted-out
-- dependents did not fail it). Failed: `stalled` when a step or a
-- compensation is stuck (stalled, or a compensation dead), otherwise
-- `compensating` while one is open, otherwise `cancelled` (an operator's
-- cancel) or `failed`. The workflow's row is locked first, so that of two
-- transactions ending its last two steps at once, the second decides, and
-- sees the first.
CREATE OR REPLACE FUNCTION {schema}.workflow_settle(wf bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    w {schema}.workflows%ROWTYPE;
    next text;
BEGIN
    SELECT * INTO w FROM {schema}.workflows WHERE id = wf FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF w.failed_at IS NOT NULL AND w.compensate THEN
        IF NOT EXISTS (SELECT 1 FROM {schema}.operations
                       WHERE workflow_id = wf AND compensates IS NULL
                         AND status IN ('waiting', 'pending', 'running', 'retrying')) THEN
            PERFORM {schema}.workflow_compensate(wf);
        END IF;
    END IF;
    next := CASE
        WHEN EXISTS (SELECT 1 FROM {schema}.operations
                     WHERE workflow_id = wf AND status = 'stalled')
          OR (w.failed_at IS NOT NULL AND EXISTS (
              SELECT 1 FROM {schema}.operations
              WHERE workflow_id = wf AND status = 'dead' AND compensates IS NOT NULL))
            THEN 'stalled'
        WHEN EXISTS (SELECT 1 FROM {schema}.operations
                     WHERE workflow_id = wf
                       AND status IN ('waiting', 'pending', 'running', 'retrying'))
            THEN CASE WHEN w.failed_at IS NULL THEN 'running' ELSE 'compensating' END
        WHEN w.failed_at IS NULL THEN 'succeeded'
        WHEN w.cancelled THEN 'cancelled'
        ELSE 'failed'
    END;
    IF next IS DISTINCT FROM w.state THEN
        UPDATE {schema}.workflows
        SET state = next, updated_at = now(),
            finished_at = CASE WHEN next IN ('succeeded', 'failed', 'cancelled') THEN now() END
        WHERE id = wf;
    END IF;
END $$;

-- What a step's change of state does to its workflow:
-- - dead or cancelled, a step of the workflow's own (not a compensation)
--   whose failure is not opted out (it has a dependent holding it as a
--   `Dep`, or none at all): the workflow fails, first, so that what follows
--   names this step as the cause;
-- - succeeded: each waiting dependent counts one dependency fewer; the one
--   that reaches zero is released (`pending`, ready now);
-- - dead or cancelled: opted-out dependents count it as met; the others,
--   and theirs transitively (up to an opted-out edge), are cancelled, each
--   with a reason naming the dependency;
-- - stalled: nothing; the dependents (and compensations) wait for the
--   operator's decision;
-- - the failure just recorded winds the workflow down (cancels);
-- - the workflow is settled (`workflow_settle`), which publishes the
--   compensations once none of its own steps is open.
-- Each counter is changed under the dependent's row lock, so two
-- dependencies succeeding at once on two workers release it exactly once.
-- The workflow's state is settled last, unless a running step succeeded
-- and has a dependent still open: then no step became dead or stalled or
-- stopped being one, and an open step remains, so the state cannot change;
-- that dependent ends later, in a transaction that settles it. (This keeps
-- a fan-in's dependencies off the workflow's row lock.)
CREATE OR REPLACE FUNCTION {schema}.workflow_step_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    open_dependents integer := 0;
    woken_names integer := 0;
    failed boolean := false;
BEGIN
    -- (Nested conditions: PL/pgSQL evaluates an expression without a
    -- subquery on its fast path, and this runs on every step's success.)
    IF NEW.status IN ('dead', 'cancelled') AND NEW.compensates IS NULL THEN
        IF EXISTS (SELECT 1 FROM {schema}.workflow_edges e
                   WHERE e.dependency_id = NEW.id AND e.required)
           OR NOT EXISTS (SELECT 1 FROM {schema}.workflow_edges e
                          JOIN {schema}.operations d ON d.id = e.operation_id
                          WHERE e.dependency_id = NEW.id AND d.compensates IS NULL) THEN
            failed := {schema}.workflow_mark_failed(
                NEW.workflow_id, format('step %s (%s) is %s', NEW.id, NEW.name, NEW.status),
                false, true);
        END IF;
    END IF;
    IF NEW.status IN ('succeeded', 'dead', 'cancelled') THEN
        WITH met AS (
            UPDATE {schema}.operations d
            SET waiting_for = d.waiting_for - 1,
                status = CASE WHEN d.waiting_for = 1 THEN 'pending' ELSE 'waiting' END,
                run_at = CASE WHEN d.waiting_for = 1 THEN greatest(d.run_at, now()) ELSE d.run_at END,
                updated_at = now()
            FROM {schema}.workflow_edges e
            WHERE e.dependency_id = NEW.id AND d.id = e.operation_id AND d.status = 'waiting'
              AND e.counted AND (NEW.status = 'succeeded' OR NOT e.required)
            RETURNING d.name, d.status
        ), released AS (
            SELECT DISTINCT name FROM met WHERE status = 'pending'
        ), woken AS (
            -- `wake_workers`, inline: this runs on every release.
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
    IF failed THEN
        PERFORM {schema}.workflow_wind_down(NEW.workflow_id);
    END IF;
    IF failed OR NEW.status <> 'succeeded' OR OLD.status <> 'running' OR open_dependents = 0 THEN
        PERFORM {schema}.workflow_settle(NEW.workflow_id);
    END IF;
    RETURN NULL;
END $$;

-- An operator's cancel of workflow `wf`: its failure, recorded as a
-- cancel (`why`), then what follows a failure, every step that has not
-- started included; what succeeded is compensated when `compensate`.
-- Whether it applied (not when the workflow had failed already).
CREATE FUNCTION {schema}.workflow_cancel(wf bigint, why text, compensate boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT {schema}.workflow_mark_failed(wf, why, true, compensate) THEN
        RETURN false;
    END IF;
    PERFORM {schema}.workflow_wind_down(wf);
    PERFORM {schema}.workflow_settle(wf);
    RETURN true;
END $$;

-- An operator's retry of workflow `wf`: its failure is forgotten, its
-- compensations that have not started are cancelled (`why`), and its own
-- steps that ended dead or cancelled run again: ready now when every
-- dependency is met (succeeded; ended at all for an opted-out one; purged
-- since), otherwise `waiting` for the others, those retried with it
-- included. The workflow resumes where it stopped. Returns true.
CREATE FUNCTION {schema}.workflow_retry(wf bigint, why text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {schema}.workflows
    SET failed_at = NULL, failure = NULL, cancelled = false, compensate = true, updated_at = now()
    WHERE id = wf;
    UPDATE {schema}.operations
    SET status = 'cancelled', finished_at = now(), updated_at = now(),
        last_error = format('cancelled: workflow %s was retried: %s', wf, why)
    WHERE workflow_id = wf AND compensates IS NOT NULL AND status IN ('waiting', 'pending');
    WITH targets AS (
        SELECT id FROM {schema}.operations
        WHERE workflow_id = wf AND compensates IS NULL AND status IN ('dead', 'cancelled')
    ), waits AS (
        SELECT t.id, count(d.id) FILTER (WHERE
            d.id IN (SELECT id FROM targets)
            OR (e.required AND d.status <> 'succeeded')
            OR (NOT e.required AND {schema}.step_open(d.status))) AS n
        FROM targets t
        LEFT JOIN {schema}.workflow_edges e ON e.operation_id = t.id
        LEFT JOIN {schema}.operations d ON d.id = e.dependency_id
        GROUP BY t.id
    )
    UPDATE {schema}.operations o
    SET status = CASE WHEN w.n > 0 THEN 'waiting' ELSE 'pending' END,
        waiting_for = w.n, run_at = now(), finished_at = NULL,
        lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    FROM waits w WHERE o.id = w.id;
    PERFORM {schema}.workflow_settle(wf);
    RETURN true;
END $$;
