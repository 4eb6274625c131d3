-- The test kit: the operations named $1 that the transaction in progress
-- inserted, in id order. `xmin` is the transaction that wrote the row
-- version: this one's id (taken as `xid`, as `xmin` is) picks them.
SELECT id, payload
FROM {schema}.operations
WHERE name = $1 AND xmin = pg_current_xact_id()::xid
ORDER BY id
