//! The workflow system against a real database: one test per invariant,
//! and the paths of every kind of outcome.
//!
//! Most bodies take a [`Setup`] and run twice (see `both_ways!` at the
//! end): straight to PostgreSQL (`direct::…`) and through pgbouncer in
//! transaction pooling mode (`through_pgbouncer::…`), where the system and
//! the publishers use pgbouncer, LISTEN a direct URL, and statements are
//! unnamed (`database.prepared_statements = false`).

use std::time::Duration;

use pgoutbox::prelude::*;
use pgoutbox::{StartError, WorkflowSystem};

use crate::ops::{
    Behaviour, IdempotentSleep, Orphan, Record, SendMail, Sleep, TxBehaviour, Work, effects,
};
use crate::support::{
    Setup, count, outcomes, publish_one, settings, status, test_db, wait_for_count,
};

const WITHIN: Duration = Duration::from_secs(10);

fn all_test_ops() -> WorkflowRouter {
    WorkflowRouter::new()
        .operation::<Work>()
        .operation::<SendMail>()
        .operation::<Record>()
        .operation::<Sleep>()
        .operation::<IdempotentSleep>()
}

/// A system running every test operation with `settings`: those of a
/// [`Setup`] (`setup.settings()`) or of a bare database (`settings(&db)`),
/// changed as the test needs.
async fn start(settings: pgoutbox::Settings) -> WorkflowSystem {
    WorkflowSystem::builder(settings)
        .router(all_test_ops())
        .start()
        .await
        .expect("system starts")
}

async fn business_table(db: &pgoutbox::testing::TestDatabase) {
    sqlx::query("CREATE TABLE business (label text NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn success_is_recorded_with_its_attempt(setup: Setup) {
    let db = &setup.db;
    let system = start(setup.settings()).await;
    let k = key();
    let id = setup
        .publish_one(Work {
            key: k.clone(),
            behaviour: Behaviour::Succeed,
        })
        .await;
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        1,
        WITHIN,
    )
    .await;
    assert_eq!(outcomes(db, id).await, [Some("succeeded".to_owned())]);
    assert_eq!(effects(&k), [id.as_i64()]);
    let (worker, finished): (uuid::Uuid, bool) = sqlx::query_as(
        "SELECT worker_id, finished_at IS NOT NULL FROM pgoutbox.attempts WHERE operation_id = $1",
    )
    .bind(id.as_i64())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!((worker, finished), (system.worker_id(), true));
    system.stop().await.unwrap();
}

async fn retryable_failures_are_retried_with_backoff_and_every_attempt_is_visible(setup: Setup) {
    let db = &setup.db;
    let system = start(setup.settings()).await;
    let k = key();
    let id = setup
        .publish_one(Work {
            key: k.clone(),
            behaviour: Behaviour::FailUntil(3),
        })
        .await;
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        1,
        WITHIN,
    )
    .await;
    assert_eq!(
        outcomes(db, id).await,
        [
            Some("failed".into()),
            Some("failed".into()),
            Some("succeeded".into())
        ]
    );
    let chain: serde_json::Value = sqlx::query_scalar(
        "SELECT error_chain FROM pgoutbox.attempts WHERE operation_id = $1 ORDER BY id LIMIT 1",
    )
    .bind(id.as_i64())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(chain, serde_json::json!(["attempt 1 failed"]));
    assert_eq!(effects(&k).len(), 3);
    system.stop().await.unwrap();
}

async fn attempts_run_out_then_dead(setup: Setup) {
    let db = &setup.db;
    let system = start(setup.settings()).await;
    let id = setup
        .publish_one(Work {
            key: key(),
            behaviour: Behaviour::FailUntil(99),
        })
        .await;
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'dead'",
        1,
        WITHIN,
    )
    .await;
    assert_eq!(outcomes(db, id).await.len(), 3, "max_attempts = 3");
    system.stop().await.unwrap();
}

async fn a_permanent_error_is_dead_at_once(setup: Setup) {
    let db = &setup.db;
    let system = start(setup.settings()).await;
    let id = setup
        .publish_one(Work {
            key: key(),
            behaviour: Behaviour::Permanent,
        })
        .await;
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'dead'",
        1,
        WITHIN,
    )
    .await;
    assert_eq!(outcomes(db, id).await, [Some("failed".to_owned())]);
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM pgoutbox.operations WHERE id = $1")
            .bind(id.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(error, "the card number is invalid");
    system.stop().await.unwrap();
}

async fn a_panic_is_a_recorded_failure_not_a_crash(setup: Setup) {
    let db = &setup.db;
    let system = start(setup.settings()).await;
    let id = setup
        .publish_one(Work {
            key: key(),
            behaviour: Behaviour::Panic,
        })
        .await;
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'dead'",
        1,
        WITHIN,
    )
    .await;
    let errors: Vec<String> = sqlx::query_scalar(
        "SELECT error FROM pgoutbox.attempts WHERE operation_id = $1 ORDER BY id",
    )
    .bind(id.as_i64())
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(errors.len(), 3);
    assert!(
        errors
            .iter()
            .all(|e| e == "the handler panicked: handler exploded on purpose"),
        "{errors:?}"
    );
    // The worker is still alive and working.
    let k = key();
    setup
        .publish_one(Work {
            key: k.clone(),
            behaviour: Behaviour::Succeed,
        })
        .await;
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        1,
        WITHIN,
    )
    .await;
    system.stop().await.unwrap();
}

async fn a_snooze_does_not_use_up_an_attempt(setup: Setup) {
    let db = &setup.db;
    let system = start(setup.settings()).await;
    let k = key();
    let id = setup
        .publish_one(Work {
            key: k.clone(),
            behaviour: Behaviour::SnoozeOnce,
        })
        .await;
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        1,
        WITHIN,
    )
    .await;
    assert_eq!(
        outcomes(db, id).await,
        [Some("snoozed".into()), Some("succeeded".into())]
    );
    // Two attempts, numbered 1 and 2 (numbers are never reused), of which
    // one was snoozed: one counts against `max_attempts`.
    let (attempt, snoozes): (i32, i32) =
        sqlx::query_as("SELECT attempt, snoozes FROM pgoutbox.operations WHERE id = $1")
            .bind(id.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!((attempt, snoozes), (2, 1));
    system.stop().await.unwrap();
}

#[tokio::test]
async fn a_payload_that_no_longer_decodes_is_dead_at_once_naming_the_schema() {
    let db = test_db().await;
    let system = start(settings(&db)).await;
    // Inserted behind pgoutbox's back, as an older binary might have.
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts) \
         VALUES ('test.work', '{\"key\": 5}', 'oldhash0000000000', 3) RETURNING id",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'dead'",
        1,
        WITHIN,
    )
    .await;
    let (error, attempts): (String, i64) = sqlx::query_as(
        "SELECT o.last_error, (SELECT count(*) FROM pgoutbox.attempts a WHERE a.operation_id = o.id) \
         FROM pgoutbox.operations o WHERE o.id = $1",
    )
    .bind(id)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(attempts, 1, "no retries burned");
    assert!(
        error.contains("no longer decodes") && error.contains("oldhash00000"),
        "{error}"
    );
    system.stop().await.unwrap();
}

async fn a_transactional_success_commits_its_writes_and_its_success_together(setup: Setup) {
    let db = &setup.db;
    business_table(db).await;
    let system = start(setup.settings()).await;
    let id = setup
        .publish_one(Record {
            label: "ok".into(),
            behaviour: TxBehaviour::Succeed,
        })
        .await;
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        1,
        WITHIN,
    )
    .await;
    assert_eq!(
        count(db, "SELECT count(*) FROM business WHERE label = 'ok'").await,
        1
    );
    assert_eq!(outcomes(db, id).await, [Some("succeeded".to_owned())]);
    system.stop().await.unwrap();
}

async fn a_transactional_failure_leaves_neither_its_writes_nor_a_success(setup: Setup) {
    let db = &setup.db;
    business_table(db).await;
    let system = start(setup.settings()).await;
    let id = setup
        .publish_one(Record {
            label: "x".into(),
            behaviour: TxBehaviour::FailAfterWrite,
        })
        .await;
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'dead'",
        1,
        WITHIN,
    )
    .await;
    assert_eq!(count(db, "SELECT count(*) FROM business").await, 0);
    assert_eq!(
        outcomes(db, id).await,
        [Some("failed".into()), Some("failed".into())]
    );
    system.stop().await.unwrap();
}

#[tokio::test]
async fn a_handler_that_commits_behind_the_dispatchers_back_is_not_a_success() {
    let db = test_db().await;
    business_table(&db).await;
    let system = start(settings(&db)).await;
    let id = publish_one(
        &db,
        Record {
            label: "sneaky".into(),
            behaviour: TxBehaviour::CommitBehindTheBack,
        },
    )
    .await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'dead'",
        1,
        WITHIN,
    )
    .await;
    assert_eq!(status(&db, id).await, "dead");
    let error: String =
        sqlx::query_scalar("SELECT error FROM pgoutbox.attempts WHERE operation_id = $1")
            .bind(id.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(
        error.contains("ended the dispatcher's transaction"),
        "{error}"
    );
    system.stop().await.unwrap();
}

async fn follow_ups_commit_with_the_success_and_carry_the_tree(setup: Setup) {
    let db = &setup.db;
    business_table(db).await;
    let system = start(setup.settings()).await;
    let k = key();
    let root = setup
        .publish_one(Work {
            key: k.clone(),
            behaviour: Behaviour::FollowUp,
        })
        .await;
    let tx_root = setup
        .publish_one(Record {
            label: k.clone(),
            behaviour: TxBehaviour::FollowUp,
        })
        .await;
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        4,
        WITHIN,
    )
    .await;
    let children: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT parent_id, root_id FROM pgoutbox.operations WHERE name = 'mail.send' ORDER BY parent_id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        children,
        [
            (root.as_i64(), root.as_i64()),
            (tx_root.as_i64(), tx_root.as_i64())
        ]
    );
    system.stop().await.unwrap();
}

async fn a_timeout_stalls_a_non_idempotent_operation_and_retries_an_idempotent_one_until_it_stalls_too(
    setup: Setup,
) {
    let db = &setup.db;
    let system = start(setup.settings()).await;
    let stalled = setup
        .publish_one(Sleep {
            key: key(),
            ms: 5_000,
        })
        .await;
    let retried = setup
        .publish_one(IdempotentSleep {
            key: key(),
            ms: 5_000,
        })
        .await;
    // The idempotent one is retried; out of attempts, its unknown outcome
    // waits for an operator too.
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'stalled'",
        2,
        WITHIN,
    )
    .await;
    assert_eq!(outcomes(db, stalled).await, [Some("timed_out".to_owned())]);
    assert_eq!(
        outcomes(db, retried).await,
        [Some("timed_out".into()), Some("timed_out".into())]
    );
    system.stop().await.unwrap();
}

async fn run_at_is_respected(setup: Setup) {
    let db = &setup.db;
    let system = start(setup.settings()).await;
    let k = key();
    let mut tx = setup.pool().begin().await.unwrap();
    setup
        .publisher()
        .publish_with(
            &mut tx,
            Work {
                key: k.clone(),
                behaviour: Behaviour::Succeed,
            },
            PublishOptions::new().delay(Duration::from_millis(1500)),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(effects(&k).is_empty(), "ran before its run_at");
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        1,
        WITHIN,
    )
    .await;
    system.stop().await.unwrap();
}

async fn pickup_by_notify_is_faster_than_the_poll(setup: Setup) {
    let db = &setup.db;
    let mut s = setup.settings();
    s.workflow_system.poll_interval = Duration::from_secs(30);
    let system = start(s).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    setup
        .publish_one(Work {
            key: key(),
            behaviour: Behaviour::Succeed,
        })
        .await;
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        1,
        Duration::from_secs(5),
    )
    .await;
    system.stop().await.unwrap();
}

/// Concurrent publishers' notifications are coalesced (only one publishing
/// transaction per name notifies at a time); the others' operations are
/// still picked up without waiting for the poll.
async fn concurrent_publishes_are_all_picked_up_without_the_poll(setup: Setup) {
    let mut s = setup.settings();
    s.workflow_system.poll_interval = Duration::from_secs(30);
    let system = start(s).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let setup = std::sync::Arc::new(setup);
    let mut publishers = Vec::new();
    for _ in 0..8 {
        let setup = std::sync::Arc::clone(&setup);
        publishers.push(tokio::spawn(async move {
            for _ in 0..10 {
                setup
                    .publish_one(Work {
                        key: key(),
                        behaviour: Behaviour::Succeed,
                    })
                    .await;
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    wait_for_count(
        &setup.db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        80,
        Duration::from_secs(10),
    )
    .await;
    system.stop().await.unwrap();
}

/// A transaction that published and stays open holds its name's wake-up
/// lock for its slot; another publisher's operation, published in a later
/// slot, is still picked up without waiting for the poll.
async fn a_long_publishing_transaction_does_not_hold_back_other_wake_ups(setup: Setup) {
    let db = &setup.db;
    let mut s = setup.settings();
    s.workflow_system.poll_interval = Duration::from_secs(30);
    let system = start(s).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut long = setup.pool().begin().await.unwrap();
    setup
        .publisher()
        .publish(
            &mut long,
            Work {
                key: key(),
                behaviour: Behaviour::Succeed,
            },
        )
        .await
        .unwrap();
    // Past the long transaction's 10 ms slot.
    tokio::time::sleep(Duration::from_millis(50)).await;
    setup
        .publish_one(Work {
            key: key(),
            behaviour: Behaviour::Succeed,
        })
        .await;
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        1,
        Duration::from_secs(5),
    )
    .await;
    long.commit().await.unwrap();
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        2,
        Duration::from_secs(5),
    )
    .await;
    system.stop().await.unwrap();
}

/// The wake-up is decided at commit (migration 13): a publish that rolls
/// back sends no notification and takes no wake-up lock, so another
/// transaction that published in the same 10 ms slot and commits later is
/// still picked up without waiting for the poll (issue 26, item 2).
async fn a_rolled_back_publish_neither_notifies_nor_holds_back_a_committed_one(setup: Setup) {
    let db = &setup.db;
    let mut s = setup.settings();
    s.workflow_system.poll_interval = Duration::from_secs(30);
    let system = start(s).await;
    let mut listener = sqlx::postgres::PgListener::connect(&db.url())
        .await
        .unwrap();
    listener.listen("pgoutbox").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publisher = setup.publisher();
    let mut rolled_back = setup.pool().begin().await.unwrap();
    let mut committed = setup.pool().begin().await.unwrap();
    publisher
        .publish(
            &mut rolled_back,
            Work {
                key: key(),
                behaviour: Behaviour::Succeed,
            },
        )
        .await
        .unwrap();
    publisher
        .publish(
            &mut committed,
            Work {
                key: key(),
                behaviour: Behaviour::Succeed,
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(40)).await;
    rolled_back.rollback().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.recv())
            .await
            .is_err(),
        "a rolled-back publish sent a notification"
    );
    committed.commit().await.unwrap();
    let notification = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("the committed publish notified")
        .unwrap();
    assert_eq!(notification.payload(), <Work as Operation>::NAME);
    // Far below the 30 s poll: picked up by the notification.
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        1,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pgoutbox.operations")
            .fetch_one(setup.pool())
            .await
            .unwrap(),
        1,
        "only the committed publish is recorded"
    );
    system.stop().await.unwrap();
}

async fn pickup_by_polling_with_notify_disabled(setup: Setup) {
    let db = &setup.db;
    let mut s = setup.settings();
    s.workflow_system.notify = false;
    let publisher = pgoutbox::Publisher::from_settings(&s).unwrap();
    let system = start(s).await;
    let mut listener = sqlx::postgres::PgListener::connect(&db.url())
        .await
        .unwrap();
    listener.listen("pgoutbox").await.unwrap();
    let mut tx = setup.pool().begin().await.unwrap();
    publisher
        .publish(
            &mut tx,
            Work {
                key: key(),
                behaviour: Behaviour::Succeed,
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.recv())
            .await
            .is_err(),
        "no notification was sent"
    );
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        1,
        WITHIN,
    )
    .await;
    system.stop().await.unwrap();
}

async fn the_listener_killed_mid_run_does_not_stop_the_work(setup: Setup) {
    let db = &setup.db;
    let mut s = setup.settings();
    s.database.application_name = "pgoutbox-kill-test".into();
    s.workflow_system.poll_interval = Duration::from_secs(2);
    let system = start(s).await;
    let mut kills = 0;
    for _ in 0..5 {
        // Wait for the listener to be (re)connected, then kill it.
        let deadline = std::time::Instant::now() + WITHIN;
        loop {
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name = 'pgoutbox-kill-test-listener'",
            )
            .fetch_all(db.pool())
            .await
            .unwrap();
            if !killed.is_empty() {
                kills += killed.len();
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the listener never reconnected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        setup
            .publish_one(Work {
                key: key(),
                behaviour: Behaviour::Succeed,
            })
            .await;
    }
    assert!(kills >= 5, "the listener was killed {kills} times");
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        5,
        WITHIN,
    )
    .await;
    system.stop().await.unwrap();
}

async fn an_operation_no_worker_handles_is_never_claimed(setup: Setup) {
    let db = &setup.db;
    let id = setup.publish_one(Orphan { n: 1 }).await;
    let system = start(setup.settings()).await;
    setup
        .publish_one(Work {
            key: key(),
            behaviour: Behaviour::Succeed,
        })
        .await;
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        1,
        WITHIN,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(db, id).await, "pending");
    assert!(outcomes(db, id).await.is_empty());
    system.stop().await.unwrap();
}

async fn graceful_stop_waits_then_aborts_and_records_in_doubt_attempts(setup: Setup) {
    let db = &setup.db;
    let mut s = setup.settings();
    // Long enough for the quick one even on a loaded machine.
    s.workflow_system.shutdown_wait = Duration::from_secs(2);
    let system = start(s).await;
    let quick = setup
        .publish_one(Work {
            key: key(),
            behaviour: Behaviour::SleepMs(100),
        })
        .await;
    let slow = setup
        .publish_one(Work {
            key: key(),
            behaviour: Behaviour::SleepMs(60_000),
        })
        .await;
    wait_for_count(db, "SELECT count(*) FROM pgoutbox.attempts", 2, WITHIN).await;
    let report = system.stop().await.unwrap();
    assert_eq!(report.aborted, 1);
    assert_eq!(status(db, quick).await, "succeeded");
    assert_eq!(status(db, slow).await, "stalled");
    assert_eq!(outcomes(db, slow).await, [Some("aborted".to_owned())]);
    let stopped: bool = sqlx::query_scalar("SELECT stopped_at IS NOT NULL FROM pgoutbox.workers")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(stopped);
}

#[tokio::test]
async fn start_up_refuses_a_database_at_another_version() {
    let db = test_db().await;
    sqlx::query("DELETE FROM pgoutbox.pgoutbox_migrations")
        .execute(db.pool())
        .await
        .unwrap();
    let err = WorkflowSystem::builder(settings(&db))
        .router(all_test_ops())
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::Migration(_)), "{err}");
    let expected = format!(
        "at migration version 0, but this binary expects version {}",
        pgoutbox_migrate::latest_version()
    );
    assert!(err.to_string().contains(&expected), "{err}");
}

#[tokio::test]
async fn start_up_refuses_a_pool_too_small_for_n_workers() {
    let db = test_db().await;
    let mut s = settings(&db);
    s.database.pool_max = 5;
    s.workflow_system.n_workers = 4;
    let err = WorkflowSystem::builder(s)
        .router(all_test_ops())
        .start()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the connection pool is too small: it allows 5 connections, but `n_workers` = 4 needs 6 \
         (4 for handlers, 2 for the runtime); raise `database.pool_max` or lower `workflow_system.n_workers`"
    );
}

#[tokio::test]
async fn start_up_refuses_a_router_that_selects_nothing() {
    let db = test_db().await;
    let err = WorkflowSystem::builder(settings(&db))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::NoOperations), "{err}");
}

async fn a_stolen_lease_rolls_back_the_transactional_handler_business_writes_included(
    setup: Setup,
) {
    let db = &setup.db;
    business_table(db).await;
    let system = start(setup.settings()).await;
    let id = setup
        .publish_one(Record {
            label: "late".into(),
            behaviour: TxBehaviour::SleepMs(700),
        })
        .await;
    wait_for_count(db, "SELECT count(*) FROM pgoutbox.attempts", 1, WITHIN).await;
    // Another owner takes the lease while the handler runs (as a rescuer
    // and a second worker would after an expiry).
    let intruder = uuid::Uuid::new_v4();
    sqlx::query(
        "UPDATE pgoutbox.operations SET lease_owner = $2, lease_expires_at = now() + interval '1 hour' \
         WHERE id = $1",
    )
        .bind(id.as_i64())
        .bind(intruder)
        .execute(db.pool())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        count(db, "SELECT count(*) FROM business").await,
        0,
        "the stale worker's writes were rolled back"
    );
    let (status, owner): (String, Option<uuid::Uuid>) =
        sqlx::query_as("SELECT status, lease_owner FROM pgoutbox.operations WHERE id = $1")
            .bind(id.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), owner),
        ("running", Some(intruder)),
        "the newer owner's state stands"
    );
    assert_eq!(
        outcomes(db, id).await,
        [None],
        "the stale worker recorded nothing"
    );
    system.stop().await.unwrap();
}

async fn a_worker_that_cannot_renew_its_lease_aborts_its_handlers(setup: Setup) {
    let db = &setup.db;
    let system = start(setup.settings()).await;
    let k = key();
    let id = setup
        .publish_one(Work {
            key: k.clone(),
            behaviour: Behaviour::SleepMs(30_000),
        })
        .await;
    wait_for_count(db, "SELECT count(*) FROM pgoutbox.attempts", 1, WITHIN).await;
    // Hold the worker's row: its heartbeat blocks, so leases are not renewed.
    let mut blocker = db.pool().begin().await.unwrap();
    sqlx::query("SELECT id FROM pgoutbox.workers FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    // Lease 1s: the handler is aborted within it, long before its 30s sleep.
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'stalled'",
        1,
        Duration::from_secs(5),
    )
    .await;
    let outcome = outcomes(db, id).await;
    assert!(
        outcome == [Some("aborted".to_owned())] || outcome == [Some("lost".to_owned())],
        "{outcome:?}"
    );
    blocker.rollback().await.unwrap();
    system.stop().await.unwrap();
}

#[tokio::test]
async fn the_janitor_purges_old_finished_operations_and_keeps_the_rest() {
    let db = test_db().await;
    let old = publish_one(
        &db,
        Work {
            key: key(),
            behaviour: Behaviour::Succeed,
        },
    )
    .await;
    let waiting = publish_one(&db, Orphan { n: 1 }).await;
    let stalled = publish_one(&db, Orphan { n: 2 }).await;
    sqlx::query(
        "UPDATE pgoutbox.operations SET status = 'succeeded', finished_at = now() - interval '10 days' WHERE id = $1",
    )
    .bind(old.as_i64())
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "UPDATE pgoutbox.operations SET status = 'stalled', updated_at = now() - interval '10 days' WHERE id = $1",
    )
    .bind(stalled.as_i64())
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO pgoutbox.attempts (operation_id, operation_name, number, worker_id, outcome, finished_at) \
         VALUES ($1, 'test.work', 1, gen_random_uuid(), 'succeeded', now() - interval '10 days')",
    )
    .bind(old.as_i64())
    .execute(db.pool())
    .await
    .unwrap();
    let mut s = settings(&db);
    s.workflow_system.retention.operations = Duration::from_hours(24);
    s.workflow_system.retention.interval = Duration::from_millis(200);
    s.workflow_system.retention.batch_size = 1;
    let system = start(s).await;
    wait_for_count(&db, "SELECT count(*) FROM pgoutbox.operations", 2, WITHIN).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&db, waiting).await, "pending");
    assert_eq!(
        status(&db, stalled).await,
        "stalled",
        "stalled is never purged automatically"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.attempts").await,
        1,
        "history has its own retention"
    );
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_bad_rows_behind_pgoutboxs_back_disturb_nothing() {
    let db = test_db().await;
    // Wrong shapes for `test.work`, names nobody handles, and one huge but
    // valid payload, all inserted without pgoutbox.
    sqlx::query(
        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts) \
         SELECT 'test.work', (ARRAY['\"just a string\"', '[1, 2]', 'null', '{\"key\": 5}', \
                '{\"key\": \"k\", \"behaviour\": \"Explode\"}', '{}', '{\"behaviour\": \"Succeed\"}'])[1 + g % 7]::jsonb, \
                'forged', 3 \
         FROM generate_series(1, 2000) AS g",
    )
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts) \
         SELECT 'test.nobody_handles_this', jsonb_build_object('n', g), 'forged', 3 FROM generate_series(1, 2000) AS g",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let huge = "x".repeat(5 * 1024 * 1024);
    sqlx::query(
        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts) \
         VALUES ('test.work', jsonb_build_object('key', $1::text, 'behaviour', 'Succeed'), 'forged', 3)",
    )
    .bind(&huge)
    .execute(db.pool())
    .await
    .unwrap();
    let system = start(settings(&db)).await;
    let k = key();
    for _ in 0..10 {
        publish_one(
            &db,
            Work {
                key: k.clone(),
                behaviour: Behaviour::Succeed,
            },
        )
        .await;
    }
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE name = 'test.work' AND status IN ('pending', 'retrying', 'running')",
        0,
        Duration::from_mins(2),
    )
    .await;
    // Every wrong shape is dead after one attempt, with a message naming the mismatch.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations WHERE status = 'dead'"
        )
        .await,
        2000
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations o WHERE o.status = 'dead' AND \
                    (SELECT count(*) FROM pgoutbox.attempts a WHERE a.operation_id = o.id) <> 1"
        )
        .await,
        0,
        "no retries burned, no loop"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations WHERE status = 'dead' AND last_error NOT LIKE '%no longer decodes%'").await,
        0
    );
    // The huge payload and the good ones succeeded.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'"
        )
        .await,
        11
    );
    assert_eq!(effects(&k).len(), 10);
    // Names nobody handles are never claimed.
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations WHERE name = 'test.nobody_handles_this' AND status = 'pending' AND attempt = 0").await,
        2000
    );
    system.stop().await.unwrap();
}

async fn three_systems_run_each_operation_exactly_once(setup: Setup) {
    const N: i64 = 300;
    let db = &setup.db;
    let k = key();
    let mut tx = setup.pool().begin().await.unwrap();
    let work = (0..N).map(|_| Work {
        key: k.clone(),
        behaviour: Behaviour::Succeed,
    });
    let ids = setup
        .publisher()
        .publish_many(&mut tx, work, PublishOptions::new())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids.len(), 300);
    let systems = [
        start(setup.settings()).await,
        start(setup.settings()).await,
        start(setup.settings()).await,
    ];
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        N,
        Duration::from_mins(1),
    )
    .await;
    for system in systems {
        system.stop().await.unwrap();
    }
    let mut ran = effects(&k);
    ran.sort_unstable();
    ran.dedup();
    assert_eq!(effects(&k).len(), ran.len(), "no operation ran twice");
    assert_eq!(i64::try_from(ran.len()).unwrap(), N, "every operation ran");
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM pgoutbox.attempts WHERE outcome = 'succeeded'"
        )
        .await,
        N
    );
    assert_eq!(count(db, "SELECT count(*) FROM pgoutbox.attempts").await, N);
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM pgoutbox.workers WHERE stopped_at IS NOT NULL"
        )
        .await,
        3
    );
}

/// Each body above that takes a [`Setup`] becomes two tests: `direct::…`
/// and `through_pgbouncer::…`.
macro_rules! both_ways {
    ($($name:ident),* $(,)?) => {
        mod direct {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::support::Setup::direct().await).await;
                }
            )*
        }

        /// `database.url` through pgbouncer (transaction pooling),
        /// `database.listen_url` direct, `database.prepared_statements =
        /// false`; publishing through pgbouncer too. Run only with
        /// `PGOUTBOX_TEST_PGBOUNCER=1` (see `crate::pgbouncer`).
        mod through_pgbouncer {
            $(
                #[tokio::test]
                async fn $name() {
                    if !crate::pgbouncer::wanted(concat!("through_pgbouncer::", stringify!($name))) {
                        return;
                    }
                    super::$name(crate::support::Setup::through_pgbouncer().await).await;
                }
            )*
        }
    };
}

both_ways!(
    success_is_recorded_with_its_attempt,
    retryable_failures_are_retried_with_backoff_and_every_attempt_is_visible,
    attempts_run_out_then_dead,
    a_permanent_error_is_dead_at_once,
    a_panic_is_a_recorded_failure_not_a_crash,
    a_snooze_does_not_use_up_an_attempt,
    a_transactional_success_commits_its_writes_and_its_success_together,
    a_transactional_failure_leaves_neither_its_writes_nor_a_success,
    follow_ups_commit_with_the_success_and_carry_the_tree,
    a_timeout_stalls_a_non_idempotent_operation_and_retries_an_idempotent_one_until_it_stalls_too,
    run_at_is_respected,
    pickup_by_notify_is_faster_than_the_poll,
    concurrent_publishes_are_all_picked_up_without_the_poll,
    a_long_publishing_transaction_does_not_hold_back_other_wake_ups,
    a_rolled_back_publish_neither_notifies_nor_holds_back_a_committed_one,
    pickup_by_polling_with_notify_disabled,
    the_listener_killed_mid_run_does_not_stop_the_work,
    an_operation_no_worker_handles_is_never_claimed,
    graceful_stop_waits_then_aborts_and_records_in_doubt_attempts,
    a_stolen_lease_rolls_back_the_transactional_handler_business_writes_included,
    a_worker_that_cannot_renew_its_lease_aborts_its_handlers,
    three_systems_run_each_operation_exactly_once,
);
