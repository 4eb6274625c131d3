//! The workloads and their baselines.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pgoutbox::prelude::*;
use pgoutbox::testing::TestDatabase;
use pgoutbox::{Identifier, Publisher};

use crate::Figure;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A handler that does nothing.
#[operation("bench.noop")]
async fn noop(ctx: &mut Context, n: i64) -> Result<()> {
    let _ = (ctx, n);
    Ok(())
}

/// A transactional handler that does nothing.
#[operation("bench.noop_tx", transactional)]
async fn noop_tx(ctx: &mut TxContext<'_>, n: i64) -> Result<()> {
    let _ = (ctx, n);
    Ok(())
}

static STARTED: Mutex<Option<HashMap<i64, Instant>>> = Mutex::new(None);
/// Wakes the measuring loop when a handler has noted its start (the loop
/// sleeps meanwhile: spinning would take a core from the system measured).
static STARTED_SIGNAL: std::sync::LazyLock<tokio::sync::Notify> =
    std::sync::LazyLock::new(tokio::sync::Notify::new);

/// Notes when it started, for pickup latency.
#[operation("bench.latency")]
async fn latency(ctx: &mut Context, seq: i64) -> Result<()> {
    let _ = ctx;
    STARTED
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(seq, Instant::now());
    STARTED_SIGNAL.notify_one();
    Ok(())
}

/// The server's durability settings and version: identical for pgoutbox
/// and the baselines, and never relaxed to meet a target.
pub(crate) async fn environment() -> Res<String> {
    let db = TestDatabase::new().await?;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'server_version', 'full_page_writes') ORDER BY name",
    )
    .fetch_all(db.pool())
    .await?;
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    Ok(format!(
        "PostgreSQL: {}; {} cores",
        rows.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        cores
    ))
}

fn settings(db: &TestDatabase, n_workers: usize) -> Settings {
    let mut s = Settings::default();
    s.database.url = Some(db.url());
    s.database.pool_max = u32::try_from(n_workers).unwrap_or(u32::MAX) + 4;
    s.workflow_system.n_workers = n_workers;
    s.workflow_system.poll_interval = Duration::from_millis(200);
    s
}

async fn count(db: &TestDatabase, sql: &'static str) -> Res<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(db.pool()).await?)
}

/// Waits until no operation named `name` is ready or running (a running
/// operation holds a lease). Each check reads only the two partial indexes
/// (ready rows by name, leased rows): counting `succeeded` rows instead
/// would scan every finished row every 20 ms, and W4's million of them
/// would weigh on the measurement rather than on the claim. Rows of other
/// names, and rows scheduled later (W5), are not waited for.
async fn wait_drained(db: &TestDatabase, name: &str) -> Res<()> {
    let deadline = Instant::now() + Duration::from_mins(10);
    loop {
        let busy: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pgoutbox.operations \
                            WHERE status IN ('pending', 'retrying') AND name = $1 AND run_at <= now()) \
                 OR EXISTS (SELECT 1 FROM pgoutbox.operations WHERE lease_expires_at IS NOT NULL)",
        )
        .bind(name)
        .fetch_one(db.pool())
        .await?;
        if !busy {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the drain did not finish within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[allow(clippy::cast_precision_loss)]
fn per_second(n: i64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// Drains what is ready with pgoutbox (10 workers); ops/s.
///
/// Timed by the database's clock, from the first attempt's start to the
/// last attempt's end: the system's start-up (connections, checks,
/// registration) is not drain time, and the 20 ms polling of the end is not
/// either. The baseline is timed by the client from its first claim to its
/// last completion, which can only flatter pgoutbox's ratio by a round trip.
async fn drain_pgoutbox(db: &TestDatabase, n: i64, transactional: bool) -> Res<f64> {
    let (router, name) = if transactional {
        (WorkflowRouter::new().operation::<NoopTx>(), NoopTx::NAME)
    } else {
        (WorkflowRouter::new().operation::<Noop>(), Noop::NAME)
    };
    let already = count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
    )
    .await?;
    let attempts_before = count(db, "SELECT coalesce(max(id), 0) FROM pgoutbox.attempts").await?;
    let system = WorkflowSystem::builder(settings(db, 10))
        .router(router)
        .start()
        .await?;
    wait_drained(db, name).await?;
    system.stop().await?;
    let seconds: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 \
         FROM pgoutbox.attempts WHERE id > $1",
    )
    .bind(attempts_before)
    .fetch_one(db.pool())
    .await?;
    let elapsed = Duration::from_secs_f64(seconds);
    let succeeded = count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
    )
    .await?;
    if succeeded != already + n {
        return Err(format!("{} of {n} operations succeeded", succeeded - already).into());
    }
    Ok(per_second(n, elapsed))
}

/// A pool for a baseline, built like the one pgoutbox builds from its
/// settings, with its `size` connections opened before the clock starts
/// (pgoutbox's start-up is not timed either).
async fn baseline_pool(db: &TestDatabase, size: u32) -> Res<sqlx::PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(size)
        .connect_with(db.connect_options().clone())
        .await?;
    let mut warm = Vec::new();
    for _ in 0..size {
        warm.push(pool.acquire().await?);
    }
    drop(warm);
    Ok(pool)
}

/// The baseline drain: 10 loops of batched claim + completion (batch 100),
/// or, for the transactional variant, one transaction per completion.
async fn drain_baseline(db: &TestDatabase, n: i64, transactional: bool) -> Res<f64> {
    let pool = baseline_pool(db, 10).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let ids: Vec<i64> = sqlx::query_scalar(
                    "UPDATE pgoutbox.operations SET status = 'running', attempt = attempt + 1, \
                        lease_owner = gen_random_uuid(), lease_expires_at = now() + interval '30 seconds' \
                     WHERE id IN (SELECT id FROM pgoutbox.operations WHERE status IN ('pending', 'retrying') \
                        AND run_at <= now() ORDER BY priority DESC, run_at, id LIMIT 100 FOR UPDATE SKIP LOCKED) \
                     RETURNING id",
                )
                .fetch_all(&pool)
                .await?;
                if ids.is_empty() {
                    return Ok::<_, sqlx::Error>(());
                }
                if transactional {
                    for id in ids {
                        let mut tx = pool.begin().await?;
                        sqlx::query(
                            "UPDATE pgoutbox.operations SET status = 'succeeded', lease_owner = NULL, \
                             lease_expires_at = NULL, finished_at = now() WHERE id = $1",
                        )
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                        tx.commit().await?;
                    }
                } else {
                    sqlx::query(
                        "UPDATE pgoutbox.operations SET status = 'succeeded', lease_owner = NULL, \
                         lease_expires_at = NULL, finished_at = now() WHERE id = ANY($1)",
                    )
                    .bind(&ids)
                    .execute(&pool)
                    .await?;
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(per_second(n, start.elapsed()))
}

async fn fill(db: &TestDatabase, n: i64, transactional: bool) -> Res<()> {
    let mut conn = db.pool().acquire().await?;
    for chunk in 0..(n + 4_999) / 5_000 {
        let range = (chunk * 5_000)..((chunk + 1) * 5_000).min(n);
        if transactional {
            publish_many(&mut conn, range.map(|n| NoopTx { n })).await?;
        } else {
            publish_many(&mut conn, range.map(|n| Noop { n })).await?;
        }
    }
    Ok(())
}

/// W1 (and W1-tx): 20,000 operations drained by 10 workers.
pub(crate) async fn w1(runs: usize, transactional: bool) -> Res<Vec<Figure>> {
    const N: i64 = 20_000;
    let (mut ours, mut base, mut analyzed) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let db = TestDatabase::new().await?;
        fill(&db, N, transactional).await?;
        ours.push(drain_pgoutbox(&db, N, transactional).await?);
        let db = TestDatabase::new().await?;
        fill(&db, N, transactional).await?;
        base.push(drain_baseline(&db, N, transactional).await?);
        if !transactional {
            let db = TestDatabase::new().await?;
            fill(&db, N, false).await?;
            sqlx::query("ANALYZE pgoutbox.operations")
                .execute(db.pool())
                .await?;
            analyzed.push(drain_pgoutbox(&db, N, false).await?);
        }
    }
    Ok(if transactional {
        vec![Figure::new("W1-tx drain", "ops/s", true, ours, base, 0.8)]
    } else {
        vec![
            Figure::new("W1 drain", "ops/s", true, ours, base.clone(), 0.6),
            Figure::new("W1 drain, analyzed", "ops/s", true, analyzed, base, 0.6),
        ]
    })
}

/// Publishes `n` operations, one transaction each, from `clients` tasks.
async fn publish_rate(db: &TestDatabase, n: i64, clients: i64, mode: Option<bool>) -> Res<f64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let pool = db.pool().clone();
        let publisher = mode.map(|notify| {
            let channel = Identifier::new("pgoutbox").expect("valid");
            Publisher::new(&Identifier::default(), notify.then_some(&channel), 5)
        });
        tasks.push(tokio::spawn(async move {
            for i in 0..n / clients {
                let mut tx = pool.begin().await?;
                match &publisher {
                    Some(p) => {
                        p.publish(&mut tx, Noop { n: c * n + i }).await?;
                    }
                    None => {
                        sqlx::query(
                            "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts) \
                             VALUES ('bench.noop', $1, 'h', 5)",
                        )
                        .bind(serde_json::json!({ "n": c * n + i }))
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                tx.commit().await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for task in tasks {
        task.await?.map_err(|e| e.to_string())?;
    }
    Ok(per_second(n, start.elapsed()))
}

/// W2: 5,000 publishes, one transaction each.
pub(crate) async fn w2(runs: usize) -> Res<Vec<Figure>> {
    const N: i64 = 5_000;
    let mut m: HashMap<&str, Vec<f64>> = HashMap::new();
    for _ in 0..runs {
        for (key, clients, mode) in [
            ("one", 1, Some(true)),
            ("one_raw", 1, None),
            ("many_notify", 16, Some(true)),
            ("many_quiet", 16, Some(false)),
            ("many_raw", 16, None),
        ] {
            let db = TestDatabase::new().await?;
            m.entry(key)
                .or_default()
                .push(publish_rate(&db, N, clients, mode).await?);
        }
    }
    Ok(vec![
        Figure::new(
            "W2 publish, 1 client",
            "ops/s",
            true,
            m["one"].clone(),
            m["one_raw"].clone(),
            0.8,
        ),
        Figure::new(
            "W2 publish, 16, NOTIFY off",
            "ops/s",
            true,
            m["many_quiet"].clone(),
            m["many_raw"].clone(),
            0.8,
        ),
        Figure::new(
            "W2 16 clients: NOTIFY on/off",
            "ops/s",
            true,
            m["many_notify"].clone(),
            m["many_quiet"].clone(),
            0.9,
        ),
    ])
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index]
}

/// W3: pickup latency on an idle system, commit → handler start.
pub(crate) async fn w3(runs: usize) -> Res<Vec<Figure>> {
    const N: i64 = 500;
    let (mut p50, mut p99, mut raw50, mut raw99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let db = TestDatabase::new().await?;
        let mut s = settings(&db, 10);
        s.workflow_system.poll_interval = Duration::from_secs(1);
        let system = WorkflowSystem::builder(s)
            .router(WorkflowRouter::new().operation::<Latency>())
            .start()
            .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut latencies = Vec::new();
        for seq in 0..N {
            let mut tx = db.pool().begin().await?;
            publish(&mut tx, Latency { seq }).await?;
            tx.commit().await?;
            let committed = Instant::now();
            let started = loop {
                if let Some(at) = STARTED
                    .lock()
                    .unwrap()
                    .as_mut()
                    .and_then(|m| m.remove(&seq))
                {
                    break at;
                }
                tokio::time::timeout(Duration::from_secs(10), STARTED_SIGNAL.notified())
                    .await
                    .map_err(|_| format!("operation {seq} was not picked up within 10 s"))?;
            };
            latencies.push(started.saturating_duration_since(committed).as_secs_f64() * 1000.0);
        }
        system.stop().await?;
        p50.push(percentile(&mut latencies, 0.5));
        p99.push(percentile(&mut latencies, 0.99));
        // The raw LISTEN/NOTIFY round trip of the same server.
        let mut listener = sqlx::postgres::PgListener::connect(&db.url()).await?;
        listener.listen("bench_raw").await?;
        let mut raw = Vec::new();
        for _ in 0..N {
            // From sending the NOTIFY (its statement and commit included)
            // to receiving it.
            let sent = Instant::now();
            sqlx::query("SELECT pg_notify('bench_raw', 'x')")
                .execute(db.pool())
                .await?;
            listener.recv().await?;
            raw.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        raw50.push(percentile(&mut raw, 0.5));
        raw99.push(percentile(&mut raw, 0.99));
    }
    Ok(vec![
        Figure::absolute("W3 pickup p50 (vs raw NOTIFY)", "ms", p50, raw50, 1.0),
        Figure::absolute("W3 pickup p99 (vs raw NOTIFY)", "ms", p99, raw99, 3.0),
    ])
}

/// W4: drain speed with 0 and with 1,000,000 finished rows in the table.
pub(crate) async fn w4(runs: usize) -> Res<Vec<Figure>> {
    const N: i64 = 5_000;
    let empty = TestDatabase::new().await?;
    let full = TestDatabase::new().await?;
    sqlx::query(
        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, status, max_attempts, attempt, finished_at) \
         SELECT 'bench.noop', jsonb_build_object('n', g), 'h', 'succeeded', 5, 1, now() \
         FROM generate_series(1, 1000000) AS g",
    )
    .execute(full.pool())
    .await?;
    sqlx::query("VACUUM ANALYZE pgoutbox.operations")
        .execute(full.pool())
        .await?;
    // The load left more dirty pages than shared_buffers holds: written out
    // now, not by the drains that W4 times (that is the load's cost, not
    // the claim's).
    sqlx::query("CHECKPOINT").execute(full.pool()).await?;
    let (mut with_empty, mut with_full) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // Alternating which goes first, so that neither always follows
        // the other's clean-up.
        for full_first in [run % 2 == 1, run % 2 == 0] {
            let (db, figures) = if full_first {
                (&full, &mut with_full)
            } else {
                (&empty, &mut with_empty)
            };
            fill(db, N, false).await?;
            figures.push(drain_pgoutbox(db, N, false).await?);
        }
    }
    Ok(vec![Figure::new(
        "W4 drain, 1M finished rows",
        "ops/s",
        true,
        with_full,
        with_empty,
        0.9,
    )])
}

/// W5: a claim's cost beside other people's backlog. The same drain of
/// 5,000 operations (10 workers) on an otherwise empty table, beside
/// 200,000 ready operations of a name the worker does not handle, and
/// beside 200,000 operations of its own name scheduled an hour ahead.
pub(crate) async fn w5(runs: usize) -> Res<Vec<Figure>> {
    const N: i64 = 5_000;
    const OTHERS: i64 = 200_000;
    let empty = TestDatabase::new().await?;
    let unhandled = TestDatabase::new().await?;
    let scheduled = TestDatabase::new().await?;
    for (db, name, delay) in [
        (&unhandled, "bench.unhandled", "0 seconds"),
        (&scheduled, Noop::NAME, "1 hour"),
    ] {
        sqlx::query(
            "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts, run_at) \
             SELECT $1, jsonb_build_object('n', g), 'h', 5, now() + $3::interval \
             FROM generate_series(1, $2) AS g",
        )
        .bind(name)
        .bind(OTHERS)
        .bind(delay)
        .execute(db.pool())
        .await?;
        sqlx::query("VACUUM ANALYZE pgoutbox.operations")
            .execute(db.pool())
            .await?;
        // As in W4: the load's dirty pages are written now, not during the
        // drains that are timed.
        sqlx::query("CHECKPOINT").execute(db.pool()).await?;
    }
    let (mut with_empty, mut with_unhandled, mut with_scheduled) =
        (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        // Rotating the order, so that none always follows the same one.
        let mut order = [0, 1, 2];
        order.rotate_left(run % 3);
        for which in order {
            let (db, figures) = match which {
                0 => (&empty, &mut with_empty),
                1 => (&unhandled, &mut with_unhandled),
                _ => (&scheduled, &mut with_scheduled),
            };
            fill(db, N, false).await?;
            figures.push(drain_pgoutbox(db, N, false).await?);
        }
    }
    Ok(vec![
        Figure::new(
            "W5 drain, 200k ready of another name",
            "ops/s",
            true,
            with_unhandled,
            with_empty.clone(),
            0.9,
        ),
        Figure::new(
            "W5 drain, 200k scheduled in 1 h",
            "ops/s",
            true,
            with_scheduled,
            with_empty,
            0.9,
        ),
    ])
}
