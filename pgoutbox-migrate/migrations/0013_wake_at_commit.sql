-- Migration 13: the publisher's wake-up is decided at commit, not at publish
-- (docs/tuning.md, "Pickup latency"; issue 26, item 2).
--
-- A notifying publish marks its transaction with the channel to wake
-- (`set_config('pgoutbox.wake_channel', <channel>, true)`, transaction-local,
-- rendered as `{notify}` in store/mod.rs). This deferred constraint trigger
-- runs at COMMIT, after all the transaction's work, and only if the
-- transaction commits: a rolled-back publish never reaches it, takes no lock
-- and sends nothing. There it applies the coalescing: the transaction
-- notifies a name only if it takes that name's wake-up lock for the 10 ms
-- slot of its commit (an advisory lock, held until the commit ends, never
-- waited for), so at most one notifying commit per name and slot is in
-- flight and notifying commits do not queue on NOTIFY's database-wide lock.
-- A transaction that holds its publish for 300 ms no longer holds the slot
-- of its publish: it competes for the slot of its commit.
--
-- Rows inserted without the mark (publishers with notify off, workflow
-- steps released by the trigger of migration 10/11, which notifies itself)
-- only pay the queued trigger event. Within one transaction the lock is
-- re-entrant and identical notifications fold into one, so a transaction
-- notifies each of its names at most once.
CREATE FUNCTION {schema}.wake_at_commit() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    channel text := nullif(current_setting('pgoutbox.wake_channel', true), '');
BEGIN
    IF channel IS NOT NULL
       AND pg_try_advisory_xact_lock(
           hashtext('pgoutbox wake-up ' || channel || ' ' || NEW.name),
           (floor(extract(epoch FROM clock_timestamp()) * 100)::bigint % 2147483647)::integer)
    THEN
        PERFORM pg_notify(channel, NEW.name);
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER operations_wake_at_commit
    AFTER INSERT ON {schema}.operations
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION {schema}.wake_at_commit();
