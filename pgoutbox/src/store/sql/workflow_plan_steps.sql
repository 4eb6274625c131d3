-- What an operator's action on workflow $1 would change: each step and
-- compensation with its state, the step it answers (compensations),
-- whether it declares a compensation and whether one stands (not
-- cancelled), in id order.
SELECT o.id, o.name, o.status, o.compensates, o.attempt,
       EXISTS (SELECT 1 FROM {schema}.workflow_compensations c WHERE c.step_id = o.id)
           AS declares_compensation,
       EXISTS (SELECT 1 FROM {schema}.operations k
               WHERE k.compensates = o.id AND k.status <> 'cancelled') AS compensated
FROM {schema}.operations o
WHERE o.workflow_id = $1
ORDER BY o.id
