-- The operations an operator lists, newest first: the start of the
-- statement. `Store::list_operations` appends the filters that are set
-- (status, name, queue, age), each with its own bind, then the order and
-- the limit.
SELECT {operation_columns} FROM {schema}.operations WHERE true
