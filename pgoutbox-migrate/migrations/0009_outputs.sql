-- Migration 9: handlers' results have a type, and its history is kept.
--
-- A handler may return a value (`-> Result<Receipt>`); it is recorded on
-- the succeeded attempt (`attempts.result`, migration 5) in the
-- transaction that records the success. The output type's JSON Schema is
-- kept as the payload's is (`operation_types`): every version ever met by
-- a worker, with when it was first and last seen, so that an auditor can
-- read an old result years later; each result names the version it was
-- written with (`attempts.result_schema_hash`), as each payload does
-- (`operations.schema_hash`).
CREATE TABLE {schema}.operation_outputs (
    name          text        NOT NULL,
    output_hash   text        NOT NULL,
    json_schema   jsonb       NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, output_hash),
    CONSTRAINT operation_outputs_name_check CHECK (name ~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$')
);

-- The output schema a handler's result was written with (NULL for no
-- result, and for a relay's receipt, which has none).
ALTER TABLE {schema}.attempts ADD COLUMN result_schema_hash text;
