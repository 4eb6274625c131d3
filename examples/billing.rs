//! A billing workflow: closing the month publishes one charge per
//! subscription, and each charge writes an invoice and publishes a receipt.
//!
//! Run it with `cargo run --example billing`. With `DATABASE_URL` unset it
//! starts a private, throwaway PostgreSQL from the local installation.
//!
//! `cargo run --example billing -- --dashboard` keeps the worker and the
//! operators' dashboard running on this data (at
//! <http://127.0.0.1:7480/admin/outbox>, mounted as an application would
//! mount it), and leaves the stalled charge for you to resolve there: sign
//! in with the token it prints. Ctrl-C stops it.
//!
//! The charges, customer by customer:
//! - 1: charged, invoiced, receipt mailed;
//! - 2: the provider charges the card but its answer is lost; the retry
//!   sends the same idempotency key and the provider does not charge again;
//! - 3: the card is declined, a permanent error: `dead` at once, no invoice;
//! - 4: the provider books the charge but never answers within the charge's
//!   timeout, on any of its 3 attempts. Each attempt is in doubt and rolled
//!   back (no invoice); after the last one the charge is `stalled`. An
//!   operator finds the charge at the provider and resolves the operation
//!   as succeeded with `Admin`, then writes the invoice and the receipt
//!   that the charge's transaction never committed.
//!
//! What to read in its output: the handlers' and the provider's lines as
//! the worker runs; the workflow tree once the month is closed (one charge
//! `dead`, one `stalled`); the operator's step, with the `pgoutbox ops
//! resolve` command that does the same from a shell; the tree at the end;
//! and the provider's count: three cards charged, each once.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pgoutbox::admin::{Action, Admin, OperationFilter, OperationRow, Resolution};
use pgoutbox::prelude::*;
use pgoutbox::testing::{TestDatabase, wait_until_finished};
use pgoutbox::{Identifier, Publisher, Status};
use sqlx::Row as _;

/// Close a month: publish a charge for every subscription. Transactional
/// and touching only the database, hence `idempotent`: the charges commit
/// with this transaction (as its follow-ups), or none does.
#[operation("billing.close_month", transactional, idempotent)]
async fn close_month(ctx: &mut TxContext<'_>, month: String) -> Result<()> {
    let subscriptions = ctx
        .fetch_all(sqlx::query(
            "SELECT customer_id, amount_cents FROM subscriptions ORDER BY customer_id",
        ))
        .await?;
    println!("  [close_month] {month}: {} charges", subscriptions.len());
    for row in subscriptions {
        let customer_id = row.try_get("customer_id")?;
        let amount_cents = row.try_get("amount_cents")?;
        ctx.publish(Charge {
            customer_id,
            amount_cents,
        })
        .await?;
    }
    Ok(())
}

/// Charge a card. The provider deduplicates on `ctx.idempotency_key()`, so
/// a re-run after an unknown outcome cannot charge twice: `idempotent`. The
/// invoice, the receipt and the success commit together, or none does. An
/// attempt that outlives its `timeout` is in doubt; after the last one the
/// charge is `stalled` until an operator settles it.
#[operation(
    "billing.charge",
    transactional,
    idempotent,
    max_attempts = 3,
    timeout = "300ms",
    backoff(initial = "100ms", max = "200ms")
)]
async fn charge(ctx: &mut TxContext<'_>, customer_id: i64, amount_cents: i64) -> Result<()> {
    println!(
        "  [charge #{} attempt {}] customer {customer_id}, {amount_cents} cents",
        ctx.operation_id(),
        ctx.attempt()
    );
    let key = ctx.idempotency_key().to_string();
    let charge_id = charge_card(&key, ctx.operation_id(), customer_id).await?;
    ctx.execute(insert_invoice(customer_id, amount_cents, &charge_id))
        .await?;
    ctx.publish(SendReceipt {
        customer_id,
        charge_id,
    })
    .await?;
    Ok(())
}

/// Mail a receipt (the mail API, too, would deduplicate on the key).
#[operation("mail.receipt", idempotent)]
async fn send_receipt(ctx: &mut Context, customer_id: i64, charge_id: String) -> Result<()> {
    let key = ctx.idempotency_key();
    println!("  [receipt] {charge_id} mailed to customer {customer_id} (key {key})");
    Ok(())
}

/// The invoice row, in the application's own table.
fn insert_invoice(
    customer_id: i64,
    amount_cents: i64,
    charge_id: &str,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query("INSERT INTO invoices (customer_id, amount_cents, charge_id) VALUES ($1, $2, $3)")
        .bind(customer_id)
        .bind(amount_cents)
        .bind(charge_id.to_owned())
}

// A fake card payment provider, in this process. It deduplicates on the
// idempotency key (key → the charge it booked, with the operation it was
// made for as the charge's metadata) and counts its calls.
static CHARGES: Mutex<BTreeMap<String, (String, i64)>> = Mutex::new(BTreeMap::new());
static CALLS: AtomicU32 = AtomicU32::new(0);

/// The application's client for the provider, its answers as handler
/// errors. Customer 2's first answer is lost on the way, customer 3's card
/// is declined, and the answer for customer 4 always comes too late.
async fn charge_card(key: &str, operation: OperationId, customer_id: i64) -> Result<String> {
    CALLS.fetch_add(1, Ordering::Relaxed);
    if customer_id == 3 {
        println!("    provider: declined");
        // No retry can fix a declined card: `dead` at once.
        return Err(HandlerError::permanent("card declined"));
    }
    let (charge_id, new) = {
        let mut charges = CHARGES.lock().unwrap();
        let before = charges.len();
        let booked = (format!("ch_{}", before + 1), operation.as_i64());
        let charge_id = charges.entry(key.to_owned()).or_insert(booked).0.clone();
        (charge_id, charges.len() > before)
    };
    if new {
        println!("    provider: charged as {charge_id} (key {key})");
    } else {
        println!("    provider: key {key} seen before: {charge_id}, not charged again");
    }
    if customer_id == 2 && new {
        println!("    provider: (its answer is lost on the way)");
        return Err(HandlerError::retryable(
            "connection reset before the provider answered",
        ));
    }
    if customer_id == 4 {
        println!("    provider: (answers too late)");
        tokio::time::sleep(Duration::from_secs(10)).await; // past the charge's timeout
    }
    Ok(charge_id)
}

/// The provider's dashboard: the charge booked for `operation`, if any.
fn charge_booked_for(operation: i64) -> Option<String> {
    let charges = CHARGES.lock().unwrap();
    let mut booked = charges.values().filter(|(_, op)| *op == operation);
    booked.next().map(|(charge_id, _)| charge_id.clone())
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dashboard = std::env::args().skip(1).any(|a| a == "--dashboard");
    let db = TestDatabase::new().await?;
    sqlx::raw_sql(
        "CREATE TABLE subscriptions (customer_id bigint PRIMARY KEY, amount_cents bigint NOT NULL);
         INSERT INTO subscriptions VALUES (1, 1999), (2, 4999), (3, 999), (4, 12000);
         CREATE TABLE invoices (customer_id bigint PRIMARY KEY, amount_cents bigint NOT NULL,
             charge_id text NOT NULL UNIQUE);",
    )
    .execute(db.pool())
    .await?;

    let mut settings = Settings::default();
    settings.database.url = Some(db.url());
    settings.workflow_system.poll_interval = Duration::from_millis(200);
    let system = WorkflowSystem::builder(settings)
        .router(
            WorkflowRouter::new()
                .operation::<CloseMonth>()
                .operation::<Charge>()
                .operation::<SendReceipt>(),
        )
        .start()
        .await?;

    let mut tx = db.pool().begin().await?;
    let month = CloseMonth {
        month: "2025-06".into(),
    };
    let root = publish(&mut tx, month).await?;
    tx.commit().await?;
    println!("published billing.close_month as operation {root}");
    wait_until_finished(&db, system.names(), Duration::from_secs(30)).await?;
    let admin = Admin::new(db.pool().clone(), &Identifier::default());
    print_tree(&admin, root).await?;

    // The operator, with the worker still running, as in production.
    let stalled = OperationFilter {
        statuses: vec![Status::Stalled],
        ..OperationFilter::default()
    };
    for op in admin.list(&stalled).await? {
        let attempts = admin.show(op.id).await?.map(|d| d.attempts);
        let outcomes: Vec<_> = attempts
            .iter()
            .flatten()
            .filter_map(|a| a.outcome)
            .collect();
        println!(
            "\noperator: {} {} is stalled, attempts {outcomes:?}",
            op.name, op.id
        );
        let Some(charge_id) = charge_booked_for(op.id.as_i64()) else {
            continue; // (it would be resolved `--as dead`)
        };
        if dashboard {
            println!("operator: left for you, in the dashboard ({charge_id} is at the provider)");
            continue;
        }
        let reason = format!("the provider booked {charge_id} for it, once");
        println!(
            "$ pgoutbox ops resolve {} --as succeeded --actor alice --reason '{reason}'",
            op.id
        );
        let resolve = Action::Resolve(Resolution::Succeeded);
        let outcome = admin.act(op.id, resolve, "alice", &reason).await?;
        println!("{}", outcome.message(op.id, resolve));

        // Resolving records what happened at the provider; the invoice and
        // the receipt rolled back with the charge's transactions, so the
        // operator writes them, the receipt as the charge's follow-up.
        let customer_id = op.payload["customer_id"].as_i64().ok_or("no customer")?;
        let amount_cents = op.payload["amount_cents"].as_i64().ok_or("no amount")?;
        let mut tx = db.pool().begin().await?;
        insert_invoice(customer_id, amount_cents, &charge_id)
            .execute(&mut *tx)
            .await?;
        let receipt = SendReceipt {
            customer_id,
            charge_id,
        };
        let options = PublishOptions::new().parent(op.id);
        Publisher::default()
            .publish_with(&mut tx, receipt, options)
            .await?;
        tx.commit().await?;
        println!("operator: invoice written, receipt published");
    }
    wait_until_finished(&db, system.names(), Duration::from_secs(30)).await?;
    if dashboard {
        serve_dashboard(admin.clone()).await?;
    }
    system.stop().await?;
    print_tree(&admin, root).await?;

    let invoiced: Vec<i64> = sqlx::query_scalar("SELECT customer_id FROM invoices ORDER BY 1")
        .fetch_all(db.pool())
        .await?;
    println!(
        "\nprovider: {} cards charged in {} calls; invoices for customers {invoiced:?}",
        CHARGES.lock().unwrap().len(),
        CALLS.load(Ordering::Relaxed)
    );
    Ok(())
}

/// The operators' dashboard under `/admin/outbox` of the application's
/// own router, actions allowed behind a fresh token, until Ctrl-C.
async fn serve_dashboard(admin: Admin) -> std::result::Result<(), Box<dyn std::error::Error>> {
    use pgoutbox::dashboard::{self, DashboardOptions};
    let token = uuid::Uuid::new_v4().simple().to_string();
    // 32 hexadecimal characters: longer than the 16 a token needs.
    let options = DashboardOptions::with_token(token.clone(), "you")?.allow_actions(true);
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { "billing: the dashboard is at /admin/outbox" }),
    );
    let app = dashboard::mount(app, "/admin/outbox", dashboard::router(admin, options));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:7480").await?;
    println!(
        "\ndashboard: http://127.0.0.1:7480/admin/outbox (sign in with the token {token}); \
         Ctrl-C stops it"
    );
    // With the client's address, failed sign-ins are limited per client.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// The workflow under `root`, each operation under the one that published
/// it.
async fn print_tree(admin: &Admin, root: OperationId) -> std::result::Result<(), sqlx::Error> {
    fn print(tree: &[OperationRow], op: &OperationRow, depth: usize) {
        println!(
            "{}{} {} {} (attempts: {}) {}",
            "  ".repeat(depth),
            op.id,
            op.name,
            op.status,
            op.attempt,
            op.last_error.as_deref().unwrap_or_default()
        );
        for child in tree.iter().filter(|c| c.parent_id == Some(op.id)) {
            print(tree, child, depth + 1);
        }
    }
    let tree = admin.workflow(root).await?;
    println!("\nworkflow {root} (from a shell: `pgoutbox ops tree {root}`):");
    if let Some(op) = tree.iter().find(|op| op.id == root) {
        print(&tree, op, 0);
    }
    Ok(())
}
