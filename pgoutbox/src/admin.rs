//! What operators do: inspect operations, retry, cancel, resolve and replay
//! them (each action recorded in `operator_actions` in the same statement as
//! the state change), read statistics, purge old rows. The `pgoutbox`
//! command is built on this module; `docs/operating.md` describes the
//! states and the state × action table.
//!
//! ```no_run
//! # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use pgoutbox::OperationId;
//! use pgoutbox::admin::{Action, ActionOutcome, Admin};
//!
//! let admin = Admin::new(pool, &pgoutbox::Identifier::default());
//! let id = OperationId::from_i64(42);
//! match admin.act(id, Action::Retry, "alice", "provider fixed the outage").await? {
//!     ActionOutcome::Applied { to, .. } => println!("now {to}"),
//!     refused => println!("{}", refused.message(id, Action::Retry)),
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgoutbox_migrate::Identifier;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool, Row as _};
use uuid::Uuid;

use crate::definition::OperationId;
use crate::duration::millis;
use crate::state::{Outcome, Status};
use crate::store::Store;
use crate::store::admin::{ListFilter, Transition};

mod bulk;
mod overview;
mod schedules;
mod workflows;

pub use crate::name::is_valid as is_operation_name;
pub use bulk::{BulkPreview, BulkStep, BulkTarget};
pub use overview::{EXACT_FINISHED_UP_TO, LastAttempt, Overview, StalledRow, Throughput};
pub use schedules::{
    ScheduleActionOutcome, ScheduleActionRow, ScheduleConflict, ScheduleDeclarer, ScheduleRemoval,
    ScheduleRow, UndeclaredSchedule,
};
pub use workflows::{
    PlannedStep, StepDependency, StepNode, WorkflowAction, WorkflowActionOutcome,
    WorkflowActionRow, WorkflowFilter, WorkflowGraph, WorkflowPlan, WorkflowRow, WorkflowStep,
};

/// An operator's action.
///
/// ```
/// use pgoutbox::admin::{Action, Resolution};
///
/// assert_eq!(Action::Retry.to_string(), "retry");
/// assert_eq!(Action::Resolve(Resolution::Dead).to_string(), "resolve");
/// assert_eq!(Action::Cancel.target(), Some(pgoutbox::Status::Cancelled));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Back to `pending` (attempt count kept): from dead, stalled, cancelled.
    Retry,
    /// To `cancelled`: from waiting, pending, retrying, stalled (running:
    /// refused). A workflow step's dependents are cancelled with it.
    Cancel,
    /// Settle a stalled operation's unknown outcome.
    Resolve(Resolution),
    /// A new operation with the same payload, linked to the original: from
    /// succeeded, dead, cancelled.
    Replay,
}

/// What an operator found out about a stalled operation.
///
/// ```
/// use pgoutbox::Status;
/// use pgoutbox::admin::{Action, Resolution};
///
/// // The charge did go through at the provider: settle it as succeeded.
/// let resolve = Action::Resolve(Resolution::Succeeded);
/// assert_eq!(resolve.allowed_from(), [Status::Stalled]);
/// assert_eq!(Action::Resolve(Resolution::Dead).target(), Some(Status::Dead));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// It did happen.
    Succeeded,
    /// It did not, and will not be retried.
    Dead,
}

impl Action {
    /// The states this action is allowed from (DESIGN's state × action
    /// table).
    ///
    /// ```
    /// use pgoutbox::Status;
    /// use pgoutbox::admin::{Action, Resolution};
    ///
    /// assert_eq!(Action::Retry.allowed_from(), [Status::Dead, Status::Stalled, Status::Cancelled]);
    /// assert!(!Action::Cancel.allowed_from().contains(&Status::Running));
    /// assert_eq!(Action::Resolve(Resolution::Succeeded).target(), Some(Status::Succeeded));
    /// assert_eq!(Action::Replay.target(), None); // a new operation; the original stays
    /// ```
    pub fn allowed_from(self) -> &'static [Status] {
        match self {
            Action::Retry => &[Status::Dead, Status::Stalled, Status::Cancelled],
            Action::Cancel => &[
                Status::Waiting,
                Status::Pending,
                Status::Retrying,
                Status::Stalled,
            ],
            Action::Resolve(_) => &[Status::Stalled],
            Action::Replay => &[Status::Succeeded, Status::Dead, Status::Cancelled],
        }
    }

    /// The state it leads to (a replay leaves the original as it is).
    ///
    /// ```
    /// use pgoutbox::Status;
    /// use pgoutbox::admin::Action;
    ///
    /// assert_eq!(Action::Retry.target(), Some(Status::Pending));
    /// assert_eq!(Action::Cancel.target(), Some(Status::Cancelled));
    /// assert_eq!(Action::Replay.target(), None);
    /// ```
    pub fn target(self) -> Option<Status> {
        match self {
            Action::Retry => Some(Status::Pending),
            Action::Cancel => Some(Status::Cancelled),
            Action::Resolve(Resolution::Succeeded) => Some(Status::Succeeded),
            Action::Resolve(Resolution::Dead) => Some(Status::Dead),
            Action::Replay => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Cancel => "cancel",
            Action::Resolve(_) => "resolve",
            Action::Replay => "replay",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What became of an action.
///
/// ```
/// use pgoutbox::Status;
/// use pgoutbox::admin::{Action, ActionOutcome};
///
/// let id = pgoutbox::OperationId::from_i64(7);
/// let applied = ActionOutcome::Applied { from: Status::Dead, to: Status::Pending, new_operation_id: None };
/// assert_eq!(applied.message(id, Action::Retry), "retry: operation 7 dead → pending");
/// assert_eq!(ActionOutcome::NotFound.message(id, Action::Retry), "no operation with id 7");
/// // As the CLI prints it with `--json`:
/// let json = serde_json::to_value(&ActionOutcome::Refused { status: Status::Running }).unwrap();
/// assert_eq!(json, serde_json::json!({ "outcome": "refused", "status": "running" }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ActionOutcome {
    /// Done and recorded.
    Applied {
        /// The state before.
        from: Status,
        /// The state after.
        to: Status,
        /// For a replay: the new operation.
        new_operation_id: Option<OperationId>,
    },
    /// Refused because of the operation's state, and recorded as refused.
    Refused {
        /// The state that forbids it.
        status: Status,
    },
    /// No operation has this id.
    NotFound,
    /// A resolve as succeeded refused for its result (missing where a
    /// workflow step's dependents read one, or not matching the output's
    /// schema), and recorded as refused.
    BadResult {
        /// What is wrong with it.
        reason: String,
    },
}

impl ActionOutcome {
    /// A one-line description for operation `id`.
    ///
    /// ```
    /// use pgoutbox::Status;
    /// use pgoutbox::admin::{Action, ActionOutcome};
    ///
    /// let refused = ActionOutcome::Refused { status: Status::Running };
    /// assert_eq!(
    ///     refused.message(pgoutbox::OperationId::from_i64(42), Action::Cancel),
    ///     "cannot cancel operation 42: it is running (cancel is allowed from waiting, pending, retrying, stalled)"
    /// );
    /// ```
    pub fn message(&self, id: OperationId, action: Action) -> String {
        match self {
            ActionOutcome::Applied {
                from,
                to,
                new_operation_id: Some(new),
            } => format!("{action} of operation {id} ({from}, stays {to}): new operation {new}"),
            ActionOutcome::Applied { from, to, .. } => {
                format!("{action}: operation {id} {from} → {to}")
            }
            ActionOutcome::Refused { status } => format!(
                "cannot {action} operation {id}: it is {status} ({action} is allowed from {})",
                action
                    .allowed_from()
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ActionOutcome::NotFound => format!("no operation with id {id}"),
            ActionOutcome::BadResult { reason } => {
                format!("cannot {action} operation {id}: {reason}")
            }
        }
    }
}

/// Filters of `ops list` and of bulk actions; all optional, combined with
/// AND.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use pgoutbox::Status;
/// use pgoutbox::admin::OperationFilter;
///
/// // The 20 newest stalled or dead charges of the last hour.
/// let filter = OperationFilter {
///     statuses: vec![Status::Stalled, Status::Dead],
///     name: Some("billing.charge".into()),
///     since: Some(Duration::from_hours(1)),
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
    /// Only operations published within this long.
    pub since: Option<Duration>,
    /// At most this many (newest first).
    pub limit: Option<i64>,
    /// Only operations whose last error contains this text, in any case.
    pub error_contains: Option<String>,
    /// Only the workflow rooted at this operation (the root included).
    pub root: Option<OperationId>,
    /// Only operations older than this one (`id < after_id`): the next
    /// page of a list, after the last id of the previous one. Bulk actions
    /// ignore it, as they ignore `limit`.
    pub after_id: Option<OperationId>,
}

/// Writes the payload schema of every operation in `registry` into `dir`,
/// one `<name>.json` per operation (the layout `pgoutbox schema export
/// --out` writes and `pgoutbox schema check --against` reads), and
/// returns the files written.
///
/// An application calls it from its own `main` or a test, so the schemas
/// of the binary about to be deployed can be checked against the payloads
/// waiting in the database before the deploy:
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// pgoutbox::admin::export_schemas(&pgoutbox::Registry::from_inventory()?, "target/pgoutbox-schemas")?;
/// // then: pgoutbox schema check --against target/pgoutbox-schemas
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// The first file or directory that cannot be written.
pub fn export_schemas(
    registry: &crate::Registry,
    dir: impl AsRef<std::path::Path>,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, entry) in registry.iter() {
        let path = dir.join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(entry.registration().schema().json())? + "\n";
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

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
///     println!("{} {} after {}/{} attempts: {:?}", op.id, op.name, op.attempt - op.snoozes, op.max_attempts, op.last_error);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OperationRow {
    /// Id.
    pub id: OperationId,
    /// Name.
    pub name: String,
    /// State.
    pub status: Status,
    /// Queue.
    pub queue: String,
    /// Priority (higher runs first).
    pub priority: i16,
    /// Attempts started, snoozed ones included: the number of the last
    /// attempt (attempt numbers only grow).
    pub attempt: i32,
    /// Attempts that ended in a snooze: they do not count against
    /// `max_attempts`, which limits `attempt - snoozes`.
    pub snoozes: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Declared idempotent.
    pub idempotent: bool,
    /// Not before.
    pub run_at: DateTime<Utc>,
    /// Parent in the workflow tree.
    pub parent_id: Option<OperationId>,
    /// Root of the workflow tree (`None`: it is a root).
    pub root_id: Option<OperationId>,
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
    /// The idempotency key handed to its handler
    /// (`ctx.idempotency_key()`): the key to look the side effect up by
    /// at an external service that deduplicates on it.
    pub external_key: Uuid,
}

/// One attempt.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::{OperationId, Outcome};
///
/// if let Some(detail) = admin.show(OperationId::from_i64(42)).await? {
///     for attempt in &detail.attempts {
///         // `lost`: the worker vanished mid-attempt; the outcome is unknown.
///         if attempt.outcome == Some(Outcome::Lost) {
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
    /// What the attempt produced: a succeeded handler's result (the value
    /// of its `Result<T>` as JSON; `None` for `()` and for any value that
    /// is JSON `null`, such as `Option::None`), or for a relay the broker's
    /// receipt (`{"backend": "jetstream", "stream": …, "sequence": …,
    /// "duplicate": …}`).
    pub result: Option<serde_json::Value>,
    /// The hash of the output schema a handler's result was written with
    /// (`pgoutbox.operation_outputs`); `None` without a result and for a
    /// relay's receipt.
    pub result_schema_hash: Option<String>,
}

/// One operator action.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::OperationId;
/// use pgoutbox::admin::Action;
///
/// let id = OperationId::from_i64(42);
/// admin.act(id, Action::Cancel, "alice", "customer asked").await?;
/// let detail = admin.show(id).await?.expect("operation 42 exists");
/// let last = detail.actions.last().expect("the action was recorded, applied or refused");
/// assert_eq!((last.action.as_str(), last.actor.as_str()), ("cancel", "alice"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ActionRow {
    /// The operation acted on.
    pub operation_id: OperationId,
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
    pub new_operation_id: Option<OperationId>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// One worker process.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// let lease = Duration::from_secs(30);
/// for worker in admin.workers(3 * lease, Duration::from_hours(1)).await? {
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
    /// Queues served (empty: every queue).
    pub queues: Vec<String>,
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

/// An operation with everything recorded about it.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::OperationId;
///
/// let id = OperationId::from_i64(42);
/// let detail = admin.show(id).await?.expect("operation 42 exists");
/// assert_eq!(detail.operation.id, id);
/// assert!(detail.attempts.len() <= usize::try_from(detail.operation.attempt)?);
/// println!("{} published {:?}", detail.operation.name, detail.children);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, serde::Serialize)]
pub struct OperationDetail {
    /// The operation.
    pub operation: OperationRow,
    /// Its attempts, in order.
    pub attempts: Vec<AttemptRow>,
    /// Operators' actions on it, in order.
    pub actions: Vec<ActionRow>,
    /// Operations it published (or that replayed it).
    pub children: Vec<OperationId>,
}

/// The shape of the system now.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use pgoutbox::Status;
///
/// let stats = admin.stats(Duration::from_secs(90), 10).await?;
/// let ready: i64 = stats
///     .counts
///     .iter()
///     .filter(|(status, _, _)| matches!(status, Status::Pending | Status::Retrying))
///     .map(|(_, _, n)| n)
///     .sum();
/// println!("{ready} waiting, the oldest for {:?} s", stats.oldest_ready_seconds);
/// assert_eq!(stats.succeeded_per_minute.len(), 10);
/// assert!(stats.workers.iter().all(|w| w.live));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    /// (status, name, count).
    pub counts: Vec<(Status, String, i64)>,
    /// Age in seconds of the oldest ready operation.
    pub oldest_ready_seconds: Option<f64>,
    /// Successes per minute over the last minutes, oldest first.
    pub succeeded_per_minute: Vec<i64>,
    /// Live workers.
    pub workers: Vec<WorkerRow>,
    /// Ready operations whose name no live worker handles: (name, count).
    pub unhandled: Vec<(String, i64)>,
    /// Ready operations whose name some live worker handles, but in a
    /// queue that none of those serves: (queue, name, count). They are
    /// never claimed either.
    pub unserved: Vec<(String, String, i64)>,
    /// Schedules that two live workers declare differently.
    pub schedule_conflicts: Vec<ScheduleConflict>,
    /// Schedules that no live worker declares (retired from the code, or
    /// all their workers down).
    pub undeclared_schedules: Vec<UndeclaredSchedule>,
}

/// Operators' access to one schema.
///
/// It always uses prepared statements: behind pgbouncer in transaction
/// mode, give it a pool connected to PostgreSQL directly.
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::Status;
/// use pgoutbox::admin::{Admin, OperationFilter};
///
/// let admin = Admin::new(pool, &pgoutbox::Identifier::default());
/// let stalled = admin
///     .list(&OperationFilter { statuses: vec![Status::Stalled], ..OperationFilter::default() })
///     .await?;
/// for op in &stalled {
///     println!("{} {} {:?}", op.id, op.name, op.last_error);
/// }
/// let stats = admin.stats(std::time::Duration::from_mins(1), 5).await?;
/// for (name, ready) in &stats.unhandled {
///     println!("{ready} ready `{name}` operation(s) that no live worker handles");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Admin {
    pool: PgPool,
    store: Store,
}

impl Admin {
    /// Operators' access to `schema` through `pool`.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::OperationId;
    /// use pgoutbox::admin::Admin;
    ///
    /// let settings = pgoutbox::Settings::load()?;
    /// let admin = Admin::new(settings.pool()?, &settings.schema()?);
    /// assert!(admin.show(OperationId::from_i64(-1)).await?.is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(pool: PgPool, schema: &Identifier) -> Self {
        Admin {
            pool,
            store: Store::new(schema, None, true),
        }
    }

    /// Operations matching `filter`, newest first.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::admin::OperationFilter;
    ///
    /// let newest = admin.list(&OperationFilter { limit: Some(10), ..OperationFilter::default() }).await?;
    /// assert!(newest.len() <= 10);
    /// assert!(newest.windows(2).all(|w| w[0].id > w[1].id)); // newest first
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list(&self, filter: &OperationFilter) -> Result<Vec<OperationRow>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let filter = ListFilter {
            statuses: &filter.statuses,
            name: filter.name.as_deref(),
            queue: filter.queue.as_deref(),
            since_ms: filter.since.map(millis),
            limit: filter.limit,
            error_text: filter.error_contains.as_deref(),
            root: filter.root.map(OperationId::as_i64),
            before_id: filter.after_id.map(OperationId::as_i64),
        };
        self.store.list_operations(&mut conn, filter).await
    }

    /// One operation with its attempts, actions and children.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// match admin.show(pgoutbox::OperationId::from_i64(42)).await? {
    ///     Some(detail) => {
    ///         for attempt in &detail.attempts {
    ///             println!("#{} {:?} {:?}", attempt.number, attempt.outcome, attempt.error);
    ///         }
    ///     }
    ///     None => println!("no operation 42 (never published, or purged by retention)"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn show(&self, id: OperationId) -> Result<Option<OperationDetail>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let Some(operation) = self.store.operation(&mut conn, id).await? else {
            return Ok(None);
        };
        Ok(Some(OperationDetail {
            attempts: self.store.attempts(&mut conn, id).await?,
            actions: self.store.operator_actions(&mut conn, id).await?,
            children: self.store.children(&mut conn, id).await?,
            operation,
        }))
    }

    /// The whole workflow under `root`, in id order.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::OperationId;
    ///
    /// let root = OperationId::from_i64(42);
    /// let tree = admin.workflow(root).await?;
    /// if let Some(first) = tree.first() {
    ///     assert_eq!(first.id, root);
    ///     // Every other member descends from it.
    ///     assert!(tree[1..].iter().all(|op| op.root_id == Some(root)));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn workflow(&self, root: OperationId) -> Result<Vec<OperationRow>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store.workflow(&mut conn, root).await
    }

    /// Applies `action` to operation `id` if its state allows, recording
    /// it (applied or refused) with `actor` and `reason` in the same
    /// statement. The state is read under a row lock, so concurrent
    /// operators and workers serialize. See the module's example.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::{OperationId, Status};
    /// use pgoutbox::admin::{Action, ActionOutcome, Resolution};
    ///
    /// // The provider's dashboard shows the charge: it did happen.
    /// let id = OperationId::from_i64(42);
    /// let resolve = Action::Resolve(Resolution::Succeeded);
    /// let outcome = admin.act(id, resolve, "alice", "charge ch_123 found at the provider").await?;
    /// if let ActionOutcome::Applied { from, to, .. } = &outcome {
    ///     assert_eq!((*from, *to), (Status::Stalled, Status::Succeeded));
    /// }
    /// println!("{}", outcome.message(id, resolve));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn act(
        &self,
        id: OperationId,
        action: Action,
        actor: &str,
        reason: &str,
    ) -> Result<ActionOutcome, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        if action == Action::Replay {
            let result = self
                .store
                .operator_replay(&mut conn, id, actor, reason, action.allowed_from())
                .await?;
            return Ok(match result {
                None => ActionOutcome::NotFound,
                Some((status, Some(new))) => ActionOutcome::Applied {
                    from: status,
                    to: status,
                    new_operation_id: Some(new),
                },
                Some((status, None)) => ActionOutcome::Refused { status },
            });
        }
        if action == Action::Resolve(Resolution::Succeeded) {
            drop(conn);
            return self.resolve_with_result(id, None, actor, reason).await;
        }
        self.transition(&mut conn, id, action, actor, reason, None)
            .await
    }

    /// Applies a retry, cancel or resolve, recording it.
    async fn transition(
        &self,
        conn: &mut sqlx::PgConnection,
        id: OperationId,
        action: Action,
        actor: &str,
        reason: &str,
        result: Option<(&serde_json::Value, &str)>,
    ) -> Result<ActionOutcome, sqlx::Error> {
        let to = action.target().expect("only a replay has no target state");
        let change = Transition {
            action: action.name(),
            actor,
            reason,
            allowed: action.allowed_from(),
            to,
            result,
        };
        Ok(
            match self.store.operator_transition(conn, id, &change).await? {
                None => ActionOutcome::NotFound,
                Some((from, true)) => ActionOutcome::Applied {
                    from,
                    to,
                    new_operation_id: None,
                },
                Some((status, false)) => ActionOutcome::Refused { status },
            },
        )
    }

    /// Counts, pace over the last `minutes` minutes, live workers,
    /// unhandled names and unserved queues (counting only ready operations:
    /// pending or retrying, their run-at come). A worker is live when it
    /// has not stopped and its heartbeat is younger than its own lease, as
    /// it recorded it at start-up; `live` is the window for workers that
    /// recorded none (started by a version before migration 2).
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    ///
    /// let lease = Duration::from_secs(30);
    /// let stats = admin.stats(3 * lease, 5).await?;
    /// for (name, ready) in &stats.unhandled {
    ///     eprintln!("{ready} ready `{name}` operation(s), and no live worker handles it");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stats(&self, live: Duration, minutes: i32) -> Result<Stats, sqlx::Error> {
        let live_ms = millis(live);
        let mut conn = self.pool.acquire().await?;
        let counts = self.store.counts(&mut conn).await?;
        let oldest_ready_seconds = self.store.oldest_ready(&mut conn).await?;
        let succeeded_per_minute = self.store.succeeded_per_minute(&mut conn, minutes).await?;
        let workers = self
            .store
            .workers::<WorkerRow>(&mut conn, live_ms, live_ms)
            .await?
            .into_iter()
            .filter(|w| w.live)
            .collect();
        let unhandled = self.store.unhandled_names(&mut conn, live_ms).await?;
        let unserved = self.store.unserved_queues(&mut conn, live_ms).await?;
        let schedule_conflicts = self.schedule_conflicts(&mut conn, live_ms).await?;
        let undeclared_schedules = self.undeclared_schedules(&mut conn, live_ms).await?;
        Ok(Stats {
            counts,
            oldest_ready_seconds,
            succeeded_per_minute,
            workers,
            unhandled,
            unserved,
            schedule_conflicts,
            undeclared_schedules,
        })
    }

    /// Workers seen within `recent` (live first); live: no stop and a
    /// heartbeat younger than the worker's own lease (`live` for a worker
    /// that recorded none).
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    ///
    /// // Live: a heartbeat within 90 s; listed: seen within the last day.
    /// let workers = admin.workers(Duration::from_secs(90), Duration::from_hours(24)).await?;
    /// let live = workers.iter().take_while(|w| w.live).count();
    /// assert!(workers[live..].iter().all(|w| !w.live)); // live first
    /// # Ok(())
    /// # }
    /// ```
    pub async fn workers(
        &self,
        live: Duration,
        recent: Duration,
    ) -> Result<Vec<WorkerRow>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store
            .workers(&mut conn, millis(live), millis(recent))
            .await
    }

    /// Deletes one batch (SKIP LOCKED, so several purgers do not collide)
    /// of operations in `statuses` that finished (or, not finished, last
    /// changed) longer than `older_than` ago; returns how many. Call until
    /// it returns less than `batch`.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use pgoutbox::Status;
    ///
    /// // Delete succeeded and cancelled operations older than 7 days, 1,000 at a time.
    /// let statuses = [Status::Succeeded, Status::Cancelled];
    /// let week = Duration::from_hours(7 * 24);
    /// let mut purged = 0;
    /// loop {
    ///     let n = admin.purge_batch(&statuses, week, 1000).await?;
    ///     purged += n;
    ///     if n < 1000 {
    ///         break;
    ///     }
    /// }
    /// println!("purged {purged} operations");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn purge_batch(
        &self,
        statuses: &[Status],
        older_than: Duration,
        batch: i64,
    ) -> Result<u64, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store
            .purge(&mut conn, statuses, millis(older_than), batch)
            .await
    }

    /// Deletes one batch of attempts and operator actions older than
    /// `older_than` whose operation is gone; returns how many.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// let ninety_days = std::time::Duration::from_hours(90 * 24);
    /// while admin.purge_history_batch(ninety_days, 1000).await? == 1000 {}
    /// # Ok(())
    /// # }
    /// ```
    pub async fn purge_history_batch(
        &self,
        older_than: Duration,
        batch: i64,
    ) -> Result<i64, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store
            .purge_history(&mut conn, millis(older_than), batch)
            .await
    }

    /// Every schema version recorded for `name`, oldest first.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// let versions = admin.schema_history("billing.charge").await?;
    /// assert!(versions.windows(2).all(|w| w[0].first_seen_at <= w[1].first_seen_at));
    /// for v in &versions {
    ///     println!("{} first seen {}", &v.schema_hash[..12], v.first_seen_at);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn schema_history(&self, name: &str) -> Result<Vec<SchemaVersion>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store.schema_history(&mut conn, name).await
    }

    /// Every output schema (the type a handler's `Result<T>` records)
    /// recorded for `name`, oldest first: what an auditor reads an old
    /// result with, by the `result_schema_hash` of its attempt.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// for v in admin.output_history("billing.charge").await? {
    ///     println!("{} first seen {}: {}", &v.schema_hash[..12], v.first_seen_at, v.json_schema);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn output_history(&self, name: &str) -> Result<Vec<SchemaVersion>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store.output_history(&mut conn, name).await
    }

    /// The most recently seen schema of every operation name.
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("billing.charge")]
    /// async fn charge(ctx: &mut Context, amount_cents: i64) -> Result<()> {
    ///     let _ = (ctx, amount_cents);
    ///     Ok(())
    /// }
    ///
    /// # async fn example(admin: pgoutbox::admin::Admin) -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// // Does the database know this binary's payload schema?
    /// let ours = Charge::schema().hash();
    /// let latest = admin.latest_schemas().await?;
    /// let known = latest.iter().find(|v| v.name == Charge::NAME);
    /// if known.is_some_and(|v| v.schema_hash != ours) {
    ///     println!("the payload of {} changed since it was last seen", Charge::NAME);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn latest_schemas(&self) -> Result<Vec<SchemaVersion>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store.latest_schemas(&mut conn).await
    }

    /// One page of up to `limit` ready operations (id, name, payload) with
    /// ids above `after` (from the first when `None`), for checks that walk
    /// them all.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// // Walk every ready operation, 500 at a time.
    /// let mut after = None;
    /// loop {
    ///     let page = admin.ready_payloads(after, 500).await?;
    ///     let Some((last, _, _)) = page.last() else { break };
    ///     after = Some(*last);
    ///     for (id, name, payload) in &page {
    ///         assert!(payload.is_object(), "operation {id} ({name})");
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ready_payloads(
        &self,
        after: Option<OperationId>,
        limit: i64,
    ) -> Result<Vec<(OperationId, String, serde_json::Value)>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store.ready_payloads(&mut conn, after, limit).await
    }
}

// How the rows of the store's statements (`store/sql/*.sql`) decode into
// the API's row types, by column name.

fn operation_id(row: &PgRow, column: &str) -> Result<Option<OperationId>, sqlx::Error> {
    Ok(row
        .try_get::<Option<i64>, _>(column)?
        .map(OperationId::from_i64))
}

impl FromRow<'_, PgRow> for OperationRow {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(OperationRow {
            id: OperationId::from_i64(row.try_get("id")?),
            name: row.try_get("name")?,
            status: row.try_get("status")?,
            queue: row.try_get("queue")?,
            priority: row.try_get("priority")?,
            attempt: row.try_get("attempt")?,
            snoozes: row.try_get("snoozes")?,
            max_attempts: row.try_get("max_attempts")?,
            idempotent: row.try_get("idempotent")?,
            run_at: row.try_get("run_at")?,
            parent_id: operation_id(row, "parent_id")?,
            root_id: operation_id(row, "root_id")?,
            last_error: row.try_get("last_error")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            finished_at: row.try_get("finished_at")?,
            payload: row.try_get("payload")?,
            schema_hash: row.try_get("schema_hash")?,
            external_key: row.try_get("external_key")?,
        })
    }
}

impl FromRow<'_, PgRow> for AttemptRow {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(AttemptRow {
            number: row.try_get("number")?,
            worker_id: row.try_get("worker_id")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            outcome: row.try_get("outcome")?,
            error: row.try_get("error")?,
            error_chain: row.try_get("error_chain")?,
            result: row.try_get("result")?,
            result_schema_hash: row.try_get("result_schema_hash")?,
        })
    }
}

impl FromRow<'_, PgRow> for ActionRow {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(ActionRow {
            operation_id: OperationId::from_i64(row.try_get("operation_id")?),
            action: row.try_get("action")?,
            outcome: row.try_get("outcome")?,
            actor: row.try_get("actor")?,
            reason: row.try_get("reason")?,
            from_status: row.try_get("from_status")?,
            to_status: row.try_get("to_status")?,
            new_operation_id: operation_id(row, "new_operation_id")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl FromRow<'_, PgRow> for WorkerRow {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(WorkerRow {
            id: row.try_get("id")?,
            host: row.try_get("host")?,
            pid: row.try_get("pid")?,
            version: row.try_get("version")?,
            names: row.try_get("names")?,
            queues: row.try_get("queues")?,
            n_workers: row.try_get("n_workers")?,
            started_at: row.try_get("started_at")?,
            heartbeat_at: row.try_get("heartbeat_at")?,
            stopped_at: row.try_get("stopped_at")?,
            live: row.try_get("live")?,
        })
    }
}

impl FromRow<'_, PgRow> for SchemaVersion {
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
