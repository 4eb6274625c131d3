//! A billing workflow: idempotency keys against external APIs, a permanent
//! failure, a charge whose outcome stays unknown until an operator resolves
//! it with the `pgoutbox` command, and the workflow tree at the end.
//!
//! Run it with `cargo run --example billing`. With `DATABASE_URL` unset it
//! starts a private, throwaway PostgreSQL from the local installation; the
//! operator's step runs the real command (`cargo run -p pgoutbox-cli`),
//! which cargo builds on first use.
//!
//! The story: closing the month publishes one charge per subscription.
//!
//! - customer 1: charged; the receipt's first mail call outlives its
//!   timeout, the retry uses the same idempotency key and the fake mail API
//!   sends nothing twice;
//! - customer 2: the provider charges the card but the reply is lost; the
//!   retry uses the same idempotency key and the provider does not charge
//!   again;
//! - customer 3: the card is declined, a permanent error: `dead`, no
//!   invoice, no receipt;
//! - customer 4: the provider books the charge, then never answers within
//!   the charge's timeout, on any of its 3 attempts (it books nothing twice:
//!   same key). Each attempt is in doubt and rolled back, so no invoice; with
//!   no attempt left the charge is `stalled`. An operator checks the
//!   provider (one charge for that key), resolves it `--as succeeded` with
//!   the command, and writes the invoice and receipt the charge's
//!   transaction never committed;
//! - customer 5: charged, invoiced and mailed at the first attempt.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pgoutbox::Publisher;
use pgoutbox::prelude::*;
use pgoutbox::testing::TestDatabase;
use sqlx::Row as _;

type BoxError = Box<dyn std::error::Error>;

/// Close a month: publish a charge for every subscription. Transactional
/// and touching only the database, so re-running it after an unknown
/// outcome is safe: the database settles whether its transaction (and so
/// its follow-ups) committed.
#[operation("billing.close_month", transactional, idempotent)]
async fn close_month(ctx: &mut TxContext<'_>, month: String) -> Result<()> {
    let rows = ctx
        .fetch_all(sqlx::query(
            "SELECT customer_id, email, amount_cents FROM subscriptions ORDER BY customer_id",
        ))
        .await?;
    println!(
        "  [billing.close_month #{}] closing {month}: {} subscriptions",
        ctx.operation_id(),
        rows.len()
    );
    for row in rows {
        // Follow-ups commit with this transaction; they carry this operation
        // as their parent and root.
        ctx.publish(Charge {
            customer_id: row.try_get("customer_id")?,
            email: row.try_get("email")?,
            amount_cents: row.try_get("amount_cents")?,
        })
        .await?;
    }
    Ok(())
}

/// Charge a customer's card. The provider deduplicates on
/// `ctx.idempotency_key()`, so re-running after an unknown outcome cannot
/// charge twice: `idempotent`. The invoice row, the receipt follow-up and
/// the success record commit in one transaction, or none of them does.
///
/// An attempt that outlives `timeout` is abandoned as `timed_out` and its
/// transaction rolled back: whether the provider charged is unknown, so an
/// idempotent charge is retried while it has attempts left, and is
/// `stalled` for an operator after its last one.
#[operation(
    "billing.charge",
    transactional,
    idempotent,
    max_attempts = 3,
    timeout = "500ms",
    backoff(initial = "100ms", max = "500ms")
)]
async fn charge(
    ctx: &mut TxContext<'_>,
    customer_id: i64,
    email: String,
    amount_cents: i64,
) -> Result<()> {
    let key = ctx.idempotency_key().to_string();
    let op = ctx.operation_id();
    let attempt = ctx.attempt();
    let charge_id = match PROVIDER.charge(&key, customer_id, amount_cents).await {
        Ok(charge_id) => charge_id,
        Err(ProviderError::Declined(why)) => {
            println!(
                "  [billing.charge #{op} attempt {attempt}] customer {customer_id}: declined ({why})"
            );
            // No retry can fix a declined card: `dead` at once.
            return Err(HandlerError::permanent(format!("card declined: {why}")));
        }
        Err(ProviderError::ReplyLost) => {
            println!(
                "  [billing.charge #{op} attempt {attempt}] customer {customer_id}: connection reset \
                 before the provider answered (did it charge? retrying with the same key)"
            );
            return Err(HandlerError::retryable(
                "connection reset while waiting for the payment provider's answer",
            ));
        }
    };
    ctx.execute(
        sqlx::query(
            "INSERT INTO invoices (customer_id, amount_cents, provider_charge_id, operation_id) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(customer_id)
        .bind(amount_cents)
        .bind(&charge_id)
        .bind(op.as_i64()),
    )
    .await?;
    println!(
        "  [billing.charge #{op} attempt {attempt}] customer {customer_id}: {charge_id}, invoice \
         written, receipt published"
    );
    ctx.publish(SendReceipt {
        email,
        amount_cents,
        charge_id,
    })
    .await?;
    Ok(())
}

/// Mail a receipt. The mail API deduplicates on the idempotency key of
/// *this* operation, so a retry after a timeout sends nothing twice.
#[operation(
    "mail.receipt",
    idempotent,
    timeout = "300ms",
    max_attempts = 3,
    backoff(initial = "100ms", max = "500ms")
)]
async fn send_receipt(
    ctx: &mut Context,
    email: String,
    amount_cents: i64,
    charge_id: String,
) -> Result<()> {
    let key = ctx.idempotency_key().to_string();
    println!(
        "  [mail.receipt #{} attempt {}] receipt for {charge_id} to {email}",
        ctx.operation_id(),
        ctx.attempt()
    );
    MAILER
        .send(
            &key,
            &email,
            &format!("Your receipt: {amount_cents} cents ({charge_id})"),
        )
        .await;
    Ok(())
}

// ---------------------------------------------------------------------------
// Fake external services. They live in this process; what they recorded is
// checked at the end.

/// Why the fake provider did not return a charge.
enum ProviderError {
    Declined(&'static str),
    ReplyLost,
}

/// A card payment provider that deduplicates on an idempotency key.
struct PaymentProvider {
    /// Idempotency key → (customer, amount, charge id).
    charges: Mutex<BTreeMap<String, (i64, i64, String)>>,
    /// Idempotency key → how many times it was asked to charge.
    calls: Mutex<BTreeMap<String, u32>>,
}

/// The provider's first reply to customer 2's charge is lost on the way.
const LOST_REPLY_CUSTOMER: i64 = 2;
/// Customer 3's card is declined.
const DECLINED_CUSTOMER: i64 = 3;
/// The provider books customer 4's charge but never answers in time.
const STALLED_CUSTOMER: i64 = 4;
/// The mail API takes its time with customer 1's first receipt.
const SLOW_MAIL_TO: &str = "ada@example.com";

impl PaymentProvider {
    async fn charge(
        &self,
        key: &str,
        customer_id: i64,
        amount_cents: i64,
    ) -> Result<String, ProviderError> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default() += 1;
        if customer_id == DECLINED_CUSTOMER {
            return Err(ProviderError::Declined("insufficient funds"));
        }
        let id = {
            let mut charges = self.charges.lock().unwrap();
            if let Some((_, _, id)) = charges.get(key) {
                println!("    provider: key {key} seen before: returning {id}, no new charge");
                id.clone()
            } else {
                let id = format!("ch_{:04}", charges.len() + 1);
                charges.insert(key.to_owned(), (customer_id, amount_cents, id.clone()));
                println!(
                    "    provider: charged customer {customer_id} {amount_cents} cents as {id}"
                );
                if customer_id == LOST_REPLY_CUSTOMER {
                    // Charged, but the answer never reaches the handler.
                    return Err(ProviderError::ReplyLost);
                }
                id
            }
        };
        if customer_id == STALLED_CUSTOMER {
            // Booked, but the answer comes after the charge's timeout, every
            // time: the attempt ends `timed_out`, its outcome unknown to the
            // worker.
            println!("    provider: (no answer for {id} within the charge's timeout)");
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        Ok(id)
    }

    fn calls(&self) -> u32 {
        self.calls.lock().unwrap().values().sum()
    }
}

static PROVIDER: PaymentProvider = PaymentProvider {
    charges: Mutex::new(BTreeMap::new()),
    calls: Mutex::new(BTreeMap::new()),
};

/// A mail API that deduplicates on an idempotency key.
struct MailApi {
    /// Idempotency key → (recipient, message id).
    sent: Mutex<BTreeMap<String, (String, String)>>,
    calls: AtomicU32,
}

impl MailApi {
    async fn send(&self, key: &str, to: &str, body: &str) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        {
            let mut sent = self.sent.lock().unwrap();
            if let Some((_, id)) = sent.get(key) {
                println!(
                    "    mail API: key {key} seen before: message {id} already sent, not again"
                );
                return;
            }
            let id = format!("msg_{:04}", sent.len() + 1);
            println!("    mail API: sent {id} to {to}: {body}");
            sent.insert(key.to_owned(), (to.to_owned(), id));
        }
        if to == SLOW_MAIL_TO {
            // The mail left, but the answer comes after the handler's
            // timeout: the attempt ends `timed_out`, its outcome unknown to
            // the worker.
            println!("    mail API: (slow to answer this time)");
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
}

static MAILER: MailApi = MailApi {
    sent: Mutex::new(BTreeMap::new()),
    calls: AtomicU32::new(0),
};

// ---------------------------------------------------------------------------

/// The stalled charge, as the operator finds it in the database.
struct Stalled {
    id: i64,
    key: String,
    customer_id: i64,
    email: String,
    amount_cents: i64,
}

#[tokio::main]
async fn main() -> std::result::Result<(), BoxError> {
    let db = TestDatabase::new().await?;
    create_tables(&db).await?;
    // The worker keeps running while the operator acts, as in production.
    let system = start_worker(&db).await?;
    let root = close_the_month(&db).await?;
    let stalled = check_what_happened(&db).await?;
    resolve_with_the_command(&db, &stalled).await?;
    write_what_the_charge_did_not(&db, &stalled).await?;
    wait_until_settled(&db).await?;
    let report = system.stop().await?;
    println!("\nworker stopped ({} aborted)", report.aborted);
    check_the_end(&db, &stalled).await?;
    println!("\nthe workflow tree:");
    pgoutbox_cli(&["--database-url", &db.url(), "workflow", &root.to_string()])?;
    let outside: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pgoutbox.operations WHERE root_id IS DISTINCT FROM $1 AND id <> $1",
    )
    .bind(root.as_i64())
    .fetch_one(db.pool())
    .await?;
    ensure(outside == 0, "every operation belongs to the workflow")?;
    println!("\nbilling example: every check passed");
    Ok(())
}

async fn create_tables(db: &TestDatabase) -> std::result::Result<(), BoxError> {
    sqlx::raw_sql(
        "CREATE TABLE subscriptions (customer_id bigint PRIMARY KEY, email text NOT NULL, \
             amount_cents bigint NOT NULL);
         INSERT INTO subscriptions VALUES
             (1, 'ada@example.com', 1999),
             (2, 'grace@example.com', 4999),
             (3, 'linus@example.com', 999),
             (4, 'barbara@example.com', 12000),
             (5, 'ken@example.com', 2999);
         CREATE TABLE invoices (customer_id bigint PRIMARY KEY, amount_cents bigint NOT NULL, \
             provider_charge_id text NOT NULL UNIQUE, operation_id bigint NOT NULL);",
    )
    .execute(db.pool())
    .await?;
    println!("database `{}` ready: 5 subscriptions", db.name());
    Ok(())
}

async fn start_worker(db: &TestDatabase) -> std::result::Result<WorkflowSystem, BoxError> {
    let mut settings = Settings::default();
    settings.database.url = Some(db.url());
    settings.workflow_system.n_workers = 4;
    settings.workflow_system.poll_interval = Duration::from_millis(200);
    let system = WorkflowSystem::builder(settings)
        .router(
            WorkflowRouter::new()
                .include_router(
                    WorkflowRouter::with_prefix("billing")
                        .operation::<CloseMonth>()
                        .operation::<Charge>(),
                )
                .include_router(WorkflowRouter::with_prefix("mail").operation::<SendReceipt>()),
        )
        .start()
        .await?;
    println!("worker started, handling {:?}\n", system.names());
    Ok(system)
}

/// Publishes the month's closing and waits until everything has settled;
/// returns the workflow's root.
async fn close_the_month(db: &TestDatabase) -> std::result::Result<OperationId, BoxError> {
    let mut tx = db.pool().begin().await?;
    let root = publish(
        &mut tx,
        CloseMonth {
            month: "2025-06".into(),
        },
    )
    .await?;
    tx.commit().await?;
    println!("published billing.close_month as operation {root}");
    wait_until_settled(db).await?;
    println!("\neverything settled");
    Ok(root)
}

/// Checks the database and the fake services; returns the stalled charge.
async fn check_what_happened(db: &TestDatabase) -> std::result::Result<Stalled, BoxError> {
    print_operations(db).await?;
    expect_counts(
        db,
        &[
            ("billing.charge", "dead", 1),
            ("billing.charge", "stalled", 1),
            ("billing.charge", "succeeded", 3),
            ("billing.close_month", "succeeded", 1),
            ("mail.receipt", "succeeded", 3),
        ],
    )
    .await?;
    let declined: String = sqlx::query_scalar(
        "SELECT last_error FROM pgoutbox.operations WHERE name = 'billing.charge' AND status = 'dead'",
    )
    .fetch_one(db.pool())
    .await?;
    ensure(
        declined.contains("card declined"),
        "the dead charge says why",
    )?;

    // The external side: each card charged once, each receipt mailed once,
    // one invoice per committed charge, despite the retries.
    let outside = Outside::read(db).await?;
    println!("\n{outside}");
    // 1 call each for customers 1, 3 and 5, 2 for customer 2, 3 for 4.
    ensure(
        outside.charges == 4 && outside.provider_calls == 8,
        "4 charges from 8 provider calls",
    )?;
    ensure(
        outside.mails == 3 && outside.mail_calls == 4,
        "3 mails from 4 mail API calls",
    )?;
    // The stalled charge's transactions all rolled back: no invoice.
    ensure(
        outside.invoiced == [1, 2, 5],
        "invoices for customers 1, 2 and 5",
    )?;
    expect_outcomes(
        db,
        "billing.charge",
        LOST_REPLY_CUSTOMER,
        &["failed", "succeeded"],
    )
    .await?;
    expect_outcomes(
        db,
        "billing.charge",
        STALLED_CUSTOMER,
        &["timed_out", "timed_out", "timed_out"],
    )
    .await?;
    let receipt_outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT a.outcome FROM pgoutbox.attempts a JOIN pgoutbox.operations o \
         ON o.id = a.operation_id WHERE o.name = 'mail.receipt' AND o.payload->>'email' = $1 \
         ORDER BY a.number",
    )
    .bind(SLOW_MAIL_TO)
    .fetch_all(db.pool())
    .await?;
    ensure(
        receipt_outcomes == ["timed_out", "succeeded"],
        "the slow receipt timed out once, then succeeded",
    )?;
    let row = sqlx::query(
        "SELECT id, external_key::text AS key, (payload->>'customer_id')::bigint AS customer_id, \
             payload->>'email' AS email, (payload->>'amount_cents')::bigint AS amount_cents \
         FROM pgoutbox.operations WHERE name = 'billing.charge' AND status = 'stalled'",
    )
    .fetch_one(db.pool())
    .await?;
    Ok(Stalled {
        id: row.try_get("id")?,
        key: row.try_get("key")?,
        customer_id: row.try_get("customer_id")?,
        email: row.try_get("email")?,
        amount_cents: row.try_get("amount_cents")?,
    })
}

/// The operator's decision: ask the provider what happened to the stalled
/// charge's idempotency key, resolve it with `pgoutbox ops resolve`, then
/// find the decision in the audit trail.
async fn resolve_with_the_command(
    db: &TestDatabase,
    stalled: &Stalled,
) -> std::result::Result<(), BoxError> {
    let (id, key) = (stalled.id, &stalled.key);
    let asked = PROVIDER
        .calls
        .lock()
        .unwrap()
        .get(key)
        .copied()
        .unwrap_or(0);
    let booked = PROVIDER.charges.lock().unwrap().get(key).cloned();
    let Some((customer, cents, charge_id)) = booked else {
        return Err(format!("the provider has no charge for key {key}").into());
    };
    println!(
        "\noperator: charge {id} is stalled; the provider, asked {asked} times with its key {key}, \
         booked one charge: {charge_id}, customer {customer}, {cents} cents"
    );
    ensure(
        (customer, cents, asked) == (STALLED_CUSTOMER, stalled.amount_cents, 3),
        "the provider booked one charge for the key it was asked 3 times",
    )?;
    pgoutbox_cli(&[
        "--database-url",
        &db.url(),
        "ops",
        "resolve",
        &id.to_string(),
        "--as",
        "succeeded",
        "--actor",
        "alice",
        "--reason",
        "provider dashboard shows the charge booked once for this key",
    ])?;
    let (action, outcome, actor, reason, from, to): (
        String,
        String,
        String,
        String,
        String,
        String,
    ) = sqlx::query_as(
        "SELECT action, outcome, actor, reason, from_status, to_status \
             FROM pgoutbox.operator_actions WHERE operation_id = $1",
    )
    .bind(id)
    .fetch_one(db.pool())
    .await?;
    println!("operator_actions: {action} {outcome} by {actor} ({from} → {to}): {reason}");
    ensure(
        action == "resolve"
            && outcome == "applied"
            && actor == "alice"
            && from == "stalled"
            && to == "succeeded",
        "the resolution is in the audit trail",
    )
}

/// The operator's follow-through. `--as succeeded` records what happened
/// outside the database (the card was charged); it cannot bring back what
/// the charge's rolled-back transactions would have written: the invoice
/// row and the receipt follow-up. The operator writes them in one
/// transaction, the receipt with the charge as its parent so it joins the
/// workflow; the invoice's key and the receipt's idempotency key make the
/// step safe to run twice. (Had the provider been answering again, `ops
/// retry` would have done all this: the idempotent charge re-runs, the
/// provider returns the booked charge for the same key, and the invoice and
/// receipt commit as usual. Here it still does not answer for this
/// customer.)
async fn write_what_the_charge_did_not(
    db: &TestDatabase,
    stalled: &Stalled,
) -> std::result::Result<(), BoxError> {
    let charge_id = PROVIDER.charges.lock().unwrap()[&stalled.key].2.clone();
    let mut tx = db.pool().begin().await?;
    sqlx::query(
        "INSERT INTO invoices (customer_id, amount_cents, provider_charge_id, operation_id) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(stalled.customer_id)
    .bind(stalled.amount_cents)
    .bind(&charge_id)
    .bind(stalled.id)
    .execute(&mut *tx)
    .await?;
    let receipt = Publisher::default()
        .publish_with(
            &mut tx,
            SendReceipt {
                email: stalled.email.clone(),
                amount_cents: stalled.amount_cents,
                charge_id: charge_id.clone(),
            },
            PublishOptions::new()
                .parent(OperationId::from_i64(stalled.id))
                .idempotency_key(format!("receipt-for-charge-{}", stalled.id)),
        )
        .await?;
    tx.commit().await?;
    println!(
        "operator: wrote the invoice for {charge_id} and published its receipt as operation \
         {receipt}\n"
    );
    Ok(())
}

/// Checks the end state: every booked charge invoiced and mailed once.
async fn check_the_end(db: &TestDatabase, stalled: &Stalled) -> std::result::Result<(), BoxError> {
    expect_counts(
        db,
        &[
            ("billing.charge", "dead", 1),
            ("billing.charge", "succeeded", 4),
            ("billing.close_month", "succeeded", 1),
            ("mail.receipt", "succeeded", 4),
        ],
    )
    .await?;
    let outside = Outside::read(db).await?;
    println!("{outside}");
    ensure(
        outside.charges == 4 && outside.provider_calls == 8,
        "still 4 charges from 8 provider calls",
    )?;
    ensure(
        outside.mails == 4 && outside.mail_calls == 5,
        "4 mails from 5 mail API calls",
    )?;
    ensure(
        outside.invoiced == [1, 2, 4, 5],
        "an invoice for every charged customer",
    )?;
    let receipt_parent: i64 = sqlx::query_scalar(
        "SELECT parent_id FROM pgoutbox.operations \
         WHERE name = 'mail.receipt' AND payload->>'email' = $1",
    )
    .bind(&stalled.email)
    .fetch_one(db.pool())
    .await?;
    ensure(
        receipt_parent == stalled.id,
        "the operator's receipt follows from the resolved charge",
    )
}

/// Waits until nothing is pending, running or retrying.
async fn wait_until_settled(db: &TestDatabase) -> std::result::Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pgoutbox.operations \
             WHERE status IN ('pending', 'running', 'retrying')",
        )
        .fetch_one(db.pool())
        .await?;
        if open == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{open} operations still open after 30s").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
async fn print_operations(db: &TestDatabase) -> std::result::Result<(), BoxError> {
    let rows: Vec<(i64, String, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT id, name, status, attempt, last_error FROM pgoutbox.operations ORDER BY id",
    )
    .fetch_all(db.pool())
    .await?;
    println!(
        "\n  {:>3}  {:<20} {:<10} {:>8}  last error",
        "id", "operation", "status", "attempts"
    );
    for (id, name, status, attempt, error) in rows {
        println!(
            "  {id:>3}  {name:<20} {status:<10} {attempt:>8}  {}",
            error.unwrap_or_default()
        );
    }
    Ok(())
}

/// Fails unless the operations, counted by name and status, are `expected`.
async fn expect_counts(
    db: &TestDatabase,
    expected: &[(&str, &str, i64)],
) -> std::result::Result<(), BoxError> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT name, status, count(*) FROM pgoutbox.operations GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(db.pool())
    .await?;
    let expected: Vec<(String, String, i64)> = expected
        .iter()
        .map(|(n, s, c)| ((*n).to_owned(), (*s).to_owned(), *c))
        .collect();
    ensure(rows == expected, &format!("operations by state: {rows:?}"))
}

/// Fails unless the attempts of `name` for `customer_id` ended as `expected`.
async fn expect_outcomes(
    db: &TestDatabase,
    name: &str,
    customer_id: i64,
    expected: &[&str],
) -> std::result::Result<(), BoxError> {
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT a.outcome FROM pgoutbox.attempts a JOIN pgoutbox.operations o \
         ON o.id = a.operation_id \
         WHERE o.name = $1 AND (o.payload->>'customer_id')::bigint = $2 ORDER BY a.number",
    )
    .bind(name)
    .bind(customer_id)
    .fetch_all(db.pool())
    .await?;
    ensure(
        outcomes == expected,
        &format!("{name} for customer {customer_id}: attempts {outcomes:?}, expected {expected:?}"),
    )
}

/// What the fake services and the invoices table say.
struct Outside {
    charges: usize,
    provider_calls: u32,
    mails: usize,
    mail_calls: u32,
    invoiced: Vec<i64>,
}

impl Outside {
    async fn read(db: &TestDatabase) -> std::result::Result<Outside, BoxError> {
        let invoiced = sqlx::query_scalar("SELECT customer_id FROM invoices ORDER BY customer_id")
            .fetch_all(db.pool())
            .await?;
        Ok(Outside {
            charges: PROVIDER.charges.lock().unwrap().len(),
            provider_calls: PROVIDER.calls(),
            mails: MAILER.sent.lock().unwrap().len(),
            mail_calls: MAILER.calls.load(Ordering::Relaxed),
            invoiced,
        })
    }
}

impl std::fmt::Display for Outside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "provider: {} cards charged in {} calls; mail API: {} receipts sent in {} calls; \
             invoiced customers: {:?}",
            self.charges, self.provider_calls, self.mails, self.mail_calls, self.invoiced
        )
    }
}

fn ensure(ok: bool, what: &str) -> std::result::Result<(), BoxError> {
    if ok {
        println!("  ✓ {what}");
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}

/// Runs the real `pgoutbox` command (built by cargo on first use), prints
/// the command line and its output, and fails if it fails.
fn pgoutbox_cli(args: &[&str]) -> std::result::Result<(), BoxError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    let mut line = vec!["cargo", "run", "-q", "-p", "pgoutbox-cli", "--"];
    line.extend_from_slice(args);
    println!(
        "$ {}",
        line.iter()
            .map(|a| shell_quoted(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = Command::new(cargo)
        .args(&line[1..])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()?;
    for l in String::from_utf8_lossy(&output.stdout).lines() {
        println!("  {l}");
    }
    if !output.status.success() {
        return Err(format!("`pgoutbox {}` failed: {}", args.join(" "), output.status).into());
    }
    Ok(())
}

/// `arg` as a shell would need it, so the printed line can be pasted.
fn shell_quoted(arg: &str) -> String {
    if arg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}
