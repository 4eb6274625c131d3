//! The reads behind the operators' dashboard (`pgoutbox::dashboard`): the
//! pace of the last hour by outcome, the work each worker holds, the
//! in-doubt queue with what is known of each last attempt, and a bounded
//! view of a workflow tree.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row as _};
use uuid::Uuid;

use super::{Admin, OperationRow, WorkerRow, operation_id};
use crate::definition::OperationId;
use crate::duration::millis;
use crate::state::{Outcome, Status};

/// The shape of the system now, read so that its cost follows the work in
/// progress and the operations that wait for an operator, not the size of
/// the table: exact counts of every state but the finished ones, which are
/// estimated.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::Status;
///
/// let overview = admin.overview(std::time::Duration::from_secs(90)).await?;
/// let stalled: i64 = overview.counts.iter().filter(|(s, _, _)| *s == Status::Stalled).map(|(_, _, n)| n).sum();
/// println!("{stalled} in doubt; about {:?} succeeded", overview.estimated.iter().find(|(s, _)| *s == Status::Succeeded));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, serde::Serialize)]
pub struct Overview {
    /// Exact (status, name, count) of the pending, retrying, running,
    /// stalled and dead operations.
    pub counts: Vec<(Status, String, i64)>,
    /// Estimated counts of the succeeded and cancelled operations, from
    /// PostgreSQL's statistics as of the table's last ANALYZE (a state
    /// missing here is not among the table's most common values, or the
    /// table was never analysed).
    pub estimated: Vec<(Status, i64)>,
    /// Age in seconds of the oldest ready operation.
    pub oldest_ready_seconds: Option<f64>,
    /// Live workers.
    pub workers: Vec<WorkerRow>,
    /// Operations running now per worker (worker id, count).
    pub in_flight: Vec<(Uuid, i64)>,
    /// Ready operations whose name no live worker handles: (name, count).
    pub unhandled: Vec<(String, i64)>,
    /// Ready operations in a queue no live worker of their name serves:
    /// (queue, name, count).
    pub unserved: Vec<(String, String, i64)>,
    /// Schedules that no live worker declares.
    pub undeclared_schedules: Vec<super::UndeclaredSchedule>,
}

/// The attempts that ended in one minute, by outcome.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// let hour = admin.throughput(60).await?;
/// assert_eq!(hour.len(), 60);
/// let lost: i64 = hour.iter().map(|m| m.lost).sum();
/// println!("{lost} attempt(s) lost in the last hour");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Throughput {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// Attempts that succeeded.
    pub succeeded: i64,
    /// Attempts that failed or timed out.
    pub failed: i64,
    /// Attempts lost with their worker (outcome unknown).
    pub lost: i64,
}

/// A stalled operation and what is known of its last attempt.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// for op in admin.stalled(None, 50).await? {
///     let last = op.last_attempt.as_ref();
///     println!("{} {} last ran on {:?}", op.id, op.name, last.and_then(|a| a.worker_host.clone()));
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StalledRow {
    /// Id.
    pub id: OperationId,
    /// Name.
    pub name: String,
    /// Queue.
    pub queue: String,
    /// Attempts started.
    pub attempt: i32,
    /// Declared idempotent.
    pub idempotent: bool,
    /// Published at.
    pub created_at: DateTime<Utc>,
    /// Stalled at (last changed).
    pub updated_at: DateTime<Utc>,
    /// The last error recorded.
    pub last_error: Option<String>,
    /// Its last attempt, if any was recorded.
    pub last_attempt: Option<LastAttempt>,
}

/// The last attempt of a stalled operation, with its worker as last seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LastAttempt {
    /// Attempt number.
    pub number: i32,
    /// The worker that ran it.
    pub worker_id: Uuid,
    /// Started at.
    pub started_at: DateTime<Utc>,
    /// Finished at (the rescuer's record for a lost attempt).
    pub finished_at: Option<DateTime<Utc>>,
    /// Outcome.
    pub outcome: Option<Outcome>,
    /// Error.
    pub error: Option<String>,
    /// The worker's host, while its row is kept.
    pub worker_host: Option<String>,
    /// The worker's process id.
    pub worker_pid: Option<i32>,
    /// The worker's last heartbeat.
    pub worker_heartbeat_at: Option<DateTime<Utc>>,
    /// When the worker stopped cleanly, if it did.
    pub worker_stopped_at: Option<DateTime<Utc>>,
}

impl Admin {
    /// What the dashboard's overview shows; `live` is the liveness window
    /// for workers that recorded no lease of their own (see
    /// [`Admin::stats`], whose counts are all exact and read every row).
    pub async fn overview(&self, live: std::time::Duration) -> Result<Overview, sqlx::Error> {
        let live_ms = millis(live);
        let mut conn = self.pool.acquire().await?;
        Ok(Overview {
            counts: self.store.active_counts(&mut conn).await?,
            estimated: self.store.estimated_counts(&mut conn).await?,
            oldest_ready_seconds: self.store.oldest_ready(&mut conn).await?,
            workers: self
                .store
                .workers::<WorkerRow>(&mut conn, live_ms, live_ms)
                .await?
                .into_iter()
                .filter(|w| w.live)
                .collect(),
            in_flight: self.store.in_flight(&mut conn).await?,
            unhandled: self.store.unhandled_names(&mut conn, live_ms).await?,
            unserved: self.store.unserved_queues(&mut conn, live_ms).await?,
            undeclared_schedules: self.undeclared_schedules(&mut conn, live_ms).await?,
        })
    }

    /// Attempt ends per minute over the last `minutes` minutes (at least
    /// 1), oldest first, the current minute last. Attempts are found by
    /// their start (an index that the hot path already keeps), so one that
    /// ran longer than an hour is not counted.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// let last = admin.throughput(5).await?;
    /// assert!(last.windows(2).all(|w| w[0].minute < w[1].minute));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn throughput(&self, minutes: i32) -> Result<Vec<Throughput>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store.throughput(&mut conn, minutes.max(1)).await
    }

    /// How many operations each worker is running now (its lease held):
    /// (worker id, count), workers running nothing left out.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// let running: i64 = admin.in_flight().await?.iter().map(|(_, n)| n).sum();
    /// println!("{running} operation(s) in flight");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn in_flight(&self) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store.in_flight(&mut conn).await
    }

    /// The in-doubt queue: up to `limit` stalled operations with ids above
    /// `after` (from the first when `None`), oldest first, each with its
    /// last attempt.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// let first = admin.stalled(None, 20).await?;
    /// if let Some(last) = first.last() {
    ///     let next = admin.stalled(Some(last.id), 20).await?;
    ///     assert!(next.iter().all(|op| op.id > last.id));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stalled(
        &self,
        after: Option<OperationId>,
        limit: i64,
    ) -> Result<Vec<StalledRow>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let after = after.map_or(i64::MIN, OperationId::as_i64);
        self.store.stalled(&mut conn, after, limit).await
    }

    /// How many operations are stalled.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// println!("{} operation(s) wait for an operator", admin.stalled_count().await?);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stalled_count(&self) -> Result<i64, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store.stalled_count(&mut conn).await
    }

    /// Up to `limit` operations of the workflow rooted at `root`, in id
    /// order (the root first): [`Admin::workflow`] for trees that may be
    /// large.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// let root = pgoutbox::OperationId::from_i64(42);
    /// let tree = admin.workflow_page(root, 200).await?;
    /// assert!(tree.len() <= 200);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn workflow_page(
        &self,
        root: OperationId,
        limit: i64,
    ) -> Result<Vec<OperationRow>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store.workflow_page(&mut conn, root, limit).await
    }
}

impl FromRow<'_, PgRow> for Throughput {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Throughput {
            minute: row.try_get("minute")?,
            succeeded: row.try_get("succeeded")?,
            failed: row.try_get("failed")?,
            lost: row.try_get("lost")?,
        })
    }
}

impl FromRow<'_, PgRow> for StalledRow {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let number: Option<i32> = row.try_get("attempt_number")?;
        let last_attempt = match number {
            None => None,
            Some(number) => Some(LastAttempt {
                number,
                worker_id: row.try_get("worker_id")?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
                outcome: row.try_get("outcome")?,
                error: row.try_get("error")?,
                worker_host: row.try_get("host")?,
                worker_pid: row.try_get("pid")?,
                worker_heartbeat_at: row.try_get("heartbeat_at")?,
                worker_stopped_at: row.try_get("stopped_at")?,
            }),
        };
        Ok(StalledRow {
            id: operation_id(row, "id")?.expect("operations.id is NOT NULL"),
            name: row.try_get("name")?,
            queue: row.try_get("queue")?,
            attempt: row.try_get("attempt")?,
            idempotent: row.try_get("idempotent")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            last_error: row.try_get("last_error")?,
            last_attempt,
        })
    }
}
