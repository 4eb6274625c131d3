//! The producer: one per process, it claims batches no larger than the free
//! handler slots (and the bounded backlog of outcomes not yet recorded) and
//! hands each claimed operation to an executor task. Names under a
//! concurrency limit (`WorkflowRouter::concurrency`) are claimed apart,
//! each group's no larger than its free places, so that a group at its
//! limit neither runs more nor stops the others from being claimed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

use crate::duration::millis;
use crate::executor;
use crate::jitter::jittered;
use crate::limits::Batch;
use crate::runtime::{RunningOp, Runtime};
use crate::store::Claimed;

/// The longest a producer waits for more free slots before claiming again
/// after a full batch.
const GATHER: Duration = Duration::from_millis(1);

pub(crate) async fn run(rt: Arc<Runtime>, executors: Arc<Mutex<JoinSet<()>>>) {
    let ws = &rt.settings.workflow_system;
    let lease_ms = millis(ws.lease);
    let mut stopping = rt.stopping.subscribe();
    let mut failures = 0u32;
    loop {
        if *stopping.borrow() {
            return;
        }
        let mut claimed_full_batch = false;
        if claimable(&rt) > 0 {
            // Bounded: a claim on a connection that went silent must not
            // stop the producer (and `stop()`) for good.
            let claimed = tokio::time::timeout(ws.lease, claim(&rt, lease_ms, &executors))
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut));
            match claimed {
                Ok(full) => {
                    failures = 0;
                    claimed_full_batch = full;
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
        // A full batch suggests more work is ready: claim again soon, but
        // give the executors just started a moment to free their slots, so
        // that the next claim is a batch rather than a trickle (a claim
        // costs about the same for 1 row as for 10). Otherwise wait for a
        // notification or the poll.
        if claimed_full_batch {
            let enough = ws.n_workers.max(1);
            let deadline = tokio::time::Instant::now() + GATHER;
            while rt.free_slots() < enough {
                tokio::select! {
                    () = rt.wake.notified() => {}
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            if claimable(&rt) > 0 {
                continue;
            }
        }
        tokio::select! {
            () = rt.wake.notified() => {}
            () = tokio::time::sleep(jittered(ws.poll_interval)) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// How many operations the producer may claim now, in the batch that
/// allows the most.
fn claimable(rt: &Runtime) -> usize {
    rt.limits
        .batches()
        .map(|b| rt.capacity(b))
        .max()
        .unwrap_or(0)
}

/// Claims, batch by batch, as many operations as the free slots and each
/// batch's groups allow, and spawns their executors; returns whether a
/// batch came back full (more may be ready).
async fn claim(
    rt: &Arc<Runtime>,
    lease_ms: i64,
    executors: &Mutex<JoinSet<()>>,
) -> Result<bool, sqlx::Error> {
    let mut conn = rt.pool.acquire().await?;
    let mut full = false;
    for batch in rt.limits.round() {
        let free = rt.capacity(batch);
        if free == 0 {
            continue;
        }
        let limit = i32::try_from(free).unwrap_or(i32::MAX);
        // The leases run from the claim's `now()`, which is after this.
        let sent = std::time::Instant::now();
        let claimed = rt
            .store
            .claim(
                &mut conn,
                &batch.names,
                limit,
                rt.worker_id,
                lease_ms,
                &rt.settings.workflow_system.queues,
                rt.settings.workflow_system.idempotent_async_commit,
            )
            .await?;
        full |= claimed.len() >= free;
        spawn(rt, batch, claimed, sent, executors);
    }
    Ok(full)
}

/// Starts an executor for each operation claimed for `batch`, holding a
/// handler slot and a place in each of the batch's groups.
fn spawn(
    rt: &Arc<Runtime>,
    batch: &Batch,
    claimed: Vec<Claimed>,
    sent: std::time::Instant,
    executors: &Mutex<JoinSet<()>>,
) {
    let mut executors = executors.lock().expect("executors poisoned");
    while executors.try_join_next().is_some() {}
    for op in claimed {
        let in_flight = Arc::clone(&rt.in_flight)
            .try_acquire_owned()
            .expect("claims never exceed the free slots");
        let slot = Arc::clone(&rt.slots).try_acquire_owned();
        // An operation claimed ahead of the free slots waits for one,
        // holding a place among those claimed ahead meanwhile.
        let (permits, waiting) = match slot {
            Ok(slot) if batch.ahead => (vec![slot], None),
            Ok(slot) => {
                let mut permits = vec![slot];
                permits.extend(
                    batch
                        .try_acquire()
                        .expect("claims never exceed their groups' free places"),
                );
                (permits, None)
            }
            Err(_) if batch.ahead => {
                let waiting = Arc::clone(&rt.ahead)
                    .try_acquire_owned()
                    .expect("claims ahead never exceed their free places");
                (Vec::new(), Some(waiting))
            }
            Err(_) => unreachable!("claims never exceed the free slots"),
        };
        let running = Arc::new(RunningOp::new(&op, sent, permits));
        let attempt_id = running.attempt_id;
        rt.start_running(Arc::clone(&running));
        let rt = Arc::clone(rt);
        executors.spawn(async move {
            if let Some(waiting) = waiting {
                let waited = wait_for_slot(&rt, &running).await;
                drop(waiting);
                match waited {
                    Waited::Slot(slot) => running.take_slot(slot),
                    Waited::Stopping => {
                        executor::release(Arc::clone(&rt), op, Arc::clone(&running)).await;
                        rt.stop_running(attempt_id);
                        return;
                    }
                    Waited::Lost => {
                        rt.stop_running(attempt_id);
                        rt.wake.notify_one();
                        return;
                    }
                }
            }
            executor::execute(Arc::clone(&rt), op, Arc::clone(&running)).await;
            #[cfg(feature = "testing")]
            if let Some(delay) = rt.linger {
                tokio::time::sleep(delay).await;
            }
            rt.stop_running(attempt_id);
            drop(in_flight);
            running.release_slot();
            // A slot (and a place in its groups) is free: the producer may
            // claim again.
            rt.wake.notify_one();
        });
    }
}

/// How the wait of an operation claimed ahead for a handler slot ended.
enum Waited {
    Slot(OwnedSemaphorePermit),
    /// The system stops: a handler not started yet is not started now, and
    /// the operation is given back.
    Stopping,
    /// Its lease was lost: the rescuer records the attempt `lost`, and the
    /// idempotent operation runs again.
    Lost,
}

async fn wait_for_slot(rt: &Runtime, running: &RunningOp) -> Waited {
    let mut stopping = rt.stopping.subscribe();
    tokio::select! {
        biased;
        _ = stopping.wait_for(|stopping| *stopping) => Waited::Stopping,
        _ = running.aborted() => Waited::Lost,
        slot = Arc::clone(&rt.slots).acquire_owned() => match slot {
            Ok(slot) => Waited::Slot(slot),
            Err(_) => Waited::Lost,
        },
    }
}
