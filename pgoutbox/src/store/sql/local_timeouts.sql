-- Bound the statements of this transaction on the server ($1, e.g.
-- '300ms'): a client that gives up must not leave a statement waiting
-- there, holding the locks it took.
SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $1, true)
