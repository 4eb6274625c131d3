//! `workflow_system.idempotent_claim_ahead`: idempotent operations claimed
//! ahead of the free handler slots, never more handlers at once than the
//! slots, and refused at start-up beside an operation it would not suit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pgoutbox::prelude::*;
use pgoutbox::{StartError, WorkflowSystem};

use crate::ops::Sleep;
use crate::support::{count, settings, test_db, wait_for_count};

static RUNNING: AtomicUsize = AtomicUsize::new(0);
static MOST: AtomicUsize = AtomicUsize::new(0);

/// Counts the handlers that run at once.
#[operation("test.ahead", idempotent)]
async fn ahead(ctx: &mut Context, ms: u64) -> Result<()> {
    let _ = ctx;
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MOST.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

/// Sleeps, counting nothing (the counters above are one test's).
#[operation("test.ahead_sleep", idempotent)]
async fn ahead_sleep(ctx: &mut Context, ms: u64) -> Result<()> {
    let _ = ctx;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_ahead_yet_runs_no_more_handlers_than_its_slots() {
    let db = test_db().await;
    let mut conn = db.pool().acquire().await.unwrap();
    pgoutbox::publish_many(&mut conn, (0..60).map(|_| Ahead { ms: 20 }))
        .await
        .unwrap();
    drop(conn);
    let mut s = settings(&db);
    s.workflow_system.n_workers = 2;
    s.workflow_system.idempotent_claim_ahead = 8;
    let system = WorkflowSystem::builder(s)
        .router(WorkflowRouter::new().operation::<Ahead>())
        .start()
        .await
        .unwrap();
    let mut most_leased = 0;
    while count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status <> 'succeeded'",
    )
    .await
        > 0
    {
        most_leased = most_leased.max(
            count(
                &db,
                "SELECT count(*) FROM pgoutbox.operations WHERE status = 'running'",
            )
            .await,
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    system.stop().await.unwrap();
    assert_eq!(MOST.load(Ordering::SeqCst), 2, "handlers at once");
    // Leased: those whose handlers run or wait for a slot (at most 2 + 8),
    // and those whose successes wait for the completer's next batch (the
    // in-flight bound, 4 per slot, counts them all).
    assert!(
        most_leased > 2 && most_leased <= 4 * 2 + 8,
        "claimed ahead of the 2 slots, within the in-flight bound: {most_leased}"
    );
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome = 'succeeded'",
        60,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.attempts").await,
        60,
        "one attempt each"
    );
}

/// A stop gives back the operations claimed ahead whose handlers have not
/// started: their attempts are recorded as snoozes (not counted against
/// `max_attempts`), nothing is left to expire into `lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_gives_back_what_was_claimed_ahead_and_not_started() {
    let db = test_db().await;
    let mut conn = db.pool().acquire().await.unwrap();
    pgoutbox::publish_many(&mut conn, (0..40).map(|_| AheadSleep { ms: 100 }))
        .await
        .unwrap();
    drop(conn);
    let mut s = settings(&db);
    s.workflow_system.n_workers = 2;
    s.workflow_system.idempotent_claim_ahead = 20;
    let system = WorkflowSystem::builder(s)
        .router(WorkflowRouter::new().operation::<AheadSleep>())
        .start()
        .await
        .unwrap();
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'running'",
        22,
        Duration::from_secs(5),
    )
    .await;
    let report = system.stop().await.unwrap();
    assert_eq!(report.aborted, 0, "the 2 handlers running finished");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.attempts WHERE outcome IS NULL"
        )
        .await,
        0,
        "no attempt left open"
    );
    let given_back = count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome = 'snoozed' \
         AND error = 'claimed ahead, not started: the worker stopped'",
    )
    .await;
    assert_eq!(given_back, 20, "the 20 waiting were given back");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations WHERE status = 'pending' AND attempt = snoozes"
        )
        .await,
        40 - count(&db, "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'").await,
        "every operation not run is ready, with no attempt counted"
    );
}

#[tokio::test]
async fn start_up_refuses_claim_ahead_beside_a_non_idempotent_operation() {
    let db = test_db().await;
    let mut s = settings(&db);
    s.workflow_system.idempotent_claim_ahead = 8;
    let err = WorkflowSystem::builder(s)
        .router(
            WorkflowRouter::new()
                .operation::<Ahead>()
                .operation::<Sleep>(),
        )
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::ClaimAhead { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with(
            "`workflow_system.idempotent_claim_ahead` is set, but `test.sleep` (handler `sleep` at "
        ) && message.contains("tests/it/ops.rs:")
            && message.contains("is not idempotent: only idempotent operations"),
        "{message}"
    );
}

#[tokio::test]
async fn start_up_refuses_claim_ahead_under_a_concurrency_limit() {
    let db = test_db().await;
    let mut s = settings(&db);
    s.workflow_system.idempotent_claim_ahead = 8;
    let err = WorkflowSystem::builder(s)
        .router(WorkflowRouter::new().operation::<Ahead>().concurrency(1))
        .start()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`test.ahead` (handler `ahead` at ")
            && err.to_string().contains("is under a concurrency limit"),
        "{err}"
    );
}

#[test]
fn a_claim_ahead_beyond_the_maximum_is_refused() {
    let mut s = pgoutbox::Settings::default();
    s.workflow_system.idempotent_claim_ahead = pgoutbox::MAX_CLAIM_AHEAD + 1;
    let err = s.validate().unwrap_err();
    assert_eq!(err.key(), "workflow_system.idempotent_claim_ahead");
    assert_eq!(
        err.to_string(),
        "invalid setting `workflow_system.idempotent_claim_ahead`: must be at most 10000"
    );
}
