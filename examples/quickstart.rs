//! pgoutbox's quickstart: typed operations, published atomically with the
//! application's own writes, run by a worker that records every attempt.
//!
//! Run it with `cargo run --example quickstart`. With `DATABASE_URL` unset
//! it starts a private, throwaway PostgreSQL from the local installation
//! (`apt-get install postgresql` if there is none); with `DATABASE_URL`
//! set it creates a fresh database on that server.
//!
//! What to read in its output: the handlers' lines as the worker runs them
//! (the account opens and publishes its welcome mail as a follow-up, the
//! partner call fails twice before it succeeds, the reminder runs once its
//! 2 s delay has passed, a digest goes out on its schedule every 2 s),
//! then the record as an operator reads it with `Admin`: every operation
//! with each of its attempts, no trace of the mail published in a
//! transaction that rolled back, and the schedule with its last tick.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pgoutbox::admin::{Admin, OperationFilter};
use pgoutbox::prelude::*;
use pgoutbox::testing::{TestDatabase, wait_until_finished};
use pgoutbox::{Identifier, Schedule};

/// Send a welcome e-mail (a stand-in for any external call).
#[operation("mail.welcome")]
async fn send_welcome(ctx: &mut Context, user_id: i64, email: String) -> Result<()> {
    println!(
        "  [mail.welcome] operation {} attempt {}: welcome mail to {email} (user {user_id})",
        ctx.operation_id(),
        ctx.attempt()
    );
    Ok(())
}

/// Open an account: writes a business row inside the dispatcher's
/// transaction, so the row and the success commit together or not at all.
#[operation("accounts.open", transactional, idempotent)]
async fn open_account(ctx: &mut TxContext<'_>, user_id: i64, plan: String) -> Result<()> {
    ctx.execute(
        sqlx::query("INSERT INTO accounts (user_id, plan) VALUES ($1, $2)")
            .bind(user_id)
            .bind(&plan),
    )
    .await?;
    println!(
        "  [accounts.open] account for user {user_id} on plan {plan} (same transaction as the success)"
    );
    // A follow-up, committed with this transaction; it carries this
    // operation as its parent.
    ctx.publish(SendWelcome {
        user_id,
        email: format!("user{user_id}@example.com"),
    })
    .await?;
    Ok(())
}

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

/// Call a partner API that fails twice before it answers.
#[operation(
    "partner.sync",
    max_attempts = 5,
    backoff(initial = "200ms", max = "1s")
)]
async fn sync_partner(ctx: &mut Context, user_id: i64) -> Result<()> {
    let call = FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    if call <= 2 {
        println!(
            "  [partner.sync] attempt {}: partner API unavailable",
            ctx.attempt()
        );
        return Err(HandlerError::retryable(std::io::Error::other(
            "partner API answered 503 Service Unavailable",
        )));
    }
    println!(
        "  [partner.sync] attempt {}: user {user_id} synced",
        ctx.attempt()
    );
    Ok(())
}

/// A reminder, published with a delay.
#[operation("mail.reminder")]
async fn send_reminder(ctx: &mut Context, user_id: i64) -> Result<()> {
    println!(
        "  [mail.reminder] operation {}: reminder for user {user_id}, sent after its delay",
        ctx.operation_id()
    );
    Ok(())
}

/// A digest of the day's activity, published by the workers on a schedule
/// (below: every 2 s so that the example shows it; a real one might be
/// `0 8 * * MON-FRI` in `Europe/Berlin`).
#[operation("mail.digest", idempotent)]
async fn send_digest(ctx: &mut Context, tick: String) -> Result<()> {
    println!(
        "  [mail.digest] operation {}: digest for the tick at {tick}",
        ctx.operation_id()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    // A fresh database with pgoutbox's migrations applied (in an
    // application: `pgoutbox::migrate::run(&pool, &schema)` or
    // `pgoutbox migrate up`).
    let db = TestDatabase::new().await?;
    sqlx::query("CREATE TABLE accounts (user_id bigint PRIMARY KEY, plan text NOT NULL)")
        .execute(db.pool())
        .await?;
    println!("database `{}` ready", db.name());

    let mut settings = Settings::default();
    settings.database.url = Some(db.url());
    settings.workflow_system.n_workers = 4;
    settings.workflow_system.poll_interval = Duration::from_millis(500);
    let system = WorkflowSystem::builder(settings)
        .router(
            WorkflowRouter::new()
                .include_router(
                    WorkflowRouter::with_prefix("mail")
                        .operation::<SendWelcome>()
                        .operation::<SendReminder>()
                        .operation::<SendDigest>()
                        // One operation per tick, however many workers run this router.
                        .schedule::<SendDigest>(
                            Schedule::cron("*/2 * * * * *").time_zone("Europe/Berlin"),
                            |tick| SendDigest {
                                tick: tick.local().to_rfc3339(),
                            },
                        ),
                )
                .operation::<OpenAccount>()
                .operation::<SyncPartner>(),
        )
        .start()
        .await?;
    println!(
        "worker {} started, handling {:?}",
        system.worker_id(),
        system.names()
    );

    // The application's own transaction: its writes and the intents commit
    // together. Nothing runs before the commit.
    let mut tx = db.pool().begin().await?;
    let opened = publish(
        &mut tx,
        OpenAccount {
            user_id: 42,
            plan: "pro".into(),
        },
    )
    .await?;
    publish(&mut tx, SyncPartner { user_id: 42 }).await?;
    pgoutbox::Publisher::default()
        .publish_with(
            &mut tx,
            SendReminder { user_id: 42 },
            PublishOptions::new().delay(Duration::from_secs(2)),
        )
        .await?;
    tx.commit().await?;
    println!("published 3 operations in one transaction (account: operation {opened})");

    // A rolled-back transaction publishes nothing.
    let mut tx = db.pool().begin().await?;
    publish(
        &mut tx,
        SendWelcome {
            user_id: 99,
            email: "nobody@example.com".into(),
        },
    )
    .await?;
    tx.rollback().await?;
    println!("published a welcome mail for user 99, then rolled back: it never existed");

    // Wait until everything has run, the delayed reminder included.
    wait_until_finished(&db, system.names(), Duration::from_secs(30)).await?;
    let report = system.stop().await?;
    println!(
        "worker stopped cleanly ({} handler(s) aborted)",
        report.aborted
    );

    print_record(&db).await
}

/// What the database recorded, as `pgoutbox ops list`, `pgoutbox ops show
/// <id>` and `pgoutbox schedules` print it.
async fn print_record(db: &TestDatabase) -> std::result::Result<(), Box<dyn std::error::Error>> {
    println!("\nrecorded attempts:");
    println!(
        "  {:>3}  {:<16} {:<10} {:>7}  {:<10} error",
        "id", "operation", "status", "attempt", "outcome"
    );
    let admin = Admin::new(db.pool().clone(), &Identifier::default());
    let mut operations = admin.list(&OperationFilter::default()).await?;
    operations.reverse(); // oldest first
    for op in operations {
        let Some(detail) = admin.show(op.id).await? else {
            continue;
        };
        for attempt in detail.attempts {
            println!(
                "  {:>3}  {:<16} {:<10} {:>7}  {:<10} {}",
                op.id,
                op.name,
                op.status,
                attempt.number,
                attempt.outcome.map_or("running", pgoutbox::Outcome::as_str),
                attempt.error.unwrap_or_default()
            );
        }
    }
    // The schedule as `pgoutbox schedules` lists it.
    for s in admin.schedules().await? {
        let last = match (s.last_tick, s.last_operation_id, s.last_status) {
            (Some(tick), Some(id), Some(status)) => format!("{tick}, operation {id} {status}"),
            _ => "none yet".to_owned(),
        };
        println!(
            "\nschedule {} (`{}` in {}): last tick {last}; next {}",
            s.name, s.cron, s.time_zone, s.next_tick
        );
    }
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(db.pool())
        .await?;
    println!("\naccounts written: {accounts}");
    Ok(())
}
