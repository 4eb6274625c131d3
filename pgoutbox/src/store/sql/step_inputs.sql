-- What step $1's handler reads of its dependencies: how each ended, and
-- its result: the succeeded attempt's, or the one an operator supplied
-- when resolving it as succeeded. A dependency purged since (retention)
-- has no status.
SELECT e.dependency_id, o.name, o.status, o.last_error,
       coalesce(
           (SELECT a.result FROM {schema}.attempts a
            WHERE a.operation_id = e.dependency_id AND a.outcome = 'succeeded'
            ORDER BY a.id DESC LIMIT 1),
           (SELECT x.result FROM {schema}.operator_actions x
            WHERE x.operation_id = e.dependency_id AND x.action = 'resolve'
              AND x.to_status = 'succeeded'
            ORDER BY x.id DESC LIMIT 1)
       ) AS result
FROM {schema}.workflow_edges e
LEFT JOIN {schema}.operations o ON o.id = e.dependency_id
WHERE e.operation_id = $1
