INSERT INTO {schema}.workers (id, host, pid, version, names, queues, n_workers, lease_ms, channel)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {channel})
