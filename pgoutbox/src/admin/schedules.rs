//! Schedules as operators see them: the list (next tick, last tick and its
//! operation's state, who declares them, paused or not), conflicting
//! declarations, and pause/resume, recorded in `operator_actions` like the
//! actions on operations.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row as _};
use uuid::Uuid;

use super::{Admin, operation_id};
use crate::definition::OperationId;
use crate::duration::millis;
use crate::state::Status;

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
    /// The operation it publishes.
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
    /// `pause` or `resume`.
    pub action: String,
    /// `applied` or `refused`.
    pub outcome: String,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// `active` or `paused` before.
    pub from_state: String,
    /// After, when applied.
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
