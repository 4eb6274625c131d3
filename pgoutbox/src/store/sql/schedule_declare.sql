-- Worker $2 declares schedule $1: hash $3, operation $4, cron $5, zone $6,
-- policy $7.
INSERT INTO {schema}.schedule_declarations
    (schedule, worker_id, declaration, operation, cron, time_zone, missed)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (schedule, worker_id) DO UPDATE
SET declaration = EXCLUDED.declaration, operation = EXCLUDED.operation, cron = EXCLUDED.cron,
    time_zone = EXCLUDED.time_zone, missed = EXCLUDED.missed, declared_at = now()
