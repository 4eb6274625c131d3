//! The application test kit (`pgoutbox::testing`): what a transaction
//! published, one operation run inline, a system run until idle, and
//! crashes injected before the external call, after it and before the
//! commit.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use pgoutbox::prelude::*;
use pgoutbox::testing::{CrashPoint, Harness, published};
use pgoutbox::{Outcome, Status};

use crate::support::{count, test_db};

/// How many times each key's external call happened, across the tests of
/// this binary (keys are unique per test).
static CALLS: LazyLock<Mutex<HashMap<String, u32>>> = LazyLock::new(Mutex::default);

fn external_call(key: &str) {
    *CALLS.lock().unwrap().entry(key.to_owned()).or_default() += 1;
}

fn calls(key: &str) -> u32 {
    CALLS.lock().unwrap().get(key).copied().unwrap_or(0)
}

/// Not idempotent: an unknown outcome must wait for an operator.
#[operation("kit.sms")]
async fn kit_sms(_ctx: &mut Context, key: String) -> Result<()> {
    external_call(&key);
    Ok(())
}

/// Idempotent: the provider deduplicates on the idempotency key.
#[operation("kit.charge", idempotent)]
async fn kit_charge(_ctx: &mut Context, key: String) -> Result<()> {
    external_call(&key);
    Ok(())
}

/// Writes a row in the dispatcher's transaction; nothing outside.
#[operation("kit.ledger", transactional, idempotent)]
async fn kit_ledger(ctx: &mut TxContext<'_>, key: String) -> Result<()> {
    external_call(&key);
    ctx.execute(sqlx::query("INSERT INTO kit_ledger (key) VALUES ($1)").bind(key))
        .await?;
    Ok(())
}

/// Fails its first two attempts, then succeeds.
#[operation("kit.flaky", max_attempts = 5)]
async fn kit_flaky(ctx: &mut Context, key: String) -> Result<()> {
    external_call(&key);
    if ctx.attempt() <= 2 {
        return Err(HandlerError::retryable("not yet"));
    }
    Ok(())
}

/// Transactional but with an external call: not idempotent.
#[operation("kit.transfer", transactional)]
async fn kit_transfer(ctx: &mut TxContext<'_>, key: String) -> Result<()> {
    external_call(&key);
    ctx.execute(sqlx::query("INSERT INTO kit_ledger (key) VALUES ($1)").bind(key))
        .await?;
    Ok(())
}

/// Publishes `n` follow-ups.
#[operation("kit.fan_out")]
async fn kit_fan_out(ctx: &mut Context, key: String, n: i64) -> Result<()> {
    for i in 0..n {
        ctx.publish(KitSms {
            key: format!("{key}-{i}"),
        })?;
    }
    Ok(())
}

async fn ledger_db() -> pgoutbox::testing::TestDatabase {
    let db = test_db().await;
    sqlx::query("CREATE TABLE kit_ledger (key text NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    db
}

fn key(test: &str) -> String {
    format!("{test}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn published_reads_what_this_transaction_published_and_nothing_else() {
    let db = test_db().await;
    // Committed earlier: not this transaction's.
    let mut earlier = db.pool().begin().await.unwrap();
    publish(&mut earlier, KitSms { key: "old".into() })
        .await
        .unwrap();
    earlier.commit().await.unwrap();

    let mut tx = db.pool().begin().await.unwrap();
    assert!(published::<KitSms>(&mut tx).await.unwrap().is_empty());
    publish(&mut tx, KitSms { key: "a".into() }).await.unwrap();
    publish(&mut tx, KitCharge { key: "c".into() })
        .await
        .unwrap();
    publish(&mut tx, KitSms { key: "b".into() }).await.unwrap();

    let sms: Vec<String> = published::<KitSms>(&mut tx)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(
        sms,
        ["a", "b"],
        "in publishing order, only this transaction's"
    );
    assert_eq!(published::<KitCharge>(&mut tx).await.unwrap().len(), 1);
    pgoutbox::assert_published!(&mut tx, KitSms { key, .. } if key == "b");
    pgoutbox::assert_published!(&mut tx, KitCharge { .. });
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn assert_published_fails_naming_what_was_published() {
    let db = test_db().await;
    let mut tx = db.pool().begin().await.unwrap();
    publish(&mut tx, KitSms { key: "x".into() }).await.unwrap();
    let failed = tokio::spawn(async move {
        pgoutbox::assert_published!(&mut tx, KitSms { key, .. } if key == "y");
    })
    .await
    .unwrap_err();
    let message = failed.into_panic();
    let message = message
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(
        message.contains("no kit.sms matching `KitSms { key, .. } if key == \"y\"`"),
        "{message}"
    );
    assert!(
        message.contains("\"x\""),
        "lists what was published: {message}"
    );
}

#[tokio::test]
async fn run_inline_runs_one_operation_through_a_real_worker() {
    let db = test_db().await;
    let key = key("inline");
    let done = Harness::new(&db)
        .operation::<KitSms>()
        .run_inline(KitSms { key: key.clone() })
        .await
        .unwrap();
    assert_eq!(done.operation.status, Status::Succeeded);
    assert_eq!(done.attempts.len(), 1);
    assert_eq!(done.attempts[0].outcome, Some(Outcome::Succeeded));
    assert_eq!(calls(&key), 1);
}

#[tokio::test]
async fn run_until_idle_runs_follow_ups_too_and_counts_by_state() {
    let db = test_db().await;
    let key = key("idle");
    let mut tx = db.pool().begin().await.unwrap();
    publish(
        &mut tx,
        KitFanOut {
            key: key.clone(),
            n: 5,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let idle = Harness::new(&db)
        .operation::<KitFanOut>()
        .operation::<KitSms>()
        .run_until_idle()
        .await
        .unwrap();
    assert_eq!(idle.count(Status::Succeeded), 6, "{idle:?}");
    assert_eq!(idle.by_status.len(), 1, "{idle:?}");
    assert_eq!(calls(&format!("{key}-4")), 1);
}

/// The crash matrix: each point × plain/transactional × idempotent or not.
#[tokio::test]
async fn a_crash_before_the_external_call_leaves_a_lost_attempt_and_no_call() {
    let db = test_db().await;
    let key = key("before-call");
    let crashed = Harness::new(&db)
        .operation::<KitSms>()
        .crash_at(CrashPoint::BeforeExternalCall)
        .run_inline(KitSms { key: key.clone() })
        .await
        .unwrap();
    // Nobody can know the call did not happen: it waits for an operator.
    assert_eq!(crashed.operation.status, Status::Stalled);
    assert_eq!(crashed.attempts.len(), 1);
    assert_eq!(crashed.attempts[0].outcome, Some(Outcome::Lost));
    assert_eq!(calls(&key), 0);
}

#[tokio::test]
async fn a_crash_after_the_external_call_stalls_a_non_idempotent_operation() {
    let db = test_db().await;
    let key = key("after-call");
    let crashed = Harness::new(&db)
        .operation::<KitSms>()
        .crash_at(CrashPoint::AfterExternalCall)
        .run_inline(KitSms { key: key.clone() })
        .await
        .unwrap();
    assert_eq!(crashed.operation.status, Status::Stalled);
    assert_eq!(crashed.attempts[0].outcome, Some(Outcome::Lost));
    assert_eq!(
        calls(&key),
        1,
        "the call happened once, and is not repeated"
    );
}

#[tokio::test]
async fn a_crash_after_the_external_call_retries_an_idempotent_operation() {
    let db = test_db().await;
    let key = key("after-call-idempotent");
    let crashed = Harness::new(&db)
        .operation::<KitCharge>()
        .crash_at(CrashPoint::AfterExternalCall)
        .run_inline(KitCharge { key: key.clone() })
        .await
        .unwrap();
    assert_eq!(crashed.operation.status, Status::Succeeded);
    let outcomes: Vec<_> = crashed.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Some(Outcome::Lost), Some(Outcome::Succeeded)]);
    assert_eq!(calls(&key), 2, "at least once: the provider deduplicates");
}

#[tokio::test]
async fn a_crash_before_the_commit_keeps_a_transactional_write_exactly_once() {
    let db = ledger_db().await;
    let key = key("before-commit");
    let crashed = Harness::new(&db)
        .operation::<KitLedger>()
        .crash_at(CrashPoint::BeforeCommit)
        .run_inline(KitLedger { key: key.clone() })
        .await
        .unwrap();
    assert_eq!(crashed.operation.status, Status::Succeeded);
    assert_eq!(crashed.attempts[0].outcome, Some(Outcome::Lost));
    assert_eq!(calls(&key), 2, "the handler ran twice");
    assert_eq!(
        count(&db, "SELECT count(*) FROM kit_ledger").await,
        1,
        "its write committed once: the crashed attempt's was rolled back"
    );
}

#[tokio::test]
async fn a_crash_before_the_commit_stalls_a_transactional_operation_with_an_external_call() {
    let db = ledger_db().await;
    let key = key("before-commit-transfer");
    let crashed = Harness::new(&db)
        .operation::<KitTransfer>()
        .crash_at(CrashPoint::BeforeCommit)
        .run_inline(KitTransfer { key: key.clone() })
        .await
        .unwrap();
    assert_eq!(crashed.operation.status, Status::Stalled);
    assert_eq!(crashed.attempts[0].outcome, Some(Outcome::Lost));
    assert_eq!(calls(&key), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM kit_ledger").await, 0);
}

#[tokio::test]
async fn a_handler_that_never_returns_is_reported_not_waited_for_forever() {
    #[operation("kit.forever")]
    async fn kit_forever(_ctx: &mut Context, key: String) -> Result<()> {
        let _ = key;
        std::future::pending::<()>().await;
        Ok(())
    }
    let db = test_db().await;
    let err = Harness::new(&db)
        .operation::<KitForever>()
        .timeout(std::time::Duration::from_millis(500))
        .run_inline(KitForever { key: "f".into() })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("still busy after") && err.to_string().contains("1 running"),
        "{err}"
    );
}

/// A retry waiting out the harness's short backoff is not idleness: the
/// kit waits for it (it used to stop in that gap, now and then, and report
/// the operation `retrying`).
#[tokio::test]
async fn run_inline_waits_for_retries_within_the_harness_backoff() {
    let db = test_db().await;
    for round in 0..5 {
        let key = key(&format!("flaky-{round}"));
        let done = Harness::new(&db)
            .operation::<KitFlaky>()
            .run_inline(KitFlaky { key: key.clone() })
            .await
            .unwrap();
        assert_eq!(done.operation.status, Status::Succeeded);
        let outcomes: Vec<_> = done.attempts.iter().map(|a| a.outcome).collect();
        assert_eq!(
            outcomes,
            [
                Some(Outcome::Failed),
                Some(Outcome::Failed),
                Some(Outcome::Succeeded)
            ]
        );
        assert_eq!(calls(&key), 3);
    }
}
