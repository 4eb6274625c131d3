-- Moves schedule $1's cursor to $3 after its due ticks were handled,
-- records the last tick published ($4) and its operation ($5) when one
-- was, and the last tick decided ($6: published, skipped while paused,
-- skipped by the policy, or whose payload failed), which a new
-- declaration's cursor starts after. Fenced by the declaration $2 the
-- ticks were computed from. Returns the number of rows changed.
UPDATE {schema}.schedules
SET next_tick = $3,
    last_tick = coalesce($4, last_tick),
    last_operation_id = coalesce($5, last_operation_id),
    last_decided = greatest(last_decided, $6),
    updated_at = now()
WHERE name = $1 AND declaration = $2
