-- Migration 2: hardening. Claims that read only their own names' ready
-- rows, attempt numbers that only grow, operator purges in the audit trail.

-- Claims cost the same whatever other names or far-future rows the table
-- holds. Migration 1's claim walked one index in (priority, run_at, id)
-- order and filtered name and run_at row by row: 200,000 ready rows of a
-- name this worker does not handle made a claim of 10 rows take 50–300 ms
-- instead of well under 1 ms. Ready rows are now indexed by name first,
-- then in claim order, so a claim reads, for each name it handles, only the
-- rows it takes.
CREATE INDEX operations_ready_idx ON {schema}.operations (name, priority DESC, run_at, id)
    WHERE status IN ('pending', 'retrying');
DROP INDEX {schema}.operations_claim_idx;

-- The claim's choice of rows: up to `n` ready operations among `names`
-- (and `queues` when not empty), in claim order (priority, then run_at,
-- then id), locked with SKIP LOCKED. Each name gives its first ready rows
-- from `operations_ready_idx`; the best `n` of them are locked, and when
-- another claim holds some of them the next candidates are tried, for a
-- bounded number of rounds (a claim that comes back short is followed by
-- another). What a name's walk still reads and skips: its own rows in a
-- queue this worker does not serve, and its own rows scheduled later with a
-- higher priority than its ready ones. PL/pgSQL so that its plans are
-- cached per session; the planner settings keep the walk in index order
-- even on a freshly loaded, never-analyzed table.
CREATE OR REPLACE FUNCTION {schema}.claimable(names text[], queues text[], n integer)
RETURNS SETOF bigint
ROWS 10
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET enable_bitmapscan = off
-- Planned once per session: a custom plan per call cost more than the claim
-- itself, and the generic plan is the one wanted (walk the index in order).
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    wanted integer := n;
    tried  bigint[] := '{}';
    picked bigint[];
    locked integer;
BEGIN
    FOR round IN 1..4 LOOP
        SELECT array_agg(c.id) INTO picked
        FROM (
            SELECT r.id
            FROM unnest(names) AS u(name)
            CROSS JOIN LATERAL (
                SELECT o.id, o.priority, o.run_at FROM {schema}.operations o
                WHERE o.status IN ('pending', 'retrying')
                  AND o.name = u.name
                  AND o.run_at <= now()
                  AND (cardinality(queues) = 0 OR o.queue = ANY (queues))
                  AND o.id <> ALL (tried)
                ORDER BY o.priority DESC, o.run_at, o.id
                LIMIT wanted
            ) r
            ORDER BY r.priority DESC, r.run_at, r.id
            LIMIT wanted
        ) c;
        EXIT WHEN picked IS NULL;
        RETURN QUERY
            SELECT o.id FROM {schema}.operations o
            WHERE o.id = ANY (picked)
              AND o.status IN ('pending', 'retrying')
              AND o.run_at <= now()
            FOR UPDATE OF o SKIP LOCKED;
        GET DIAGNOSTICS locked = ROW_COUNT;
        wanted := wanted - locked;
        -- Done when enough rows are locked, or when every candidate was:
        -- then there were no more.
        EXIT WHEN wanted <= 0 OR locked = cardinality(picked);
        tried := tried || picked;
    END LOOP;
END
$$;

-- Operators: `pgoutbox purge --include-dead` and
-- `--include-stalled` delete operations that only an operator may let go,
-- so each deleted `dead` or `stalled` operation gets a `purge` action in
-- the audit trail. The widened check is added NOT VALID (no long lock) and
-- then validated: every existing row already satisfies it.
ALTER TABLE {schema}.operator_actions DROP CONSTRAINT operator_actions_action_check;
ALTER TABLE {schema}.operator_actions ADD CONSTRAINT operator_actions_action_check CHECK (action IN
    ('retry', 'cancel', 'resolve', 'replay', 'purge')) NOT VALID;
ALTER TABLE {schema}.operator_actions VALIDATE CONSTRAINT operator_actions_action_check;

-- `operation_types` names follow the same grammar as `operations` names:
-- `schema export --out DIR` makes file names of them. NOT VALID: rows
-- recorded before this migration are left as they are (the command refuses
-- a name outside the grammar), every new row is checked.
ALTER TABLE {schema}.operation_types ADD CONSTRAINT operation_types_name_check
    CHECK (name ~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$') NOT VALID;

-- Attempt numbers only grow. Migration 1's snooze gave
-- its attempt back (`attempt = attempt - 1`), so the next claim reused the
-- number, and a late snooze or failure write of attempt n, fenced by the
-- number, matched attempt n + 1 of the same worker. A snooze now leaves
-- `attempt` alone and counts itself here instead: the attempts that count
-- against `max_attempts` are `attempt - snoozes`. From this migration on,
-- each of an operation's attempts has its own `attempts.number` (migration
-- 1's comment on that column describes the old rule).
ALTER TABLE {schema}.operations ADD COLUMN snoozes integer NOT NULL DEFAULT 0
    CONSTRAINT operations_snoozes_check CHECK (snoozes >= 0);

-- Each worker records its own lease. `stats`, `workers` and the start-up
-- report judge a worker live by a heartbeat younger than that lease (its
-- heartbeat renews every third of it), not by one fixed window: a worker
-- with `lease = 6m` beats every two minutes and is healthy all the while.
-- NULL for workers registered before this migration; readers then fall
-- back to the window they were given.
ALTER TABLE {schema}.workers ADD COLUMN lease_ms bigint
    CONSTRAINT workers_lease_ms_check CHECK (lease_ms > 0);
