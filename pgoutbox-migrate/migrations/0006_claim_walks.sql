-- Migration 6: claims read only the rows they take.
--
-- Migration 2's `claimable` picks candidates, then locks them with SKIP
-- LOCKED, and when other claims hold some of them it starts again from
-- the head of the names' ready rows, up to four rounds. Under concurrent
-- claims of one row each (a transactional handler's chained claim, one per
-- slot, each holding its row until its transaction commits) that made a
-- claim of one row read the head of the range about three times: in the
-- benchmark's W1-tx a claim took 0.58 ms to execute on average, two thirds
-- of the drain's time in the database. And when fewer rows were ready
-- than the claim asked for, each name's walk went on through every row of
-- the name scheduled later (about 9 ms beside 200,000 rows an hour ahead,
-- at every poll of an idle worker).
--
-- Rows are now read priority by priority, highest first (the next
-- priority found by one index descent), and each priority's walk is
-- bounded by `run_at <= now()`, so it ends at the first row scheduled
-- later: 0.3 ms beside those 200,000 rows, with one name or several. A
-- claim of one name has no merge across names to do: it locks as it walks
-- (FOR UPDATE SKIP LOCKED under the LIMIT), as a hand-written queue claim
-- does, 0.32 ms per chained claim in W1-tx. A claim of several names keeps
-- migration 2's rounds, which choose the best rows across names before
-- locking any.
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
    level  smallint;
BEGIN
    -- One name: for each priority, highest first, one walk of that
    -- priority's ready rows that locks as it goes. Rows locked by other
    -- claims are stepped over once, not re-read from the head each round,
    -- and the walk ends at the first row scheduled later: rows waiting for
    -- their `run_at` are never read, whatever their priority.
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
            SELECT o.priority INTO level FROM {schema}.operations o
            WHERE o.status IN ('pending', 'retrying') AND o.name = names[1]
              AND o.priority < level
            ORDER BY o.priority DESC LIMIT 1;
        END LOOP;
        RETURN;
    END IF;
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
