//! The scheduler: publishes the due ticks of the schedules in this
//! process's routers (`WorkflowRouter::schedule`), and at start-up records
//! which schedules this worker declares, refusing a conflicting one.
//!
//! Every worker with a schedule runs it; there is no leader. A tick is
//! published in one transaction that holds the schedule's row lock, inserts
//! the operation (or the workflow, `WorkflowRouter::schedule_workflow`)
//! under the idempotency key `schedule:<name>:<tick>` and moves the row's
//! cursor past it, so one operation exists per tick however many workers
//! try. What is due is decided by the database's clock.
//!
//! A tick is *missed* when no live worker declaring the schedule was
//! running at its time (it is older than the earliest start of the live
//! workers that declare it); missed ticks follow the schedule's policy and
//! are each logged. A tick in a pause that no worker saw (the schedule was
//! paused and resumed while none ran) is held, not missed. Every other due
//! tick is published. Each tick is decided once: the row records the last
//! tick decided, and a new declaration's cursor starts after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection as _, PgConnection};
use uuid::Uuid;

use crate::definition::OperationId;
use crate::duration::millis;
use crate::publish::{PublishError, PublishOptions};
use crate::router::{Make, ScheduledRoute};
use crate::runtime::Runtime;
use crate::schedule::{Due, MAX_MISSED_TICKS, MissedTicks, Schedule, plan, schedule_key};
use crate::store::Store;
use crate::store::schedules::{Declaration, Rival, ScheduleState};
use crate::workflow::{PublishedWorkflow, Workflow, WorkflowError};

/// The longest the scheduler sleeps between two looks at its schedules
/// (the next tick is usually sooner).
const MAX_WAIT: Duration = Duration::from_mins(1);

/// How often conflicting declarations are looked for and reported.
const CONFLICTS_EVERY: Duration = Duration::from_mins(1);

/// The cursor of a schedule with no tick left (a cron year in the past).
fn never() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC) // 9999-12-31T23:59:59Z
}

/// A live worker declares a schedule of this worker's otherwise.
#[derive(Debug, Clone)]
pub(crate) struct Conflict {
    pub(crate) name: String,
    pub(crate) ours: String,
    pub(crate) theirs: String,
    pub(crate) worker: Uuid,
    pub(crate) host: String,
    pub(crate) pid: i32,
}

/// Why the schedules could not be declared.
#[derive(Debug)]
pub(crate) enum DeclareError {
    Conflict(Conflict),
    /// The expression has no tick after the database's now.
    Ended(String),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for DeclareError {
    fn from(e: sqlx::Error) -> Self {
        DeclareError::Database(e)
    }
}

fn describe(operation: &str, cron: &str, zone: &str, missed: &str) -> String {
    format!("`{cron}` in {zone}, missed ticks `{missed}`, publishing `{operation}`")
}

fn declaration(s: &ScheduledRoute) -> Declaration<'_> {
    Declaration {
        name: &s.name,
        operation: &s.operation,
        cron: s.schedule.expression(),
        time_zone: s.schedule.zone(),
        missed: s.schedule.missed_ticks().as_str(),
        hash: &s.declaration,
    }
}

/// Records worker `worker`'s schedules, each in a transaction holding the
/// schedule's row lock: a new name is recorded with its first tick; a name
/// that a live worker declares otherwise is refused, unless the schedule
/// takes over; a declaration in force that no live worker holds any more
/// is replaced by this one (its cursor after the last tick decided, so
/// that the ticks missed since are found and none is decided twice).
pub(crate) async fn declare(
    conn: &mut PgConnection,
    store: &Store,
    worker: Uuid,
    schedules: &[ScheduledRoute],
    live_ms: i64,
) -> Result<(), DeclareError> {
    for s in schedules {
        let d = declaration(s);
        let mut tx = conn.begin().await?;
        let now = store.schedule_now(&mut tx).await?;
        let first = s
            .compiled
            .next_after(now)
            .ok_or_else(|| DeclareError::Ended(s.name.clone()))?;
        // An operator's removal may delete the row between the insert and
        // the lock (`pgoutbox schedules remove`): then it is recorded anew.
        let mut state = None;
        for _ in 0..3 {
            store.schedule_insert(&mut tx, d, first).await?;
            state = store
                .schedule_lock(&mut tx, &s.name, worker, live_ms)
                .await?;
            if state.is_some() {
                break;
            }
        }
        let state = state.ok_or(DeclareError::Database(sqlx::Error::RowNotFound))?;
        let rivals = store
            .schedule_rivals(&mut tx, &s.name, worker, &s.declaration, live_ms)
            .await?;
        let ours = describe(&s.operation, d.cron, d.time_zone, d.missed);
        if let Some(rival) = rivals.first() {
            let theirs = describe(
                &rival.operation,
                &rival.cron,
                &rival.time_zone,
                &rival.missed,
            );
            if !s.schedule.takes_over() {
                tracing::error!(
                    schedule = %s.name, ours = %ours, theirs = %theirs, worker_id = %rival.worker_id,
                    "a live worker declares this schedule otherwise; refusing to start"
                );
                return Err(DeclareError::Conflict(Conflict {
                    name: s.name.clone(),
                    ours,
                    theirs,
                    worker: rival.worker_id,
                    host: rival.host.clone(),
                    pid: rival.pid,
                }));
            }
            for Rival {
                worker_id,
                host,
                pid,
                ..
            } in &rivals
            {
                tracing::warn!(
                    schedule = %s.name, ours = %ours, theirs = %theirs, worker_id = %worker_id,
                    host = %host, pid,
                    "taking the schedule over from a live worker that declares it otherwise \
                     (`Schedule::take_over`); that worker stops publishing it"
                );
            }
        }
        if state.declaration != s.declaration {
            let next = adopted_cursor(&state, s);
            tracing::info!(
                schedule = %s.name,
                was = %describe(&state.operation, &state.cron, &state.time_zone, &state.missed),
                now = %ours,
                "the schedule's declaration changed"
            );
            store.schedule_adopt(&mut tx, d, next).await?;
        }
        store.schedule_declare(&mut tx, d, worker).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The cursor of declaration `s` when it replaces the one in force: the
/// first of its ticks after the last tick decided (published, skipped
/// while paused, skipped by the policy, or whose payload failed), so that
/// a tick already decided never comes due again as missed. A row that
/// records no decision yet (none came due since it was created, or it is
/// from before migration 8): every tick of the expression in the row
/// before its cursor was decided, so the last of them stands in, but never
/// one from before the row was created (a daily 03:00 declared at 10:00).
fn adopted_cursor(state: &ScheduleState, s: &ScheduledRoute) -> DateTime<Utc> {
    let decided = state
        .last_decided
        .or_else(|| {
            Schedule::cron(state.cron.as_str())
                .time_zone(state.time_zone.as_str())
                .compile(&s.name, state.now)
                .ok()
                .and_then(|old| old.previous(state.next_tick))
                .map(|previous| previous.max(state.created_at))
        })
        .into_iter()
        .chain(state.last_tick)
        .max()
        .unwrap_or(state.now);
    s.compiled.next_after(decided).unwrap_or_else(never)
}

/// Whether tick `t` falls in the schedule's last pause window, recorded by
/// the resume: such a tick that no worker handled while the schedule was
/// paused (none was running) is held, not missed.
fn held(state: &ScheduleState, t: DateTime<Utc>) -> bool {
    matches!((state.held_from, state.held_until), (Some(from), Some(until)) if from <= t && t < until)
}

/// Takes out of `due` the ticks of a pause that no worker saw (none ran
/// while it lasted), and logs them: held by the operator, not missed.
fn hold(state: &ScheduleState, name: &str, due: &mut Due) {
    let mut held_ticks: Vec<DateTime<Utc>> = Vec::new();
    for ticks in [&mut due.missed, &mut due.regular] {
        ticks.retain(|t| {
            let h = held(state, *t);
            if h {
                held_ticks.push(*t);
            }
            !h
        });
    }
    held_ticks.sort_unstable();
    for t in &held_ticks {
        tracing::info!(schedule = %name, tick = %rfc(*t), "the schedule was paused at this tick: tick not published");
        metrics::counter!("pgoutbox_schedule_ticks_total", "schedule" => name.to_owned(), "outcome" => "paused").increment(1);
    }
}

/// What the scheduler last said about a schedule, so that a state that
/// lasts is logged once.
#[derive(Debug, Default)]
struct Said {
    not_in_force: bool,
}

/// Publishes due ticks until the system stops.
pub(crate) async fn run(rt: Arc<Runtime>) {
    let schedules = rt.routes.schedules();
    if schedules.is_empty() {
        return;
    }
    let mut stopping = rt.stopping.subscribe();
    let limit = rt
        .settings
        .workflow_system
        .lease
        .max(Duration::from_secs(5));
    let mut said: HashMap<&str, Said> = HashMap::new();
    let mut conflicts_at = tokio::time::Instant::now();
    loop {
        if *stopping.borrow() {
            return;
        }
        let mut wait = MAX_WAIT;
        for s in schedules {
            let said = said.entry(s.name.as_str()).or_default();
            match tokio::time::timeout(limit, tick(&rt, s, said)).await {
                Ok(Ok(next)) => wait = wait.min(next),
                Ok(Err(e)) => {
                    tracing::warn!(schedule = %s.name, error = %e, "publishing the schedule's ticks failed; trying again");
                    wait = wait.min(Duration::from_secs(1));
                }
                Err(_) => {
                    tracing::warn!(schedule = %s.name, "publishing the schedule's ticks timed out; trying again");
                    wait = wait.min(Duration::from_secs(1));
                }
            }
        }
        if tokio::time::Instant::now() >= conflicts_at {
            conflicts_at += CONFLICTS_EVERY;
            if tokio::time::timeout(limit, report_conflicts(&rt))
                .await
                .is_err()
            {
                tracing::warn!("checking schedules for conflicting declarations timed out");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// One look at schedule `s`: publishes what is due; returns how long
/// until its next tick (by the database's clock).
async fn tick(rt: &Runtime, s: &ScheduledRoute, said: &mut Said) -> Result<Duration, sqlx::Error> {
    let live_ms = millis(rt.settings.workflow_system.lease);
    let mut conn = rt.pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let Some(state) = rt
        .store
        .schedule_lock(&mut tx, &s.name, rt.worker_id, live_ms)
        .await?
    else {
        // Its row is gone (deleted by hand): record it again.
        tx.commit().await?;
        tracing::warn!(schedule = %s.name, "the schedule's row is missing; declaring it again");
        if let Err(e) = declare(
            &mut conn,
            &rt.store,
            rt.worker_id,
            std::slice::from_ref(s),
            live_ms,
        )
        .await
        {
            tracing::warn!(schedule = %s.name, error = ?e, "cannot declare the schedule again");
        }
        return Ok(Duration::from_secs(1));
    };
    if state.declaration != s.declaration {
        if state.held {
            if !said.not_in_force {
                said.not_in_force = true;
                tracing::warn!(
                    schedule = %s.name,
                    in_force = %describe(&state.operation, &state.cron, &state.time_zone, &state.missed),
                    "another live worker's declaration of this schedule is in force; this worker does not publish it"
                );
            }
            tx.commit().await?;
            return Ok(until(state.now, state.next_tick));
        }
        // Nobody live holds the declaration in force: this one takes its place.
        let next = adopted_cursor(&state, s);
        tracing::warn!(
            schedule = %s.name,
            was = %describe(&state.operation, &state.cron, &state.time_zone, &state.missed),
            "no live worker declares the schedule's declaration in force; this worker's takes its place"
        );
        rt.store
            .schedule_adopt(&mut tx, declaration(s), next)
            .await?;
        tx.commit().await?;
        said.not_in_force = false;
        return Ok(Duration::ZERO);
    }
    said.not_in_force = false;
    if state.next_tick > state.now {
        tx.commit().await?;
        return Ok(until(state.now, state.next_tick));
    }
    let covered_since = state.covered_since.unwrap_or(state.now);
    let mut due = s
        .compiled
        .due(state.next_tick, state.now, covered_since, MAX_MISSED_TICKS);
    let next = s.compiled.next_after(state.now).unwrap_or_else(never);
    let policy = s.schedule.missed_ticks();
    // Every due tick is decided by this look, whatever becomes of it.
    let decided = due.regular.last().or(due.missed.last()).copied();
    if state.paused {
        for t in due.missed.iter().chain(&due.regular) {
            tracing::info!(schedule = %s.name, tick = %rfc(*t), "the schedule is paused: tick not published");
            metrics::counter!("pgoutbox_schedule_ticks_total", "schedule" => s.name.clone(), "outcome" => "paused").increment(1);
        }
        rt.store
            .schedule_advance(&mut tx, &s.name, &s.declaration, next, None, decided)
            .await?;
        tx.commit().await?;
        return Ok(until(state.now, next));
    }
    hold(&state, &s.name, &mut due);
    if due.more_missed {
        tracing::warn!(
            schedule = %s.name,
            since = %rfc(state.next_tick),
            kept = MAX_MISSED_TICKS,
            "more ticks were due than a worker publishes at once (`MAX_MISSED_TICKS`); the older ones are missed and not published"
        );
    }
    let plan = plan(policy, &due);
    for t in &plan.skipped {
        tracing::warn!(schedule = %s.name, tick = %rfc(*t), policy = %policy, "missed tick: not published (missed-ticks policy)");
        metrics::counter!("pgoutbox_schedule_ticks_total", "schedule" => s.name.clone(), "outcome" => "missed_skipped").increment(1);
    }
    let last = publish(rt, &mut tx, s, &plan.publish, policy).await?;
    rt.store
        .schedule_advance(&mut tx, &s.name, &s.declaration, next, last, decided)
        .await?;
    tx.commit().await?;
    Ok(until(state.now, next))
}

/// A tick as logged and keyed: RFC 3339 in UTC, whole seconds.
fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Publishes the ticks `ticks` (each with whether it was missed) of `s` in
/// `tx`; returns the last one published and its operation.
async fn publish(
    rt: &Runtime,
    tx: &mut PgConnection,
    s: &ScheduledRoute,
    ticks: &[(DateTime<Utc>, bool)],
    policy: MissedTicks,
) -> Result<Option<(DateTime<Utc>, OperationId)>, sqlx::Error> {
    let mut last = None;
    for (at, missed) in ticks {
        let key = schedule_key(&s.name, *at);
        let tick = s.compiled.tick(*at);
        let published = match &s.make {
            Make::Operation { row, .. } => {
                let options = PublishOptions::new().idempotency_key(key);
                match unpanicked(|| row(&rt.publisher, &tick, options)) {
                    Ok(Ok(row)) => match rt.publisher.insert(tx, &row).await {
                        Ok(id) => Ok(Ok(Some(id))),
                        Err(PublishError::Database { source, .. }) => Err(source),
                        Err(e) => Err(sqlx::Error::Protocol(e.to_string())),
                    },
                    Ok(Err(e)) => Ok(Err(e.to_string())),
                    Err(panicked) => Ok(Err(panicked)),
                }
            }
            // Recorded as the tick's operation: the workflow's first step,
            // its root.
            Make::Workflow(build) => match unpanicked(|| build(tick)) {
                Ok(workflow) => publish_workflow(rt, tx, workflow.idempotency_key(key))
                    .await
                    .map(|published| published.map(|w| w.steps.first().copied())),
                Err(panicked) => Ok(Err(panicked)),
            },
        };
        let id = match published? {
            Ok(Some(id)) => id,
            // A workflow published by another worker, whose steps were all
            // purged since: nothing to record.
            Ok(None) => continue,
            Err(e) => {
                // A payload that cannot be published now will not be
                // publishable on a retry either: say so, and go on.
                tracing::error!(schedule = %s.name, tick = %rfc(*at), error = %e, "the tick's payload cannot be published; tick skipped");
                metrics::counter!("pgoutbox_schedule_ticks_total", "schedule" => s.name.clone(), "outcome" => "failed").increment(1);
                continue;
            }
        };
        if *missed {
            tracing::warn!(schedule = %s.name, tick = %rfc(*at), operation_id = %id, policy = %policy, "missed tick: published late (missed-ticks policy)");
            metrics::counter!("pgoutbox_schedule_ticks_total", "schedule" => s.name.clone(), "outcome" => "missed_published").increment(1);
        } else {
            tracing::debug!(schedule = %s.name, tick = %rfc(*at), operation_id = %id, "tick published");
            metrics::counter!("pgoutbox_schedule_ticks_total", "schedule" => s.name.clone(), "outcome" => "published").increment(1);
        }
        last = Some((*at, id));
    }
    Ok(last)
}

/// Calls a schedule's closure, a panic in it becoming its tick's error:
/// the application's code must not stop the scheduler.
fn unpanicked<T>(call: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with a non-string payload".to_owned());
        format!("the schedule's closure panicked: {message}")
    })
}

/// Publishes a tick's workflow under a savepoint: `Ok(Err(why))` when it
/// cannot be published (nothing of it stays written, and a retry would
/// fail alike), `Err` for a database error (the tick's transaction is
/// tried again).
async fn publish_workflow(
    rt: &Runtime,
    tx: &mut PgConnection,
    workflow: Workflow,
) -> Result<Result<PublishedWorkflow, String>, sqlx::Error> {
    let mut savepoint = tx.begin().await?;
    match rt
        .publisher
        .publish_workflow(&mut savepoint, workflow)
        .await
    {
        Ok(published) => {
            savepoint.commit().await?;
            Ok(Ok(published))
        }
        Err(WorkflowError::Step {
            source: PublishError::Database { source, .. },
            ..
        }) => Err(source),
        Err(e) => {
            savepoint.rollback().await?;
            Ok(Err(e.to_string()))
        }
    }
}

/// How long from `now` until `at`, both by the database's clock, with a
/// few milliseconds to spare so that the look after the sleep finds the
/// tick due.
fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO) + Duration::from_millis(5)
}

/// Logs schedules that two live workers declare differently, and sets the
/// gauge `pgoutbox_schedule_conflicts` to how many schedules are in that
/// state.
async fn report_conflicts(rt: &Runtime) {
    let live_ms = millis(rt.settings.workflow_system.lease);
    let result = async {
        let mut conn = rt.pool.acquire().await?;
        rt.store.schedule_conflicts(&mut conn, live_ms).await
    }
    .await;
    match result {
        Ok(conflicts) => {
            let mut names: Vec<&str> = Vec::new();
            for c in &conflicts {
                let (operation, cron, zone, missed) = &c.in_force;
                tracing::warn!(
                    schedule = %c.name,
                    in_force = %describe(operation, cron, zone, missed),
                    worker_id = %c.rival.worker_id,
                    host = %c.rival.host,
                    pid = c.rival.pid,
                    declares = %describe(&c.rival.operation, &c.rival.cron, &c.rival.time_zone, &c.rival.missed),
                    "live workers declare this schedule differently"
                );
                if !names.contains(&c.name.as_str()) {
                    names.push(&c.name);
                }
            }
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("pgoutbox_schedule_conflicts").set(names.len() as f64);
        }
        Err(e) => tracing::warn!(error = %e, "cannot check schedules for conflicting declarations"),
    }
}
