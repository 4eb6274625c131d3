-- The operators' dashboard reads, each through an index so that its cost
-- follows what it shows, not the size of the tables.

-- The throughput chart counts the attempts that ended in the last hour.
-- Attempts get `finished_at` once, when they end, so this costs one index
-- entry per attempt.
CREATE INDEX attempts_finished_idx ON {schema}.attempts (finished_at)
    WHERE finished_at IS NOT NULL;

-- The in-doubt queue, oldest first: stalled operations are few and leave
-- only by an operator's action, so this index stays small.
CREATE INDEX operations_stalled_idx ON {schema}.operations (id)
    WHERE status = 'stalled';
