-- Records an operator's action on workflow $1 in the trail: $2 action, $3
-- outcome ('applied' or 'refused'), $4 actor, $5 reason, $6 the
-- workflow's state before; one row for the workflow (its state after, if
-- applied) and one per step it changed ($7, their statuses before $8,
-- after as they are now).
WITH steps AS (
    INSERT INTO {schema}.operator_actions
        (operation_id, workflow_id, action, outcome, actor, reason, from_status, to_status)
    SELECT o.id, $1, $2, $3, $4, $5, f.status, o.status
    FROM unnest($7::bigint[], $8::text[]) AS f(id, status)
    JOIN {schema}.operations o ON o.id = f.id
)
INSERT INTO {schema}.operator_actions
    (operation_id, workflow_id, action, outcome, actor, reason, from_status, to_status)
SELECT NULL, w.id, $2, $3, $4, $5, $6, CASE WHEN $3 = 'applied' THEN w.state END
FROM {schema}.workflows w
WHERE w.id = $1
