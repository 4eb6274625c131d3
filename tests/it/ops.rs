//! The operations these tests publish and run. Handlers report what they
//! did through `EFFECTS`, keyed by a per-test `key`, so parallel tests do
//! not see each other.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use pgoutbox::prelude::*;

static EFFECTS: Mutex<Option<HashMap<String, Vec<i64>>>> = Mutex::new(None);

/// Notes that the handler for `key` ran for operation `id`.
pub(crate) fn note(key: &str, id: OperationId) {
    EFFECTS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(key.to_owned())
        .or_default()
        .push(id.as_i64());
}

/// The operations the handler for `key` ran, in order.
pub(crate) fn effects(key: &str) -> Vec<i64> {
    EFFECTS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(key).cloned())
        .unwrap_or_default()
}

/// Charge a customer.
#[operation(
    "billing.charge",
    transactional,
    idempotent,
    max_attempts = 3,
    queue = "billing"
)]
pub(crate) async fn charge(
    ctx: &mut TxContext<'_>,
    customer_id: i64,
    amount_cents: i64,
) -> Result<()> {
    let _ = (ctx, customer_id, amount_cents);
    Ok(())
}

/// Send an e-mail.
#[operation("mail.send", priority = 7)]
pub(crate) async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    note(&to, ctx.operation_id());
    Ok(())
}

/// What `work` does.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub(crate) enum Behaviour {
    /// Succeed.
    Succeed,
    /// Fail with a retryable error until the given attempt, then succeed.
    FailUntil(u32),
    /// Fail permanently.
    Permanent,
    /// Panic.
    Panic,
    /// Sleep this many milliseconds, then succeed.
    SleepMs(u64),
    /// Snooze once (on the first attempt), then succeed.
    SnoozeOnce,
    /// Publish a follow-up `mail.send` to `key`, then succeed.
    FollowUp,
    /// Snooze for 10 ms on the first attempt; on the next, sleep this many
    /// milliseconds, then succeed.
    SnoozeThenSleepMs(u64),
}

/// A plain operation whose behaviour the test chooses.
#[operation(
    "test.work",
    max_attempts = 3,
    backoff(initial = "50ms", max = "100ms")
)]
pub(crate) async fn work(ctx: &mut Context, key: String, behaviour: Behaviour) -> Result<()> {
    note(&key, ctx.operation_id());
    match behaviour {
        Behaviour::FailUntil(n) if ctx.attempt() < n => Err(HandlerError::retryable(
            std::io::Error::other(format!("attempt {} failed", ctx.attempt())),
        )),
        Behaviour::SnoozeOnce if ctx.attempt() == 1 && effects(&key).len() == 1 => {
            Err(HandlerError::snooze(Duration::from_millis(100)))
        }
        Behaviour::Succeed | Behaviour::FailUntil(_) | Behaviour::SnoozeOnce => Ok(()),
        Behaviour::Permanent => Err(HandlerError::permanent("the card number is invalid")),
        Behaviour::Panic => panic!("handler exploded on purpose"),
        Behaviour::SnoozeThenSleepMs(_) if effects(&key).len() == 1 => {
            Err(HandlerError::snooze(Duration::from_millis(10)))
        }
        Behaviour::SleepMs(ms) | Behaviour::SnoozeThenSleepMs(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        }
        Behaviour::FollowUp => {
            ctx.publish(SendMail { to: key })?;
            Ok(())
        }
    }
}

/// Like `work`, but declared idempotent, with a short timeout.
#[operation(
    "test.idempotent_sleep",
    idempotent,
    max_attempts = 2,
    timeout = "300ms",
    backoff(initial = "50ms", max = "50ms")
)]
pub(crate) async fn idempotent_sleep(ctx: &mut Context, key: String, ms: u64) -> Result<()> {
    note(&key, ctx.operation_id());
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

/// Not idempotent, with a short timeout.
#[operation("test.sleep", timeout = "300ms")]
pub(crate) async fn sleep(ctx: &mut Context, key: String, ms: u64) -> Result<()> {
    note(&key, ctx.operation_id());
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

/// What `record` does after its write.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub(crate) enum TxBehaviour {
    /// Succeed.
    Succeed,
    /// Fail after writing.
    FailAfterWrite,
    /// Commit the dispatcher's transaction through raw SQL.
    CommitBehindTheBack,
    /// Publish a follow-up inside the transaction.
    FollowUp,
    /// Sleep this many milliseconds after writing, then succeed.
    SleepMs(u64),
}

/// A transactional operation writing a business row.
#[operation(
    "test.record",
    transactional,
    max_attempts = 2,
    backoff(initial = "50ms", max = "50ms")
)]
pub(crate) async fn record(
    ctx: &mut TxContext<'_>,
    label: String,
    behaviour: TxBehaviour,
) -> Result<()> {
    ctx.execute(sqlx::query("INSERT INTO business (label) VALUES ($1)").bind(&label))
        .await?;
    match behaviour {
        TxBehaviour::Succeed => Ok(()),
        TxBehaviour::FailAfterWrite => Err(HandlerError::retryable("failed after writing")),
        TxBehaviour::CommitBehindTheBack => {
            ctx.execute(sqlx::raw_sql("COMMIT")).await?;
            Ok(())
        }
        TxBehaviour::FollowUp => {
            ctx.publish(SendMail { to: label }).await?;
            Ok(())
        }
        TxBehaviour::SleepMs(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        }
    }
}

/// Never handled by any test's router.
#[operation("test.orphan")]
pub(crate) struct Orphan {
    /// Anything.
    pub(crate) n: i64,
}

/// Idempotent, without a short timeout: sleeps `ms` on its first attempt
/// only, so that a retry is quick.
#[operation(
    "test.idempotent_wait",
    idempotent,
    max_attempts = 5,
    backoff(initial = "50ms", max = "100ms")
)]
pub(crate) async fn idempotent_wait(ctx: &mut Context, key: String, ms: u64) -> Result<()> {
    note(&key, ctx.operation_id());
    if ctx.attempt() == 1 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(())
}
