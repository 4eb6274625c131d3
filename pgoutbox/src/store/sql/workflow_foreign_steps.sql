-- Of operations $2 (published steps that steps added at run time by step
-- $1's handler wait for): each locked (FOR SHARE, before the workflow's row
-- is: a dependency ending concurrently either commits first, and is read
-- as ended, or waits, and then sees the new edge), and the first that is
-- not a step of $1's workflow (or no longer stored).
WITH deps AS (
    SELECT d.id, d.workflow_id
    FROM {schema}.operations d
    WHERE d.id = ANY($2)
    ORDER BY d.id
    FOR SHARE
)
SELECT x.id
FROM unnest($2::bigint[]) AS x(id)
WHERE NOT EXISTS (
    SELECT 1 FROM deps d
    WHERE d.id = x.id
      AND d.workflow_id = (SELECT o.workflow_id FROM {schema}.operations o WHERE o.id = $1)
)
ORDER BY x.id
LIMIT 1
