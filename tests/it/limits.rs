//! Per-group concurrency limits (`WorkflowRouter::concurrency`) in a
//! running system: a group never runs more than its limit of handlers at
//! once, included routers count in their enclosing groups, and a group at
//! its limit does not hold back the rest of the process.
//!
//! Each handler measures how many handlers of its gauges run at once; the
//! gauges are keyed per test, so parallel tests do not see each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgoutbox::WorkflowSystem;
use pgoutbox::prelude::*;
use pgoutbox::testing::TestDatabase;

use crate::support::{count, settings, test_db, wait_for_count};

const WITHIN: Duration = Duration::from_secs(30);

/// How many handlers run at once, and the most that ever did.
#[derive(Debug, Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

static GAUGES: Mutex<Option<HashMap<String, Arc<Gauge>>>> = Mutex::new(None);

fn gauge(key: &str) -> Arc<Gauge> {
    Arc::clone(
        GAUGES
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .entry(key.to_owned())
            .or_default(),
    )
}

/// The most handlers of `key` that ran at once.
fn max_at_once(key: &str) -> usize {
    gauge(key).max.load(Ordering::SeqCst)
}

/// Counts the handler in each of `gauges` while it sleeps `ms`.
async fn measured(gauges: &[String], ms: u64) {
    let gauges: Vec<Arc<Gauge>> = gauges.iter().map(|key| gauge(key)).collect();
    for g in &gauges {
        let now = g.now.fetch_add(1, Ordering::SeqCst) + 1;
        g.max.fetch_max(now, Ordering::SeqCst);
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    for g in &gauges {
        g.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A slow call in the `limits` group.
#[operation("limits.slow")]
async fn limits_slow(ctx: &mut Context, gauges: Vec<String>, ms: u64) -> Result<()> {
    let _ = ctx;
    measured(&gauges, ms).await;
    Ok(())
}

/// A slow call in a router included under `limits`.
#[operation("limits.inner.slow")]
async fn inner_slow(ctx: &mut Context, gauges: Vec<String>, ms: u64) -> Result<()> {
    let _ = ctx;
    measured(&gauges, ms).await;
    Ok(())
}

/// A slow transactional call in another router included under `limits`:
/// its place is held until its transaction has committed.
#[operation("limits.shared.slow", transactional)]
async fn shared_slow(ctx: &mut TxContext<'_>, gauges: Vec<String>, ms: u64) -> Result<()> {
    ctx.execute(sqlx::query("SELECT 1")).await?;
    measured(&gauges, ms).await;
    Ok(())
}

/// A slow call no limit applies to.
#[operation("unlimited.slow")]
async fn unlimited_slow(ctx: &mut Context, gauges: Vec<String>, ms: u64) -> Result<()> {
    let _ = ctx;
    measured(&gauges, ms).await;
    Ok(())
}

fn key(test: &str) -> String {
    format!("{test}-{}", uuid::Uuid::new_v4())
}

/// `n` operations `O` made by `make`, published in one transaction.
async fn publish_n<O: pgoutbox::Operation>(db: &TestDatabase, n: usize, make: impl Fn() -> O) {
    let mut tx = db.pool().begin().await.unwrap();
    pgoutbox::publish_many(&mut tx, (0..n).map(|_| make()))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn start(db: &TestDatabase, n_workers: usize, router: WorkflowRouter) -> WorkflowSystem {
    let mut settings = settings(db);
    settings.workflow_system.n_workers = n_workers;
    settings.database.pool_max = u32::try_from(n_workers).unwrap() + 4;
    WorkflowSystem::builder(settings)
        .router(router)
        .start()
        .await
        .expect("system starts")
}

#[tokio::test]
async fn a_limited_group_runs_at_most_its_limit_while_the_others_run_beside_it() {
    let db = test_db().await;
    let limited = key("limited");
    let unlimited = key("unlimited");
    // The limited group's operations are the oldest: a claim in plain
    // claim order would pick them first.
    publish_n(&db, 20, || LimitsSlow {
        gauges: vec![limited.clone()],
        ms: 100,
    })
    .await;
    publish_n(&db, 8, || UnlimitedSlow {
        gauges: vec![unlimited.clone()],
        ms: 100,
    })
    .await;
    let router = WorkflowRouter::new()
        .include_router(
            WorkflowRouter::with_prefix("limits")
                .operation::<LimitsSlow>()
                .concurrency(2),
        )
        .include_router(WorkflowRouter::with_prefix("unlimited").operation::<UnlimitedSlow>());
    let system = start(&db, 6, router).await;

    // The unlimited operations go through the 4 other slots while the
    // limited group (20 × 100 ms, 2 at a time: a second at least) works.
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE name = 'unlimited.slow' AND status = 'succeeded'",
        8,
        WITHIN,
    )
    .await;
    let limited_done = count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE name = 'limits.slow' AND status = 'succeeded'",
    )
    .await;
    assert!(
        limited_done < 20,
        "the unlimited operations waited for the limited group ({limited_done} of 20 done)"
    );
    assert!(
        max_at_once(&unlimited) >= 2,
        "the unlimited operations ran one at a time"
    );

    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE name = 'limits.slow' AND status = 'succeeded'",
        20,
        WITHIN,
    )
    .await;
    assert_eq!(
        max_at_once(&limited),
        2,
        "the limited group ran more (or fewer) than 2 handlers at once"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.attempts").await,
        28,
        "one attempt per operation"
    );
    system.stop().await.unwrap();
}

#[tokio::test]
async fn included_routers_share_their_enclosing_limit_and_their_own_bounds_them_too() {
    let db = test_db().await;
    let outer = key("outer");
    let inner = key("inner");
    let shared = key("shared");
    let unlimited = key("unlimited");
    publish_n(&db, 10, || InnerSlow {
        gauges: vec![outer.clone(), inner.clone()],
        ms: 60,
    })
    .await;
    publish_n(&db, 10, || SharedSlow {
        gauges: vec![outer.clone(), shared.clone()],
        ms: 60,
    })
    .await;
    publish_n(&db, 10, || LimitsSlow {
        gauges: vec![outer.clone()],
        ms: 60,
    })
    .await;
    publish_n(&db, 10, || UnlimitedSlow {
        gauges: vec![unlimited.clone()],
        ms: 60,
    })
    .await;
    // `limits` (3 at once) holds its own operation, `limits.inner` with a
    // limit of its own (1), and `limits.shared` without one.
    let limits = WorkflowRouter::with_prefix("limits")
        .operation::<LimitsSlow>()
        .include_router(
            WorkflowRouter::with_prefix("limits.inner")
                .operation::<InnerSlow>()
                .concurrency(1),
        )
        .include_router(WorkflowRouter::with_prefix("limits.shared").operation::<SharedSlow>())
        .concurrency(3);
    let router = WorkflowRouter::new()
        .include_router(limits)
        .include_router(WorkflowRouter::with_prefix("unlimited").operation::<UnlimitedSlow>());
    let system = start(&db, 8, router).await;

    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        40,
        WITHIN,
    )
    .await;
    assert_eq!(max_at_once(&outer), 3, "the `limits` group as a whole");
    assert_eq!(
        max_at_once(&inner),
        1,
        "`limits.inner`, under its own limit"
    );
    assert!(
        max_at_once(&shared) <= 3,
        "`limits.shared` shares the limit of `limits`"
    );
    assert!(
        max_at_once(&unlimited) >= 2,
        "the unlimited operations ran one at a time"
    );
    system.stop().await.unwrap();
}

#[tokio::test]
async fn a_limit_above_n_workers_leaves_n_workers_in_charge() {
    let db = test_db().await;
    let limited = key("generous");
    publish_n(&db, 12, || LimitsSlow {
        gauges: vec![limited.clone()],
        ms: 100,
    })
    .await;
    let router = WorkflowRouter::with_prefix("limits")
        .operation::<LimitsSlow>()
        .concurrency(100);
    let system = start(&db, 4, router).await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        12,
        WITHIN,
    )
    .await;
    assert_eq!(max_at_once(&limited), 4);
    system.stop().await.unwrap();
}
