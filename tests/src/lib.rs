//! Operations shared by the test worker process and the tests that drive
//! it. Each handler records its external side effect in `side_effects`
//! through a pool of its own, outside the operation's transaction, so the
//! tests can count what really ran, committed or not.

use std::sync::OnceLock;
use std::time::Duration;

use pgoutbox::prelude::*;
use sqlx::PgPool;

static SIDE_EFFECTS: OnceLock<PgPool> = OnceLock::new();

/// The table the handlers write their side effects to.
pub const SIDE_EFFECTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS side_effects (
    operation_id bigint NOT NULL,
    attempt integer NOT NULL,
    pid integer NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)";

/// Sets the pool the handlers record side effects with.
pub fn set_side_effect_pool(pool: PgPool) {
    let _ = SIDE_EFFECTS.set(pool);
}

async fn side_effect(id: OperationId, attempt: u32) -> Result<()> {
    let pool = SIDE_EFFECTS
        .get()
        .ok_or_else(|| HandlerError::permanent("no side-effect pool"))?;
    sqlx::query("INSERT INTO side_effects (operation_id, attempt, pid) VALUES ($1, $2, $3)")
        .bind(id.as_i64())
        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
        .bind(i32::try_from(std::process::id()).unwrap_or(i32::MAX))
        .execute(pool)
        .await?;
    Ok(())
}

/// A non-idempotent external call: record it, then take `ms` (on the first
/// attempt only, so that a retry is quick).
#[operation("fault.effect")]
pub async fn effect(ctx: &mut Context, ms: u64) -> Result<()> {
    side_effect(ctx.operation_id(), ctx.attempt()).await?;
    if ctx.attempt() == 1 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(())
}

/// The same call, declared safe to repeat.
#[operation("fault.idempotent_effect", idempotent, max_attempts = 10)]
pub async fn idempotent_effect(ctx: &mut Context, ms: u64) -> Result<()> {
    side_effect(ctx.operation_id(), ctx.attempt()).await?;
    if ctx.attempt() == 1 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(())
}

/// A transactional handler: a business row in its transaction, plus the
/// external record; idempotent because its database part is settled by
/// the database.
#[operation("fault.tx_effect", transactional, idempotent, max_attempts = 10)]
pub async fn tx_effect(ctx: &mut TxContext<'_>, ms: u64) -> Result<()> {
    side_effect(ctx.operation_id(), ctx.attempt()).await?;
    let id = ctx.operation_id().as_i64();
    ctx.execute(sqlx::query("INSERT INTO business_effects (operation_id) VALUES ($1)").bind(id))
        .await?;
    if ctx.attempt() == 1 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(())
}

/// A periodic operation (`pgoutbox-test-worker --schedule …`): its payload
/// is the tick it was published for, in UTC (RFC 3339).
#[operation("fault.tick", idempotent)]
pub async fn scheduled_tick(ctx: &mut Context, at: String) -> Result<()> {
    let _ = (ctx, at);
    Ok(())
}

/// The router of the test worker started with `--idempotent-only`: its
/// idempotent operations alone, which `idempotent_claim_ahead` requires.
pub fn idempotent_router() -> WorkflowRouter {
    WorkflowRouter::with_prefix("fault")
        .operation::<IdempotentEffect>()
        .operation::<TxEffect>()
}

/// The router of the test worker.
pub fn router() -> WorkflowRouter {
    WorkflowRouter::with_prefix("fault")
        .operation::<Effect>()
        .operation::<IdempotentEffect>()
        .operation::<TxEffect>()
}

/// An event relayed to NATS JetStream by the relay tests (`it/relay.rs`)
/// and the worker's `relay` mode; `note` pads a payload to a size.
#[operation("relay.order_placed", idempotent, max_attempts = 50)]
pub struct OrderPlaced {
    /// The order.
    pub order_id: i64,
    /// Where it was placed: a subject token.
    pub region: String,
    /// Padding.
    pub note: String,
}

/// The router of a relay process: `relay.order_placed` to
/// `events.orders.{region}` in `stream`.
pub fn relay_router(client: &pgoutbox::relay::async_nats::Client, stream: &str) -> WorkflowRouter {
    let options = pgoutbox::relay::JetStreamOptions {
        stream: Some(stream.to_owned()),
        publish_timeout: Duration::from_secs(2),
        max_in_flight: 256,
    };
    WorkflowRouter::with_prefix("relay").relay::<OrderPlaced>(
        pgoutbox::relay::Relay::jetstream_with(client, "events.orders.{region}", options),
    )
}
