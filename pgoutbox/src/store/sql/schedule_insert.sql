-- Records schedule $1 at its first declaration: publishing operation $2,
-- cron $3 in zone $4, missed-ticks policy $5, declaration hash $6, first
-- tick $7. Does nothing when the name is recorded already.
INSERT INTO {schema}.schedules (name, operation, cron, time_zone, missed, declaration, next_tick)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (name) DO NOTHING
