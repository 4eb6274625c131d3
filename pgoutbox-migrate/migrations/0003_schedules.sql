-- Migration 3: schedules. Periodic operations declared in workers' routers
-- (`WorkflowRouter::schedule`), one row per schedule name, and which live
-- workers declare each; operators pause and resume them, recorded in
-- `operator_actions` beside the actions on operations.

-- One row per schedule name. The columns describe the declaration in force
-- (`declaration` is a hash of the cron expression, zone, missed-ticks policy
-- and operation name); `next_tick` is the first tick not yet handled
-- (published or skipped), so a worker that starts after a pause in service
-- finds the missed ticks from there. `last_tick` and `last_operation_id` are
-- the last tick published and its operation. Every worker that publishes a
-- tick does so in one transaction with the update of this row, under its
-- row lock; the operation's idempotency key `schedule:<name>:<tick>` keeps
-- one operation per tick even without it.
CREATE TABLE {schema}.schedules (
    name              text        PRIMARY KEY,
    operation         text        NOT NULL,
    cron              text        NOT NULL,
    time_zone         text        NOT NULL,
    missed            text        NOT NULL,
    declaration       text        NOT NULL,
    next_tick         timestamptz NOT NULL,
    last_tick         timestamptz,
    last_operation_id bigint,
    paused            boolean     NOT NULL DEFAULT false,
    paused_by         text,
    paused_reason     text,
    paused_at         timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_name_check CHECK (name ~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$'),
    CONSTRAINT schedules_missed_check CHECK (missed IN ('latest', 'all', 'none'))
);

-- Which workers declare which schedule, and how: two live workers with
-- different declarations of one name are a conflict (reported by `stats`,
-- the log and a gauge; the later one refuses to start unless it takes
-- over). A worker's rows go with the worker's row (retention).
CREATE TABLE {schema}.schedule_declarations (
    schedule    text        NOT NULL REFERENCES {schema}.schedules (name) ON DELETE CASCADE,
    worker_id   uuid        NOT NULL REFERENCES {schema}.workers (id) ON DELETE CASCADE,
    declaration text        NOT NULL,
    operation   text        NOT NULL,
    cron        text        NOT NULL,
    time_zone   text        NOT NULL,
    missed      text        NOT NULL,
    declared_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, worker_id)
);

CREATE INDEX schedule_declarations_worker_idx ON {schema}.schedule_declarations (worker_id);

-- Operators pause and resume schedules: their actions go in the same
-- audit trail, naming the schedule instead of an operation (exactly one of
-- the two). The widened checks are added NOT VALID (no long lock) and then
-- validated: every existing row already satisfies them.
ALTER TABLE {schema}.operator_actions ALTER COLUMN operation_id DROP NOT NULL;
ALTER TABLE {schema}.operator_actions ADD COLUMN schedule text;
ALTER TABLE {schema}.operator_actions ADD CONSTRAINT operator_actions_target_check
    CHECK ((operation_id IS NULL) <> (schedule IS NULL)) NOT VALID;
ALTER TABLE {schema}.operator_actions VALIDATE CONSTRAINT operator_actions_target_check;
ALTER TABLE {schema}.operator_actions DROP CONSTRAINT operator_actions_action_check;
ALTER TABLE {schema}.operator_actions ADD CONSTRAINT operator_actions_action_check CHECK (action IN
    ('retry', 'cancel', 'resolve', 'replay', 'purge', 'pause', 'resume')) NOT VALID;
ALTER TABLE {schema}.operator_actions VALIDATE CONSTRAINT operator_actions_action_check;
CREATE INDEX operator_actions_schedule_idx ON {schema}.operator_actions (schedule, id)
    WHERE schedule IS NOT NULL;
