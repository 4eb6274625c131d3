-- The operations of the workflow rooted at $1 (the root among them), in
-- id order.
SELECT {operation_columns} FROM {schema}.operations
WHERE id = $1 OR root_id = $1
ORDER BY id
