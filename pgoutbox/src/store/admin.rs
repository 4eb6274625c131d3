//! The operators' statements: inspection (a list's combinable filters
//! appended with `QueryBuilder`), recorded actions, retention, statistics.
//!
//! Rows come back as the caller's [`FromPgRow`] types: the public row types
//! live with the API in `crate::admin`, which this module does not import.

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, Postgres, QueryBuilder};

use super::Store;
use crate::definition::OperationId;
use crate::state::Status;

/// The columns of an operation as operators see it (`{operation_columns}`
/// in `operation.sql`, `workflow.sql` and `list_operations.sql`).
pub(super) const OPERATION_COLUMNS: &str = "id, name, status, queue, priority, attempt, \
     snoozes, max_attempts, idempotent, run_at, parent_id, root_id, last_error, created_at, updated_at, \
     finished_at, payload, schema_hash, external_key";

/// A row type a statement's rows decode into.
pub(crate) trait FromPgRow: for<'r> FromRow<'r, PgRow> + Send + Unpin {}

impl<T> FromPgRow for T where T: for<'r> FromRow<'r, PgRow> + Send + Unpin {}

/// The filters of a list, each optional, combined with AND.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ListFilter<'a> {
    pub(crate) statuses: &'a [Status],
    pub(crate) name: Option<&'a str>,
    pub(crate) queue: Option<&'a str>,
    pub(crate) since_ms: Option<i64>,
    pub(crate) limit: Option<i64>,
    /// Text the last error contains, in any case.
    pub(crate) error_text: Option<&'a str>,
    /// The root of the workflow (the root itself included).
    pub(crate) root: Option<i64>,
    /// Only ids below this one (the list is newest first).
    pub(crate) before_id: Option<i64>,
}

/// An operator's retry, cancel or resolve of one operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transition<'a> {
    pub(crate) action: &'a str,
    pub(crate) actor: &'a str,
    pub(crate) reason: &'a str,
    /// The states it is allowed from.
    pub(crate) allowed: &'a [Status],
    pub(crate) to: Status,
    /// A result supplied resolving as succeeded, and its output schema's
    /// hash.
    pub(crate) result: Option<(&'a serde_json::Value, &'a str)>,
}

impl Store {
    /// Operations matching `filter`, newest first. The one statement with
    /// a dynamic text: only the filters that are set are appended, so the
    /// planner sees plain conditions.
    pub(crate) async fn list_operations<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        filter: ListFilter<'_>,
    ) -> Result<Vec<R>, sqlx::Error> {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(&*self.sql.list_operations);
        if !filter.statuses.is_empty() {
            q.push(" AND status = ANY(")
                .push_bind(filter.statuses.to_vec())
                .push(")");
        }
        if let Some(name) = filter.name {
            q.push(" AND name = ").push_bind(name.to_owned());
        }
        if let Some(queue) = filter.queue {
            q.push(" AND queue = ").push_bind(queue.to_owned());
        }
        if let Some(ms) = filter.since_ms {
            q.push(" AND created_at >= now() - ")
                .push_bind(ms)
                .push(" * interval '1 millisecond'");
        }
        if let Some(text) = filter.error_text {
            q.push(" AND strpos(lower(last_error), lower(")
                .push_bind(text.to_owned())
                .push(")) > 0");
        }
        if let Some(root) = filter.root {
            q.push(" AND (id = ")
                .push_bind(root)
                .push(" OR root_id = ")
                .push_bind(root)
                .push(")");
        }
        if let Some(id) = filter.before_id {
            q.push(" AND id < ").push_bind(id);
        }
        q.push(" ORDER BY id DESC");
        if let Some(limit) = filter.limit {
            q.push(" LIMIT ").push_bind(limit);
        }
        q.build_query_as::<R>()
            .persistent(self.persistent)
            .fetch_all(&mut *conn)
            .await
    }

    /// One operation.
    pub(crate) async fn operation<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        id: OperationId,
    ) -> Result<Option<R>, sqlx::Error> {
        query!(self, query_as::<R>, operation)
            .bind(id.as_i64())
            .fetch_optional(&mut *conn)
            .await
    }

    /// The operations of the workflow rooted at `root`, in id order.
    pub(crate) async fn workflow<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        root: OperationId,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, workflow)
            .bind(root.as_i64())
            .fetch_all(&mut *conn)
            .await
    }

    /// The children of operation `id`.
    pub(crate) async fn children(
        &self,
        conn: &mut PgConnection,
        id: OperationId,
    ) -> Result<Vec<OperationId>, sqlx::Error> {
        let ids: Vec<i64> = query!(self, query_scalar, children)
            .bind(id.as_i64())
            .fetch_all(&mut *conn)
            .await?;
        Ok(ids.into_iter().map(OperationId::from_i64).collect())
    }

    /// The attempts of operation `id`, in order.
    pub(crate) async fn attempts<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        id: OperationId,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, attempts)
            .bind(id.as_i64())
            .fetch_all(&mut *conn)
            .await
    }

    /// The operator actions on operation `id`, in order.
    pub(crate) async fn operator_actions<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        id: OperationId,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, operator_actions)
            .bind(id.as_i64())
            .fetch_all(&mut *conn)
            .await
    }

    /// Retry, cancel or resolve: (status read, applied), `None` for an
    /// unknown id.
    pub(crate) async fn operator_transition(
        &self,
        conn: &mut PgConnection,
        id: OperationId,
        change: &Transition<'_>,
    ) -> Result<Option<(Status, bool)>, sqlx::Error> {
        let (result, hash) = change.result.unzip();
        query!(self, query_as, operator_transition)
            .bind(id.as_i64())
            .bind(change.action)
            .bind(change.actor)
            .bind(change.reason)
            .bind(change.allowed)
            .bind(change.to)
            .bind(result)
            .bind(hash)
            .fetch_optional(&mut *conn)
            .await
    }

    /// Replay: (status read, new id if applied), `None` for an unknown id.
    pub(crate) async fn operator_replay(
        &self,
        conn: &mut PgConnection,
        id: OperationId,
        actor: &str,
        reason: &str,
        allowed: &[Status],
    ) -> Result<Option<(Status, Option<OperationId>)>, sqlx::Error> {
        let row: Option<(Status, Option<i64>)> = query!(self, query_as, operator_replay)
            .bind(id.as_i64())
            .bind("replay")
            .bind(actor)
            .bind(reason)
            .bind(allowed)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(row.map(|(status, new)| (status, new.map(OperationId::from_i64))))
    }

    /// Deletes one batch of old operations; returns how many.
    pub(crate) async fn purge(
        &self,
        conn: &mut PgConnection,
        statuses: &[Status],
        older_than_ms: i64,
        batch: i64,
    ) -> Result<u64, sqlx::Error> {
        self.pinned(conn, async |conn| {
            query!(self, query, purge)
                .bind(statuses)
                .bind(older_than_ms)
                .bind(batch)
                .execute(conn)
                .await
        })
        .await
        .map(|r| r.rows_affected())
    }

    /// Deletes one batch of old attempts and actions of purged operations.
    pub(crate) async fn purge_history(
        &self,
        conn: &mut PgConnection,
        older_than_ms: i64,
        batch: i64,
    ) -> Result<i64, sqlx::Error> {
        self.pinned(conn, async |conn| {
            query!(self, query_scalar, purge_history)
                .bind(older_than_ms)
                .bind(batch)
                .fetch_one(conn)
                .await
        })
        .await
    }

    /// Counts by status and name.
    pub(crate) async fn counts(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<(Status, String, i64)>, sqlx::Error> {
        query!(self, query_as, counts).fetch_all(&mut *conn).await
    }

    /// Age in seconds of the oldest ready operation.
    pub(crate) async fn oldest_ready(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Option<f64>, sqlx::Error> {
        query!(self, query_scalar, oldest_ready)
            .fetch_one(&mut *conn)
            .await
    }

    /// Successes per minute over the last `minutes` minutes, oldest first.
    pub(crate) async fn succeeded_per_minute(
        &self,
        conn: &mut PgConnection,
        minutes: i32,
    ) -> Result<Vec<i64>, sqlx::Error> {
        query!(self, query_scalar, succeeded_per_minute)
            .bind(minutes)
            .fetch_all(&mut *conn)
            .await
    }

    /// Workers seen within `recent_ms`, live ones being those with a
    /// heartbeat within `live_ms` and no stop.
    pub(crate) async fn workers<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        live_ms: i64,
        recent_ms: i64,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, workers)
            .bind(live_ms)
            .bind(recent_ms)
            .fetch_all(&mut *conn)
            .await
    }

    /// Every schema version recorded for `name`, oldest first.
    pub(crate) async fn schema_history<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        name: &str,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, schema_history)
            .bind(name)
            .fetch_all(&mut *conn)
            .await
    }

    /// Every output schema recorded for `name`, oldest first.
    pub(crate) async fn output_history<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        name: &str,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, output_history)
            .bind(name)
            .fetch_all(&mut *conn)
            .await
    }

    /// The most recently seen schema of every name.
    pub(crate) async fn latest_schemas<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, latest_schemas)
            .fetch_all(&mut *conn)
            .await
    }

    /// Up to `limit` ready operations with ids above `after` (all when
    /// `None`): (id, name, payload).
    pub(crate) async fn ready_payloads(
        &self,
        conn: &mut PgConnection,
        after: Option<OperationId>,
        limit: i64,
    ) -> Result<Vec<(OperationId, String, serde_json::Value)>, sqlx::Error> {
        // Ids start at 1.
        let after = after.map_or(0, OperationId::as_i64);
        let rows: Vec<(i64, String, serde_json::Value)> = query!(self, query_as, ready_payloads)
            .bind(after)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, payload)| (OperationId::from_i64(id), name, payload))
            .collect())
    }
}
