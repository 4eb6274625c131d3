//! Every SQL statement of the runtime and the CLI, one function per named
//! statement, the text in `sql/*.sql`.
//!
//! Statements name the schema as `{schema}`; a [`Store`] renders them once
//! for its validated, quoted schema (and channel), so no other module
//! builds SQL text.

use std::sync::Arc;

use pgoutbox_migrate::Identifier;
use sqlx::{AssertSqlSafe, PgConnection};

use crate::definition::OperationId;

/// The rendered statements for one schema and channel.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    insert_operation: Arc<str>,
    find_by_idempotency_key: Arc<str>,
}

/// A row to insert into `operations`.
#[derive(Debug)]
pub(crate) struct NewOperation<'a> {
    pub(crate) name: &'static str,
    pub(crate) payload: serde_json::Value,
    pub(crate) schema_hash: &'a str,
    pub(crate) json_schema: &'a serde_json::Value,
    pub(crate) priority: i16,
    pub(crate) queue: &'a str,
    pub(crate) run_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(crate) delay_micros: Option<i64>,
    pub(crate) max_attempts: i32,
    pub(crate) idempotent: bool,
    pub(crate) idempotency_key: Option<&'a str>,
    pub(crate) parent_id: Option<OperationId>,
}

impl Store {
    /// Renders every statement for `schema`, notifying on `channel` when
    /// given.
    pub(crate) fn new(schema: &Identifier, channel: Option<&Identifier>) -> Self {
        let render = |template: &str| -> Arc<str> {
            let notify = channel.map_or_else(
                || "NULL".to_owned(),
                // Identifier's grammar admits no quote, so the literal is safe.
                |c| format!("pg_notify('{}', $1)", c.as_str()),
            );
            template
                .replace("{schema}", &schema.quoted())
                .replace("{notify}", &notify)
                .into()
        };
        Store {
            insert_operation: render(include_str!("sql/insert_operation.sql")),
            find_by_idempotency_key: render(include_str!("sql/find_by_idempotency_key.sql")),
        }
    }

    /// Inserts `op`; `None` when its idempotency key is taken.
    pub(crate) async fn insert_operation(
        &self,
        conn: &mut PgConnection,
        op: NewOperation<'_>,
    ) -> Result<Option<OperationId>, sqlx::Error> {
        let row: Option<(i64, Option<String>)> =
            sqlx::query_as(AssertSqlSafe(Arc::clone(&self.insert_operation)))
                .bind(op.name)
                .bind(op.payload)
                .bind(op.schema_hash)
                .bind(op.priority)
                .bind(op.queue)
                .bind(op.run_at)
                .bind(op.max_attempts)
                .bind(op.idempotent)
                .bind(op.idempotency_key)
                .bind(op.parent_id.map(OperationId::as_i64))
                .bind(op.json_schema)
                .bind(op.delay_micros)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(row.map(|(id, _)| OperationId::from_i64(id)))
    }

    /// The operation published under `name` with `key`.
    pub(crate) async fn find_by_idempotency_key(
        &self,
        conn: &mut PgConnection,
        name: &str,
        key: &str,
    ) -> Result<Option<OperationId>, sqlx::Error> {
        let id: Option<i64> =
            sqlx::query_scalar(AssertSqlSafe(Arc::clone(&self.find_by_idempotency_key)))
                .bind(name)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
        Ok(id.map(OperationId::from_i64))
    }
}
