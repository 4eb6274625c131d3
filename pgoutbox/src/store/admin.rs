//! The operators' statements: inspection with combinable filters (built
//! with `QueryBuilder`), recorded actions, retention.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, FromRow, PgConnection, Postgres, QueryBuilder, Row as _};
use uuid::Uuid;

use super::Store;
use crate::state::{Outcome, Status};

/// One row of `operations`, as operators see it.
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::Status;
/// use pgoutbox::admin::{Admin, OperationFilter};
///
/// let admin = Admin::new(pool, &pgoutbox::Identifier::default());
/// let dead = OperationFilter { statuses: vec![Status::Dead], ..OperationFilter::default() };
/// for op in admin.list(&dead).await? {
///     assert_eq!(op.status, Status::Dead);
///     assert!(op.finished_at.is_some());
///     println!("{} {} after {}/{} attempts: {:?}", op.id, op.name, op.attempt, op.max_attempts, op.last_error);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OperationRow {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// State.
    pub status: Status,
    /// Queue.
    pub queue: String,
    /// Priority (higher runs first).
    pub priority: i16,
    /// Attempts started.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Declared idempotent.
    pub idempotent: bool,
    /// Not before.
    pub run_at: DateTime<Utc>,
    /// Parent in the workflow tree.
    pub parent_id: Option<i64>,
    /// Root of the workflow tree (`None`: it is a root).
    pub root_id: Option<i64>,
    /// The last error recorded.
    pub last_error: Option<String>,
    /// Published at.
    pub created_at: DateTime<Utc>,
    /// Last changed at.
    pub updated_at: DateTime<Utc>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// The payload.
    pub payload: serde_json::Value,
    /// The payload's schema hash.
    pub schema_hash: String,
}

impl FromRow<'_, PgRow> for OperationRow {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(OperationRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            status: row.try_get("status")?,
            queue: row.try_get("queue")?,
            priority: row.try_get("priority")?,
            attempt: row.try_get("attempt")?,
            max_attempts: row.try_get("max_attempts")?,
            idempotent: row.try_get("idempotent")?,
            run_at: row.try_get("run_at")?,
            parent_id: row.try_get("parent_id")?,
            root_id: row.try_get("root_id")?,
            last_error: row.try_get("last_error")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            finished_at: row.try_get("finished_at")?,
            payload: row.try_get("payload")?,
            schema_hash: row.try_get("schema_hash")?,
        })
    }
}

/// One attempt.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// if let Some(detail) = admin.show(42).await? {
///     for attempt in &detail.attempts {
///         // `lost`: the worker vanished mid-attempt; the outcome is unknown.
///         if attempt.outcome == Some(pgoutbox::Outcome::Lost) {
///             println!("attempt {} on worker {} is in doubt", attempt.number, attempt.worker_id);
///         }
///     }
///     assert!(detail.attempts.windows(2).all(|w| w[0].number < w[1].number));
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AttemptRow {
    /// Attempt number.
    pub number: i32,
    /// The worker that ran it.
    pub worker_id: Uuid,
    /// Started at.
    pub started_at: DateTime<Utc>,
    /// Finished at.
    pub finished_at: Option<DateTime<Utc>>,
    /// Outcome (`None` while running).
    pub outcome: Option<Outcome>,
    /// Error.
    pub error: Option<String>,
    /// The error's chain, outermost first.
    pub error_chain: Option<serde_json::Value>,
}

/// One operator action.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::admin::Action;
///
/// admin.act(42, Action::Cancel, "alice", "customer asked").await?;
/// let detail = admin.show(42).await?.expect("operation 42 exists");
/// let last = detail.actions.last().expect("the action was recorded, applied or refused");
/// assert_eq!((last.action.as_str(), last.actor.as_str()), ("cancel", "alice"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ActionRow {
    /// The operation acted on.
    pub operation_id: i64,
    /// `retry`, `cancel`, `resolve` or `replay`.
    pub action: String,
    /// `applied` or `refused`.
    pub outcome: String,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// State before.
    pub from_status: Status,
    /// State after, when applied.
    pub to_status: Option<Status>,
    /// For a replay: the new operation.
    pub new_operation_id: Option<i64>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// One worker process.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// let lease_ms = 30_000;
/// for worker in admin.workers(3 * lease_ms, 3_600_000).await? {
///     let state = if worker.live { "live" } else { "gone" };
///     println!("{} {}:{} {state}, handles {:?}", worker.id, worker.host, worker.pid, worker.names);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerRow {
    /// Id.
    pub id: Uuid,
    /// Host.
    pub host: String,
    /// Process id.
    pub pid: i32,
    /// pgoutbox version.
    pub version: String,
    /// Names handled.
    pub names: Vec<String>,
    /// Handler concurrency.
    pub n_workers: i32,
    /// Started at.
    pub started_at: DateTime<Utc>,
    /// Last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Stopped at (a clean stop).
    pub stopped_at: Option<DateTime<Utc>>,
    /// Heartbeat within the liveness window and not stopped.
    pub live: bool,
}

/// Filters of `ops list` and of bulk actions; all optional, combined with
/// AND.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::Status;
/// use pgoutbox::admin::OperationFilter;
///
/// // The 20 newest stalled or dead charges of the last hour.
/// let filter = OperationFilter {
///     statuses: vec![Status::Stalled, Status::Dead],
///     name: Some("billing.charge".into()),
///     since_ms: Some(3_600_000),
///     limit: Some(20),
///     ..OperationFilter::default()
/// };
/// let found = admin.list(&filter).await?;
/// assert!(found.len() <= 20 && found.iter().all(|op| op.name == "billing.charge"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct OperationFilter {
    /// Only these states.
    pub statuses: Vec<Status>,
    /// Only this name.
    pub name: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only operations published within this many milliseconds.
    pub since_ms: Option<i64>,
    /// At most this many (newest first).
    pub limit: Option<i64>,
}

const OPERATION_COLUMNS: &str = "id, name, status, queue, priority, attempt, max_attempts, idempotent, run_at, \
     parent_id, root_id, last_error, created_at, updated_at, finished_at, payload, schema_hash";

impl Store {
    fn table(&self, table: &str) -> String {
        format!("{}.{table}", self.schema.quoted())
    }

    /// Operations matching `filter`, newest first.
    pub(crate) async fn list_operations(
        &self,
        conn: &mut PgConnection,
        filter: &OperationFilter,
    ) -> Result<Vec<OperationRow>, sqlx::Error> {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {OPERATION_COLUMNS} FROM {} WHERE true",
            self.table("operations")
        ));
        if !filter.statuses.is_empty() {
            q.push(" AND status = ANY(")
                .push_bind(filter.statuses.clone())
                .push(")");
        }
        if let Some(name) = &filter.name {
            q.push(" AND name = ").push_bind(name.clone());
        }
        if let Some(queue) = &filter.queue {
            q.push(" AND queue = ").push_bind(queue.clone());
        }
        if let Some(ms) = filter.since_ms {
            q.push(" AND created_at >= now() - ")
                .push_bind(ms)
                .push(" * interval '1 millisecond'");
        }
        q.push(" ORDER BY id DESC");
        if let Some(limit) = filter.limit {
            q.push(" LIMIT ").push_bind(limit);
        }
        q.build_query_as::<OperationRow>()
            .persistent(self.persistent)
            .fetch_all(&mut *conn)
            .await
    }

    /// One operation.
    pub(crate) async fn get_operation(
        &self,
        conn: &mut PgConnection,
        id: i64,
    ) -> Result<Option<OperationRow>, sqlx::Error> {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {OPERATION_COLUMNS} FROM {} WHERE id = $1",
            self.table("operations")
        )))
        .persistent(self.persistent)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
    }

    /// The operations of the workflow rooted at `root`, in id order.
    pub(crate) async fn workflow(
        &self,
        conn: &mut PgConnection,
        root: i64,
    ) -> Result<Vec<OperationRow>, sqlx::Error> {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {OPERATION_COLUMNS} FROM {} WHERE id = $1 OR root_id = $1 ORDER BY id",
            self.table("operations")
        )))
        .persistent(self.persistent)
        .bind(root)
        .fetch_all(&mut *conn)
        .await
    }

    /// The children of operation `id`.
    pub(crate) async fn children(
        &self,
        conn: &mut PgConnection,
        id: i64,
    ) -> Result<Vec<i64>, sqlx::Error> {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT id FROM {} WHERE parent_id = $1 ORDER BY id",
            self.table("operations")
        )))
        .persistent(self.persistent)
        .bind(id)
        .fetch_all(&mut *conn)
        .await
    }

    /// The attempts of operation `id`, in order.
    pub(crate) async fn attempts(
        &self,
        conn: &mut PgConnection,
        id: i64,
    ) -> Result<Vec<AttemptRow>, sqlx::Error> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT number, worker_id, started_at, finished_at, outcome, error, error_chain \
             FROM {} WHERE operation_id = $1 ORDER BY id",
            self.table("attempts")
        )))
        .persistent(self.persistent)
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    number: r.try_get("number")?,
                    worker_id: r.try_get("worker_id")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    outcome: r.try_get("outcome")?,
                    error: r.try_get("error")?,
                    error_chain: r.try_get("error_chain")?,
                })
            })
            .collect()
    }

    /// The operator actions on operation `id`, in order.
    pub(crate) async fn actions(
        &self,
        conn: &mut PgConnection,
        id: i64,
    ) -> Result<Vec<ActionRow>, sqlx::Error> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT operation_id, action, outcome, actor, reason, from_status, to_status, \
             new_operation_id, created_at FROM {} WHERE operation_id = $1 ORDER BY id",
            self.table("operator_actions")
        )))
        .persistent(self.persistent)
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ActionRow {
                    operation_id: r.try_get("operation_id")?,
                    action: r.try_get("action")?,
                    outcome: r.try_get("outcome")?,
                    actor: r.try_get("actor")?,
                    reason: r.try_get("reason")?,
                    from_status: r.try_get("from_status")?,
                    to_status: r.try_get("to_status")?,
                    new_operation_id: r.try_get("new_operation_id")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Retry, cancel or resolve: (status read, applied), `None` for an
    /// unknown id.
    #[allow(clippy::too_many_arguments)] // One bind per column.
    pub(crate) async fn operator_transition(
        &self,
        conn: &mut PgConnection,
        id: i64,
        action: &str,
        actor: &str,
        reason: &str,
        allowed: &[Status],
        to: Status,
    ) -> Result<Option<(Status, bool)>, sqlx::Error> {
        sqlx::query_as(AssertSqlSafe(Arc::clone(&self.sql.operator_transition)))
            .persistent(self.persistent)
            .bind(id)
            .bind(action)
            .bind(actor)
            .bind(reason)
            .bind(allowed)
            .bind(to)
            .fetch_optional(&mut *conn)
            .await
    }

    /// Replay: (status read, new id if applied), `None` for an unknown id.
    pub(crate) async fn operator_replay(
        &self,
        conn: &mut PgConnection,
        id: i64,
        actor: &str,
        reason: &str,
        allowed: &[Status],
    ) -> Result<Option<(Status, Option<i64>)>, sqlx::Error> {
        sqlx::query_as(AssertSqlSafe(Arc::clone(&self.sql.operator_replay)))
            .persistent(self.persistent)
            .bind(id)
            .bind("replay")
            .bind(actor)
            .bind(reason)
            .bind(allowed)
            .fetch_optional(&mut *conn)
            .await
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
            sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.purge)))
                .persistent(self.persistent)
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
            sqlx::query_scalar(AssertSqlSafe(Arc::clone(&self.sql.purge_history)))
                .persistent(self.persistent)
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
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT status, name, count(*) FROM {} GROUP BY status, name ORDER BY status, name",
            self.table("operations")
        )))
        .persistent(self.persistent)
        .fetch_all(&mut *conn)
        .await
    }

    /// Age in seconds of the oldest ready operation, and successes per
    /// minute over the last `minutes` minutes (oldest first).
    pub(crate) async fn pace(
        &self,
        conn: &mut PgConnection,
        minutes: i32,
    ) -> Result<(Option<f64>, Vec<i64>), sqlx::Error> {
        let oldest: Option<f64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT extract(epoch FROM now() - min(run_at))::float8 FROM {} \
             WHERE status IN ('pending', 'retrying') AND run_at <= now()",
            self.table("operations")
        )))
        .persistent(self.persistent)
        .fetch_one(&mut *conn)
        .await?;
        let per_minute: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT (SELECT count(*) FROM {} WHERE status = 'succeeded' \
                     AND finished_at >= now() - (m + 1) * interval '1 minute' \
                     AND finished_at < now() - m * interval '1 minute') \
             FROM generate_series($1 - 1, 0, -1) AS m",
            self.table("operations")
        )))
        .persistent(self.persistent)
        .bind(minutes)
        .fetch_all(&mut *conn)
        .await?;
        Ok((oldest, per_minute))
    }

    /// Workers seen within `recent_ms`, live ones being those with a
    /// heartbeat within `live_ms` and no stop.
    pub(crate) async fn workers(
        &self,
        conn: &mut PgConnection,
        live_ms: i64,
        recent_ms: i64,
    ) -> Result<Vec<WorkerRow>, sqlx::Error> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, host, pid, version, names, n_workers, started_at, heartbeat_at, stopped_at, \
                    (stopped_at IS NULL AND heartbeat_at > now() - $1 * interval '1 millisecond') AS live \
             FROM {} WHERE heartbeat_at > now() - $2 * interval '1 millisecond' \
             ORDER BY live DESC, heartbeat_at DESC",
            self.table("workers")
        )))
        .persistent(self.persistent)
        .bind(live_ms)
        .bind(recent_ms)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WorkerRow {
                    id: r.try_get("id")?,
                    host: r.try_get("host")?,
                    pid: r.try_get("pid")?,
                    version: r.try_get("version")?,
                    names: r.try_get("names")?,
                    n_workers: r.try_get("n_workers")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_at: r.try_get("heartbeat_at")?,
                    stopped_at: r.try_get("stopped_at")?,
                    live: r.try_get("live")?,
                })
            })
            .collect()
    }

    /// Every schema version recorded for `name`, oldest first:
    /// (hash, schema, first seen, last seen).
    pub(crate) async fn schema_history(
        &self,
        conn: &mut PgConnection,
        name: &str,
    ) -> Result<Vec<SchemaVersion>, sqlx::Error> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT name, schema_hash, json_schema, first_seen_at, last_seen_at FROM {} \
             WHERE name = $1 ORDER BY first_seen_at, schema_hash",
            self.table("operation_types")
        )))
        .persistent(self.persistent)
        .bind(name)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(SchemaVersion::from_row).collect()
    }

    /// The most recently seen schema of every name.
    pub(crate) async fn latest_schemas(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<SchemaVersion>, sqlx::Error> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT DISTINCT ON (name) name, schema_hash, json_schema, first_seen_at, last_seen_at \
             FROM {} ORDER BY name, last_seen_at DESC, first_seen_at DESC",
            self.table("operation_types")
        )))
        .persistent(self.persistent)
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(SchemaVersion::from_row).collect()
    }

    /// Up to `limit` ready operations with ids above `after`: (id, name,
    /// payload).
    pub(crate) async fn ready_payloads(
        &self,
        conn: &mut PgConnection,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String, serde_json::Value)>, sqlx::Error> {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, name, payload FROM {} WHERE status IN ('pending', 'retrying') AND id > $1 \
             ORDER BY id LIMIT $2",
            self.table("operations")
        )))
        .persistent(self.persistent)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
    }
}

/// One recorded version of an operation's payload schema.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// let history = admin.schema_history("billing.charge").await?;
/// if let [.., previous, current] = history.as_slice() {
///     assert_ne!(previous.schema_hash, current.schema_hash);
///     println!("payload changed at {}", current.first_seen_at);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SchemaVersion {
    /// The operation's name.
    pub name: String,
    /// The schema hash.
    pub schema_hash: String,
    /// The JSON Schema.
    pub json_schema: serde_json::Value,
    /// First recorded.
    pub first_seen_at: DateTime<Utc>,
    /// Last met by a worker or publisher.
    pub last_seen_at: DateTime<Utc>,
}

impl SchemaVersion {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(SchemaVersion {
            name: row.try_get("name")?,
            schema_hash: row.try_get("schema_hash")?,
            json_schema: row.try_get("json_schema")?,
            first_seen_at: row.try_get("first_seen_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
        })
    }
}
