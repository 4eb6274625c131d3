//! How claims are made beyond the producer's: chained into a transactional
//! handler's commit, and (`workflow_system.idempotent_claim_ahead`)
//! idempotent operations claimed ahead of the free handler slots, never
//! more handlers at once than the slots, and refused at start-up beside an
//! operation it would not suit.

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

/// A fresh database holding `ops`, drained by a system running `O` with
/// `n_workers` slots and `claim_ahead`.
async fn drain<O: pgoutbox::Operation>(
    ops: impl IntoIterator<Item = O>,
    n_workers: usize,
    claim_ahead: usize,
    prepare: &str,
) -> (pgoutbox::testing::TestDatabase, WorkflowSystem) {
    let db = test_db().await;
    if !prepare.is_empty() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(prepare.to_owned()))
            .execute(db.pool())
            .await
            .unwrap();
    }
    let mut conn = db.pool().acquire().await.unwrap();
    pgoutbox::publish_many(&mut conn, ops).await.unwrap();
    drop(conn);
    let mut s = settings(&db);
    s.workflow_system.n_workers = n_workers;
    s.workflow_system.idempotent_claim_ahead = claim_ahead;
    let system = WorkflowSystem::builder(s)
        .router(WorkflowRouter::new().operation::<O>())
        .start()
        .await
        .unwrap();
    (db, system)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_ahead_yet_runs_no_more_handlers_than_its_slots() {
    let (db, system) = drain((0..60).map(|_| Ahead { ms: 20 }), 2, 8, "").await;
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
    let (db, system) = drain((0..40).map(|_| AheadSleep { ms: 100 }), 2, 20, "").await;
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

/// Writes its transaction's id and the transaction that started its own
/// attempt (the `xmin` of its attempt row, not updated yet).
#[operation("test.chained", transactional)]
async fn chained(ctx: &mut TxContext<'_>, n: i64) -> Result<()> {
    let id = ctx.operation_id().as_i64();
    let attempt = i32::try_from(ctx.attempt()).unwrap_or(i32::MAX);
    ctx.execute(
        sqlx::query(
            "INSERT INTO chain_log (n, tx, started_by) SELECT $1, \
             pg_current_xact_id()::text::bigint % 4294967296, xmin::text::bigint \
             FROM pgoutbox.attempts WHERE operation_id = $2 AND number = $3",
        )
        .bind(n)
        .bind(id)
        .bind(attempt),
    )
    .await?;
    Ok(())
}

/// A slot running transactional handlers claims its next operation in the
/// commit of the previous one's transaction: the attempt of operation k+1
/// was started by the transaction of operation k's handler, so the slot
/// waits for one commit per operation, not for a claim's commit besides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_success_claims_the_next_operation_in_its_commit() {
    let (db, system) = drain(
        (0..30).map(|n| Chained { n }),
        1,
        0,
        "CREATE TABLE chain_log (n bigint, tx bigint, started_by bigint)",
    )
    .await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        30,
        Duration::from_secs(20),
    )
    .await;
    system.stop().await.unwrap();
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.attempts").await,
        30,
        "one attempt each"
    );
    let chained = count(
        &db,
        "SELECT count(*) FROM chain_log c WHERE EXISTS \
         (SELECT 1 FROM chain_log p WHERE p.tx = c.started_by)",
    )
    .await;
    // The first is claimed by the producer; a chain breaks only when the
    // next operation is not ready yet.
    assert!(
        chained >= 25,
        "attempts started by the previous handler's commit: {chained}"
    );
}

/// A worker of several names (every workflow's) claims through the
/// several-names path of `claimable`, whose generic plan is estimated above
/// `jit_above_cost`: with JIT it was compiled again at every claim (15 ms
/// of a 2 ms claim, W7). Migration 10 sets `jit = off` on the function,
/// which holds for everything it runs.
#[tokio::test]
async fn the_claim_function_runs_without_jit() {
    let db = test_db().await;
    let config: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(proconfig) FROM pg_proc
         WHERE proname = 'claimable' AND pronamespace = 'pgoutbox'::regnamespace",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(config.iter().any(|c| c == "jit=off"), "{config:?}");
}
