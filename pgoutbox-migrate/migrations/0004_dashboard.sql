-- The operators' dashboard reads the operations that wait for an operator
-- through indexes of their own, so that its cost follows them and not the
-- finished rows. A row enters these partial indexes only when it stalls or
-- dies (rare, and never on the path of a success), and leaves them when an
-- operator acts.

-- The in-doubt queue, oldest first, and the stalled counts by name.
CREATE INDEX operations_stalled_idx ON {schema}.operations (id, name)
    WHERE status = 'stalled';

-- The dead counts by name (dead operations are never purged automatically).
CREATE INDEX operations_dead_idx ON {schema}.operations (name)
    WHERE status = 'dead';
