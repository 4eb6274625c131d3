//! What operators do: inspect operations, retry, cancel, resolve and replay
//! them (each action recorded in `operator_actions` in the same statement as
//! the state change), read statistics, purge old rows. The `pgoutbox`
//! command is built on this module; `docs/operating.md` describes the
//! states and the state × action table.
//!
//! ```no_run
//! # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use pgoutbox::admin::{Action, ActionOutcome, Admin};
//!
//! let admin = Admin::new(pool, &pgoutbox::Identifier::default());
//! match admin.act(42, Action::Retry, "alice", "provider fixed the outage").await? {
//!     ActionOutcome::Applied { to, .. } => println!("now {to}"),
//!     refused => println!("{}", refused.message(42, Action::Retry)),
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;

use pgoutbox_migrate::Identifier;
use sqlx::PgPool;

use crate::state::Status;
use crate::store::Store;
pub use crate::store::admin::{
    ActionRow, AttemptRow, OperationFilter, OperationRow, SchemaVersion, WorkerRow,
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
    /// To `cancelled`: from pending, retrying, stalled (running: refused).
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
            Action::Cancel => &[Status::Pending, Status::Retrying, Status::Stalled],
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
/// let applied = ActionOutcome::Applied { from: Status::Dead, to: Status::Pending, new_operation_id: None };
/// assert_eq!(applied.message(7, Action::Retry), "retry: operation 7 dead → pending");
/// assert_eq!(ActionOutcome::NotFound.message(7, Action::Retry), "no operation with id 7");
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
        new_operation_id: Option<i64>,
    },
    /// Refused because of the operation's state, and recorded as refused.
    Refused {
        /// The state that forbids it.
        status: Status,
    },
    /// No operation has this id.
    NotFound,
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
    ///     refused.message(42, Action::Cancel),
    ///     "cannot cancel operation 42: it is running (cancel is allowed from pending, retrying, stalled)"
    /// );
    /// ```
    pub fn message(&self, id: i64, action: Action) -> String {
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
        }
    }
}

/// An operation with everything recorded about it.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// let detail = admin.show(42).await?.expect("operation 42 exists");
/// assert_eq!(detail.operation.id, 42);
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
    pub children: Vec<i64>,
}

/// The shape of the system now.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::Status;
///
/// let stats = admin.stats(90_000, 10).await?;
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
/// let stats = admin.stats(60_000, 5).await?;
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
    /// use pgoutbox::admin::Admin;
    ///
    /// let settings = pgoutbox::Settings::load()?;
    /// let admin = Admin::new(settings.pool()?, &settings.schema()?);
    /// assert!(admin.show(-1).await?.is_none());
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
        self.store.list_operations(&mut conn, filter).await
    }

    /// One operation with its attempts, actions and children.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// match admin.show(42).await? {
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
    pub async fn show(&self, id: i64) -> Result<Option<OperationDetail>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let Some(operation) = self.store.get_operation(&mut conn, id).await? else {
            return Ok(None);
        };
        Ok(Some(OperationDetail {
            attempts: self.store.attempts(&mut conn, id).await?,
            actions: self.store.actions(&mut conn, id).await?,
            children: self.store.children(&mut conn, id).await?,
            operation,
        }))
    }

    /// The whole workflow under `root`, in id order.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// let tree = admin.workflow(42).await?;
    /// if let Some(root) = tree.first() {
    ///     assert_eq!(root.id, 42);
    ///     // Every other member descends from it.
    ///     assert!(tree[1..].iter().all(|op| op.root_id == Some(42)));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn workflow(&self, root: i64) -> Result<Vec<OperationRow>, sqlx::Error> {
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
    /// use pgoutbox::admin::{Action, ActionOutcome, Resolution};
    ///
    /// // The provider's dashboard shows the charge: it did happen.
    /// let resolve = Action::Resolve(Resolution::Succeeded);
    /// let outcome = admin.act(42, resolve, "alice", "charge ch_123 found at the provider").await?;
    /// if let ActionOutcome::Applied { from, to, .. } = &outcome {
    ///     assert_eq!((*from, *to), (pgoutbox::Status::Stalled, pgoutbox::Status::Succeeded));
    /// }
    /// println!("{}", outcome.message(42, resolve));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn act(
        &self,
        id: i64,
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
        let to = action.target().expect("only a replay has no target state");
        let result = self
            .store
            .operator_transition(
                &mut conn,
                id,
                action.name(),
                actor,
                reason,
                action.allowed_from(),
                to,
            )
            .await?;
        Ok(match result {
            None => ActionOutcome::NotFound,
            Some((from, true)) => ActionOutcome::Applied {
                from,
                to,
                new_operation_id: None,
            },
            Some((status, false)) => ActionOutcome::Refused { status },
        })
    }

    /// Counts, pace, live workers, unhandled names. A worker is live when
    /// its heartbeat is younger than `live_ms`.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// let lease_ms = 30_000;
    /// let stats = admin.stats(3 * lease_ms, 5).await?;
    /// for (name, ready) in &stats.unhandled {
    ///     eprintln!("{ready} ready `{name}` operation(s), and no live worker handles it");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stats(&self, live_ms: i64, minutes: i32) -> Result<Stats, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let counts = self.store.counts(&mut conn).await?;
        let (oldest_ready_seconds, succeeded_per_minute) =
            self.store.pace(&mut conn, minutes).await?;
        let workers = self
            .store
            .workers(&mut conn, live_ms, live_ms)
            .await?
            .into_iter()
            .filter(|w| w.live)
            .collect();
        let unhandled = self.store.unhandled_names(&mut conn, live_ms).await?;
        Ok(Stats {
            counts,
            oldest_ready_seconds,
            succeeded_per_minute,
            workers,
            unhandled,
        })
    }

    /// Workers seen within `recent_ms` (live first).
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// // Live: a heartbeat within 90 s; listed: seen within the last day.
    /// let workers = admin.workers(90_000, 86_400_000).await?;
    /// let live = workers.iter().take_while(|w| w.live).count();
    /// assert!(workers[live..].iter().all(|w| !w.live)); // live first
    /// # Ok(())
    /// # }
    /// ```
    pub async fn workers(
        &self,
        live_ms: i64,
        recent_ms: i64,
    ) -> Result<Vec<WorkerRow>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store.workers(&mut conn, live_ms, recent_ms).await
    }

    /// Deletes one batch (SKIP LOCKED, so several purgers do not collide)
    /// of operations in `statuses` older than `older_than_ms`; returns how
    /// many. Call until it returns less than `batch`.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// // Delete succeeded and cancelled operations older than 7 days, 1,000 at a time.
    /// use pgoutbox::Status;
    ///
    /// let statuses = [Status::Succeeded, Status::Cancelled];
    /// let week_ms = 7 * 24 * 3_600_000;
    /// let mut purged = 0;
    /// loop {
    ///     let n = admin.purge_batch(&statuses, week_ms, 1000).await?;
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
        older_than_ms: i64,
        batch: i64,
    ) -> Result<u64, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store
            .purge(&mut conn, statuses, older_than_ms, batch)
            .await
    }

    /// Deletes one batch of attempts and operator actions older than
    /// `older_than_ms` whose operation is gone; returns how many.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// let ninety_days_ms = 90 * 24 * 3_600_000;
    /// while admin.purge_history_batch(ninety_days_ms, 1000).await? == 1000 {}
    /// # Ok(())
    /// # }
    /// ```
    pub async fn purge_history_batch(
        &self,
        older_than_ms: i64,
        batch: i64,
    ) -> Result<i64, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store
            .purge_history(&mut conn, older_than_ms, batch)
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

    /// One page of ready operations (id, name, payload) with ids above
    /// `after`, for checks that walk them all.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// // Walk every ready operation, 500 at a time.
    /// let mut after = 0;
    /// loop {
    ///     let page = admin.ready_payloads(after, 500).await?;
    ///     let Some((last, _, _)) = page.last() else { break };
    ///     after = *last;
    ///     for (id, name, payload) in &page {
    ///         assert!(payload.is_object(), "operation {id} ({name})");
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ready_payloads(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String, serde_json::Value)>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store.ready_payloads(&mut conn, after, limit).await
    }
}
