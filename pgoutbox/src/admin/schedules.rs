//! Schedules as operators see them: the list (next tick, last tick and its
//! operation's state, who declares them, paused or not), conflicting
//! declarations, schedules that no live worker declares, and pause, resume
//! and removal, recorded in `operator_actions` like the actions on
//! operations.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row as _};
use uuid::Uuid;

use super::{Admin, operation_id};
use crate::definition::{OperationId, WorkflowId};
use crate::duration::millis;
use crate::state::{Status, WorkflowState};

/// Workers that recorded no lease (started before migration 2) count as
/// live with a heartbeat this recent.
const LIVE_WITHOUT_LEASE: Duration = Duration::from_mins(1);

/// One schedule.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// for s in admin.schedules().await? {
///     let state = if s.paused { "paused" } else { "active" };
///     println!("{} `{}` in {} {state}, next {}, last {:?} (operation {:?}, {:?})",
///         s.name, s.cron, s.time_zone, s.next_tick, s.last_tick, s.last_operation_id, s.last_status);
///     for w in &s.declared_by {
///         println!("  declared by {} ({}:{})", w.worker_id, w.host, w.pid);
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScheduleRow {
    /// The schedule's name.
    pub name: String,
    /// The operation it publishes, or `workflow <name>` for a schedule
    /// that publishes a workflow
    /// ([`WorkflowRouter::schedule_workflow`](crate::WorkflowRouter::schedule_workflow)).
    pub operation: String,
    /// The cron expression.
    pub cron: String,
    /// The IANA time zone.
    pub time_zone: String,
    /// The missed-ticks policy: `latest`, `all` or `none`.
    pub missed: String,
    /// The first tick not yet handled.
    pub next_tick: DateTime<Utc>,
    /// The last tick published.
    pub last_tick: Option<DateTime<Utc>>,
    /// Its operation.
    pub last_operation_id: Option<OperationId>,
    /// That operation's state (`None` once retention purged it).
    pub last_status: Option<Status>,
    /// For a schedule that publishes a workflow (`operation` is then
    /// `workflow <name>`, and the last operation the workflow's first
    /// step): that workflow.
    pub last_workflow_id: Option<WorkflowId>,
    /// And its state.
    pub last_workflow_state: Option<WorkflowState>,
    /// Paused by an operator: publishes nothing.
    pub paused: bool,
    /// Who paused it.
    pub paused_by: Option<String>,
    /// Why.
    pub paused_reason: Option<String>,
    /// When.
    pub paused_at: Option<DateTime<Utc>>,
    /// The live workers that declare it.
    pub declared_by: Vec<ScheduleDeclarer>,
    /// First declared at.
    pub created_at: DateTime<Utc>,
    /// Last changed at.
    pub updated_at: DateTime<Utc>,
}

/// A live worker declaring a schedule, and how.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScheduleDeclarer {
    /// The worker.
    pub worker_id: Uuid,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: i32,
    /// The operation it publishes.
    pub operation: String,
    /// Its cron expression.
    pub cron: String,
    /// Its time zone.
    pub time_zone: String,
    /// Its missed-ticks policy.
    pub missed: String,
    /// Whether it is the declaration in force (the schedule's row).
    pub in_force: bool,
}

/// A schedule that two live workers declare differently: `worker` declares
/// it otherwise than the declaration in force, which another live worker
/// holds. Reported by [`Admin::stats`], in the workers' log and by the
/// gauge `pgoutbox_schedule_conflicts`.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// let stats = admin.stats(std::time::Duration::from_mins(1), 5).await?;
/// for c in &stats.schedule_conflicts {
///     eprintln!("schedule {}: worker {} declares `{}`, `{}` is in force", c.name, c.worker_id, c.cron, c.in_force_cron);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScheduleConflict {
    /// The schedule's name.
    pub name: String,
    /// The dissenting worker.
    pub worker_id: Uuid,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: i32,
    /// The operation it declares.
    pub operation: String,
    /// Its cron expression.
    pub cron: String,
    /// Its time zone.
    pub time_zone: String,
    /// Its missed-ticks policy.
    pub missed: String,
    /// The operation in force.
    pub in_force_operation: String,
    /// The cron expression in force.
    pub in_force_cron: String,
    /// The time zone in force.
    pub in_force_time_zone: String,
    /// The missed-ticks policy in force.
    pub in_force_missed: String,
}

/// A schedule whose row no live worker declares: retired from the code
/// (remove it with [`Admin::remove_schedule`]), or every worker that
/// declares it is down. Re-added or restarted later, it finds its missed
/// ticks from its old cursor (up to [`MAX_MISSED_TICKS`](crate::MAX_MISSED_TICKS)
/// of them under [`MissedTicks::All`](crate::MissedTicks::All)), so it is
/// reported by [`Admin::stats`], on the dashboard's overview, in the
/// workers' log and by the gauge `pgoutbox_schedules_undeclared`.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// let stats = admin.stats(std::time::Duration::from_mins(1), 5).await?;
/// for s in &stats.undeclared_schedules {
///     eprintln!("schedule {}: no live worker declares it (last seen {:?})", s.name, s.last_declared_at);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UndeclaredSchedule {
    /// The schedule's name.
    pub name: String,
    /// The operation it publishes.
    pub operation: String,
    /// The cron expression in force.
    pub cron: String,
    /// The IANA time zone.
    pub time_zone: String,
    /// The missed-ticks policy: `latest`, `all` or `none`.
    pub missed: String,
    /// The first tick not yet handled: the missed ticks are counted from it.
    pub next_tick: DateTime<Utc>,
    /// The last tick published.
    pub last_tick: Option<DateTime<Utc>>,
    /// Paused by an operator.
    pub paused: bool,
    /// When a worker that declared it was last alive (`None` once
    /// retention purged those workers' rows).
    pub last_declared_at: Option<DateTime<Utc>>,
}

/// What became of an operator's removal of a schedule
/// ([`Admin::remove_schedule`]).
///
/// ```
/// use pgoutbox::admin::ScheduleRemoval;
///
/// assert_eq!(ScheduleRemoval::Applied.message("billing.reconcile"), "removed schedule `billing.reconcile`");
/// assert_eq!(ScheduleRemoval::NotFound.message("x"), "no schedule named `x`");
/// let refused = ScheduleRemoval::Refused { declared_by: vec![] };
/// assert!(refused.message("x").starts_with("cannot remove schedule `x`"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ScheduleRemoval {
    /// The row is gone, and the removal recorded.
    Applied,
    /// Live workers still declare the schedule (they would record it again
    /// at once): nothing removed, the refusal recorded. Take it out of
    /// their routers and redeploy, or stop them, first.
    Refused {
        /// The live workers that declare it.
        declared_by: Vec<ScheduleDeclarer>,
    },
    /// No schedule has this name; nothing recorded.
    NotFound,
}

impl ScheduleRemoval {
    /// A one-line description of removing schedule `name`.
    pub fn message(&self, name: &str) -> String {
        match self {
            ScheduleRemoval::Applied => format!("removed schedule `{name}`"),
            ScheduleRemoval::NotFound => format!("no schedule named `{name}`"),
            ScheduleRemoval::Refused { declared_by } => {
                let workers: Vec<String> = declared_by
                    .iter()
                    .map(|d| format!("{} ({}:{})", d.worker_id, d.host, d.pid))
                    .collect();
                let (who, verb, whose) = if workers.len() == 1 {
                    ("live worker", "declares", "that worker's")
                } else {
                    ("live workers", "declare", "those workers'")
                };
                format!(
                    "cannot remove schedule `{name}`: {who} {} {verb} it; remove it from \
                     {whose} routers and redeploy, or stop the worker, first",
                    workers.join(", ")
                )
            }
        }
    }
}

/// An operator's action on a schedule, applied or refused.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// admin.pause_schedule("billing.reconcile", "alice", "provider maintenance").await?;
/// let last = admin.schedule_actions("billing.reconcile").await?.pop().unwrap();
/// assert_eq!((last.action.as_str(), last.actor.as_str(), last.to_state.as_deref()), ("pause", "alice", Some("paused")));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScheduleActionRow {
    /// The schedule.
    pub schedule: String,
    /// `pause`, `resume` or `remove`.
    pub action: String,
    /// `applied` or `refused`.
    pub outcome: String,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// `active` or `paused` before.
    pub from_state: String,
    /// After, when applied (`removed` for a removal).
    pub to_state: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// What became of a pause or a resume.
///
/// ```
/// use pgoutbox::admin::ScheduleActionOutcome;
///
/// assert_eq!(ScheduleActionOutcome::Applied.message("billing.reconcile", true), "paused schedule `billing.reconcile`");
/// assert_eq!(
///     ScheduleActionOutcome::Refused.message("billing.reconcile", false),
///     "cannot resume schedule `billing.reconcile`: it is not paused"
/// );
/// assert_eq!(ScheduleActionOutcome::NotFound.message("x", true), "no schedule named `x`");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ScheduleActionOutcome {
    /// Done and recorded.
    Applied,
    /// Already paused (for a pause) or not paused (for a resume); recorded
    /// as refused.
    Refused,
    /// No schedule has this name.
    NotFound,
}

impl ScheduleActionOutcome {
    /// A one-line description of pausing (`pause`) or resuming schedule
    /// `name`.
    pub fn message(self, name: &str, pause: bool) -> String {
        match (self, pause) {
            (ScheduleActionOutcome::Applied, true) => format!("paused schedule `{name}`"),
            (ScheduleActionOutcome::Applied, false) => format!("resumed schedule `{name}`"),
            (ScheduleActionOutcome::Refused, true) => {
                format!("cannot pause schedule `{name}`: it is paused already")
            }
            (ScheduleActionOutcome::Refused, false) => {
                format!("cannot resume schedule `{name}`: it is not paused")
            }
            (ScheduleActionOutcome::NotFound, _) => format!("no schedule named `{name}`"),
        }
    }
}

impl fmt::Display for ScheduleActionOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScheduleActionOutcome::Applied => "applied",
            ScheduleActionOutcome::Refused => "refused",
            ScheduleActionOutcome::NotFound => "not found",
        })
    }
}

impl Admin {
    /// Every schedule, by name, with its next tick, its last tick and that
    /// operation's state, the live workers declaring it, and whether it is
    /// paused.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// let paused: Vec<String> = admin.schedules().await?.into_iter().filter(|s| s.paused).map(|s| s.name).collect();
    /// println!("paused: {paused:?}");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store
            .schedules(&mut conn, millis(LIVE_WITHOUT_LEASE))
            .await
    }

    /// Pauses schedule `name`: workers publish none of its ticks (each is
    /// logged as not published) until it is resumed, and its ticks in
    /// between are not caught up. Recorded in `operator_actions` with
    /// `actor` and `reason`, applied or refused (already paused), in the
    /// same statement.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::admin::ScheduleActionOutcome;
    ///
    /// let outcome = admin.pause_schedule("billing.reconcile", "alice", "ledger migration tonight").await?;
    /// println!("{}", outcome.message("billing.reconcile", true));
    /// assert_ne!(outcome, ScheduleActionOutcome::NotFound);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn pause_schedule(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<ScheduleActionOutcome, sqlx::Error> {
        self.set_paused(name, true, actor, reason).await
    }

    /// Resumes schedule `name`: its next tick is published as usual (the
    /// ticks while it was paused are not). Recorded like
    /// [`Admin::pause_schedule`].
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// admin.resume_schedule("billing.reconcile", "alice", "migration done").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn resume_schedule(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<ScheduleActionOutcome, sqlx::Error> {
        self.set_paused(name, false, actor, reason).await
    }

    async fn set_paused(
        &self,
        name: &str,
        pause: bool,
        actor: &str,
        reason: &str,
    ) -> Result<ScheduleActionOutcome, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let action = if pause { "pause" } else { "resume" };
        let result = self
            .store
            .schedule_pause(&mut conn, name, pause, actor, reason, action)
            .await?;
        Ok(match result {
            None => ScheduleActionOutcome::NotFound,
            Some((_, true)) => ScheduleActionOutcome::Applied,
            Some((_, false)) => ScheduleActionOutcome::Refused,
        })
    }

    /// Removes schedule `name`, retired from the code: its row goes (and
    /// with it the cursor and the declarations of workers no longer
    /// live), its trail in `operator_actions` stays. Refused while a live
    /// worker declares it, since that worker would record it again at
    /// once (with a fresh cursor); the refusal names those workers. A
    /// schedule declared again after its removal starts afresh: its first
    /// tick is the next one, nothing is missed. Recorded with `actor` and
    /// `reason`, applied or refused, in the transaction that removes it;
    /// an unknown name is not recorded.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::admin::ScheduleRemoval;
    ///
    /// let outcome = admin.remove_schedule("billing.reconcile", "alice", "retired in v42").await?;
    /// println!("{}", outcome.message("billing.reconcile"));
    /// assert!(!matches!(outcome, ScheduleRemoval::NotFound));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn remove_schedule(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<ScheduleRemoval, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        // Locked first, read again by the removal's own statement (a newer
        // snapshot): a worker that declared it meanwhile is seen, and one
        // declaring it now waits for this transaction.
        if self.store.schedule_target(&mut tx, name).await?.is_none() {
            return Ok(ScheduleRemoval::NotFound);
        }
        let result = self
            .store
            .schedule_remove::<ScheduleDeclarer>(
                &mut tx,
                name,
                actor,
                reason,
                millis(LIVE_WITHOUT_LEASE),
            )
            .await?;
        tx.commit().await?;
        Ok(match result {
            None => ScheduleRemoval::NotFound,
            Some((true, _)) => ScheduleRemoval::Applied,
            Some((false, declared_by)) => ScheduleRemoval::Refused { declared_by },
        })
    }

    /// Schedules that no live worker declares (see
    /// [`UndeclaredSchedule`]); part of [`Admin::stats`] and
    /// [`Admin::overview`].
    pub(super) async fn undeclared_schedules(
        &self,
        conn: &mut sqlx::PgConnection,
        live_ms: i64,
    ) -> Result<Vec<UndeclaredSchedule>, sqlx::Error> {
        self.store.schedules_undeclared(conn, live_ms).await
    }

    /// The operators' actions on schedule `name`, in order.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// for a in admin.schedule_actions("billing.reconcile").await? {
    ///     println!("{} {} by {}: {} ({})", a.created_at, a.action, a.actor, a.reason, a.outcome);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn schedule_actions(
        &self,
        name: &str,
    ) -> Result<Vec<ScheduleActionRow>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store.schedule_actions(&mut conn, name).await
    }

    /// Schedules that two live workers declare differently (see
    /// [`ScheduleConflict`]); part of [`Admin::stats`].
    pub(super) async fn schedule_conflicts(
        &self,
        conn: &mut sqlx::PgConnection,
        live_ms: i64,
    ) -> Result<Vec<ScheduleConflict>, sqlx::Error> {
        let conflicts = self.store.schedule_conflicts(conn, live_ms).await?;
        Ok(conflicts
            .into_iter()
            .map(|c| {
                let (in_force_operation, in_force_cron, in_force_time_zone, in_force_missed) =
                    c.in_force;
                ScheduleConflict {
                    name: c.name,
                    worker_id: c.rival.worker_id,
                    host: c.rival.host,
                    pid: c.rival.pid,
                    operation: c.rival.operation,
                    cron: c.rival.cron,
                    time_zone: c.rival.time_zone,
                    missed: c.rival.missed,
                    in_force_operation,
                    in_force_cron,
                    in_force_time_zone,
                    in_force_missed,
                }
            })
            .collect())
    }
}

impl FromRow<'_, PgRow> for ScheduleRow {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let declared_by: sqlx::types::Json<Vec<ScheduleDeclarer>> = row.try_get("declared_by")?;
        Ok(ScheduleRow {
            name: row.try_get("name")?,
            operation: row.try_get("operation")?,
            cron: row.try_get("cron")?,
            time_zone: row.try_get("time_zone")?,
            missed: row.try_get("missed")?,
            next_tick: row.try_get("next_tick")?,
            last_tick: row.try_get("last_tick")?,
            last_operation_id: operation_id(row, "last_operation_id")?,
            last_status: row.try_get("last_status")?,
            last_workflow_id: row
                .try_get::<Option<i64>, _>("last_workflow_id")?
                .map(WorkflowId::from_i64),
            last_workflow_state: row.try_get("last_workflow_state")?,
            paused: row.try_get("paused")?,
            paused_by: row.try_get("paused_by")?,
            paused_reason: row.try_get("paused_reason")?,
            paused_at: row.try_get("paused_at")?,
            declared_by: declared_by.0,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

impl FromRow<'_, PgRow> for UndeclaredSchedule {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(UndeclaredSchedule {
            name: row.try_get("name")?,
            operation: row.try_get("operation")?,
            cron: row.try_get("cron")?,
            time_zone: row.try_get("time_zone")?,
            missed: row.try_get("missed")?,
            next_tick: row.try_get("next_tick")?,
            last_tick: row.try_get("last_tick")?,
            paused: row.try_get("paused")?,
            last_declared_at: row.try_get("last_declared_at")?,
        })
    }
}

impl FromRow<'_, PgRow> for ScheduleActionRow {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(ScheduleActionRow {
            schedule: row.try_get("schedule")?,
            action: row.try_get("action")?,
            outcome: row.try_get("outcome")?,
            actor: row.try_get("actor")?,
            reason: row.try_get("reason")?,
            from_state: row.try_get("from_status")?,
            to_state: row.try_get("to_status")?,
            created_at: row.try_get("created_at")?,
        })
    }
}
