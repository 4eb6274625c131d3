-- Migration 12: a workflow-level idempotency key (`Workflow::idempotency_key`).
--
-- A second publish of a workflow with a key already taken inserts nothing
-- and returns the existing workflow (`workflow_open.sql` inserts with
-- `ON CONFLICT DO NOTHING`, then reads the winner back). The key is unique
-- among all workflows, not per workflow name: a schedule's workflow
-- (`schedule:<name>:<tick>`) may be named differently at each tick, and
-- one tick must still make one workflow. The key stays taken for as long
-- as the workflow's row exists. `published_steps` is how many steps the
-- workflow was published with (`steps` counts those its steps add at run
-- time too), so that the read-back returns the steps of the first publish.
ALTER TABLE {schema}.workflows ADD COLUMN idempotency_key text;
ALTER TABLE {schema}.workflows ADD COLUMN published_steps integer;

CREATE UNIQUE INDEX workflows_idempotency_key_idx ON {schema}.workflows (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
