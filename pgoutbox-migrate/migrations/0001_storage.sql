-- pgoutbox storage, version 1.
--
-- `{schema}` stands for the configured schema, validated and double-quoted
-- before this text is run. Every statement is PostgreSQL 14 syntax.

-- Every operation ever published, in exactly one state.
CREATE TABLE {schema}.operations (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text        NOT NULL,
    payload           jsonb       NOT NULL,
    -- SHA-256 (hex) of the canonical JSON Schema of the payload type that
    -- published this row; the schema itself is in `operation_types`.
    schema_hash       text        NOT NULL,
    status            text        NOT NULL DEFAULT 'pending',
    -- Higher runs first.
    priority          smallint    NOT NULL DEFAULT 0,
    queue             text        NOT NULL DEFAULT 'default',
    run_at            timestamptz NOT NULL DEFAULT now(),
    -- Attempts started so far (snoozes do not count).
    attempt           integer     NOT NULL DEFAULT 0,
    max_attempts      integer     NOT NULL,
    -- Whether running it again after an unknown outcome is safe.
    idempotent        boolean     NOT NULL DEFAULT false,
    -- Stable key handed to handlers for external APIs that deduplicate.
    external_key      uuid        NOT NULL DEFAULT gen_random_uuid(),
    -- Publisher-chosen key, unique per operation name.
    idempotency_key   text,
    parent_id         bigint,
    root_id           bigint,
    lease_owner       uuid,
    lease_expires_at  timestamptz,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    CONSTRAINT operations_status_check CHECK (status IN
        ('pending', 'running', 'succeeded', 'retrying', 'dead', 'stalled', 'cancelled')),
    CONSTRAINT operations_attempts_check CHECK (attempt >= 0 AND max_attempts >= 1),
    CONSTRAINT operations_lease_check CHECK ((status = 'running') = (lease_owner IS NOT NULL)),
    CONSTRAINT operations_name_check CHECK (name ~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$')
);

-- The claim query reads only claimable rows, in claim order; finished rows
-- never enter this index, so they cannot slow the hot path as they pile up.
CREATE INDEX operations_claim_idx ON {schema}.operations (priority DESC, run_at, id)
    WHERE status IN ('pending', 'retrying');

-- The claim's choice of rows: ready operations among `names` (and `queues`
-- when not empty), in claim order, locked with SKIP LOCKED. A function so
-- that its planner settings travel with it: on a freshly bulk-loaded,
-- never-analyzed table the planner would otherwise prefer a bitmap scan and
-- a sort of every claimable row, for every claim, over walking the partial
-- index above in order and stopping after `n` rows. PL/pgSQL rather than
-- SQL so that the plan is cached per session instead of made per claim.
CREATE FUNCTION {schema}.claimable(names text[], queues text[], n integer)
RETURNS SETOF bigint
ROWS 10
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
BEGIN
    RETURN QUERY
    SELECT o.id FROM {schema}.operations o
    WHERE o.status IN ('pending', 'retrying')
      AND o.run_at <= now()
      AND o.name = ANY(names)
      AND (cardinality(queues) = 0 OR o.queue = ANY(queues))
    ORDER BY o.priority DESC, o.run_at, o.id
    LIMIT n
    FOR UPDATE OF o SKIP LOCKED;
END
$$;

-- The rescuer looks for expired leases. The predicate names the lease,
-- not `status = 'running'`: a predicate that the fences of the hot path
-- (`id = $1 AND status = 'running' AND …`) match would let the planner,
-- with statistics taken when nothing ran, scan this index (and every dead
-- entry a drain leaves in it) instead of probing the primary key.
CREATE INDEX operations_lease_idx ON {schema}.operations (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;

CREATE UNIQUE INDEX operations_idempotency_key_idx ON {schema}.operations (name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE INDEX operations_root_idx ON {schema}.operations (root_id) WHERE root_id IS NOT NULL;
CREATE INDEX operations_parent_idx ON {schema}.operations (parent_id) WHERE parent_id IS NOT NULL;

-- Retention and `ops list --since` scan finished rows by age.
CREATE INDEX operations_finished_idx ON {schema}.operations (finished_at)
    WHERE finished_at IS NOT NULL;

-- One row per attempt. No foreign key: the audit trail outlives purged
-- operations.
CREATE TABLE {schema}.attempts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operation_id   bigint      NOT NULL,
    operation_name text        NOT NULL,
    -- The operation's attempt count when this attempt started; a snoozed
    -- attempt shares its number with the next one.
    number         integer     NOT NULL,
    worker_id      uuid        NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    -- NULL while the attempt runs.
    outcome        text,
    error          text,
    -- The error's `source()` chain, outermost first, as a JSON array of strings.
    error_chain    jsonb,
    CONSTRAINT attempts_outcome_check CHECK (outcome IN
        ('succeeded', 'failed', 'lost', 'timed_out', 'aborted', 'cancelled', 'snoozed')),
    CONSTRAINT attempts_finished_check CHECK ((outcome IS NULL) = (finished_at IS NULL))
-- Room on each page, so that an attempt's end (outcome, finished_at,
-- error: no indexed column) is a HOT update, written beside its start
-- without touching an index.
) WITH (fillfactor = 80);

CREATE INDEX attempts_operation_idx ON {schema}.attempts (operation_id, id);
-- Retention of the history reads attempts by start, which never changes.
CREATE INDEX attempts_started_idx ON {schema}.attempts (started_at);

-- Every operation name and payload schema ever met, by publishers or
-- workers: the history an auditor needs to read an old payload.
CREATE TABLE {schema}.operation_types (
    name          text        NOT NULL,
    schema_hash   text        NOT NULL,
    json_schema   jsonb       NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, schema_hash)
);

-- Live and recently stopped worker processes.
CREATE TABLE {schema}.workers (
    id           uuid        PRIMARY KEY,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    version      text        NOT NULL,
    -- Operation names and queues this process handles.
    names        text[]      NOT NULL,
    queues       text[]      NOT NULL,
    n_workers    integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz
);

CREATE INDEX workers_heartbeat_idx ON {schema}.workers (heartbeat_at);

-- The audit trail of operators' manual actions. No foreign key either.
CREATE TABLE {schema}.operator_actions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operation_id     bigint      NOT NULL,
    action           text        NOT NULL,
    -- 'applied', or 'refused' when the operation's state forbade it.
    outcome          text        NOT NULL,
    actor            text        NOT NULL,
    reason           text        NOT NULL,
    from_status      text        NOT NULL,
    to_status        text,
    -- For a replay: the new operation.
    new_operation_id bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT operator_actions_action_check CHECK (action IN
        ('retry', 'cancel', 'resolve', 'replay')),
    CONSTRAINT operator_actions_outcome_check CHECK (outcome IN ('applied', 'refused'))
);

CREATE INDEX operator_actions_operation_idx ON {schema}.operator_actions (operation_id, id);
