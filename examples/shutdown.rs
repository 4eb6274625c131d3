//! A graceful stop under load: the worker stops claiming, waits a little
//! for running handlers, aborts the rest and records every aborted attempt,
//! so that the database still says exactly what happened.
//!
//! Run it with `cargo run --example shutdown`. With `DATABASE_URL` unset it
//! starts a private, throwaway PostgreSQL from the local installation.
//!
//! 300 operations are published: thumbnails (`idempotent`: rendering one
//! twice is harmless) and text messages (not idempotent: the SMS gateway
//! has no idempotency key, and a message sent twice is sent twice). Each
//! handler takes 50 to 450 ms, one in five takes 2 s. The worker is stopped
//! with a 250 ms `shutdown_wait` while 16 handlers are running. An aborted
//! attempt's outcome is unknown (the message may or may not have left), so
//! an aborted thumbnail is retried later and an aborted text message is
//! `stalled` until an operator decides.
//!
//! What to read in its output: how many handlers were running when the stop
//! began and how many it aborted; the operations by state, as `Admin` (and
//! `pgoutbox stats`) reads them: none left `running`, as many as were
//! published; each operation whose attempt was aborted, the thumbnails
//! `retrying` and the text messages `stalled`, one `aborted` attempt for
//! each aborted handler; and as many `succeeded` as handlers finished.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use pgoutbox::admin::{Admin, OperationFilter};
use pgoutbox::prelude::*;
use pgoutbox::testing::TestDatabase;
use pgoutbox::{Identifier, Outcome, Status};
use tokio::sync::Notify;

type BoxError = Box<dyn std::error::Error>;

const PUBLISHED: i64 = 300;
const N_WORKERS: usize = 16;
const SHUTDOWN_WAIT: Duration = Duration::from_millis(250);

/// Handlers running now (an aborted handler's future is dropped, and its
/// guard counts it out).
static IN_FLIGHT: AtomicI64 = AtomicI64::new(0);
/// Handlers that ran to the end and returned `Ok`.
static FINISHED: AtomicI64 = AtomicI64::new(0);
/// Wakes `main` when a slow handler starts.
static SLOW_STARTED: Notify = Notify::const_new();

/// Render a thumbnail: harmless to do twice, hence `idempotent`.
#[operation("media.thumbnail", idempotent)]
async fn render_thumbnail(ctx: &mut Context, image_id: i64, duration_ms: u64) -> Result<()> {
    let _ = (ctx, image_id);
    work(duration_ms).await;
    Ok(())
}

/// Send a text message through a gateway without idempotency keys: not
/// idempotent, so an unknown outcome stalls it.
#[operation("sms.send")]
async fn send_sms(ctx: &mut Context, phone: String, duration_ms: u64) -> Result<()> {
    let _ = (ctx, phone);
    work(duration_ms).await;
    Ok(())
}

/// Some work that takes `duration_ms`, counted while it runs.
async fn work(duration_ms: u64) {
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        }
    }
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let _running = Running;
    if duration_ms >= 1000 {
        SLOW_STARTED.notify_waiters();
    }
    tokio::time::sleep(Duration::from_millis(duration_ms)).await;
    FINISHED.fetch_add(1, Ordering::SeqCst);
}

/// How long operation `i`'s handler takes.
fn duration_ms(i: i64) -> u64 {
    if i % 5 == 3 {
        2000
    } else {
        50 + u64::try_from(i * 37 % 400).unwrap_or(0)
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), BoxError> {
    let db = TestDatabase::new().await?;
    println!("database `{}` ready", db.name());
    publish_load(&db).await?;
    let aborted = run_and_stop(&db).await?;
    read_the_record(&db, aborted).await?;
    Ok(())
}

/// Publishes `PUBLISHED` operations, the two kinds interleaved so that they
/// run side by side.
async fn publish_load(db: &TestDatabase) -> std::result::Result<(), BoxError> {
    let mut tx = db.pool().begin().await?;
    for i in 0..PUBLISHED {
        if i % 2 == 0 {
            let image = RenderThumbnail {
                image_id: i,
                duration_ms: duration_ms(i),
            };
            publish(&mut tx, image).await?;
        } else {
            let sms = SendSms {
                phone: format!("+4670000{i:04}"),
                duration_ms: duration_ms(i),
            };
            publish(&mut tx, sms).await?;
        }
    }
    tx.commit().await?;
    println!("published {PUBLISHED} operations: half thumbnails, half text messages");
    Ok(())
}

/// Starts a worker, lets it work, stops it while handlers run; returns how
/// many it aborted.
async fn run_and_stop(db: &TestDatabase) -> std::result::Result<usize, BoxError> {
    let mut settings = Settings::default();
    settings.database.url = Some(db.url());
    settings.workflow_system.n_workers = N_WORKERS;
    settings.workflow_system.poll_interval = Duration::from_millis(200);
    settings.workflow_system.shutdown_wait = SHUTDOWN_WAIT;
    let system = WorkflowSystem::builder(settings)
        .router(
            WorkflowRouter::new()
                .operation::<RenderThumbnail>()
                .operation::<SendSms>(),
        )
        .start()
        .await?;
    println!("worker started with {N_WORKERS} handler slots");

    // Let it work for a while, then stop just after a 2 s handler started,
    // so that something is certainly still running after the wait.
    let deadline = Instant::now() + Duration::from_secs(30);
    while FINISHED.load(Ordering::SeqCst) < 60 {
        if Instant::now() > deadline {
            return Err("fewer than 60 handlers finished within 30s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), SLOW_STARTED.notified())
        .await
        .map_err(|_| "no slow handler started within 10s")?;
    let in_flight = IN_FLIGHT.load(Ordering::SeqCst);
    println!(
        "\nstopping with {in_flight} handlers running ({} finished so far), shutdown_wait = \
         {SHUTDOWN_WAIT:?}",
        FINISHED.load(Ordering::SeqCst)
    );
    let started = Instant::now();
    let report = system.stop().await?;
    println!(
        "stopped in {:?}: {report:?} ({} handlers finished within the wait)",
        started.elapsed(),
        in_flight - i64::try_from(report.aborted)?
    );
    Ok(report.aborted)
}

/// Reads back what the database recorded, as an operator would.
async fn read_the_record(db: &TestDatabase, aborted: usize) -> std::result::Result<(), BoxError> {
    let admin = Admin::new(db.pool().clone(), &Identifier::default());
    println!("\noperations by state:");
    let (mut total, mut succeeded) = (0, 0);
    for (status, name, n) in admin.stats(Duration::from_mins(1), 1).await?.counts {
        println!("  {status:<10} {name:<16} {n:>4}");
        total += n;
        if status == Status::Succeeded {
            succeeded += n;
        }
    }
    println!("  {total} operations recorded, {PUBLISHED} published");

    println!("\nthe operations whose attempt was aborted:");
    let filter = OperationFilter {
        statuses: vec![Status::Retrying, Status::Stalled],
        ..OperationFilter::default()
    };
    let mut recorded = 0;
    for op in admin.list(&filter).await?.into_iter().rev() {
        let Some(last) = admin.show(op.id).await?.and_then(|mut d| d.attempts.pop()) else {
            continue;
        };
        let outcome = last.outcome.map_or("-", Outcome::as_str);
        recorded += usize::from(last.outcome == Some(Outcome::Aborted));
        println!(
            "  {:>3} {:<16} {:<9} attempt {}: {outcome}",
            op.id, op.name, op.status, last.number
        );
    }
    println!("  {recorded} `aborted` attempts recorded, {aborted} handlers aborted by the stop");
    println!(
        "\n{succeeded} operations succeeded, {} handlers finished",
        FINISHED.load(Ordering::SeqCst)
    );
    Ok(())
}
