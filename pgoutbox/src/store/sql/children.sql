-- The operations published by operation $1 (or replaying it), in id order.
SELECT id FROM {schema}.operations WHERE parent_id = $1 ORDER BY id
