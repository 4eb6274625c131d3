INSERT INTO {schema}.workers (id, host, pid, version, names, queues, n_workers)
VALUES ($1, $2, $3, $4, $5, $6, $7)
