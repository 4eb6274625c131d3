-- How many operations are stalled (through `operations_stalled_idx`).
SELECT count(*) FROM {schema}.operations WHERE status = 'stalled'
