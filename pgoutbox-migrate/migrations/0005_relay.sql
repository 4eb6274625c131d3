-- What an attempt produced that the books must keep: for a relay
-- (`pgoutbox::relay`), the broker's receipt, such as JetStream's PubAck
-- (`{"backend": "jetstream", "stream": "ORDERS", "sequence": 42,
-- "duplicate": false}`). One JSON column rather than per-broker columns,
-- so that a second backend (Kafka's topic, partition and offset) needs no
-- migration of its own. NULL for handlers, which produce none. Adding a
-- nullable column without a default rewrites nothing.
ALTER TABLE {schema}.attempts ADD COLUMN result jsonb;
