-- Applies an operator's action to workflow $1 (its row locked by
-- workflow_lock.sql): $2 'cancel' (`workflow_cancel`, $3 why, $4 whether
-- to compensate) or 'retry' (`workflow_retry`, $3 why). Migration 11 has
-- both.
SELECT CASE $2
    WHEN 'cancel' THEN {schema}.workflow_cancel($1, $3, $4)
    WHEN 'retry' THEN {schema}.workflow_retry($1, $3)
END AS applied
