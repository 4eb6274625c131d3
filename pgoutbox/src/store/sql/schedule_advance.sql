-- Moves schedule $1's cursor to $3 after its due ticks were handled, and
-- records the last tick published ($4) and its operation ($5) when one
-- was. Fenced by the declaration $2 the ticks were computed from. Returns
-- the number of rows changed.
UPDATE {schema}.schedules
SET next_tick = $3,
    last_tick = coalesce($4, last_tick),
    last_operation_id = coalesce($5, last_operation_id),
    updated_at = now()
WHERE name = $1 AND declaration = $2
