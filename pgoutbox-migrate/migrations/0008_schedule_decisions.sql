-- Migration 8: schedules remember what was decided, not only what was
-- published, and operators can remove a schedule retired from code.
--
-- `last_decided` is the last tick a worker handled in any way: published,
-- skipped while paused, skipped by the missed-ticks policy, or whose
-- payload failed. When the declaration in force changes (a redeploy with
-- a new expression, zone, policy or operation, or `take_over`), the new
-- one's cursor starts after it, so a tick already decided never comes due
-- again as missed. Rows from before this migration have none: the worker
-- then falls back to the tick before the cursor of the expression in the
-- row (every tick before the cursor was handled).
--
-- `held_from` / `held_until` are the last pause's window, recorded by the
-- resume: a tick in [held_from, held_until) that no worker handled (none
-- was running during the pause) is skipped as paused when a worker finds
-- it, never published as missed. A pause and resume that follow an
-- earlier one before any worker handled it widen the window to cover both.
ALTER TABLE {schema}.schedules ADD COLUMN last_decided timestamptz;
ALTER TABLE {schema}.schedules ADD COLUMN held_from timestamptz;
ALTER TABLE {schema}.schedules ADD COLUMN held_until timestamptz;

-- `pgoutbox schedules remove NAME --reason …` deletes a schedule's row,
-- recorded in the audit trail as `remove` (the trail names the schedule by
-- text and outlives the row). The widened check is added NOT VALID (no
-- long lock) and then validated: every existing row already satisfies it.
ALTER TABLE {schema}.operator_actions DROP CONSTRAINT operator_actions_action_check;
ALTER TABLE {schema}.operator_actions ADD CONSTRAINT operator_actions_action_check CHECK (action IN
    ('retry', 'cancel', 'resolve', 'replay', 'purge', 'pause', 'resume', 'remove')) NOT VALID;
ALTER TABLE {schema}.operator_actions VALIDATE CONSTRAINT operator_actions_action_check;
