-- Open workflow `$1` of `$2` steps: its row, and its steps' ids, taken from
-- the operations' own sequence so that the payloads can name them before
-- they are inserted (`Dep` fields hold operation ids). The first step is
-- the workflow's root. Returns the workflow's id and the step ids in
-- ascending order: the order of `Workflow::add`.
WITH ids AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('{schema}.operations', 'id')) AS id
    FROM generate_series(1, $2)
), opened AS (
    INSERT INTO {schema}.workflows (name, root_id, steps)
    SELECT $1, min(id), $2 FROM ids
    RETURNING id
)
SELECT (SELECT id FROM opened) AS workflow_id, array_agg(id ORDER BY id) AS ids FROM ids
