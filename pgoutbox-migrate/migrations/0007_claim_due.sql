-- Migration 7: a claim's work is bounded by the rows it can take.
--
-- Migration 6 reads a name's pending rows priority by priority, and finds
-- each next priority by one index descent that cannot see `run_at`: a
-- priority whose rows are all scheduled later costs a descent and a walk
-- that ends at once. Beside rows scheduled later over many distinct
-- priorities, every claim (every idle poll) paid for all of them: 10
-- ready rows beside future rows over 5,000 priorities took 67-122 ms a
-- claim, over 30,000 priorities 540-650 ms.
--
-- The walk now counts the priorities it visits that give it nothing.
-- After 16 of them, then 64, 256 and so on (four times more each time),
-- it asks the new index of due rows (name, run_at) how many rows below
-- the current priority are ready, up to 64 per empty priority visited.
-- When they are no more than that, they are all the rows the claim could
-- take: the best of them in claim order (priority, then run_at, then id)
-- are locked in that order, skipping rows other claims hold, and the walk
-- is over. Otherwise the walk goes on. A priority visited costs about two
-- index descents, a due row read about a twentieth of that, so the claim
-- costs at most a small multiple of the cheaper of the two: the
-- priorities above the rows it takes, or the ready rows of its names.
-- Rows scheduled later are read by neither. A claim of several names
-- first counts its names' priorities, up to 16, then 64 and so on: while
-- one name has more, it asks the due rows the same way before its rounds
-- (which would visit every priority of every name).
--
-- The common case is untouched: rows of a few priorities are claimed by
-- the walk of migration 6, and the due rows are never asked for.
CREATE INDEX operations_due_idx ON {schema}.operations (name, run_at) INCLUDE (priority, id)
    WHERE status IN ('pending', 'retrying');

-- Locks up to `n` of `ids` (already in claim order) that are still ready,
-- in that order, stepping over rows other claims hold.
CREATE OR REPLACE FUNCTION {schema}.claim_in_order(ids bigint[], n integer)
RETURNS SETOF bigint
ROWS 10
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    wanted integer := n;
    pos    integer := 1;
    locked integer;
BEGIN
    WHILE wanted > 0 AND pos <= coalesce(cardinality(ids), 0) LOOP
        RETURN QUERY
            SELECT o.id FROM {schema}.operations o
            WHERE o.id = ANY (ids[pos : pos + wanted - 1])
              AND o.status IN ('pending', 'retrying')
              AND o.run_at <= now()
            FOR UPDATE OF o SKIP LOCKED;
        GET DIAGNOSTICS locked = ROW_COUNT;
        pos := pos + wanted;
        wanted := wanted - locked;
    END LOOP;
END
$$;


-- The best `k` ready rows of `names` (and `queues` when not empty) below
-- priority `below` (NULL: any), in claim order, when no more than `most`
-- rows are ready there; NULL when more are. One read of the index.
CREATE OR REPLACE FUNCTION {schema}.due_rows(names text[], queues text[], below smallint,
                                             most integer, k integer)
RETURNS bigint[]
LANGUAGE sql STABLE
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
    WITH due AS MATERIALIZED (
        SELECT o.id, o.priority, o.run_at FROM {schema}.operations o
        WHERE o.status IN ('pending', 'retrying')
          AND o.name = ANY (names)
          AND o.run_at <= now()
          AND (below IS NULL OR o.priority < below)
          AND (cardinality(queues) = 0 OR o.queue = ANY (queues))
        LIMIT most + 1
    )
    SELECT CASE WHEN (SELECT count(*) FROM due) <= most THEN (
        SELECT coalesce(array_agg(b.id ORDER BY b.priority DESC, b.run_at, b.id), '{}')
        FROM (SELECT * FROM due ORDER BY priority DESC, run_at, id LIMIT k) b
    ) END
$$;

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
    due    bigint[];
    locked integer;
    -- Priorities visited that gave nothing, and when to ask the due rows.
    empty  integer := 0;
    ask_at integer := 16;
    levels integer;
    level  smallint;
BEGIN
    -- One name: for each priority, highest first, one walk of that
    -- priority's ready rows that locks as it goes. Rows locked by other
    -- claims are stepped over once, not re-read from the head each round,
    -- and the walk ends at the first row scheduled later.
    IF cardinality(names) = 1 THEN
        SELECT o.priority INTO level FROM {schema}.operations o
        WHERE o.status IN ('pending', 'retrying') AND o.name = names[1]
        ORDER BY o.priority DESC LIMIT 1;
        WHILE level IS NOT NULL LOOP
            RETURN QUERY
                SELECT o.id FROM {schema}.operations o
                WHERE o.status IN ('pending', 'retrying')
                  AND o.name = names[1]
                  AND o.priority = level
                  AND o.run_at <= now()
                  AND (cardinality(queues) = 0 OR o.queue = ANY (queues))
                ORDER BY o.run_at, o.id
                LIMIT wanted
                FOR UPDATE OF o SKIP LOCKED;
            GET DIAGNOSTICS locked = ROW_COUNT;
            wanted := wanted - locked;
            EXIT WHEN wanted <= 0;
            IF locked = 0 THEN
                empty := empty + 1;
            END IF;
            -- Many priorities without a ready row. Every priority down to
            -- this one is done, so the ready rows below it are all that is
            -- left to take: when few, the best of them are taken through
            -- the index of due rows (with room for rows that other claims
            -- hold); otherwise the walk goes on.
            IF empty >= ask_at THEN
                due := {schema}.due_rows(names, queues, level, 64 * empty, 4 * wanted + 64);
                IF due IS NOT NULL THEN
                    RETURN QUERY SELECT {schema}.claim_in_order(due, wanted);
                    RETURN;
                END IF;
                ask_at := ask_at * 4;
            END IF;
            SELECT o.priority INTO level FROM {schema}.operations o
            WHERE o.status IN ('pending', 'retrying') AND o.name = names[1]
              AND o.priority < level
            ORDER BY o.priority DESC LIMIT 1;
        END LOOP;
        RETURN;
    END IF;
    -- Several names: the rounds below visit every priority of every name.
    -- While one of them has more priorities than `ask_at`, the due rows,
    -- when few enough, as above (the priorities counted again each time,
    -- four times further).
    LOOP
        WITH RECURSIVE walk (name, priority, depth) AS (
            SELECT u.name, (SELECT o.priority FROM {schema}.operations o
                            WHERE o.status IN ('pending', 'retrying') AND o.name = u.name
                            ORDER BY o.priority DESC LIMIT 1), 1
            FROM unnest(names) AS u(name)
            UNION ALL
            SELECT w.name, (SELECT o.priority FROM {schema}.operations o
                            WHERE o.status IN ('pending', 'retrying') AND o.name = w.name
                              AND o.priority < w.priority
                            ORDER BY o.priority DESC LIMIT 1), w.depth + 1
            FROM walk w
            WHERE w.priority IS NOT NULL AND w.depth <= ask_at
        )
        SELECT count(*) INTO levels FROM walk WHERE priority IS NOT NULL AND depth > ask_at;
        EXIT WHEN levels = 0;
        due := {schema}.due_rows(names, queues, NULL, 64 * ask_at, 4 * wanted + 64);
        IF due IS NOT NULL THEN
            RETURN QUERY SELECT {schema}.claim_in_order(due, wanted);
            RETURN;
        END IF;
        ask_at := ask_at * 4;
    END LOOP;
    FOR round IN 1..4 LOOP
        -- Each name's priorities, highest first (one index descent per
        -- priority), then, for each, its first ready rows: rows
        -- scheduled later end each walk, as above.
        SELECT array_agg(c.id) INTO picked
        FROM (
            WITH RECURSIVE levels (name, priority) AS (
                SELECT u.name, (SELECT o.priority FROM {schema}.operations o
                                WHERE o.status IN ('pending', 'retrying') AND o.name = u.name
                                ORDER BY o.priority DESC LIMIT 1)
                FROM unnest(names) AS u(name)
                UNION ALL
                SELECT l.name, (SELECT o.priority FROM {schema}.operations o
                                WHERE o.status IN ('pending', 'retrying') AND o.name = l.name
                                  AND o.priority < l.priority
                                ORDER BY o.priority DESC LIMIT 1)
                FROM levels l
                WHERE l.priority IS NOT NULL
            )
            SELECT r.id
            FROM levels l
            CROSS JOIN LATERAL (
                SELECT o.id, o.priority, o.run_at FROM {schema}.operations o
                WHERE o.status IN ('pending', 'retrying')
                  AND o.name = l.name
                  AND o.priority = l.priority
                  AND o.run_at <= now()
                  AND (cardinality(queues) = 0 OR o.queue = ANY (queues))
                  AND o.id <> ALL (tried)
                ORDER BY o.run_at, o.id
                LIMIT wanted
            ) r
            WHERE l.priority IS NOT NULL
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
