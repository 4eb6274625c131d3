//! The schedules' statements: the declarations a worker makes at start-up,
//! the scheduler's locked read and advance of a schedule, and the
//! operators' list, conflicts, undeclared schedules, pause/resume and
//! removal.
//!
//! Public row types live with the API in `crate::admin`; the scheduler's
//! own rows are here.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use super::Store;
use super::admin::FromPgRow;
use crate::definition::OperationId;

/// A schedule's row as the scheduler reads it under its lock.
#[derive(Debug, Clone)]
pub(crate) struct ScheduleState {
    pub(crate) operation: String,
    pub(crate) cron: String,
    pub(crate) time_zone: String,
    pub(crate) missed: String,
    pub(crate) declaration: String,
    pub(crate) next_tick: DateTime<Utc>,
    pub(crate) last_tick: Option<DateTime<Utc>>,
    /// The last tick decided (published or skipped, for whatever reason);
    /// `None` for a row from before migration 8 that no worker advanced
    /// since.
    pub(crate) last_decided: Option<DateTime<Utc>>,
    /// The last pause's window, `[held_from, held_until)`, recorded by the
    /// resume.
    pub(crate) held_from: Option<DateTime<Utc>>,
    pub(crate) held_until: Option<DateTime<Utc>>,
    pub(crate) paused: bool,
    /// The database's clock.
    pub(crate) now: DateTime<Utc>,
    /// Since when live workers declaring the declaration in force have
    /// run; `None` when none does.
    pub(crate) covered_since: Option<DateTime<Utc>>,
    /// Whether a live worker other than the reader declares the
    /// declaration in force.
    pub(crate) held: bool,
}

impl ScheduleState {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(ScheduleState {
            operation: row.try_get("operation")?,
            cron: row.try_get("cron")?,
            time_zone: row.try_get("time_zone")?,
            missed: row.try_get("missed")?,
            declaration: row.try_get("declaration")?,
            next_tick: row.try_get("next_tick")?,
            last_tick: row.try_get("last_tick")?,
            last_decided: row.try_get("last_decided")?,
            held_from: row.try_get("held_from")?,
            held_until: row.try_get("held_until")?,
            paused: row.try_get("paused")?,
            now: row.try_get("now")?,
            covered_since: row.try_get("covered_since")?,
            held: row.try_get("held")?,
        })
    }
}

/// A schedule that no live worker declares, as the workers report it.
#[derive(Debug, Clone)]
pub(crate) struct Undeclared {
    pub(crate) name: String,
    pub(crate) next_tick: DateTime<Utc>,
    pub(crate) paused: bool,
}

impl sqlx::FromRow<'_, PgRow> for Undeclared {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Undeclared {
            name: row.try_get("name")?,
            next_tick: row.try_get("next_tick")?,
            paused: row.try_get("paused")?,
        })
    }
}

/// A live worker's declaration of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rival {
    pub(crate) worker_id: Uuid,
    pub(crate) host: String,
    pub(crate) pid: i32,
    pub(crate) operation: String,
    pub(crate) cron: String,
    pub(crate) time_zone: String,
    pub(crate) missed: String,
}

/// A live worker declaring a schedule otherwise than the declaration in
/// force, while another live worker declares that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub(crate) name: String,
    /// What is in force: (operation, cron, zone, policy).
    pub(crate) in_force: (String, String, String, String),
    pub(crate) rival: Rival,
}

fn rival(row: &PgRow) -> Result<Rival, sqlx::Error> {
    Ok(Rival {
        worker_id: row.try_get("worker_id")?,
        host: row.try_get("host")?,
        pid: row.try_get("pid")?,
        operation: row.try_get("operation")?,
        cron: row.try_get("cron")?,
        time_zone: row.try_get("time_zone")?,
        missed: row.try_get("missed")?,
    })
}

/// A declaration of a schedule: what a worker says it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Declaration<'a> {
    pub(crate) name: &'a str,
    pub(crate) operation: &'a str,
    pub(crate) cron: &'a str,
    pub(crate) time_zone: &'a str,
    pub(crate) missed: &'a str,
    pub(crate) hash: &'a str,
}

impl Store {
    /// The database's clock.
    pub(crate) async fn schedule_now(
        &self,
        conn: &mut PgConnection,
    ) -> Result<DateTime<Utc>, sqlx::Error> {
        query!(self, query_scalar, schedule_now)
            .fetch_one(&mut *conn)
            .await
    }

    /// Records a schedule at its first declaration (nothing when known).
    pub(crate) async fn schedule_insert(
        &self,
        conn: &mut PgConnection,
        d: Declaration<'_>,
        next_tick: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        query!(self, query, schedule_insert)
            .bind(d.name)
            .bind(d.operation)
            .bind(d.cron)
            .bind(d.time_zone)
            .bind(d.missed)
            .bind(d.hash)
            .bind(next_tick)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }

    /// Schedule `name` under its row lock, as `worker` sees it.
    pub(crate) async fn schedule_lock(
        &self,
        conn: &mut PgConnection,
        name: &str,
        worker: Uuid,
        live_ms: i64,
    ) -> Result<Option<ScheduleState>, sqlx::Error> {
        let row = query!(self, query, schedule_lock)
            .bind(name)
            .bind(worker)
            .bind(live_ms)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(ScheduleState::from_row).transpose()
    }

    /// Live workers other than `worker` declaring `name` otherwise than
    /// `hash`.
    pub(crate) async fn schedule_rivals(
        &self,
        conn: &mut PgConnection,
        name: &str,
        worker: Uuid,
        hash: &str,
        live_ms: i64,
    ) -> Result<Vec<Rival>, sqlx::Error> {
        let rows = query!(self, query, schedule_rivals)
            .bind(name)
            .bind(worker)
            .bind(hash)
            .bind(live_ms)
            .fetch_all(&mut *conn)
            .await?;
        rows.iter().map(rival).collect()
    }

    /// Puts declaration `d` in force, its cursor at `next_tick`.
    pub(crate) async fn schedule_adopt(
        &self,
        conn: &mut PgConnection,
        d: Declaration<'_>,
        next_tick: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        query!(self, query, schedule_adopt)
            .bind(d.name)
            .bind(d.operation)
            .bind(d.cron)
            .bind(d.time_zone)
            .bind(d.missed)
            .bind(d.hash)
            .bind(next_tick)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }

    /// Records that `worker` declares `d`.
    pub(crate) async fn schedule_declare(
        &self,
        conn: &mut PgConnection,
        d: Declaration<'_>,
        worker: Uuid,
    ) -> Result<(), sqlx::Error> {
        query!(self, query, schedule_declare)
            .bind(d.name)
            .bind(worker)
            .bind(d.hash)
            .bind(d.operation)
            .bind(d.cron)
            .bind(d.time_zone)
            .bind(d.missed)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }

    /// Moves the cursor of `name` (declared as `hash`) to `next_tick`,
    /// recording the last tick published and the last tick decided;
    /// `false` when the declaration in force changed meanwhile.
    pub(crate) async fn schedule_advance(
        &self,
        conn: &mut PgConnection,
        name: &str,
        hash: &str,
        next_tick: DateTime<Utc>,
        published: Option<(DateTime<Utc>, OperationId)>,
        decided: Option<DateTime<Utc>>,
    ) -> Result<bool, sqlx::Error> {
        let done = query!(self, query, schedule_advance)
            .bind(name)
            .bind(hash)
            .bind(next_tick)
            .bind(published.map(|(tick, _)| tick))
            .bind(published.map(|(_, id)| id.as_i64()))
            .bind(decided)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Schedules that two live workers declare differently.
    pub(crate) async fn schedule_conflicts(
        &self,
        conn: &mut PgConnection,
        live_ms: i64,
    ) -> Result<Vec<Conflict>, sqlx::Error> {
        let rows = query!(self, query, schedule_conflicts)
            .bind(live_ms)
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Conflict {
                    name: row.try_get("name")?,
                    in_force: (
                        row.try_get("in_force_operation")?,
                        row.try_get("in_force_cron")?,
                        row.try_get("in_force_time_zone")?,
                        row.try_get("in_force_missed")?,
                    ),
                    rival: rival(row)?,
                })
            })
            .collect()
    }

    /// Every schedule, by name.
    pub(crate) async fn schedules<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        live_ms: i64,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, schedules)
            .bind(live_ms)
            .fetch_all(&mut *conn)
            .await
    }

    /// Pauses (`pause`) or resumes a schedule, recorded as `action`:
    /// (paused before, applied), `None` for an unknown schedule.
    pub(crate) async fn schedule_pause(
        &self,
        conn: &mut PgConnection,
        name: &str,
        pause: bool,
        actor: &str,
        reason: &str,
        action: &str,
    ) -> Result<Option<(bool, bool)>, sqlx::Error> {
        query!(self, query_as, schedule_pause)
            .bind(name)
            .bind(pause)
            .bind(actor)
            .bind(reason)
            .bind(action)
            .fetch_optional(&mut *conn)
            .await
    }

    /// Locks schedule `name` for its removal: whether it is paused,
    /// `None` for an unknown schedule.
    pub(crate) async fn schedule_target(
        &self,
        conn: &mut PgConnection,
        name: &str,
    ) -> Result<Option<bool>, sqlx::Error> {
        query!(self, query_scalar, schedule_target)
            .bind(name)
            .fetch_optional(&mut *conn)
            .await
    }

    /// Removes schedule `name` (locked by [`Store::schedule_target`])
    /// unless a live worker declares it, recorded either way: whether it
    /// was removed, and the live workers that declare it.
    pub(crate) async fn schedule_remove<R: serde::de::DeserializeOwned>(
        &self,
        conn: &mut PgConnection,
        name: &str,
        actor: &str,
        reason: &str,
        live_ms: i64,
    ) -> Result<Option<(bool, Vec<R>)>, sqlx::Error> {
        let row = query!(self, query, schedule_remove)
            .bind(name)
            .bind(actor)
            .bind(reason)
            .bind(live_ms)
            .fetch_optional(&mut *conn)
            .await?;
        row.map(|row| {
            let declared_by: sqlx::types::Json<Vec<R>> = row.try_get("declared_by")?;
            Ok((row.try_get("applied")?, declared_by.0))
        })
        .transpose()
    }

    /// Schedules that no live worker declares, by name.
    pub(crate) async fn schedules_undeclared<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        live_ms: i64,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, schedules_undeclared)
            .bind(live_ms)
            .fetch_all(&mut *conn)
            .await
    }

    /// The operators' actions on schedule `name`, in order.
    pub(crate) async fn schedule_actions<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        name: &str,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, schedule_actions)
            .bind(name)
            .fetch_all(&mut *conn)
            .await
    }
}
