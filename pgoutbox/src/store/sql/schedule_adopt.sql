-- Puts worker's declaration of schedule $1 in force: operation $2, cron $3,
-- zone $4, policy $5, hash $6, and the cursor $7 (the first tick after the
-- last one decided, so that no tick is decided twice).
UPDATE {schema}.schedules
SET operation = $2, cron = $3, time_zone = $4, missed = $5, declaration = $6,
    next_tick = $7, updated_at = now()
WHERE name = $1
