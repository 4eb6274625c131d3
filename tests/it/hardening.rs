//! Issue 13 ("Hardening"): attempt numbers that are never reused, outcomes
//! that cannot be stored, and transactional handlers that end the
//! dispatcher's transaction themselves.

use std::time::Duration;

use pgoutbox::WorkflowSystem;
use pgoutbox::prelude::*;

use crate::ops::{effects, note};
use crate::support::{count, outcomes, publish_one, settings, status, test_db, wait_for_count};

const WITHIN: Duration = Duration::from_secs(10);

/// Snoozes on its first run, then runs for `ms` and succeeds.
#[operation("hardening.snooze_then_run")]
pub(crate) async fn snooze_then_run(ctx: &mut Context, key: String, ms: u64) -> Result<()> {
    note(&key, ctx.operation_id());
    if effects(&key).len() == 1 {
        return Err(HandlerError::snooze(Duration::from_millis(10)));
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

async fn start(settings: pgoutbox::Settings, router: WorkflowRouter) -> WorkflowSystem {
    WorkflowSystem::builder(settings)
        .router(router)
        .start()
        .await
        .expect("system starts")
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A statement of the runtime's, rendered for the default schema, so that
/// the test can send a write exactly as a late executor would.
fn runtime_statement(template: &str) -> String {
    template.replace("{schema}", "\"pgoutbox\"")
}

#[tokio::test]
async fn a_stale_snooze_or_failure_write_of_an_earlier_attempt_is_refused() {
    let db = test_db().await;
    let system = start(
        settings(&db),
        WorkflowRouter::new().operation::<SnoozeThenRun>(),
    )
    .await;
    let k = key();
    let id = publish_one(
        &db,
        SnoozeThenRun {
            key: k.clone(),
            ms: 1500,
        },
    )
    .await;
    // Claimed, snoozed, claimed again: the second attempt is running.
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome IS NULL",
        1,
        WITHIN,
    )
    .await;
    assert_eq!(status(&db, id).await, "running");
    let (first_id, first_number, worker): (i64, i32, uuid::Uuid) = sqlx::query_as(
        "SELECT id, number, worker_id FROM pgoutbox.attempts
         WHERE operation_id = $1 AND outcome = 'snoozed'",
    )
    .bind(id.as_i64())
    .fetch_one(db.pool())
    .await
    .unwrap();
    let numbers: Vec<i32> = sqlx::query_scalar(
        "SELECT number FROM pgoutbox.attempts WHERE operation_id = $1 ORDER BY id",
    )
    .bind(id.as_i64())
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(numbers, [1, 2], "attempt numbers are never reused");

    // The first attempt's snooze, written again late (a retry after a
    // reply that was lost), fenced as the executor fences it.
    let snooze = runtime_statement(include_str!("../../pgoutbox/src/store/sql/snooze.sql"));
    let changed: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(snooze))
        .bind(id.as_i64())
        .bind(worker)
        .bind(first_number)
        .bind(first_id)
        .bind(0_i64)
        .bind("snoozed late")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(changed, 0, "a stale snooze write is refused");
    let failure = runtime_statement(include_str!(
        "../../pgoutbox/src/store/sql/complete_failure.sql"
    ));
    let changed: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(failure))
        .bind(id.as_i64())
        .bind(worker)
        .bind(first_number)
        .bind(first_id)
        .bind("failed")
        .bind("retrying")
        .bind(0_i64)
        .bind("failed late")
        .bind(serde_json::json!(["failed late"]))
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(changed, 0, "a stale failure write is refused");
    assert_eq!(status(&db, id).await, "running");

    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        1,
        WITHIN,
    )
    .await;
    assert_eq!(
        outcomes(&db, id).await,
        [Some("snoozed".into()), Some("succeeded".into())]
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.attempts WHERE outcome IS NULL"
        )
        .await,
        0
    );
    system.stop().await.unwrap();
}

/// Writes a business row, commits the dispatcher's transaction through raw
/// SQL, then fails.
#[operation(
    "hardening.commit_then_fail",
    transactional,
    max_attempts = 3,
    backoff(initial = "10ms", max = "10ms")
)]
pub(crate) async fn commit_then_fail(ctx: &mut TxContext<'_>, label: String) -> Result<()> {
    ctx.execute(sqlx::query("INSERT INTO business (label) VALUES ($1)").bind(&label))
        .await?;
    ctx.execute(sqlx::raw_sql("COMMIT")).await?;
    Err(HandlerError::retryable("failed after committing"))
}

#[tokio::test]
async fn a_handler_that_commits_behind_the_dispatchers_back_then_fails_is_in_doubt() {
    let db = test_db().await;
    sqlx::query("CREATE TABLE business (label text NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    let system = start(
        settings(&db),
        WorkflowRouter::new().operation::<CommitThenFail>(),
    )
    .await;
    let id = publish_one(
        &db,
        CommitThenFail {
            label: "committed".into(),
        },
    )
    .await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome IS NOT NULL",
        1,
        WITHIN,
    )
    .await;
    // Time for a (wrong) retry to be claimed, were there one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&db, id).await, "stalled");
    assert_eq!(outcomes(&db, id).await, [Some("failed".into())]);
    let error: String =
        sqlx::query_scalar("SELECT error FROM pgoutbox.attempts WHERE operation_id = $1")
            .bind(id.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(
        error.contains("ended the dispatcher's transaction") && error.contains("in doubt"),
        "{error}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM business").await,
        1,
        "its write stays committed, and it was not run again"
    );
    system.stop().await.unwrap();
}
