//! The state that one running system's tasks share: the pool and store,
//! the handler slots, the operations in flight, the wake-up of the
//! producer, and the channel to the completer.
//!
//! The roles (producer, executor, completer, notifier, maintenance) take
//! it from here; `system` builds it and starts them. It imports none of
//! them, so imports flow one way: roles → runtime state → store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use uuid::Uuid;

use crate::limits::{Batch, Limits};
use crate::publish::{PublishError, Publisher};
use crate::router::Routes;
use crate::settings::Settings;
use crate::store::{Claimed, Fence, Store};

/// State shared by the tasks of one running system.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub(crate) pool: PgPool,
    pub(crate) store: Store,
    pub(crate) publisher: Publisher,
    pub(crate) settings: Settings,
    pub(crate) routes: Routes,
    pub(crate) names: Vec<String>,
    pub(crate) worker_id: Uuid,
    /// Attempts whose handlers run (or whose outcomes are being recorded),
    /// by attempt id: an operation that snoozed or failed with a short
    /// backoff can be claimed again by this process while the executor of
    /// its previous attempt is still finishing, and each attempt keeps its
    /// own entry.
    pub(crate) running: Mutex<HashMap<i64, Arc<RunningOp>>>,
    /// One permit per handler slot (`n_workers`), held while a handler
    /// runs.
    pub(crate) slots: Arc<Semaphore>,
    /// The per-group limits of the routes (`WorkflowRouter::concurrency`)
    /// and the claim batches they split the names into.
    pub(crate) limits: Limits,
    /// One permit per claimed operation whose outcome is not recorded yet
    /// (`IN_FLIGHT_PER_SLOT × n_workers`): a plain handler frees its slot
    /// as soon as it returns and its success waits for the completer's next
    /// batch, but that backlog stays bounded.
    pub(crate) in_flight: Arc<Semaphore>,
    /// One permit per operation claimed ahead of the free handler slots
    /// and waiting for one (`workflow_system.idempotent_claim_ahead`;
    /// none when that is off).
    pub(crate) ahead: Arc<Semaphore>,
    /// Wakes the producer: a notification, a listener reconnect, a freed
    /// slot.
    pub(crate) wake: Notify,
    /// `true` once the system stops claiming.
    pub(crate) stopping: watch::Sender<bool>,
    /// Plain successes go to the completer, which records them in batches.
    pub(crate) completions: mpsc::Sender<Completion>,
    /// A test's injected crash (only `pgoutbox::testing` sets one).
    #[cfg(feature = "testing")]
    pub(crate) crash: Option<Crash>,
    /// How long a test makes each executor linger after its outcome is
    /// recorded (`WorkflowSystemBuilder::linger_after_record`).
    #[cfg(feature = "testing")]
    pub(crate) linger: Option<Duration>,
}

impl Runtime {
    /// Where a test makes attempt number `attempt` crash: only first
    /// attempts do, so that the retry shows what a real worker does next.
    #[cfg(feature = "testing")]
    pub(crate) fn crash_for(&self, attempt: i32) -> Option<Crash> {
        self.crash.filter(|_| attempt == 1)
    }

    /// How many operations the producer may claim now.
    pub(crate) fn free_slots(&self) -> usize {
        self.slots
            .available_permits()
            .min(self.in_flight.available_permits())
    }

    /// How many operations of `batch` the producer may claim now: its
    /// free slots and its groups' free places, or, for a batch claimed
    /// ahead, the free slots plus the free places to wait for one.
    pub(crate) fn capacity(&self, batch: &Batch) -> usize {
        if batch.ahead {
            (self.slots.available_permits() + self.ahead.available_permits())
                .min(self.in_flight.available_permits())
        } else {
            self.free_slots().min(batch.free())
        }
    }

    /// The attempts in flight now.
    pub(crate) fn running_ops(&self) -> Vec<Arc<RunningOp>> {
        self.running
            .lock()
            .expect("running map poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Adds an attempt to the set in flight.
    pub(crate) fn start_running(&self, op: Arc<RunningOp>) {
        self.running
            .lock()
            .expect("running map poisoned")
            .insert(op.attempt_id, op);
    }

    /// Removes an attempt (and only that attempt) from the set in flight.
    pub(crate) fn stop_running(&self, attempt_id: i64) {
        self.running
            .lock()
            .expect("running map poisoned")
            .remove(&attempt_id);
    }

    pub(crate) fn abort_all(&self, reason: &'static str) -> usize {
        let running = self.running.lock().expect("running map poisoned");
        for op in running.values() {
            op.abort(reason);
        }
        running.len()
    }
}

/// Where a test makes this worker vanish in the middle of an operation's
/// first attempt (`pgoutbox::testing::Harness::crash_at`): the attempt is
/// left as a dead worker leaves it, unrecorded, its lease no longer
/// renewed, for the rescuer to find.
/// Only the `testing` feature compiles it: production builds carry no
/// such seam.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crash {
    /// Before the handler is called.
    BeforeCall,
    /// After the handler returned, before anything is recorded (a
    /// transactional handler's transaction is rolled back).
    AfterCall,
    /// For a transactional handler, after its success statement, before
    /// the commit; for a plain one, the same as `AfterCall`.
    BeforeCommit,
}

/// A running attempt, as the heartbeat and shutdown see it.
#[derive(Debug)]
pub(crate) struct RunningOp {
    /// The operation's id.
    pub(crate) operation: i64,
    /// The attempt's number (which a snooze gives back: the next claim
    /// reuses it).
    pub(crate) attempt: i32,
    /// The attempt's row in `attempts`: unique, never reused.
    pub(crate) attempt_id: i64,
    /// When the last renewal of this attempt's lease that succeeded was
    /// sent (at first, when its claim was sent): the lease runs until at
    /// least one lease later.
    renewed_at: Mutex<Instant>,
    /// The handler slot and the permits of its limited groups
    /// (`WorkflowRouter::concurrency`), given back once the handler has
    /// returned.
    slot: Mutex<Vec<OwnedSemaphorePermit>>,
    abort: Notify,
    reason: OnceLock<&'static str>,
    /// Set when a heartbeat found the lease gone: the fence would refuse
    /// any record, so recording stops trying.
    lost: AtomicBool,
}

impl RunningOp {
    pub(crate) fn new(
        claimed: &Claimed,
        claim_sent: Instant,
        slot: Vec<OwnedSemaphorePermit>,
    ) -> RunningOp {
        RunningOp {
            operation: claimed.id.as_i64(),
            attempt: claimed.attempt,
            attempt_id: claimed.attempt_id,
            renewed_at: Mutex::new(claim_sent),
            slot: Mutex::new(slot),
            abort: Notify::new(),
            reason: OnceLock::new(),
            lost: AtomicBool::new(false),
        }
    }

    /// Takes the handler slot and its groups' permits, for the operation
    /// that a chained claim passes them to.
    pub(crate) fn take_permits(&self) -> Vec<OwnedSemaphorePermit> {
        std::mem::take(&mut *self.slot.lock().expect("slot poisoned"))
    }

    /// Holds the handler slot that an operation claimed ahead waited for.
    pub(crate) fn take_slot(&self, slot: OwnedSemaphorePermit) {
        self.slot.lock().expect("slot poisoned").push(slot);
    }

    /// Gives the handler slot and its groups' permits back (once; later
    /// calls do nothing).
    pub(crate) fn release_slot(&self) {
        drop(std::mem::take(
            &mut *self.slot.lock().expect("slot poisoned"),
        ));
    }

    /// Abandons the handler (if it still runs) for `reason`; `false` if
    /// it was abandoned before.
    pub(crate) fn abort(&self, reason: &'static str) -> bool {
        let first = self.reason.set(reason).is_ok();
        self.abort.notify_one();
        first
    }

    /// Notes that a renewal of this attempt's lease, sent at `sent`,
    /// succeeded.
    pub(crate) fn renewed(&self, sent: Instant) {
        let mut renewed_at = self.renewed_at.lock().expect("renewal poisoned");
        *renewed_at = (*renewed_at).max(sent);
    }

    /// When the last successful renewal (or the claim) was sent.
    pub(crate) fn renewed_at(&self) -> Instant {
        *self.renewed_at.lock().expect("renewal poisoned")
    }

    /// Marks the lease as taken away.
    pub(crate) fn mark_lost(&self) {
        self.lost.store(true, Ordering::SeqCst);
        let _ = self.abort("its lease was lost");
    }

    /// The reason, once the handler is to be abandoned.
    pub(crate) async fn aborted(&self) -> &'static str {
        self.abort.notified().await;
        self.reason.get().copied().unwrap_or("aborted")
    }

    /// Whether a heartbeat found the lease gone.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// A plain success waiting for the completer to record it, and where to
/// say whether it was.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) fence: Fence,
    /// What the attempt produced (a handler's result, a relay's receipt),
    /// recorded on the attempt (`attempts.result`).
    pub(crate) result: Option<serde_json::Value>,
    /// The hash of the output schema a handler's result was written with.
    pub(crate) result_schema: Option<&'static str>,
    pub(crate) reply: oneshot::Sender<Result<bool, RecordError>>,
}

/// Why an outcome could not be recorded: the executor tries again while
/// the lease is its own. Cloneable, because the completer answers every
/// request of a failed batch with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RecordError {
    /// The database refused the statement or could not be reached.
    #[error(transparent)]
    Database(Arc<sqlx::Error>),
    /// A follow-up could not be published with the success.
    #[error(transparent)]
    FollowUp(Arc<PublishError>),
    /// The steps a handler added could not be published with the success.
    #[error(transparent)]
    Steps(Arc<crate::workflow::WorkflowError>),
    /// The database did not answer in time.
    #[error("recording timed out after {0:?}")]
    TimedOut(Duration),
}

impl From<sqlx::Error> for RecordError {
    fn from(e: sqlx::Error) -> Self {
        RecordError::Database(Arc::new(e))
    }
}

impl From<PublishError> for RecordError {
    fn from(e: PublishError) -> Self {
        RecordError::FollowUp(Arc::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::RecordError;

    #[test]
    fn a_record_error_keeps_its_type_across_the_completer_channel() {
        let (reply, mut answer) = tokio::sync::oneshot::channel::<Result<bool, RecordError>>();
        let error = RecordError::from(sqlx::Error::PoolTimedOut);
        reply.send(Err(error.clone())).unwrap();
        let received = answer.try_recv().unwrap().unwrap_err();
        assert!(
            matches!(&received, RecordError::Database(e) if matches!(**e, sqlx::Error::PoolTimedOut))
        );
        assert_eq!(received.to_string(), error.to_string());
    }
}
