-- Open workflow `$1` of `$2` steps, under idempotency key `$3` (NULL: none):
-- its row, and its steps' ids, taken from the operations' own sequence so
-- that the payloads can name them before they are inserted (`Dep` fields
-- hold operation ids). The first step is the workflow's root. Returns the
-- workflow's id and the step ids in ascending order: the order of
-- `Workflow::add`.
--
-- With a key already taken the row is not inserted and no id is drawn:
-- `workflow_id` is NULL and `ids` empty, and `workflow_by_key` reads the
-- existing workflow back. The first probe saves drawing ids for a key
-- seen committed; `ON CONFLICT` settles the race with a publisher whose
-- row is not committed yet (this insert waits for its transaction, and
-- inserts nothing if it commits).
WITH taken AS (
    SELECT 1 FROM {schema}.workflows WHERE $3::text IS NOT NULL AND idempotency_key = $3
), ids AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('{schema}.operations', 'id')) AS id
    FROM generate_series(1, $2)
    WHERE NOT EXISTS (SELECT 1 FROM taken)
), opened AS (
    INSERT INTO {schema}.workflows (name, root_id, steps, published_steps, idempotency_key)
    SELECT $1, min(id), $2, $2, $3 FROM ids HAVING count(*) > 0
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT (SELECT id FROM opened) AS workflow_id,
       coalesce(array_agg(id ORDER BY id), '{}') AS ids
FROM ids
