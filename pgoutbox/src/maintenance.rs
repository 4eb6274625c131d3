//! Heartbeat (renew the worker row and the leases of running attempts),
//! the watchdog that aborts attempts whose leases were not renewed in
//! time, rescuer (expired leases become `lost` attempts), the report of
//! operations no live worker would claim, and the janitor. Each on a task
//! of its own, so that none delays another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::duration::millis;
use crate::runtime::Runtime;

pub(crate) async fn run(rt: Arc<Runtime>, mut stop: watch::Receiver<bool>) {
    let ws = &rt.settings.workflow_system;
    let lease = ws.lease;
    // Each role on its own task (and its own pooled connection), so that
    // none waits for another: a rescue or a report stuck on a slow
    // statement must not delay a renewal, and a renewal stuck on a lock
    // must not delay the aborts that keep a second runner away. The
    // janitor's long purges run beside them too; each of its batches
    // commits alone. All are abandoned when this task ends.
    let _heartbeat = AbortOnDrop(Some(tokio::spawn(heartbeat(Arc::clone(&rt)))));
    let _watchdog = AbortOnDrop(Some(tokio::spawn(watchdog(Arc::clone(&rt)))));
    let _rescuer = AbortOnDrop(Some(tokio::spawn(rescue_and_report(Arc::clone(&rt)))));
    let _janitor = AbortOnDrop(
        ws.retention
            .enabled
            .then(|| tokio::spawn(janitor(Arc::clone(&rt), lease))),
    );
    let _ = stop.changed().await;
}

/// Renews the worker's heartbeat and its attempts' leases every
/// `lease / 3`, each try bounded by `lease / 3`.
async fn heartbeat(rt: Arc<Runtime>) {
    let lease = rt.settings.workflow_system.lease;
    let lease_ms = millis(lease);
    let every = lease / 3;
    let mut heartbeat = tokio::time::interval(every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        heartbeat.tick().await;
        // A heartbeat that hangs (a silent connection, a lock) counts as
        // failed; the watchdog aborts what it could not renew in time.
        let result = tokio::time::timeout(every, beat(&rt, lease_ms, every))
            .await
            .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
        if let Err(e) = result {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    }
}

/// Aborts each attempt whose lease was not renewed within `5/6` of a
/// lease of its last successful renewal (or its claim), on a timer of its
/// own: the abort lands before the lease can expire, whatever the heartbeat
/// is waiting for, so that no other worker runs the operation while this
/// one still does. Once a whole lease has passed, the attempt is the
/// rescuer's: its executor stops retrying to record it, so that `stop()`
/// is not held by a database that does not answer.
///
/// What this cannot cover: a process that is frozen (stopped, swapped out,
/// a blocked runtime) cannot abort anything; when it wakes, its late writes
/// are refused by the fences.
async fn watchdog(rt: Arc<Runtime>) {
    let lease = rt.settings.workflow_system.lease;
    let abort_after = lease.saturating_sub(lease / 6);
    loop {
        let now = Instant::now();
        let mut next = now + abort_after;
        let mut aborted = 0;
        for op in rt.running_ops() {
            let renewed_at = op.renewed_at();
            if now >= renewed_at + lease {
                op.mark_lost();
            } else if now >= renewed_at + abort_after {
                if op.abort("its lease could not be renewed") {
                    aborted += 1;
                }
                next = next.min(renewed_at + lease);
            } else {
                next = next.min(renewed_at + abort_after);
            }
        }
        if aborted > 0 {
            tracing::error!(
                aborted,
                "leases could not be renewed in time; aborted running handlers"
            );
        }
        // An attempt claimed while this sleeps has a later deadline than
        // `next`, so none is missed.
        tokio::time::sleep_until(next.into()).await;
    }
}

/// Turns expired leases into `lost` attempts every `max(lease, 1s) / 2`,
/// and reports operations no live worker would claim every
/// `max(1 min, lease)`.
async fn rescue_and_report(rt: Arc<Runtime>) {
    let lease = rt.settings.workflow_system.lease;
    let rescue_every = lease.max(Duration::from_secs(1)) / 2;
    let mut rescue = tokio::time::interval(rescue_every);
    rescue.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(Duration::from_mins(1).max(lease));
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    report.tick().await;
    loop {
        tokio::select! {
            _ = rescue.tick() => {
                match tokio::time::timeout(rescue_every, rescue_expired(&rt, rescue_every)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "rescuing expired leases failed"),
                    Err(_) => tracing::warn!("rescuing expired leases timed out"),
                }
            }
            _ = report.tick() => {
                if tokio::time::timeout(lease / 3, report_unhandled(&rt)).await.is_err() {
                    tracing::warn!("checking for unhandled operations timed out");
                }
            }
        }
    }
}

/// Applies retention every `retention.interval`.
async fn janitor(rt: Arc<Runtime>, lease: Duration) {
    let retention = rt.settings.workflow_system.retention.clone();
    let mut janitor = tokio::time::interval(retention.interval);
    janitor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        janitor.tick().await;
        match tokio::time::timeout(
            retention.interval.min(lease * 10),
            clean_up(&rt, &retention),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the janitor failed; it will try again"),
            Err(_) => tracing::warn!("the janitor ran out of time; it will go on next time"),
        }
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

async fn beat(rt: &Runtime, lease_ms: i64, limit: Duration) -> Result<(), sqlx::Error> {
    // The verdict applies to these very attempts, not to whatever runs
    // under the same operation id once the statement returns.
    let running = rt.running_ops();
    let fences: Vec<(i64, i32, i64)> = running
        .iter()
        .map(|op| (op.operation, op.attempt, op.attempt_id))
        .collect();
    let sent = Instant::now();
    let mut tx = rt.pool.begin().await?;
    rt.store.local_timeouts(&mut tx, limit).await?;
    let held: std::collections::HashMap<i64, bool> = rt
        .store
        .heartbeat(&mut tx, rt.worker_id, lease_ms, &fences)
        .await?
        .into_iter()
        .collect();
    tx.commit().await?;
    for op in &running {
        match held.get(&op.attempt_id) {
            Some(true) => op.renewed(sent),
            // Its row is locked elsewhere: not renewed this time. If that
            // lasts, the watchdog aborts the handler before its lease runs
            // out; the others are renewed meanwhile.
            Some(false) => tracing::warn!(
                operation_id = op.operation,
                attempt = op.attempt,
                "lease not renewed: the operation's row is locked by another session"
            ),
            None => {
                tracing::warn!(
                    operation_id = op.operation,
                    attempt = op.attempt,
                    "lease taken away; aborting the handler"
                );
                op.mark_lost();
            }
        }
    }
    Ok(())
}

async fn rescue_expired(rt: &Runtime, limit: Duration) -> Result<(), sqlx::Error> {
    const BATCH: i32 = 100;
    loop {
        let mut tx = rt.pool.begin().await?;
        rt.store.local_timeouts(&mut tx, limit).await?;
        let rescued = rt.store.rescue(&mut tx, BATCH).await?;
        tx.commit().await?;
        for (id, status) in &rescued {
            tracing::warn!(operation_id = id, status = %status, "expired lease rescued: attempt recorded as lost");
            metrics::counter!("pgoutbox_lost_total", "status" => status.as_str()).increment(1);
        }
        if rescued.len() < usize::try_from(BATCH).unwrap_or(usize::MAX) {
            return Ok(());
        }
    }
}

/// Logs and exports the ready operations that no live worker would
/// claim: those whose name no live worker handles (gauge
/// `pgoutbox_unhandled_operations`) and those in a queue that no live
/// worker handling their name serves (gauge `pgoutbox_unserved_operations`);
/// and the schedules that no live worker declares (gauge
/// `pgoutbox_schedules_undeclared`).
pub(crate) async fn report_unhandled(rt: &Runtime) {
    let live_within = millis(rt.settings.workflow_system.lease * 3);
    let result = async {
        let mut conn = rt.pool.acquire().await?;
        let unhandled = rt.store.unhandled_names(&mut conn, live_within).await?;
        let unserved = rt.store.unserved_queues(&mut conn, live_within).await?;
        let undeclared: Vec<crate::store::schedules::Undeclared> = rt
            .store
            .schedules_undeclared(&mut conn, live_within)
            .await?;
        Ok::<_, sqlx::Error>((unhandled, unserved, undeclared))
    }
    .await;
    match result {
        Ok((unhandled, unserved, undeclared)) => {
            for s in &undeclared {
                tracing::warn!(
                    schedule = %s.name, next_tick = %s.next_tick, paused = s.paused,
                    "a schedule that no live worker declares: retired from the code \
                     (`pgoutbox schedules remove`), or its workers are down"
                );
            }
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("pgoutbox_schedules_undeclared").set(undeclared.len() as f64);
            let mut total = 0;
            for (name, count) in &unhandled {
                total += count;
                tracing::warn!(name = %name, ready = count, "ready operations that no live worker handles");
            }
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("pgoutbox_unhandled_operations").set(total as f64);
            let mut total = 0;
            for (queue, name, count) in &unserved {
                total += count;
                tracing::warn!(queue = %queue, name = %name, ready = count, "ready operations in a queue that no live worker serves");
            }
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("pgoutbox_unserved_operations").set(total as f64);
        }
        Err(e) => tracing::warn!(error = %e, "cannot check for unhandled operations"),
    }
}

/// Applies retention: finished operations first, then the history of
/// operations that are gone. One batch per statement, `SKIP LOCKED`.
async fn clean_up(
    rt: &Runtime,
    retention: &crate::settings::RetentionSettings,
) -> Result<(), sqlx::Error> {
    let statuses = [
        crate::state::Status::Succeeded,
        crate::state::Status::Cancelled,
    ];
    let batch = i64::from(retention.batch_size);
    let mut conn = rt.pool.acquire().await?;
    let mut deleted = 0;
    loop {
        let n = rt
            .store
            .purge(&mut conn, &statuses, millis(retention.operations), batch)
            .await?;
        deleted += n;
        if n < u64::from(retention.batch_size) {
            break;
        }
    }
    let mut history = 0;
    loop {
        let n = rt
            .store
            .purge_history(&mut conn, millis(retention.history), batch)
            .await?;
        history += n;
        if n < batch {
            break;
        }
    }
    // Workers gone (stopped, or silent) longer than the history retention.
    let mut workers = 0;
    loop {
        let n = rt
            .store
            .purge_workers(&mut conn, millis(retention.history), batch)
            .await?;
        workers += n;
        if n < u64::from(retention.batch_size) {
            break;
        }
    }
    if deleted > 0 || history > 0 || workers > 0 {
        tracing::info!(
            operations = deleted,
            history_rows = history,
            workers,
            "janitor purged old rows"
        );
    }
    Ok(())
}
