//! The producer: one per process, it claims batches no larger than the free
//! handler slots and hands each claimed operation to an executor task.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

use crate::executor::{self, RunningOp};
use crate::system::{Runtime, jittered};

pub(crate) async fn run(rt: Arc<Runtime>, executors: Arc<Mutex<JoinSet<()>>>) {
    let ws = &rt.settings.workflow_system;
    let lease_ms = i64::try_from(ws.lease.as_millis()).unwrap_or(i64::MAX);
    let mut stopping = rt.stopping.subscribe();
    let mut failures = 0u32;
    loop {
        if *stopping.borrow() {
            return;
        }
        let free = rt.slots.available_permits();
        let mut claimed_full_batch = false;
        if free > 0 {
            // Bounded: a claim on a connection that went silent must not
            // stop the producer (and `stop()`) for good.
            let claimed = tokio::time::timeout(ws.lease, claim(&rt, free, lease_ms, &executors))
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut));
            match claimed {
                Ok(claimed) => {
                    failures = 0;
                    claimed_full_batch = claimed == free;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "claiming failed; retrying");
                    let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(5)));
                    tokio::select! {
                        () = tokio::time::sleep(backoff.min(ws.poll_interval)) => {}
                        _ = stopping.changed() => {}
                    }
                    continue;
                }
            }
        }
        // A full batch suggests more work is ready: claim again as soon as
        // a slot is free. Otherwise wait for a notification or the poll.
        if claimed_full_batch && rt.slots.available_permits() > 0 {
            continue;
        }
        tokio::select! {
            () = rt.wake.notified() => {}
            () = tokio::time::sleep(jittered(ws.poll_interval)) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// Claims up to `free` operations and spawns their executors; returns how
/// many it claimed.
async fn claim(
    rt: &Arc<Runtime>,
    free: usize,
    lease_ms: i64,
    executors: &Mutex<JoinSet<()>>,
) -> Result<usize, sqlx::Error> {
    let mut conn = rt.pool.acquire().await?;
    let limit = i32::try_from(free).unwrap_or(i32::MAX);
    let claimed = rt
        .store
        .claim(
            &mut conn,
            &rt.names,
            limit,
            rt.worker_id,
            lease_ms,
            &rt.settings.workflow_system.queues,
        )
        .await?;
    drop(conn);
    let count = claimed.len();
    let mut executors = executors.lock().expect("executors poisoned");
    while executors.try_join_next().is_some() {}
    for op in claimed {
        let permit = Arc::clone(&rt.slots)
            .try_acquire_owned()
            .expect("claims never exceed the free slots");
        let running = Arc::new(RunningOp::default());
        let id = op.id.as_i64();
        rt.running
            .lock()
            .expect("running map poisoned")
            .insert(id, Arc::clone(&running));
        let rt = Arc::clone(rt);
        executors.spawn(async move {
            executor::execute(Arc::clone(&rt), op, running).await;
            rt.running.lock().expect("running map poisoned").remove(&id);
            drop(permit);
            // A slot is free: the producer may claim again.
            rt.wake.notify_one();
        });
    }
    Ok(count)
}
