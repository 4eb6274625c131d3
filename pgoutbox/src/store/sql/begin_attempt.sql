-- Open a transactional handler's transaction, marked (transaction-locally)
-- with its attempt so that `complete_success` can tell it is still the same
-- transaction. Sent as one simple query, `BEGIN` and the mark together,
-- which cannot take binds: `{attempt_id}` is the attempt's id, an integer
-- put in when the statement is sent.
BEGIN; SELECT set_config('pgoutbox.attempt', '{attempt_id}', true)
