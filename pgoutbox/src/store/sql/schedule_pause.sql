-- An operator pauses ($2 true) or resumes ($2 false) schedule $1: applied
-- only when it is not already so (the row is locked, so concurrent
-- operators and workers serialize); recorded in `operator_actions` either
-- way, in the same statement, as action $5 by actor $3 for reason $4,
-- with the state before and after (`active` or `paused`). A resume
-- records the pause's window (`held_from`, `held_until`). Returns no row
-- for an unknown schedule.
WITH target AS (
    SELECT name, paused FROM {schema}.schedules WHERE name = $1 FOR UPDATE
), changed AS (
    UPDATE {schema}.schedules s
    SET paused = $2,
        paused_by = CASE WHEN $2 THEN $3 END,
        paused_reason = CASE WHEN $2 THEN $4 END,
        paused_at = CASE WHEN $2 THEN now() END,
        -- A resume records the pause's window: ticks in it that no worker
        -- handled are skipped as paused, never published as missed. A
        -- window no worker has passed yet (the cursor before its end) is
        -- widened to cover this pause too.
        held_from = CASE
            WHEN $2 THEN s.held_from
            WHEN s.held_until IS NOT NULL AND s.next_tick < s.held_until
                THEN least(s.held_from, coalesce(s.paused_at, now()))
            ELSE coalesce(s.paused_at, now())
        END,
        held_until = CASE WHEN $2 THEN s.held_until ELSE now() END,
        updated_at = now()
    FROM target t
    WHERE s.name = t.name AND t.paused <> $2
    RETURNING s.name
), recorded AS (
    INSERT INTO {schema}.operator_actions
        (schedule, action, outcome, actor, reason, from_status, to_status)
    SELECT t.name, $5,
           CASE WHEN EXISTS (SELECT 1 FROM changed) THEN 'applied' ELSE 'refused' END,
           $3, $4,
           CASE WHEN t.paused THEN 'paused' ELSE 'active' END,
           CASE WHEN EXISTS (SELECT 1 FROM changed) THEN (CASE WHEN $2 THEN 'paused' ELSE 'active' END) END
    FROM target t
    RETURNING id
)
SELECT t.paused, EXISTS (SELECT 1 FROM changed) AS applied FROM target t
