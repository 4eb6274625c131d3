-- The database's clock: schedules decide what is due by it, never by a
-- worker's. Inside a transaction, the transaction's start.
SELECT now()
