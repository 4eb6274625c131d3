-- Up to $2 operations of the workflow rooted at $1 (the root first), in
-- id order: a bounded view of a tree that may be large.
SELECT {operation_columns} FROM {schema}.operations
WHERE id = $1 OR root_id = $1
ORDER BY id
LIMIT $2
