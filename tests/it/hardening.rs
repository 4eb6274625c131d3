//! Hardening: attempt numbers that are never reused, batched successes
//! answered by attempt, outcomes that cannot be stored, and transactional
//! handlers that end the dispatcher's transaction themselves.

use std::time::Duration;

use pgoutbox::prelude::*;
use pgoutbox::{PublishError, WorkflowSystem};

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
    // Claimed, snoozed, claimed again: the second attempt is running (the
    // first one, running too, must not be mistaken for it).
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome IS NULL \
         AND EXISTS (SELECT 1 FROM pgoutbox.attempts WHERE outcome = 'snoozed')",
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

/// What `unstorable` returns: values PostgreSQL refuses as they are.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub(crate) enum Bad {
    /// An error whose message holds a NUL byte.
    NulError,
    /// An error whose `source()` holds a NUL byte.
    NulChain,
    /// A panic whose message holds a NUL byte.
    NulPanic,
    /// An error of a megabyte.
    LongError,
    /// `HandlerError::snooze(Duration::MAX)`.
    SnoozeForEver,
    /// An error that a CHECK constraint the test adds refuses.
    Refused,
    /// A follow-up whose payload holds a NUL byte.
    NulFollowUp,
}

#[derive(Debug)]
struct Outer(std::io::Error);

impl std::fmt::Display for Outer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("outer")
    }
}

impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

#[operation("hardening.unstorable", max_attempts = 1)]
pub(crate) async fn unstorable(ctx: &mut Context, bad: Bad) -> Result<()> {
    match bad {
        Bad::NulError => Err(HandlerError::retryable("bad\0byte")),
        Bad::NulChain => Err(HandlerError::retryable(Outer(std::io::Error::other(
            "inner\0byte",
        )))),
        Bad::NulPanic => panic!("boom\0"),
        Bad::LongError => Err(HandlerError::retryable("x".repeat(1 << 20))),
        Bad::SnoozeForEver => Err(HandlerError::snooze(Duration::MAX)),
        Bad::Refused => Err(HandlerError::retryable("REJECT-ME")),
        Bad::NulFollowUp => {
            let published = ctx.publish(SnoozeThenRun {
                key: "nul\0key".into(),
                ms: 0,
            });
            match published {
                Err(e @ PublishError::Unstorable { .. }) => Err(HandlerError::permanent(e)),
                other => Err(HandlerError::permanent(format!(
                    "expected an unstorable payload, got {other:?}"
                ))),
            }
        }
    }
}

async fn attempt_error(db: &pgoutbox::testing::TestDatabase, id: OperationId) -> (String, String) {
    sqlx::query_as("SELECT error, coalesce(error_chain::text, '') FROM pgoutbox.attempts WHERE operation_id = $1")
        .bind(id.as_i64())
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn outcomes_postgres_cannot_store_as_they_are_are_made_storable() {
    let db = test_db().await;
    let system = start(
        settings(&db),
        WorkflowRouter::new()
            .operation::<Unstorable>()
            .operation::<SnoozeThenRun>(),
    )
    .await;
    let mut ids = Vec::new();
    for bad in [
        Bad::NulError,
        Bad::NulChain,
        Bad::NulPanic,
        Bad::LongError,
        Bad::SnoozeForEver,
        Bad::NulFollowUp,
    ] {
        ids.push(publish_one(&db, Unstorable { bad }).await);
    }
    // Every attempt ends; none is left `running` for ever.
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome IS NOT NULL",
        6,
        WITHIN,
    )
    .await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations WHERE status = 'running'"
        )
        .await,
        0
    );
    let [nul, chain, panic, long, snooze, follow_up] = ids[..] else {
        unreachable!()
    };
    assert_eq!(status(&db, nul).await, "dead");
    assert_eq!(attempt_error(&db, nul).await.0, "bad\\0byte");
    let (_, stored_chain) = attempt_error(&db, chain).await;
    assert!(stored_chain.contains(r"inner\\0byte"), "{stored_chain}");
    assert!(attempt_error(&db, panic).await.0.contains(r"boom\0"));
    let (error, _) = attempt_error(&db, long).await;
    assert!(error.len() < 17 * 1024, "{}", error.len());
    assert!(error.contains("[truncated by pgoutbox:"), "{error}");
    assert_eq!(status(&db, snooze).await, "pending");
    let (error, _) = attempt_error(&db, snooze).await;
    assert!(error.contains("clamped"), "{error}");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations
             WHERE run_at > now() + interval '99 years' AND status = 'pending'"
        )
        .await,
        1
    );
    assert_eq!(status(&db, follow_up).await, "dead");
    let (error, _) = attempt_error(&db, follow_up).await;
    assert!(error.contains("cannot store the payload"), "{error}");
    assert!(error.contains("$.key"), "{error}");
    system.stop().await.unwrap();
}

#[tokio::test]
async fn an_outcome_postgres_refuses_is_recorded_as_a_failure_naming_why() {
    let db = test_db().await;
    // Stands for any write that retrying cannot cure (SQLSTATE 23514).
    sqlx::query(
        "ALTER TABLE pgoutbox.attempts ADD CONSTRAINT test_refuses
         CHECK (error IS NULL OR error NOT LIKE '%REJECT-ME%')",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let system = start(
        settings(&db),
        WorkflowRouter::new().operation::<Unstorable>(),
    )
    .await;
    let id = publish_one(&db, Unstorable { bad: Bad::Refused }).await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'dead'",
        1,
        WITHIN,
    )
    .await;
    assert_eq!(outcomes(&db, id).await, [Some("failed".into())]);
    let (error, _) = attempt_error(&db, id).await;
    assert!(
        error.contains("could not store the outcome") && error.contains("23514"),
        "{error}"
    );
    system.stop().await.unwrap();
}

#[tokio::test]
async fn stop_returns_within_shutdown_wait_and_its_margin_whatever_the_database_does() {
    let db = test_db().await;
    let mut s = settings(&db);
    // A lease longer than the whole stop: the lock below also stops lease
    // renewal, and with a short lease the handler would be aborted (rightly)
    // before its lease expired, before `shutdown_wait` was up.
    s.workflow_system.lease = Duration::from_secs(30);
    let wait = s.workflow_system.shutdown_wait;
    let system = start(s, WorkflowRouter::new().operation::<SnoozeThenRun>()).await;
    let k = key();
    note(&k, OperationId::from_i64(0)); // no snooze: run at once
    publish_one(&db, SnoozeThenRun { key: k, ms: 60_000 }).await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'running'",
        1,
        WITHIN,
    )
    .await;
    // No outcome can be written while this lock is held.
    let mut blocker = db.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE pgoutbox.attempts IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let limit = wait + pgoutbox::STOP_MARGIN + Duration::from_secs(2);
    let stopped = tokio::time::timeout(limit, system.stop()).await;
    let took = started.elapsed();
    blocker.rollback().await.unwrap();
    assert!(stopped.is_ok(), "stop() did not return within {limit:?}");
    assert!(
        took >= wait,
        "stop() waited for the handler first ({took:?})"
    );
}

#[tokio::test]
async fn a_payload_postgres_cannot_store_is_refused_at_publish() {
    let db = test_db().await;
    let mut tx = db.pool().begin().await.unwrap();
    let refused = pgoutbox::publish(
        &mut tx,
        SnoozeThenRun {
            key: "a\0b".into(),
            ms: 0,
        },
    )
    .await;
    match refused {
        Err(e @ PublishError::Unstorable { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("$.key") && message.contains("NUL"),
                "{message}"
            );
        }
        other => panic!("expected PublishError::Unstorable, got {other:?}"),
    }
    let many = pgoutbox::Publisher::default()
        .publish_many(
            &mut tx,
            [
                SnoozeThenRun {
                    key: "fine".into(),
                    ms: 0,
                },
                SnoozeThenRun {
                    key: "\0".into(),
                    ms: 0,
                },
            ],
            PublishOptions::new(),
        )
        .await;
    assert!(
        matches!(many, Err(PublishError::Unstorable { .. })),
        "{many:?}"
    );
    let far = pgoutbox::Publisher::default()
        .publish_with(
            &mut tx,
            SnoozeThenRun {
                key: "fine".into(),
                ms: 0,
            },
            PublishOptions::new().delay(Duration::MAX),
        )
        .await;
    assert!(
        matches!(far, Err(PublishError::InvalidOption { .. })),
        "{far:?}"
    );
    // Nothing failed inside the transaction: it still works.
    tx.commit().await.unwrap();
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations").await,
        0
    );
}

#[tokio::test]
async fn a_batched_success_answers_each_attempt_not_its_operation() {
    // Attempt 1 of an operation ended without this worker hearing of it
    // (its lease ran out and the same process claimed attempt 2); both
    // executors' successes then reach the completer in one batch. Only
    // attempt 2's may be answered "recorded": attempt 1's executor must not
    // believe its success was written.
    let db = test_db().await;
    let id = publish_one(&db, SnoozeThenRun { key: key(), ms: 0 }).await;
    let worker = uuid::Uuid::new_v4();
    sqlx::query(
        "UPDATE pgoutbox.operations SET status = 'running', attempt = 2, lease_owner = $2,
                lease_expires_at = now() + interval '1 minute' WHERE id = $1",
    )
    .bind(id.as_i64())
    .bind(worker)
    .execute(db.pool())
    .await
    .unwrap();
    let attempt_ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO pgoutbox.attempts (operation_id, operation_name, number, worker_id, started_at)
         SELECT $1, 'hardening.snooze_then_run', n, $2, now() FROM generate_series(1, 2) n
         RETURNING id",
    )
    .bind(id.as_i64())
    .bind(worker)
    .fetch_all(db.pool())
    .await
    .unwrap();
    let (stale, fresh) = (attempt_ids[0], attempt_ids[1]);

    let batch = runtime_statement(include_str!(
        "../../pgoutbox/src/store/sql/complete_successes.sql"
    ));
    let recorded: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(batch))
        .bind(vec![id.as_i64(), id.as_i64()])
        .bind(vec![1_i32, 2])
        .bind(vec![stale, fresh])
        .bind(worker)
        .bind(false)
        .bind(vec![None::<serde_json::Value>, None])
        .bind(vec![None::<String>, None])
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(recorded, [fresh], "only the current attempt is recorded");
    assert_eq!(status(&db, id).await, "succeeded");
    assert_eq!(outcomes(&db, id).await, [None, Some("succeeded".into())]);
}
