-- The attempt whose transaction this is, as `Store::begin_attempt` marked
-- it (transaction-local: gone once the transaction ends); '' when unmarked.
SELECT coalesce(current_setting('pgoutbox.attempt', true), '')
