-- The operators' dashboard: the in-doubt queue, oldest first, read through
-- an index so that its cost follows the stalled operations, not the table.
-- Stalled operations are few and leave only by an operator's action, so
-- the index stays small, and a row enters it only when it stalls.
CREATE INDEX operations_stalled_idx ON {schema}.operations (id)
    WHERE status = 'stalled';
