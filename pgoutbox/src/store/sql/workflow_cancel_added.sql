-- Steps $3, added by step $2's handler to workflow $1 after the workflow
-- failed, are cancelled as the steps that had not started were when it
-- failed (the trigger `workflow_step_changed` follows each).
UPDATE {schema}.operations
SET status = 'cancelled', finished_at = now(), updated_at = now(),
    last_error = format('cancelled: added by step %s after workflow %s failed', $2::bigint, $1::bigint)
WHERE id = ANY($3) AND status IN ('waiting', 'pending')
