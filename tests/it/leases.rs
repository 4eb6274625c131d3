//! In-flight bookkeeping and lease renewal under stress: one process
//! re-claiming an operation whose previous executor is still finishing,
//! heartbeats that stall, rows locked by someone else, and the reports of
//! work that no live worker would ever claim.

use std::time::Duration;

use pgoutbox::WorkflowSystem;
use pgoutbox::prelude::*;

use crate::ops::{Behaviour, Work};
use crate::support::{outcomes, publish_one, settings, status, test_db, wait_for_count};

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn router() -> WorkflowRouter {
    WorkflowRouter::new().operation::<Work>()
}

/// An operation that snoozed is claimed again by the same process while
/// the executor of its snoozed attempt still lingers: that stale executor
/// must neither take the new attempt's place in the running set nor
/// remove it, so the new attempt keeps its lease and succeeds.
#[tokio::test]
async fn a_reclaim_while_the_previous_executor_is_still_finishing_keeps_its_lease() {
    let db = test_db().await;
    // Lease 1 s; the snoozed attempt's executor lingers 3 leases, and the
    // next attempt runs 5 s: on a map keyed by operation, its entry is gone
    // after 3 s and its lease expires a second later.
    let system = WorkflowSystem::builder(settings(&db))
        .router(router())
        .linger_after_record(Duration::from_secs(3))
        .start()
        .await
        .expect("system starts");
    let id = publish_one(
        &db,
        Work {
            key: key(),
            behaviour: Behaviour::SnoozeThenSleepMs(5_000),
        },
    )
    .await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status IN ('succeeded', 'stalled')",
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        outcomes(&db, id).await,
        [Some("snoozed".to_owned()), Some("succeeded".to_owned())]
    );
    assert_eq!(status(&db, id).await, "succeeded");
    system.stop().await.unwrap();
}

/// A heartbeat that stalls (its `workers` row locked by another session)
/// renews nothing; the handler must be aborted, and its attempt recorded,
/// with time to spare before its lease expires as the database has it, not
/// at or after the expiry, when another worker may already run it.
#[tokio::test]
async fn a_stalled_heartbeat_aborts_the_handler_before_its_lease_expires() {
    let db = test_db().await;
    let lease = Duration::from_secs(2);
    let mut s = settings(&db);
    s.workflow_system.lease = lease;
    let system = WorkflowSystem::builder(s)
        .router(router())
        .start()
        .await
        .expect("system starts");
    let id = publish_one(
        &db,
        Work {
            key: key(),
            behaviour: Behaviour::SleepMs(60_000),
        },
    )
    .await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts",
        1,
        Duration::from_secs(10),
    )
    .await;
    // Let a renewal or two land, then stall every later one.
    tokio::time::sleep(lease).await;
    let mut blocker = db.pool().begin().await.unwrap();
    sqlx::query("SELECT id FROM pgoutbox.workers FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    // The lease as the database has it: no renewal commits past the lock.
    let mut expiry = None;
    let deadline = std::time::Instant::now() + lease * 3;
    loop {
        let (state, expires): (String, Option<f64>) = sqlx::query_as(
            "SELECT status, extract(epoch FROM lease_expires_at)::float8 \
             FROM pgoutbox.operations WHERE id = $1",
        )
        .bind(id.as_i64())
        .fetch_one(db.pool())
        .await
        .unwrap();
        if state != "running" {
            break;
        }
        expiry = expires.or(expiry);
        assert!(
            std::time::Instant::now() < deadline,
            "still running three leases after the stall"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let expiry = expiry.expect("a lease was seen");
    let (outcome, finished): (Option<String>, Option<f64>) = sqlx::query_as(
        "SELECT outcome, extract(epoch FROM finished_at)::float8 \
         FROM pgoutbox.attempts WHERE operation_id = $1",
    )
    .bind(id.as_i64())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        outcome.as_deref(),
        Some("aborted"),
        "aborted, not rescued as lost"
    );
    let finished = finished.expect("the attempt ended");
    let spare = expiry - finished;
    assert!(
        spare >= (lease / 10).as_secs_f64(),
        "aborted and recorded {spare:.3} s before the lease's expiry; wanted at least a tenth of the lease"
    );
    assert_eq!(status(&db, id).await, "stalled");
    blocker.rollback().await.unwrap();
    system.stop().await.unwrap();
}

/// One running operation's row locked by another session (an operator's
/// `SELECT … FOR UPDATE`, a commit hanging on a half-open connection) for
/// three leases: the heartbeat renews every other lease, and every other
/// handler of the worker finishes normally.
#[tokio::test]
async fn one_locked_row_does_not_stop_the_renewal_of_the_other_leases() {
    let db = test_db().await;
    let system = WorkflowSystem::builder(settings(&db))
        .router(router())
        .start()
        .await
        .expect("system starts");
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = publish_one(
            &db,
            Work {
                key: key(),
                behaviour: Behaviour::SleepMs(4_000),
            },
        )
        .await;
        ids.push(id);
    }
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'running'",
        4,
        Duration::from_secs(10),
    )
    .await;
    let locked = ids[0];
    let mut blocker = db.pool().begin().await.unwrap();
    sqlx::query("SELECT id FROM pgoutbox.operations WHERE id = $1 FOR UPDATE")
        .bind(locked.as_i64())
        .execute(&mut *blocker)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    blocker.rollback().await.unwrap();
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        3,
        Duration::from_secs(10),
    )
    .await;
    for id in &ids[1..] {
        assert_eq!(status(&db, *id).await, "succeeded");
        assert_eq!(outcomes(&db, *id).await, [Some("succeeded".to_owned())]);
    }
    // The locked one could not be renewed: aborted before its lease ran
    // out (or, if its record was held by the lock past the lease, rescued
    // as lost); in doubt either way, since it is not idempotent.
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'stalled'",
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(status(&db, locked).await, "stalled");
    system.stop().await.unwrap();
}

/// The janitor removes `workers` rows that stopped, or whose heartbeat
/// went silent, longer ago than the history retention, and keeps the rest.
#[tokio::test]
async fn the_janitor_removes_workers_gone_longer_than_the_history_retention() {
    let db = test_db().await;
    sqlx::query(
        "INSERT INTO pgoutbox.workers (id, host, pid, version, names, queues, n_workers, \
                                       heartbeat_at, stopped_at) \
         VALUES (gen_random_uuid(), 'old-stopped', 1, 'x', '{}', '{}', 1, \
                 now() - interval '10 days', now() - interval '10 days'), \
                (gen_random_uuid(), 'old-silent', 2, 'x', '{}', '{}', 1, \
                 now() - interval '10 days', NULL), \
                (gen_random_uuid(), 'recent-stopped', 3, 'x', '{}', '{}', 1, \
                 now() - interval '1 hour', now() - interval '1 hour')",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let mut s = settings(&db);
    s.workflow_system.retention.operations = Duration::from_hours(24);
    s.workflow_system.retention.history = Duration::from_hours(24);
    s.workflow_system.retention.interval = Duration::from_millis(200);
    let system = WorkflowSystem::builder(s)
        .router(router())
        .start()
        .await
        .expect("system starts");
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.workers",
        2,
        Duration::from_secs(10),
    )
    .await;
    let hosts: Vec<String> =
        sqlx::query_scalar("SELECT host FROM pgoutbox.workers WHERE host LIKE '%-%' ORDER BY host")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert_eq!(hosts, ["recent-stopped"]);
    system.stop().await.unwrap();
}

/// An operation in a queue that no live worker handling its name serves is
/// never claimed, and `stats` reports it, by queue and name, beside the
/// names no live worker handles.
#[tokio::test]
async fn operations_in_a_queue_no_live_worker_serves_are_reported() {
    let db = test_db().await;
    let mut s = settings(&db);
    s.workflow_system.queues = vec!["served".into()];
    let system = WorkflowSystem::builder(s)
        .router(router())
        .start()
        .await
        .expect("system starts");
    let mut conn = db.pool().acquire().await.unwrap();
    pgoutbox::Publisher::default()
        .publish_with(
            &mut conn,
            Work {
                key: key(),
                behaviour: Behaviour::Succeed,
            },
            pgoutbox::PublishOptions::new().queue("forgotten"),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let admin = pgoutbox::admin::Admin::new(
        db.pool().clone(),
        &pgoutbox::Identifier::new("pgoutbox").unwrap(),
    );
    let stats = admin.stats(Duration::from_secs(3), 1).await.unwrap();
    assert!(stats.unhandled.is_empty(), "{:?}", stats.unhandled);
    assert_eq!(
        stats.unserved,
        [("forgotten".to_owned(), "test.work".to_owned(), 1)]
    );
    system.stop().await.unwrap();
}

/// A worker is judged live by its own lease, which it records: with
/// `lease = 6m` it beats every two minutes, and a heartbeat 90 s old is
/// healthy, whatever window the caller passes for workers that recorded
/// none. "Ready" counts only operations whose run-at has come.
#[tokio::test]
async fn a_worker_with_a_long_lease_is_live_between_its_heartbeats() {
    let db = test_db().await;
    let mut s = settings(&db);
    s.workflow_system.lease = Duration::from_mins(6);
    let system = WorkflowSystem::builder(s)
        .router(router())
        .start()
        .await
        .expect("system starts");
    let lease_ms: Option<i64> = sqlx::query_scalar("SELECT lease_ms FROM pgoutbox.workers")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(lease_ms, Some(360_000));
    // Its last heartbeat 90 s ago: more than the fixed 60 s of old, less
    // than its lease.
    sqlx::query("UPDATE pgoutbox.workers SET heartbeat_at = now() - interval '90 seconds'")
        .execute(db.pool())
        .await
        .unwrap();
    let mut conn = db.pool().acquire().await.unwrap();
    // A `test.work` waiting in the past (handled), a `mail.send` due in an
    // hour (handled by no one, but not ready yet).
    pgoutbox::Publisher::default()
        .publish_with(
            &mut conn,
            crate::ops::SendMail { to: key() },
            pgoutbox::PublishOptions::new().delay(Duration::from_hours(1)),
        )
        .await
        .unwrap();
    drop(conn);
    let admin = pgoutbox::admin::Admin::new(
        db.pool().clone(),
        &pgoutbox::Identifier::new("pgoutbox").unwrap(),
    );
    let stats = admin.stats(Duration::from_mins(1), 1).await.unwrap();
    assert_eq!(stats.workers.len(), 1, "{:?}", stats.workers);
    assert!(stats.unhandled.is_empty(), "{:?}", stats.unhandled);
    let workers = admin
        .workers(Duration::from_mins(1), Duration::from_mins(1))
        .await
        .unwrap();
    assert!(workers.len() == 1 && workers[0].live, "{workers:?}");
    system.stop().await.unwrap();
    // A worker whose heartbeat is older than its lease is dead, and the
    // names it handled are reported unhandled.
    sqlx::query(
        "INSERT INTO pgoutbox.workers (id, host, pid, version, names, queues, n_workers, \
         heartbeat_at, lease_ms) VALUES (gen_random_uuid(), 'gone', 1, 'x', '{test.work}', '{}', \
         1, now() - interval '7 minutes', 360000)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    publish_one(
        &db,
        Work {
            key: key(),
            behaviour: Behaviour::Succeed,
        },
    )
    .await;
    let stats = admin.stats(Duration::from_hours(1), 1).await.unwrap();
    assert!(stats.workers.is_empty(), "{:?}", stats.workers);
    assert_eq!(stats.unhandled, [("test.work".to_owned(), 1)]);
}
