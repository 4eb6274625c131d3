//! The workloads and their baselines.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgoutbox::prelude::*;
use pgoutbox::testing::{Cluster, TestDatabase, server_url, use_server};
use pgoutbox::{Identifier, Publisher};
use sqlx::Connection as _;

use crate::Figure;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A handler that does nothing.
#[operation("bench.noop")]
async fn noop(ctx: &mut Context, n: i64) -> Result<()> {
    let _ = (ctx, n);
    Ok(())
}

/// A handler that does nothing, declared `idempotent` (W1-idem).
#[operation("bench.noop_idem", idempotent)]
async fn noop_idem(ctx: &mut Context, n: i64) -> Result<()> {
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
    if seq < 0 {
        // Background traffic (W3 under a steady stream): not measured.
        return Ok(());
    }
    STARTED
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(seq, Instant::now());
    STARTED_SIGNAL.notify_one();
    Ok(())
}

/// The server the benchmark measures: `DATABASE_URL` when set (its
/// settings as they are), otherwise a private cluster started here and
/// stopped when the returned value is dropped, whose durability
/// [`set_durability`] sets.
pub(crate) async fn server() -> Res<Option<Cluster>> {
    if std::env::var("DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        return Ok(None);
    }
    let cluster = tokio::task::spawn_blocking(Cluster::start_private).await??;
    use_server(cluster.url("postgres"))?;
    Ok(Some(cluster))
}

/// How durable the server's commits are, for a column of figures. Both
/// sides of every ratio run at the same durability, on the same server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Durability {
    /// PostgreSQL's defaults: `fsync`, `full_page_writes` and
    /// `synchronous_commit` on. The headline.
    Production,
    /// `fsync = off` (the rest as in production): what the WAL flush of
    /// each commit costs, by difference.
    FsyncOff,
}

impl Durability {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Durability::Production => "production",
            Durability::FsyncOff => "fsync=off",
        }
    }
}

/// Sets the server's durability (`ALTER SYSTEM`, then a reload) and waits
/// until new connections see it.
pub(crate) async fn set_durability(durability: Durability) -> Res<()> {
    let fsync = match durability {
        Durability::Production => "on",
        Durability::FsyncOff => "off",
    };
    let url = server_url().await?;
    let mut conn = sqlx::postgres::PgConnection::connect(&url).await?;
    for statement in [
        format!("ALTER SYSTEM SET fsync = {fsync}"),
        "ALTER SYSTEM SET full_page_writes = on".to_owned(),
        "ALTER SYSTEM SET synchronous_commit = on".to_owned(),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("setting the durability needs a superuser: {e}"))?;
    }
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut conn = sqlx::postgres::PgConnection::connect(&url).await?;
        let seen: String = sqlx::query_scalar("SHOW fsync")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        if seen == fsync {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("fsync is still {seen} 10 s after the reload").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    while busy(db, name).await? {
        if Instant::now() > deadline {
            return Err("the drain did not finish within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Whether operations of `name` are ready, or any operation is leased.
///
/// Through the partial indexes only: the planner's estimate for a name on
/// a table of mostly other or later rows is a sequential scan that finds a
/// ready row at once, and in fact reads past every row the drain has
/// finished, or past W5's 200,000 others — 40 ms a check beside them,
/// taken from the drain it is timing.
pub(crate) async fn busy(db: &TestDatabase, name: &str) -> Res<bool> {
    let mut tx = db.pool().begin().await?;
    sqlx::query(
        "SELECT set_config('enable_seqscan', 'off', true), \
                set_config('enable_bitmapscan', 'off', true)",
    )
    .execute(&mut *tx)
    .await?;
    let busy: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pgoutbox.operations \
                        WHERE status IN ('pending', 'retrying') AND name = $1 AND run_at <= now()) \
             OR EXISTS (SELECT 1 FROM pgoutbox.operations WHERE lease_expires_at IS NOT NULL)",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(busy)
}

#[allow(clippy::cast_precision_loss)]
fn per_second(n: i64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// Which no-op a drain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Tx,
    Idempotent,
    /// Idempotent, with `workflow_system.idempotent_async_commit` on.
    IdempotentAsync,
    /// Idempotent, with `idempotent_async_commit` on and
    /// `idempotent_claim_ahead` at [`CLAIM_AHEAD`].
    IdempotentAhead,
}

/// W1-idem's `workflow_system.idempotent_claim_ahead`: with 10 slots, claims
/// of up to 100 operations, like the claim-100 bound's.
const CLAIM_AHEAD: usize = 90;

/// Drains what is ready with pgoutbox (`workers` handler slots); ops/s.
///
/// Timed by the database's clock, from the first attempt's start to the
/// last attempt's end: the system's start-up (connections, checks,
/// registration) is not drain time, and the 20 ms polling of the end is not
/// either. The baseline is timed by the client from its first claim to its
/// last completion, which can only flatter pgoutbox's ratio by a round trip.
async fn drain_pgoutbox(db: &TestDatabase, n: i64, kind: Kind, workers: usize) -> Res<f64> {
    let (router, name) = match kind {
        Kind::Tx => (WorkflowRouter::new().operation::<NoopTx>(), NoopTx::NAME),
        Kind::Plain => (WorkflowRouter::new().operation::<Noop>(), Noop::NAME),
        Kind::Idempotent | Kind::IdempotentAsync | Kind::IdempotentAhead => (
            WorkflowRouter::new().operation::<NoopIdem>(),
            NoopIdem::NAME,
        ),
    };
    let mut settings = settings(db, workers);
    settings.workflow_system.idempotent_async_commit =
        matches!(kind, Kind::IdempotentAsync | Kind::IdempotentAhead);
    if kind == Kind::IdempotentAhead {
        settings.workflow_system.idempotent_claim_ahead = CLAIM_AHEAD;
    }
    let already = count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
    )
    .await?;
    let attempts_before = count(db, "SELECT coalesce(max(id), 0) FROM pgoutbox.attempts").await?;
    let system = WorkflowSystem::builder(settings)
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

/// The baseline drain: 10 loops of a claim of `batch` rows, committed, then
/// their completion in one statement, or, for the transactional variant,
/// one transaction per completion. With `batch = 10` it is the structural
/// bound of a 10-slot worker that commits each attempt's start before its
/// handler runs (invariant 3). The claim names the operation, as a
/// worker's does: the ready index leads with the name, and only then can
/// the claim walk it in order rather than sort every ready row.
async fn drain_baseline(db: &TestDatabase, n: i64, transactional: bool, batch: i64) -> Res<f64> {
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
                     WHERE id IN (SELECT id FROM pgoutbox.operations WHERE name = $2 \
                        AND status IN ('pending', 'retrying') AND run_at <= now() \
                        ORDER BY priority DESC, run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) \
                     RETURNING id",
                )
                .bind(batch)
                .bind(Noop::NAME)
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

async fn fill(db: &TestDatabase, n: i64, kind: Kind) -> Res<()> {
    let mut conn = db.pool().acquire().await?;
    for chunk in 0..(n + 4_999) / 5_000 {
        let range = (chunk * 5_000)..((chunk + 1) * 5_000).min(n);
        match kind {
            Kind::Tx => publish_many(&mut conn, range.map(|n| NoopTx { n })).await?,
            Kind::Plain => publish_many(&mut conn, range.map(|n| Noop { n })).await?,
            Kind::Idempotent | Kind::IdempotentAsync | Kind::IdempotentAhead => {
                publish_many(&mut conn, range.map(|n| NoopIdem { n })).await?
            }
        };
    }
    Ok(())
}

/// One drain of `n` fresh operations of `kind` by pgoutbox.
async fn pgoutbox_run(n: i64, kind: Kind, workers: usize, analyze: bool) -> Res<f64> {
    let db = TestDatabase::new().await?;
    fill(&db, n, kind).await?;
    if analyze {
        sqlx::query("ANALYZE pgoutbox.operations")
            .execute(db.pool())
            .await?;
    }
    drain_pgoutbox(&db, n, kind, workers).await
}

/// One drain of `n` fresh operations by a raw baseline.
pub(crate) async fn baseline_run(n: i64, transactional: bool, batch: i64) -> Res<f64> {
    let db = TestDatabase::new().await?;
    fill(&db, n, Kind::Plain).await?;
    drain_baseline(&db, n, transactional, batch).await
}

/// W1: 20,000 operations drained by 10 workers (and by 64), beside the
/// claim-10 bound.
pub(crate) async fn w1(runs: usize) -> Res<Vec<Figure>> {
    const N: i64 = 20_000;
    let mut m: HashMap<&str, Vec<f64>> = HashMap::new();
    for _ in 0..runs {
        m.entry("ours")
            .or_default()
            .push(pgoutbox_run(N, Kind::Plain, 10, false).await?);
        m.entry("claim10")
            .or_default()
            .push(baseline_run(N, false, 10).await?);
        m.entry("analyzed")
            .or_default()
            .push(pgoutbox_run(N, Kind::Plain, 10, true).await?);
        m.entry("wide")
            .or_default()
            .push(pgoutbox_run(N, Kind::Plain, 64, false).await?);
    }
    Ok(vec![
        Figure::new(
            "W1 drain (vs claim-10 bound)",
            "ops/s",
            true,
            m["ours"].clone(),
            m["claim10"].clone(),
            0.7,
        ),
        Figure::new(
            "W1 drain, analyzed",
            "ops/s",
            true,
            m["analyzed"].clone(),
            m["claim10"].clone(),
            0.7,
        ),
        Figure::new(
            "W1 drain, 64 workers",
            "ops/s",
            true,
            m["wide"].clone(),
            m["claim10"].clone(),
            0.7,
        ),
    ])
}

/// W1-idem: the W1 drain with an `idempotent` no-op, with the opt-ins off,
/// with `idempotent_async_commit`, and with it and claiming ahead, beside
/// the claim-100 bound.
pub(crate) async fn w1_idem(runs: usize) -> Res<Vec<Figure>> {
    const N: i64 = 20_000;
    let (mut off, mut async_commit, mut ahead, mut bound) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        off.push(pgoutbox_run(N, Kind::Idempotent, 10, false).await?);
        async_commit.push(pgoutbox_run(N, Kind::IdempotentAsync, 10, false).await?);
        ahead.push(pgoutbox_run(N, Kind::IdempotentAhead, 10, false).await?);
        bound.push(baseline_run(N, false, 100).await?);
    }
    Ok(vec![
        Figure::new(
            "W1-idem drain, opt-ins off (vs claim-100)",
            "ops/s",
            true,
            off,
            bound.clone(),
            0.6,
        ),
        Figure::new(
            "W1-idem drain, idempotent_async_commit on",
            "ops/s",
            true,
            async_commit,
            bound.clone(),
            0.6,
        ),
        Figure::new(
            "W1-idem drain, async commit + claim ahead 90",
            "ops/s",
            true,
            ahead,
            bound,
            0.6,
        ),
    ])
}

/// W1-tx: 20,000 transactional no-ops drained by 10 workers, beside a raw
/// drain that claims 10 rows per transaction and then commits one
/// transaction per operation (the shape of a transactional handler's work).
pub(crate) async fn w1_tx(runs: usize) -> Res<Vec<Figure>> {
    const N: i64 = 20_000;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        ours.push(pgoutbox_run(N, Kind::Tx, 10, false).await?);
        base.push(baseline_run(N, true, 10).await?);
    }
    Ok(vec![Figure::new(
        "W1-tx drain (vs its bound)",
        "ops/s",
        true,
        ours,
        base,
        0.8,
    )])
}

/// Publishes `n` operations, one transaction each, from `clients` tasks.
/// How a W2 client publishes.
#[derive(Debug, Clone, Copy)]
enum Publish {
    /// pgoutbox's `Publisher`, NOTIFY on or off.
    Pgoutbox { notify: bool },
    /// `BEGIN; INSERT; [SELECT pg_notify(…);] COMMIT` in raw SQL.
    Raw { notify: bool },
}

async fn publish_rate(db: &TestDatabase, n: i64, clients: i64, mode: Publish) -> Res<f64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let pool = db.pool().clone();
        let (publisher, raw_notify) = match mode {
            Publish::Pgoutbox { notify } => {
                let channel = Identifier::new("pgoutbox").expect("valid");
                (
                    Some(Publisher::new(
                        &Identifier::default(),
                        notify.then_some(&channel),
                        5,
                    )),
                    false,
                )
            }
            Publish::Raw { notify } => (None, notify),
        };
        tasks.push(tokio::spawn(async move {
            for i in 0..n / clients {
                let mut tx = pool.begin().await?;
                if let Some(p) = &publisher {
                    p.publish(&mut tx, Noop { n: c * n + i }).await?;
                } else {
                    sqlx::query(
                        "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts) \
                         VALUES ('bench.noop', $1, 'h', 5)",
                    )
                    .bind(serde_json::json!({ "n": c * n + i }))
                    .execute(&mut *tx)
                    .await?;
                    if raw_notify {
                        sqlx::query("SELECT pg_notify('pgoutbox', '')")
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

/// W2: 5,000 publishes, one transaction each, from 1 and from 16 clients,
/// beside the raw `BEGIN; INSERT; pg_notify; COMMIT` and the same without
/// `pg_notify`.
pub(crate) async fn w2(runs: usize) -> Res<Vec<Figure>> {
    const N: i64 = 5_000;
    let mut m: HashMap<&str, Vec<f64>> = HashMap::new();
    for _ in 0..runs {
        for (key, clients, mode) in [
            ("one", 1, Publish::Pgoutbox { notify: true }),
            ("one_raw_notify", 1, Publish::Raw { notify: true }),
            ("one_raw", 1, Publish::Raw { notify: false }),
            ("many_notify", 16, Publish::Pgoutbox { notify: true }),
            ("many_quiet", 16, Publish::Pgoutbox { notify: false }),
            ("many_raw_notify", 16, Publish::Raw { notify: true }),
            ("many_raw", 16, Publish::Raw { notify: false }),
        ] {
            let db = TestDatabase::new().await?;
            m.entry(key)
                .or_default()
                .push(publish_rate(&db, N, clients, mode).await?);
        }
    }
    let f = |name, ours: &str, base: &str, target| {
        Figure::new(
            name,
            "ops/s",
            true,
            m[ours].clone(),
            m[base].clone(),
            target,
        )
    };
    let reference = |name, ours: &str, base: &str| {
        Figure::reference(name, "ops/s", m[ours].clone(), m[base].clone())
    };
    Ok(vec![
        f(
            "W2 publish, 1 client (vs raw + pg_notify)",
            "one",
            "one_raw_notify",
            0.85,
        ),
        reference(
            "W2 raw, 1 client: pg_notify on/off",
            "one_raw_notify",
            "one_raw",
        ),
        f(
            "W2 publish, 16, NOTIFY off (vs raw)",
            "many_quiet",
            "many_raw",
            0.8,
        ),
        f(
            "W2 16 clients: NOTIFY on/off",
            "many_notify",
            "many_quiet",
            0.85,
        ),
        reference(
            "W2 raw, 16 clients: pg_notify on/off",
            "many_raw_notify",
            "many_raw",
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
    let (mut s50, mut s99) = (Vec::new(), Vec::new());
    let (mut held99, mut rolled99) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let db = TestDatabase::new().await?;
        let mut s = settings(&db, 10);
        s.workflow_system.poll_interval = Duration::from_secs(1);
        let system = WorkflowSystem::builder(s)
            .router(WorkflowRouter::new().operation::<Latency>())
            .start()
            .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut latencies = pickup_latencies(&db, 0..N).await?;
        p50.push(percentile(&mut latencies, 0.5));
        p99.push(percentile(&mut latencies, 0.99));
        // The same under a steady stream of publishes: 4 background
        // publishers, one transaction every 2 ms each, so that most
        // publishing transactions overlap another one and their wake-ups
        // are coalesced.
        let streaming = Arc::new(AtomicBool::new(true));
        let mut background = Vec::new();
        for _ in 0..4 {
            let (pool, streaming) = (db.pool().clone(), Arc::clone(&streaming));
            background.push(tokio::spawn(async move {
                while streaming.load(Ordering::Relaxed) {
                    let mut tx = pool.begin().await?;
                    publish(&mut tx, Latency { seq: -1 }).await?;
                    tx.commit().await?;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let streamed = pickup_latencies(&db, N..2 * N).await;
        streaming.store(false, Ordering::Relaxed);
        for task in background {
            task.await?.map_err(|e| e.to_string())?;
        }
        let mut streamed = streamed?;
        s50.push(percentile(&mut streamed, 0.5));
        s99.push(percentile(&mut streamed, 0.99));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut held = held_latencies(&db, 2 * N).await?;
        held99.push(percentile(&mut held, 0.99));
        let mut rolled = rolled_back_latencies(&db, 3 * N).await?;
        rolled99.push(percentile(&mut rolled, 0.99));
        diagnose_held_and_rolled_back(&mut held, &mut rolled);
        system.stop().await?;
        let mut raw = raw_notify_latencies(&db, N).await?;
        raw50.push(percentile(&mut raw, 0.5));
        raw99.push(percentile(&mut raw, 0.99));
    }
    Ok(vec![
        Figure::absolute(
            "W3 pickup p50 (vs raw NOTIFY)",
            "ms",
            p50,
            raw50.clone(),
            2.0,
        ),
        Figure::absolute(
            "W3 pickup p99 (vs raw NOTIFY)",
            "ms",
            p99,
            raw99.clone(),
            5.0,
        ),
        Figure::absolute(
            "W3 pickup p50, steady stream (vs raw NOTIFY)",
            "ms",
            s50,
            raw50,
            5.0,
        ),
        Figure::absolute(
            "W3 pickup p99, steady stream (vs raw NOTIFY)",
            "ms",
            s99,
            raw99.clone(),
            20.0,
        ),
        Figure::absolute(
            "W3 pickup p99, 8 publishers holding 0-300 ms (vs raw NOTIFY)",
            "ms",
            held99,
            raw99.clone(),
            20.0,
        ),
        Figure::absolute(
            "W3 pickup p99, rolled-back publish in the slot (vs raw NOTIFY)",
            "ms",
            rolled99,
            raw99,
            20.0,
        ),
    ])
}

/// With `PGOUTBOX_BENCH_DIAG`, prints the held and rolled-back scenarios'
/// p50, p99 and maximum.
fn diagnose_held_and_rolled_back(held: &mut [f64], rolled: &mut [f64]) {
    if std::env::var_os("PGOUTBOX_BENCH_DIAG").is_some() {
        eprintln!(
            "W3 held: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; rolled back: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(held, 0.5),
            percentile(held, 0.99),
            percentile(held, 1.0),
            percentile(rolled, 0.5),
            percentile(rolled, 0.99),
            percentile(rolled, 1.0),
        );
    }
}

/// The raw LISTEN/NOTIFY round trip of the same server, from sending the
/// NOTIFY (its statement and commit included) to receiving it, `n` times,
/// in milliseconds.
async fn raw_notify_latencies(db: &TestDatabase, n: i64) -> Res<Vec<f64>> {
    let mut listener = sqlx::postgres::PgListener::connect(&db.url()).await?;
    listener.listen("bench_raw").await?;
    let mut raw = Vec::new();
    for _ in 0..n {
        let sent = Instant::now();
        sqlx::query("SELECT pg_notify('bench_raw', 'x')")
            .execute(db.pool())
            .await?;
        listener.recv().await?;
        raw.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(raw)
}

/// The time a handler started for `seq`, waiting for it (10 s at most).
async fn started_at(seq: i64) -> Res<Instant> {
    loop {
        let notified = STARTED_SIGNAL.notified();
        if let Some(at) = STARTED
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|m| m.remove(&seq))
        {
            return Ok(at);
        }
        tokio::time::timeout(Duration::from_secs(10), notified)
            .await
            .map_err(|_| format!("operation {seq} was not picked up within 10 s"))?;
    }
}

/// 8 publishers, each transaction held 0-300 ms after its publish before
/// it commits (an application doing more work after recording intent):
/// the time from each commit to its handler's start, in milliseconds.
async fn held_latencies(db: &TestDatabase, first: i64) -> Res<Vec<f64>> {
    const PUBLISHERS: i64 = 8;
    const EACH: i64 = 10;
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let pool = db.pool().clone();
        tasks.push(tokio::spawn(async move {
            let mut committed = Vec::new();
            for i in 0..EACH {
                let seq = first + p * EACH + i;
                // Spread over 0-300 ms, differently for each publisher.
                let hold = u64::try_from((seq * 7919 + p * 104_729) % 301).unwrap_or(0);
                let mut tx = pool.begin().await?;
                publish(&mut tx, Latency { seq }).await?;
                tokio::time::sleep(Duration::from_millis(hold)).await;
                tx.commit().await?;
                committed.push((seq, Instant::now()));
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(committed)
        }));
    }
    let mut committed = Vec::new();
    for task in tasks {
        committed.extend(task.await?.map_err(|e| e.to_string())?);
    }
    let mut latencies = Vec::new();
    for (seq, at) in committed {
        let started = started_at(seq).await?;
        latencies.push(started.saturating_duration_since(at).as_secs_f64() * 1000.0);
    }
    Ok(latencies)
}

/// A publishing transaction that rolls back 40 ms after its publish, while
/// another that published 1 ms after it (so mostly in the same 10 ms slot)
/// commits 60 ms after its own: the time from that commit to its handler's
/// start, in milliseconds.
async fn rolled_back_latencies(db: &TestDatabase, first: i64) -> Res<Vec<f64>> {
    const SAMPLES: i64 = 20;
    let mut latencies = Vec::new();
    for seq in first..first + SAMPLES {
        let mut rolled_back = db.pool().begin().await?;
        let mut committed = db.pool().begin().await?;
        publish(&mut rolled_back, Latency { seq: -1 }).await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
        publish(&mut committed, Latency { seq }).await?;
        tokio::time::sleep(Duration::from_millis(39)).await;
        rolled_back.rollback().await?;
        tokio::time::sleep(Duration::from_millis(21)).await;
        committed.commit().await?;
        let at = Instant::now();
        let started = started_at(seq).await?;
        latencies.push(started.saturating_duration_since(at).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    Ok(latencies)
}

/// Publishes one `Latency` operation per sequence number, each in its own
/// transaction, and returns the time from each commit to its handler's
/// start, in milliseconds.
async fn pickup_latencies(db: &TestDatabase, seqs: std::ops::Range<i64>) -> Res<Vec<f64>> {
    let mut latencies = Vec::new();
    for seq in seqs {
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
    Ok(latencies)
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
            fill(db, N, Kind::Plain).await?;
            figures.push(drain_pgoutbox(db, N, Kind::Plain, 10).await?);
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
/// 200,000 ready operations of a name the worker does not handle, beside
/// 200,000 operations of its own name scheduled an hour ahead, and beside
/// the same spread over 30,000 distinct priorities (half of them above the
/// drained rows' priority 0: migration 7's case).
pub(crate) async fn w5(runs: usize) -> Res<Vec<Figure>> {
    const N: i64 = 5_000;
    const OTHERS: i64 = 200_000;
    let empty = TestDatabase::new().await?;
    let unhandled = TestDatabase::new().await?;
    let scheduled = TestDatabase::new().await?;
    let spread = TestDatabase::new().await?;
    for (db, name, delay, priorities) in [
        (&unhandled, "bench.unhandled", "0 seconds", 1),
        (&scheduled, Noop::NAME, "1 hour", 1),
        (&spread, Noop::NAME, "1 hour", 30_000),
    ] {
        sqlx::query(
            "INSERT INTO pgoutbox.operations (name, payload, schema_hash, max_attempts, run_at, priority) \
             SELECT $1, jsonb_build_object('n', g), 'h', 5, now() + $3::interval, \
                    CASE WHEN $4 = 1 THEN 0 ELSE g % $4 - $4 / 2 END \
             FROM generate_series(1, $2) AS g",
        )
        .bind(name)
        .bind(OTHERS)
        .bind(delay)
        .bind(priorities)
        .execute(db.pool())
        .await?;
        sqlx::query("VACUUM ANALYZE pgoutbox.operations")
            .execute(db.pool())
            .await?;
        // As in W4: the load's dirty pages are written now, not during the
        // drains that are timed.
        sqlx::query("CHECKPOINT").execute(db.pool()).await?;
    }
    let (mut with_empty, mut with_unhandled, mut with_scheduled, mut with_spread) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        // Rotating the order, so that none always follows the same one.
        let mut order = [0, 1, 2, 3];
        order.rotate_left(run % 4);
        for which in order {
            let (db, figures) = match which {
                0 => (&empty, &mut with_empty),
                1 => (&unhandled, &mut with_unhandled),
                2 => (&scheduled, &mut with_scheduled),
                _ => (&spread, &mut with_spread),
            };
            fill(db, N, Kind::Plain).await?;
            figures.push(drain_pgoutbox(db, N, Kind::Plain, 10).await?);
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
            with_empty.clone(),
            0.9,
        ),
        Figure::new(
            "W5 drain, 200k scheduled in 1 h over 30k priorities",
            "ops/s",
            true,
            with_spread,
            with_empty,
            0.9,
        ),
    ])
}

/// The dashboard's pages timed in the server (routing, the `Admin` reads
/// and the rendering; no network), in milliseconds.
async fn page_ms(app: &axum::Router, path: &str) -> Res<f64> {
    use tower::ServiceExt as _;
    let request = axum::http::Request::get(path).body(axum::body::Body::empty())?;
    let start = Instant::now();
    let response = app.clone().oneshot(request).await?;
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 26).await?;
    let elapsed = start.elapsed();
    if !status.is_success() || body.is_empty() {
        return Err(format!("{path}: {status}").into());
    }
    Ok(elapsed.as_secs_f64() * 1000.0)
}

/// Loads `n` operations the way a day of a busy system leaves them: ten
/// names over three queues; mostly succeeded, with some pending, retrying,
/// dead, stalled and cancelled (with errors); one attempt per started
/// operation, their ends spread over the last 24 hours.
async fn load_history(db: &TestDatabase, n: i64) -> Res<()> {
    sqlx::query(
        "INSERT INTO pgoutbox.operations \
           (name, payload, schema_hash, status, queue, max_attempts, attempt, created_at, \
            updated_at, finished_at, run_at, last_error) \
         SELECT 'bench.name' || (g % 10), jsonb_build_object('n', g, 'customer', g % 9973), 'h', s.status, \
                'q' || (g % 3), 5, CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END, t, t, \
                CASE WHEN s.status IN ('succeeded', 'dead', 'cancelled') THEN t END, t, \
                CASE WHEN s.status IN ('dead', 'retrying', 'stalled') THEN 'provider said 503 for ' || g END \
         FROM generate_series(1, $1) AS g \
         CROSS JOIN LATERAL (SELECT now() - (($1 - g) * interval '86400 seconds') / $1 AS t) AS at \
         CROSS JOIN LATERAL (SELECT CASE \
             WHEN g % 1000 = 1 THEN 'stalled' WHEN g % 200 = 2 THEN 'dead' \
             WHEN g % 330 = 3 THEN 'retrying' WHEN g % 1000 = 4 THEN 'cancelled' \
             WHEN g > $1 - $1 / 50 THEN 'pending' ELSE 'succeeded' END AS status) AS s",
    )
    .bind(n)
    .execute(db.pool())
    .await?;
    sqlx::query(
        "INSERT INTO pgoutbox.attempts \
           (operation_id, operation_name, number, worker_id, started_at, finished_at, outcome, error) \
         SELECT id, name, 1, '00000000-0000-0000-0000-000000000001', created_at, \
                created_at + interval '40 milliseconds', \
                CASE status WHEN 'succeeded' THEN 'succeeded' WHEN 'stalled' THEN 'lost' \
                            WHEN 'cancelled' THEN 'succeeded' ELSE 'failed' END, last_error \
         FROM pgoutbox.operations WHERE status <> 'pending'",
    )
    .execute(db.pool())
    .await?;
    sqlx::query("VACUUM ANALYZE").execute(db.pool()).await?;
    sqlx::query("CHECKPOINT").execute(db.pool()).await?;
    Ok(())
}

/// The dashboard workload: the dashboard's overview and first list page, server time, on a
/// table of 1,000,000 operations, beside the same pages on an empty one.
pub(crate) async fn dashboard(runs: usize) -> Res<Vec<Figure>> {
    use pgoutbox::admin::Admin;
    use pgoutbox::dashboard::{self, DashboardOptions};
    const N: i64 = 1_000_000;
    let empty = TestDatabase::new().await?;
    let full = TestDatabase::new().await?;
    load_history(&full, N).await?;
    let app = |db: &TestDatabase| {
        dashboard::router(
            Admin::new(db.pool().clone(), &Identifier::default()),
            DashboardOptions::default(),
        )
    };
    let (empty_app, full_app) = (app(&empty), app(&full));
    let pages = [
        ("Dashboard overview, 1M rows", "/"),
        ("Dashboard first list page, 1M rows", "/operations"),
        (
            "Dashboard dead, first page, 1M rows",
            "/operations?status=dead",
        ),
        ("Dashboard stalled page, 1M rows", "/stalled"),
    ];
    let mut figures = Vec::new();
    for (label, path) in pages {
        // One request each first: the pool's connections and their
        // prepared statements, as a dashboard that has been open a while.
        page_ms(&empty_app, path).await?;
        page_ms(&full_app, path).await?;
        let (mut on_full, mut on_empty) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            on_full.push(page_ms(&full_app, path).await?);
            on_empty.push(page_ms(&empty_app, path).await?);
        }
        figures.push(Figure::absolute(label, "ms", on_full, on_empty, 200.0));
    }
    Ok(figures)
}

/// W7's diamond: the first step, handing its number on.
#[operation("bench.wf_source")]
async fn wf_source(ctx: &mut Context, n: i64) -> Result<i64> {
    let _ = ctx;
    Ok(n)
}

/// W7's diamond: a middle step (two per diamond), reading the first's
/// result.
#[operation("bench.wf_middle")]
async fn wf_middle(ctx: &mut Context, from: Dep<WfSource>) -> Result<i64> {
    Ok(ctx.result(&from)? + 1)
}

/// W7's diamond: the last step, reading both middle steps' results.
#[operation("bench.wf_join")]
async fn wf_join(ctx: &mut Context, left: Dep<WfMiddle>, right: Dep<WfMiddle>) -> Result<i64> {
    Ok(ctx.result(&left)? + ctx.result(&right)?)
}

/// W7's fan-in: the step that waits for a thousand sources.
#[operation("bench.wf_sum")]
async fn wf_sum(ctx: &mut Context, parts: Vec<Dep<WfSource>>) -> Result<i64> {
    Ok(ctx.results(&parts)?.into_iter().sum())
}

fn workflow_router() -> WorkflowRouter {
    WorkflowRouter::new()
        .operation::<WfSource>()
        .operation::<WfMiddle>()
        .operation::<WfJoin>()
        .operation::<WfSum>()
}

/// Waits until no workflow is `running`, then checks that all `n` ended
/// `succeeded`.
async fn wait_workflows(db: &TestDatabase, n: i64) -> Res<()> {
    let deadline = Instant::now() + Duration::from_mins(10);
    while count(
        db,
        "SELECT count(*) FROM pgoutbox.workflows WHERE state = 'running'",
    )
    .await?
        > 0
    {
        if Instant::now() > deadline {
            return Err("the workflows did not finish within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let succeeded = count(
        db,
        "SELECT count(*) FROM pgoutbox.workflows WHERE state = 'succeeded'",
    )
    .await?;
    if succeeded != n {
        return Err(format!("{succeeded} of {n} workflows succeeded").into());
    }
    Ok(())
}

/// Seconds from the first attempt's start to the last attempt's end, by
/// the database's clock, of the attempts after `after` (as
/// [`drain_pgoutbox`] times).
async fn attempts_span(db: &TestDatabase, after: i64) -> Res<Duration> {
    let seconds: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 \
         FROM pgoutbox.attempts WHERE id > $1",
    )
    .bind(after)
    .fetch_one(db.pool())
    .await?;
    Ok(Duration::from_secs_f64(seconds))
}

/// One W7 run: `diamonds` diamond workflows (4 steps each) drained by 10
/// workers; steps/s, timed like [`drain_pgoutbox`]. Every `D` must have
/// received its `B`'s and `C`'s results (`(n + 1) + (n + 1)`).
async fn w7_diamonds(diamonds: i64) -> Res<f64> {
    let db = TestDatabase::new().await?;
    let mut tx = db.pool().begin().await?;
    for n in 0..diamonds {
        let mut wf = Workflow::new("bench.diamond");
        let a = wf.add(WfSource { n });
        let b = wf.add(WfMiddle { from: a });
        let c = wf.add(WfMiddle { from: a });
        wf.add(WfJoin { left: b, right: c });
        publish_workflow(&mut tx, wf).await?;
    }
    tx.commit().await?;
    sqlx::query("VACUUM ANALYZE pgoutbox.operations")
        .execute(db.pool())
        .await?;
    let system = WorkflowSystem::builder(settings(&db, 10))
        .router(workflow_router())
        .start()
        .await?;
    wait_workflows(&db, diamonds).await?;
    system.stop().await?;
    let elapsed = attempts_span(&db, 0).await?;
    let wrong = count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations o JOIN pgoutbox.attempts a \
         ON a.operation_id = o.id AND a.outcome = 'succeeded' \
         WHERE o.name = 'bench.wf_join' AND a.result IS DISTINCT FROM to_jsonb( \
            2 * (SELECT (s.payload->>'n')::bigint FROM pgoutbox.operations s WHERE s.id = o.root_id) + 2)",
    )
    .await?;
    if wrong != 0 {
        return Err(format!("{wrong} diamonds handed on wrong results").into());
    }
    diagnose(&db).await?;
    Ok(per_second(4 * diamonds, elapsed))
}

/// One W7 baseline run: `n` independent no-ops, the same 10 workers.
async fn w7_independent(n: i64) -> Res<f64> {
    let db = TestDatabase::new().await?;
    fill(&db, n, Kind::Plain).await?;
    sqlx::query("VACUUM ANALYZE pgoutbox.operations")
        .execute(db.pool())
        .await?;
    let rate = drain_pgoutbox(&db, n, Kind::Plain, 10).await?;
    diagnose(&db).await?;
    Ok(rate)
}

/// W7's reference: the same `n` independent no-ops, drained by 10 workers
/// that also handle the diamond's names (none of which is ready), so that
/// every claim takes the several-names path a workflow's worker takes.
async fn w7_independent_several_names(n: i64) -> Res<f64> {
    let db = TestDatabase::new().await?;
    fill(&db, n, Kind::Plain).await?;
    sqlx::query("VACUUM ANALYZE pgoutbox.operations")
        .execute(db.pool())
        .await?;
    let system = WorkflowSystem::builder(settings(&db, 10))
        .router(workflow_router().operation::<Noop>())
        .start()
        .await?;
    wait_drained(&db, Noop::NAME).await?;
    system.stop().await?;
    let succeeded = count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
    )
    .await?;
    if succeeded != n {
        return Err(format!("{succeeded} of {n} operations succeeded").into());
    }
    Ok(per_second(n, attempts_span(&db, 0).await?))
}

/// With `PGOUTBOX_BENCH_DIAG` set, where a W7 drain's time went: each
/// name's attempt time (claim to recorded end) and wait from its last
/// dependency's recorded success to its start, and the pauses between
/// claims.
async fn diagnose(db: &TestDatabase) -> Res<()> {
    if std::env::var_os("PGOUTBOX_BENCH_DIAG").is_none() {
        return Ok(());
    }
    let rows: Vec<(String, f64, Option<f64>, Option<f64>)> = sqlx::query_as(
        "SELECT a.operation_name, \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.finished_at - a.started_at))::float8 * 1000, \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.started_at - d.done))::float8 * 1000, \
                percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM a.started_at - d.done))::float8 * 1000 \
         FROM pgoutbox.attempts a LEFT JOIN LATERAL (SELECT max(x.finished_at) AS done FROM pgoutbox.workflow_edges e \
            JOIN pgoutbox.attempts x ON x.operation_id = e.dependency_id AND x.outcome = 'succeeded' \
            WHERE e.operation_id = a.operation_id) d ON true GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await?;
    for (name, run, lag50, lag90) in rows {
        eprintln!(
            "{name}: attempt p50 {run:.2} ms; release→start p50 {lag50:?} ms, p90 {lag90:?} ms"
        );
    }
    let (pauses, pause_seconds, span): (i64, f64, f64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE gap > 0.05), coalesce(sum(gap) FILTER (WHERE gap > 0.05), 0)::float8, \
                coalesce(sum(gap), 0)::float8 \
         FROM (SELECT extract(epoch FROM started_at - lag(started_at) OVER (ORDER BY started_at)) AS gap \
               FROM pgoutbox.attempts) g",
    )
    .fetch_one(db.pool())
    .await?;
    eprintln!("pauses between claims over 50 ms: {pauses}, {pause_seconds:.2} s of {span:.2} s");
    Ok(())
}

/// One fan-in of `width` sources into one sum, on a running 10-worker
/// system: (release, whole) in milliseconds. The release is from the last
/// source's recorded success (its attempt's `finished_at`, the recording
/// transaction's time) to the sum's attempt start; the whole is from the
/// workflow's commit (taken after it, by the database's clock) to the
/// sum's attempt start.
async fn w7_fan_in(width: i64) -> Res<(f64, f64)> {
    let db = TestDatabase::new().await?;
    let system = WorkflowSystem::builder(settings(&db, 10))
        .router(workflow_router())
        .start()
        .await?;
    let mut wf = Workflow::new("bench.fan_in");
    let parts: Vec<_> = (1..=width).map(|n| wf.add(WfSource { n })).collect();
    wf.add(WfSum { parts });
    let mut tx = db.pool().begin().await?;
    let published = publish_workflow(&mut tx, wf).await?;
    tx.commit().await?;
    let committed: f64 = sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8")
        .fetch_one(db.pool())
        .await?;
    wait_workflows(&db, 1).await?;
    system.stop().await?;
    let sum = published.steps.last().ok_or("no steps")?.as_i64();
    let (release, whole, result): (f64, f64, serde_json::Value) = sqlx::query_as(
        "SELECT extract(epoch FROM s.started_at - (SELECT max(a.finished_at) FROM pgoutbox.attempts a \
                    JOIN pgoutbox.workflow_edges e ON e.dependency_id = a.operation_id \
                    WHERE e.operation_id = $1 AND a.outcome = 'succeeded'))::float8 * 1000, \
                (extract(epoch FROM s.started_at)::float8 - $2) * 1000, s.result \
         FROM pgoutbox.attempts s WHERE s.operation_id = $1 AND s.outcome = 'succeeded'",
    )
    .bind(sum)
    .bind(committed)
    .fetch_one(db.pool())
    .await?;
    if result != serde_json::json!(width * (width + 1) / 2) {
        return Err(format!("the fan-in summed {result}").into());
    }
    Ok((release, whole))
}

/// W7: 2,000 diamond workflows (4 no-op steps, results handed on) beside
/// 8,000 independent no-ops, the same 10 workers, in the same run; for
/// reference, the independent ones drained by a worker that also handles
/// the diamond's names (the several-names claim); and a 1,000-way fan-in's
/// release time.
pub(crate) async fn w7(runs: usize) -> Res<Vec<Figure>> {
    const DIAMONDS: i64 = 2_000;
    const WIDTH: i64 = 1_000;
    let (mut diamonds, mut independent, mut several, mut release, mut whole) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        // Alternating which goes first, so that neither always follows
        // the other.
        if run % 2 == 0 {
            diamonds.push(w7_diamonds(DIAMONDS).await?);
            independent.push(w7_independent(4 * DIAMONDS).await?);
        } else {
            independent.push(w7_independent(4 * DIAMONDS).await?);
            diamonds.push(w7_diamonds(DIAMONDS).await?);
        }
        several.push(w7_independent_several_names(4 * DIAMONDS).await?);
        let (r, w) = w7_fan_in(WIDTH).await?;
        release.push(r);
        whole.push(w);
    }
    Ok(vec![
        Figure::new(
            "W7 2,000 diamonds vs 8,000 independent",
            "steps/s",
            true,
            diamonds,
            independent.clone(),
            0.7,
        ),
        Figure::reference(
            "W7 reference: the independent, worker of 4 names",
            "steps/s",
            several,
            independent,
        ),
        Figure::absolute(
            "W7 fan-in 1,000: release (vs publish→start)",
            "ms",
            release,
            whole,
            250.0,
        ),
    ])
}
