//! A billing workflow: idempotency keys against external APIs, a permanent
//! failure, an in-doubt operation resolved by an operator with the
//! `pgoutbox` command, and the workflow tree at the end.
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
//! - customer 4: pays by direct debit through a bank without idempotency
//!   keys; the bank does not answer in time, nobody knows whether it debited,
//!   the operation is `stalled`, and an operator resolves it;
//! - customer 5: charged, invoiced and mailed at the first attempt.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pgoutbox::prelude::*;
use pgoutbox::testing::TestDatabase;
use sqlx::Row as _;

type BoxError = Box<dyn std::error::Error>;

/// Close a month: publish a charge (or a direct debit) for every
/// subscription. Transactional and touching only the database, so re-running
/// it after an unknown outcome is safe: the database settles whether its
/// transaction (and so its follow-ups) committed.
#[operation("billing.close_month", transactional, idempotent)]
async fn close_month(ctx: &mut TxContext<'_>, month: String) -> Result<()> {
    let rows = ctx
        .fetch_all(sqlx::query(
            "SELECT customer_id, email, amount_cents, method FROM subscriptions ORDER BY customer_id",
        ))
        .await?;
    println!(
        "  [billing.close_month #{}] closing {month}: {} subscriptions",
        ctx.operation_id(),
        rows.len()
    );
    for row in rows {
        let customer_id: i64 = row.try_get("customer_id")?;
        let email: String = row.try_get("email")?;
        let amount_cents: i64 = row.try_get("amount_cents")?;
        let method: String = row.try_get("method")?;
        // Follow-ups commit with this transaction; they carry this operation
        // as their parent and root.
        if method == "card" {
            ctx.publish(Charge {
                customer_id,
                email,
                amount_cents,
            })
            .await?;
        } else {
            ctx.publish(BankDebit {
                customer_id,
                amount_cents,
            })
            .await?;
        }
    }
    Ok(())
}

/// Charge a customer's card. The provider deduplicates on
/// `ctx.idempotency_key()`, so re-running after an unknown outcome cannot
/// charge twice: `idempotent`. The invoice row, the receipt follow-up and
/// the success record commit in one transaction, or none of them does.
#[operation(
    "billing.charge",
    transactional,
    idempotent,
    max_attempts = 3,
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
    let charge_id = match PROVIDER.charge(&key, customer_id, amount_cents) {
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

/// Debit a bank account through a bank whose API has no idempotency key: a
/// second call could debit twice, so this operation is *not* idempotent,
/// and an attempt whose outcome is unknown (here: it timed out) makes it
/// `stalled` for an operator instead of being re-run. (An `idempotent`
/// operation never stalls: after an unknown outcome it is retried, or `dead`
/// when its attempts are used up; see `outcome.rs` and `rescue.sql`.)
#[operation("billing.bank_debit", timeout = "500ms")]
async fn bank_debit(ctx: &mut Context, customer_id: i64, amount_cents: i64) -> Result<()> {
    println!(
        "  [billing.bank_debit #{} attempt {}] customer {customer_id}: asking the bank to debit \
         {amount_cents} cents…",
        ctx.operation_id(),
        ctx.attempt()
    );
    BANK.debit(customer_id, amount_cents).await;
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
    calls: AtomicU32,
}

/// Customer 3's card is declined.
const DECLINED_CUSTOMER: i64 = 3;
/// The provider's first reply to customer 2's charge is lost on the way.
const LOST_REPLY_CUSTOMER: i64 = 2;
/// Customer 4 pays by direct debit.
const DEBIT_CUSTOMER: i64 = 4;
/// The mail API takes its time with customer 1's first receipt.
const SLOW_MAIL_TO: &str = "ada@example.com";

impl PaymentProvider {
    fn charge(
        &self,
        key: &str,
        customer_id: i64,
        amount_cents: i64,
    ) -> Result<String, ProviderError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if customer_id == DECLINED_CUSTOMER {
            return Err(ProviderError::Declined("insufficient funds"));
        }
        let mut charges = self.charges.lock().unwrap();
        if let Some((_, _, id)) = charges.get(key) {
            println!("    provider: key {key} seen before: returning {id}, no new charge");
            return Ok(id.clone());
        }
        let id = format!("ch_{:04}", charges.len() + 1);
        charges.insert(key.to_owned(), (customer_id, amount_cents, id.clone()));
        println!("    provider: charged customer {customer_id} {amount_cents} cents as {id}");
        if customer_id == LOST_REPLY_CUSTOMER {
            // Charged, but the answer never reaches the handler.
            return Err(ProviderError::ReplyLost);
        }
        Ok(id)
    }
}

static PROVIDER: PaymentProvider = PaymentProvider {
    charges: Mutex::new(BTreeMap::new()),
    calls: AtomicU32::new(0),
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

/// A bank without idempotency keys that debits, then does not answer.
struct Bank {
    /// (customer, amount) per debit, in order.
    statement: Mutex<Vec<(i64, i64)>>,
}

impl Bank {
    async fn debit(&self, customer_id: i64, amount_cents: i64) {
        self.statement
            .lock()
            .unwrap()
            .push((customer_id, amount_cents));
        // The debit is booked, but the answer never arrives in time.
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

static BANK: Bank = Bank {
    statement: Mutex::new(Vec::new()),
};

// ---------------------------------------------------------------------------

#[tokio::main]
async fn main() -> std::result::Result<(), BoxError> {
    let db = TestDatabase::new().await?;
    create_tables(&db).await?;
    let root = close_the_month(&db).await?;
    let debit_id = check_what_happened(&db).await?;
    resolve_with_the_command(&db, debit_id).await?;
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
             amount_cents bigint NOT NULL, method text NOT NULL);
         INSERT INTO subscriptions VALUES
             (1, 'ada@example.com', 1999, 'card'),
             (2, 'grace@example.com', 4999, 'card'),
             (3, 'linus@example.com', 999, 'card'),
             (4, 'barbara@example.com', 12000, 'direct_debit'),
             (5, 'ken@example.com', 2999, 'card');
         CREATE TABLE invoices (customer_id bigint PRIMARY KEY, amount_cents bigint NOT NULL, \
             provider_charge_id text NOT NULL UNIQUE, operation_id bigint NOT NULL);",
    )
    .execute(db.pool())
    .await?;
    println!(
        "database `{}` ready: 5 subscriptions, 1 by direct debit",
        db.name()
    );
    Ok(())
}

/// Starts a worker, publishes the month's closing, waits until everything
/// has settled and stops the worker; returns the workflow's root.
async fn close_the_month(db: &TestDatabase) -> std::result::Result<OperationId, BoxError> {
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
                        .operation::<Charge>()
                        .operation::<BankDebit>(),
                )
                .include_router(WorkflowRouter::with_prefix("mail").operation::<SendReceipt>()),
        )
        .start()
        .await?;
    println!("worker started, handling {:?}\n", system.names());

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
    let report = system.stop().await?;
    println!(
        "\neverything settled; worker stopped ({} aborted)",
        report.aborted
    );
    Ok(root)
}

/// Checks the database and the fake services; returns the stalled debit.
async fn check_what_happened(db: &TestDatabase) -> std::result::Result<i64, BoxError> {
    print_operations(db).await?;
    expect_counts(
        db,
        &[
            ("billing.bank_debit", "stalled", 1),
            ("billing.charge", "dead", 1),
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
    // one invoice per successful charge, despite the retries.
    let charges = PROVIDER.charges.lock().unwrap().len();
    let provider_calls = PROVIDER.calls.load(Ordering::Relaxed);
    let mails = MAILER.sent.lock().unwrap().len();
    let mail_calls = MAILER.calls.load(Ordering::Relaxed);
    let invoices: i64 = sqlx::query_scalar("SELECT count(*) FROM invoices")
        .fetch_one(db.pool())
        .await?;
    println!(
        "\nprovider: {charges} cards charged in {provider_calls} calls; mail API: {mails} receipts \
         sent in {mail_calls} calls; invoices: {invoices}"
    );
    ensure(
        charges == 3 && provider_calls == 5,
        "3 charges from 5 provider calls",
    )?;
    ensure(
        mails == 3 && mail_calls == 4,
        "3 mails from 4 mail API calls",
    )?;
    ensure(invoices == 3, "3 invoices")?;
    expect_outcomes(
        db,
        "billing.charge",
        LOST_REPLY_CUSTOMER,
        &["failed", "succeeded"],
    )
    .await?;
    expect_outcomes(db, "billing.bank_debit", DEBIT_CUSTOMER, &["timed_out"]).await?;
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
    let debit_id: i64 =
        sqlx::query_scalar("SELECT id FROM pgoutbox.operations WHERE name = 'billing.bank_debit'")
            .fetch_one(db.pool())
            .await?;
    Ok(debit_id)
}

/// The operator's part: resolve the stalled debit with `pgoutbox ops
/// resolve`, then find the decision in the audit trail.
async fn resolve_with_the_command(
    db: &TestDatabase,
    debit_id: i64,
) -> std::result::Result<(), BoxError> {
    // The operator: operation `debit_id` is stalled. The bank's statement
    // shows the debit was booked, so it did happen.
    let statement = BANK.statement.lock().unwrap().clone();
    println!(
        "\noperator: operation {debit_id} is stalled; the bank's statement shows {statement:?} \
         (customer, cents): the debit went through"
    );
    ensure(
        statement == [(DEBIT_CUSTOMER, 12000)],
        "the bank booked one debit",
    )?;
    let url = db.url();
    pgoutbox_cli(&[
        "--database-url",
        &url,
        "ops",
        "resolve",
        &debit_id.to_string(),
        "--as",
        "succeeded",
        "--actor",
        "alice",
        "--reason",
        "bank statement 2025-06 shows the debit booked",
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
    .bind(debit_id)
    .fetch_one(db.pool())
    .await?;
    println!("operator_actions: {action} {outcome} by {actor} ({from} → {to}): {reason}");
    ensure(
        action == "resolve" && outcome == "applied" && actor == "alice" && to == "succeeded",
        "the resolution is in the audit trail",
    )?;
    expect_counts(
        db,
        &[
            ("billing.bank_debit", "succeeded", 1),
            ("billing.charge", "dead", 1),
            ("billing.charge", "succeeded", 3),
            ("billing.close_month", "succeeded", 1),
            ("mail.receipt", "succeeded", 3),
        ],
    )
    .await?;

    Ok(())
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
