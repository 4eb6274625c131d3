//! pgoutbox's quickstart: typed operations, published atomically with the
//! application's own writes, run by a worker that records every attempt.
//!
//! Run it with `cargo run --example quickstart`. With `DATABASE_URL` unset
//! it starts a private, throwaway PostgreSQL from the local installation
//! (`apt-get install postgresql` if there is none); with `DATABASE_URL`
//! set it creates a fresh database on that server.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pgoutbox::prelude::*;
use pgoutbox::testing::TestDatabase;

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

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    // A fresh database with pgoutbox's migrations applied (in an
    // application: `pgoutbox_migrate::run(&pool, &schema)` or
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
                        .operation::<SendReminder>(),
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

    // Wait until everything has run.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pgoutbox.operations WHERE status NOT IN ('succeeded', 'dead', 'stalled')",
        )
        .fetch_one(db.pool())
        .await?;
        if open == 0 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = system.stop().await?;
    println!(
        "worker stopped cleanly ({} handler(s) aborted)",
        report.aborted
    );

    println!("\nrecorded attempts:");
    let rows: Vec<(i64, String, String, i32, String, Option<String>)> = sqlx::query_as(
        "SELECT o.id, o.name, o.status, a.number, coalesce(a.outcome, 'running'), a.error \
         FROM pgoutbox.operations o JOIN pgoutbox.attempts a ON a.operation_id = o.id \
         ORDER BY o.id, a.id",
    )
    .fetch_all(db.pool())
    .await?;
    println!(
        "  {:>3}  {:<16} {:<10} {:>7}  {:<10} error",
        "id", "operation", "status", "attempt", "outcome"
    );
    for (id, name, status, number, outcome, error) in rows {
        println!(
            "  {id:>3}  {name:<16} {status:<10} {number:>7}  {outcome:<10} {}",
            error.unwrap_or_default()
        );
    }
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(db.pool())
        .await?;
    println!("\naccounts written: {accounts}");
    Ok(())
}
