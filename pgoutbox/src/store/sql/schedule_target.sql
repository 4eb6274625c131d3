-- Schedule $1's row, locked for an operator's removal: whether it is
-- paused. A worker declaring it meanwhile waits for the removal's
-- transaction (its declaration needs this row). No row when unknown.
SELECT paused FROM {schema}.schedules WHERE name = $1 FOR UPDATE
