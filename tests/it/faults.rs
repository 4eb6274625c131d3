//! Faults that really happen, then counting rows: worker processes killed
//! with SIGKILL again and again mid-run, and stopped with SIGTERM / SIGINT
//! with work in flight.

use std::time::Duration;

use pgoutbox::testing::TestDatabase;
use pgoutbox_tests::{Effect, IdempotentEffect, TxEffect};

use crate::processes::{Worker, create_tables, tables};
use crate::support::{count, outcomes, publish_one, soak, status, test_db, wait_for_count};

/// SIGKILLs of the short variant; `PGOUTBOX_SOAK=<n>` multiplies them.
const KILLS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkill_loses_nothing_and_doubles_nothing() {
    let (each, kills) = (100 * i64::from(soak()), KILLS * soak() as usize);
    let db = test_db().await;
    tables(&db).await;
    let mut tx = db.pool().begin().await.unwrap();
    pgoutbox::publish_many(&mut tx, (0..each).map(|_| Effect { ms: 30 }))
        .await
        .unwrap();
    pgoutbox::publish_many(&mut tx, (0..each).map(|_| IdempotentEffect { ms: 30 }))
        .await
        .unwrap();
    pgoutbox::publish_many(&mut tx, (0..each).map(|_| TxEffect { ms: 30 }))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    for kill in 0..kills {
        let worker = Worker::start(&db.url(), 4);
        // Somewhere mid-run: 50 to 430 ms after start.
        tokio::time::sleep(Duration::from_millis(50 + (kill as u64 * 97) % 380)).await;
        worker.kill();
    }
    let last = Worker::start(&db.url(), 4);
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status IN ('pending', 'retrying', 'running')",
        0,
        Duration::from_mins(u64::from(soak())),
    )
    .await;
    assert!(last.terminate().success());

    // Nothing lost: every operation is still there, in a final state.
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations").await,
        3 * each
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations WHERE status NOT IN ('succeeded', 'stalled')"
        )
        .await,
        0,
        "idempotent operations have attempts to spare; the others succeed or stall"
    );
    // No non-idempotent operation ran twice.
    assert_eq!(
        count(&db, "SELECT count(*) FROM (SELECT operation_id FROM side_effects s JOIN pgoutbox.operations o \
                    ON o.id = s.operation_id WHERE o.name = 'fault.effect' GROUP BY operation_id HAVING count(*) > 1) d").await,
        0
    );
    // In-doubt non-idempotent operations are stalled with a lost attempt.
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations o WHERE o.status = 'stalled' AND NOT EXISTS \
                    (SELECT 1 FROM pgoutbox.attempts a WHERE a.operation_id = o.id AND a.outcome = 'lost')").await,
        0
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations WHERE status = 'stalled' AND name <> 'fault.effect'").await,
        0,
        "only non-idempotent operations stall"
    );
    // Idempotent ones were retried to success.
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded' AND name <> 'fault.effect'").await,
        2 * each
    );
    // Transactional ones: their database write exists exactly once.
    assert_eq!(
        count(&db, "SELECT count(*) FROM business_effects").await,
        each
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(DISTINCT operation_id) FROM business_effects"
        )
        .await,
        each
    );
    // Every succeeded operation has exactly one succeeded attempt.
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations o WHERE o.status = 'succeeded' AND \
                    (SELECT count(*) FROM pgoutbox.attempts a WHERE a.operation_id = o.id AND a.outcome = 'succeeded') <> 1").await,
        0
    );
    // The faults really hit running work.
    let lost_attempts = count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome = 'lost'",
    )
    .await;
    let stalled = count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'stalled'",
    )
    .await;
    eprintln!(
        "{kills} kills: {} operations, {lost_attempts} lost attempts, {stalled} stalled, 0 lost, 0 doubled",
        3 * each
    );
    assert!(lost_attempts >= 1, "no kill hit a running attempt");
    // Every attempt has an outcome.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.attempts WHERE outcome IS NULL"
        )
        .await,
        0
    );
}

async fn stop_with(signal: &str, db: &TestDatabase) {
    tables(db).await;
    let worker = Worker::start(&db.url(), 4);
    let quick = publish_one(db, Effect { ms: 200 }).await;
    let slow = publish_one(db, Effect { ms: 60_000 }).await;
    wait_for_count(
        db,
        "SELECT count(*) FROM side_effects",
        2,
        Duration::from_secs(10),
    )
    .await;
    let exit = worker.signal(signal);
    assert!(exit.success(), "{signal}: {exit:?}");
    assert_eq!(
        status(db, quick).await,
        "succeeded",
        "{signal}: the quick one finished"
    );
    assert_eq!(
        status(db, slow).await,
        "stalled",
        "{signal}: the slow one was aborted"
    );
    assert_eq!(outcomes(db, slow).await, [Some("aborted".to_owned())]);
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM pgoutbox.workers WHERE stopped_at IS NOT NULL"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_and_records_what_it_aborted() {
    stop_with("TERM", &test_db().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_gracefully_and_records_what_it_aborted() {
    stop_with("INT", &test_db().await).await;
}

/// Counts on a pool of the private cluster.
pub(crate) async fn count_on(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Connects to the private cluster's `url` and waits (a minute per soak
/// factor) until nothing is pending, retrying or running after the `faults`;
/// returns the pool.
pub(crate) async fn wait_drained_on(url: &str, faults: &str) -> sqlx::PgPool {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_mins(u64::from(soak()));
    while count_on(
        &pool,
        "SELECT count(*) FROM pgoutbox.operations WHERE status IN ('pending', 'retrying', 'running')",
    )
    .await
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the drain did not finish after the {faults}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool
}

/// A private cluster of the test's own (it is restarted or killed under
/// the worker) with a migrated database `drain` holding the effect tables:
/// the cluster, the database's URL and a small pool on it.
pub(crate) async fn private_drain_database() -> (pgoutbox::testing::Cluster, String, sqlx::PgPool) {
    let cluster = tokio::task::spawn_blocking(pgoutbox::testing::Cluster::start_private)
        .await
        .unwrap()
        .unwrap();
    let admin = sqlx::PgPool::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE drain")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let url = cluster.url("drain");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    pgoutbox::migrate::run(&pool, &pgoutbox::Identifier::default())
        .await
        .unwrap();
    create_tables(&pool).await;
    (cluster, url, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_drain_fast_then_immediate() {
    use pgoutbox::testing::ShutdownMode;

    let each = 300 * i64::from(soak());
    let (cluster, url, pool) = private_drain_database().await;
    let mut conn = pool.acquire().await.unwrap();
    pgoutbox::publish_many(&mut conn, (0..each).map(|_| IdempotentEffect { ms: 20 }))
        .await
        .unwrap();
    pgoutbox::publish_many(&mut conn, (0..each).map(|_| TxEffect { ms: 20 }))
        .await
        .unwrap();
    drop(conn);
    pool.close().await;

    let worker = Worker::start(&url, 4);
    let modes = [ShutdownMode::Fast, ShutdownMode::Immediate];
    for mode in modes.into_iter().cycle().take(2 * soak() as usize) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Mid-drain: work is both done and left.
        let probe = sqlx::PgPool::connect(&url).await.unwrap();
        let left = count_on(
            &probe,
            "SELECT count(*) FROM pgoutbox.operations WHERE status <> 'succeeded'",
        )
        .await;
        probe.close().await;
        assert!(0 < left && left < 2 * each, "{mode:?}: {left} left");
        tokio::task::block_in_place(|| cluster.restart(mode)).unwrap();
    }
    let pool = wait_drained_on(&url, "restarts").await;
    // The worker survived both restarts and stops cleanly.
    assert!(worker.terminate().success());
    assert_eq!(
        count_on(&pool, "SELECT count(*) FROM pgoutbox.operations").await,
        2 * each,
        "nothing lost"
    );
    assert_eq!(
        count_on(
            &pool,
            "SELECT count(*) FROM pgoutbox.operations WHERE status <> 'succeeded'"
        )
        .await,
        0,
        "idempotent operations all succeed"
    );
    assert_eq!(
        count_on(&pool, "SELECT count(*) FROM pgoutbox.operations o WHERE \
                         (SELECT count(*) FROM pgoutbox.attempts a WHERE a.operation_id = o.id AND a.outcome = 'succeeded') <> 1").await,
        0,
        "no duplicate success"
    );
    assert_eq!(
        count_on(&pool, "SELECT count(*) FROM business_effects").await,
        each,
        "transactional writes exactly once"
    );
    pool.close().await;
}

/// PostgreSQL killed (`pg_ctl stop -m immediate`) twice mid-drain of
/// non-idempotent and idempotent operations, with
/// `workflow_system.idempotent_async_commit` off and on: nothing lost, no
/// non-idempotent operation run twice, and every attempt that ran of a
/// non-idempotent operation recorded — of every operation when the option
/// is off.
async fn postgres_killed_mid_drain(idempotent_async_commit: bool) {
    use pgoutbox::testing::ShutdownMode;

    let each = 200 * i64::from(soak());
    let (cluster, url, pool) = private_drain_database().await;
    let mut conn = pool.acquire().await.unwrap();
    pgoutbox::publish_many(&mut conn, (0..each).map(|_| Effect { ms: 20 }))
        .await
        .unwrap();
    pgoutbox::publish_many(&mut conn, (0..each).map(|_| IdempotentEffect { ms: 20 }))
        .await
        .unwrap();
    drop(conn);
    pool.close().await;

    let option = if idempotent_async_commit {
        "true"
    } else {
        "false"
    };
    let worker = Worker::start_with(
        &url,
        4,
        &[("PGOUTBOX_WORKFLOW_SYSTEM__IDEMPOTENT_ASYNC_COMMIT", option)],
    );
    for _ in 0..2 * soak() {
        tokio::time::sleep(Duration::from_millis(400)).await;
        tokio::task::block_in_place(|| cluster.stop(ShutdownMode::Immediate)).unwrap();
        tokio::task::block_in_place(|| cluster.start()).unwrap();
    }
    let pool = wait_drained_on(&url, "kills").await;
    assert!(worker.terminate().success());
    assert_eq!(
        count_on(&pool, "SELECT count(*) FROM pgoutbox.operations").await,
        2 * each,
        "nothing lost"
    );
    assert_eq!(
        count_on(
            &pool,
            "SELECT count(*) FROM (SELECT s.operation_id FROM side_effects s \
             JOIN pgoutbox.operations o ON o.id = s.operation_id \
             WHERE o.name = 'fault.effect' GROUP BY s.operation_id HAVING count(*) > 1) twice"
        )
        .await,
        0,
        "no non-idempotent operation run twice"
    );
    assert_eq!(
        unrecorded(&pool, "'fault.effect'").await,
        0,
        "every attempt of a non-idempotent operation that ran is recorded"
    );
    if !idempotent_async_commit {
        assert_eq!(
            unrecorded(&pool, "'fault.effect', 'fault.idempotent_effect'").await,
            0,
            "with the option off, every attempt that ran is recorded"
        );
    }
    assert!(
        count_on(&pool, "SELECT count(*) FROM side_effects").await > 0,
        "handlers ran"
    );
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_mid_drain_with_idempotent_async_commit_off() {
    postgres_killed_mid_drain(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_mid_drain_with_idempotent_async_commit_on() {
    postgres_killed_mid_drain(true).await;
}

/// Side effects of the operations named `names` (an SQL list of literals)
/// whose attempt has no row in `attempts`.
pub(crate) async fn unrecorded(pool: &sqlx::PgPool, names: &str) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM side_effects s JOIN pgoutbox.operations o ON o.id = s.operation_id \
         WHERE o.name IN ({names}) AND NOT EXISTS (SELECT 1 FROM pgoutbox.attempts a \
         WHERE a.operation_id = s.operation_id AND a.number = s.attempt)"
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A worker claiming ahead (`idempotent_claim_ahead`), `SIGKILLed` with
/// operations claimed and waiting for a slot: their attempts, recorded at
/// the claim, end `lost` without their handler ever having run (the trade
/// docs/consistency.md describes), and they run again; nothing is lost,
/// nothing succeeds twice, every handler call is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_operations_claimed_ahead_loses_nothing() {
    let each = 200 * i64::from(soak());
    let db = test_db().await;
    tables(&db).await;
    let mut conn = db.pool().acquire().await.unwrap();
    pgoutbox::publish_many(&mut conn, (0..each).map(|_| IdempotentEffect { ms: 30 }))
        .await
        .unwrap();
    drop(conn);

    let worker = Worker::start_idempotent_only(
        &db.url(),
        2,
        &[("PGOUTBOX_WORKFLOW_SYSTEM__IDEMPOTENT_CLAIM_AHEAD", "40")],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.kill();
    let leased = count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'running'",
    )
    .await;
    assert!(
        leased > 2,
        "more operations claimed than the 2 slots (claimed ahead): {leased}"
    );

    let last = Worker::start(&db.url(), 4);
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status <> 'succeeded'",
        0,
        Duration::from_mins(u64::from(soak())),
    )
    .await;
    assert!(last.terminate().success());
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations").await,
        each,
        "nothing lost"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations o WHERE (SELECT count(*) FROM pgoutbox.attempts a \
             WHERE a.operation_id = o.id AND a.outcome = 'succeeded') <> 1"
        )
        .await,
        0,
        "each succeeded exactly once"
    );
    assert_eq!(
        unrecorded(db.pool(), "'fault.idempotent_effect'").await,
        0,
        "every handler call is recorded"
    );
    assert!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.attempts a WHERE a.outcome = 'lost' AND NOT EXISTS \
             (SELECT 1 FROM side_effects s WHERE s.operation_id = a.operation_id AND s.attempt = a.number)"
        )
        .await
            > 0,
        "attempts claimed ahead and never started end lost"
    );
}
