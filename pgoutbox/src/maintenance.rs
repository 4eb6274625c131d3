//! Heartbeat (renew the worker row and the leases of running operations),
//! rescuer (expired leases become `lost` attempts) and the report of names
//! no live worker handles. One task, so one pooled connection at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::duration::millis;
use crate::runtime::Runtime;

pub(crate) async fn run(rt: Arc<Runtime>, mut stop: watch::Receiver<bool>) {
    let ws = &rt.settings.workflow_system;
    let lease = ws.lease;
    let lease_ms = millis(lease);
    let heartbeat_every = lease / 3;
    let rescue_every = lease.max(Duration::from_secs(1)) / 2;
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rescue = tokio::time::interval(rescue_every);
    rescue.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = tokio::time::interval(Duration::from_mins(1).max(lease));
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    report.tick().await;
    // The janitor runs beside the heartbeat, never in its way: a long purge
    // (or one stuck on a silent connection) must not delay a renewal. It is
    // abandoned when this task ends; each of its batches commits alone.
    let _janitor = AbortOnDrop(
        ws.retention
            .enabled
            .then(|| tokio::spawn(janitor(Arc::clone(&rt), lease))),
    );
    // Leases were last known good when this instant's renewal was sent.
    let mut renewed_at = Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = heartbeat.tick() => {
                let sent = Instant::now();
                // A heartbeat that hangs (a silent connection, a lock) counts
                // as failed: it must not keep the aborts below from running.
                let result = tokio::time::timeout(heartbeat_every, beat(&rt, lease_ms, heartbeat_every))
                    .await
                    .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
                match result {
                    Ok(()) => renewed_at = sent,
                    Err(e) => {
                        tracing::warn!(error = %e, "heartbeat failed");
                        // Abort before the leases can expire, so that no other
                        // worker runs these operations while ours still do.
                        if renewed_at.elapsed() >= lease.saturating_sub(lease / 6) {
                            let n = rt.abort_all("its lease could not be renewed");
                            if n > 0 {
                                tracing::error!(aborted = n, "leases could not be renewed; aborted running handlers");
                            }
                        }
                        // Once the leases have run out, the attempts are the
                        // rescuer's (another worker's, if this one cannot
                        // reach the database): executors stop retrying to
                        // record them, so that `stop()` is not held by a
                        // database that does not answer.
                        if renewed_at.elapsed() >= lease {
                            for op in rt.running_ops() {
                                op.mark_lost();
                            }
                        }
                    }
                }
            }
            _ = rescue.tick() => {
                // Bounded on the client too: a silent connection must not
                // stop the heartbeat that shares this task.
                match tokio::time::timeout(rescue_every, rescue_expired(&rt, rescue_every)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "rescuing expired leases failed"),
                    Err(_) => tracing::warn!("rescuing expired leases timed out"),
                }
            }
            _ = report.tick() => {
                if tokio::time::timeout(heartbeat_every, report_unhandled(&rt)).await.is_err() {
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
    let renewed = rt
        .store
        .heartbeat(&mut tx, rt.worker_id, lease_ms, &fences)
        .await?;
    tx.commit().await?;
    for op in running.iter().filter(|op| renewed.contains(&op.attempt_id)) {
        op.renewed(sent);
    }
    for op in running
        .iter()
        .filter(|op| !renewed.contains(&op.attempt_id))
    {
        tracing::warn!(
            operation_id = op.operation,
            attempt = op.attempt,
            "lease taken away; aborting the handler"
        );
        op.mark_lost();
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

/// Logs and exports (gauge `pgoutbox_unhandled_operations`) the ready
/// operations whose name no live worker handles: they are never claimed.
pub(crate) async fn report_unhandled(rt: &Runtime) {
    let live_within = millis(rt.settings.workflow_system.lease * 3);
    let result = async {
        let mut conn = rt.pool.acquire().await?;
        rt.store.unhandled_names(&mut conn, live_within).await
    }
    .await;
    match result {
        Ok(unhandled) => {
            let mut total = 0;
            for (name, count) in &unhandled {
                total += count;
                tracing::warn!(name = %name, ready = count, "ready operations that no live worker handles");
            }
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("pgoutbox_unhandled_operations").set(total as f64);
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
    let statuses = [crate::Status::Succeeded, crate::Status::Cancelled];
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
    if deleted > 0 || history > 0 {
        tracing::info!(
            operations = deleted,
            history_rows = history,
            "janitor purged old rows"
        );
    }
    Ok(())
}
