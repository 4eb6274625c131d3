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

/// The last step of a scheduled workflow (`pgoutbox-test-worker
/// --schedule-workflow …`): runs once the tick's own step succeeded.
#[operation("fault.tick_done", idempotent)]
pub async fn tick_done(ctx: &mut Context, tick: Dep<ScheduledTick>, at: String) -> Result<()> {
    ctx.result(&tick)?;
    let _ = at;
    Ok(())
}

/// The name of the scheduled workflow, of its schedule, and of the
/// workflows it publishes.
pub const TICK_FLOW: &str = "fault.tick_flow";

/// The workflow a tick publishes: `fault.tick` for the tick, then
/// `fault.tick_done` after it.
pub fn tick_workflow(tick: &pgoutbox::Tick) -> Workflow {
    let at = tick.at().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut wf = Workflow::new(TICK_FLOW);
    let first = wf.add(ScheduledTick { at: at.clone() });
    wf.add(TickDone { tick: first, at });
    wf
}

/// The table the gated steps record, in their own transaction, when they
/// reached their gate and when they passed it.
pub const GATES_TABLE: &str = "CREATE TABLE IF NOT EXISTS gates (
    operation_id bigint NOT NULL,
    attempt integer NOT NULL,
    arrived_at timestamptz NOT NULL,
    passed_at timestamptz NOT NULL
)";

/// The advisory lock class of the gates: gate `n` is the lock
/// `(GATE_CLASS, n)`, which a test holds exclusively while the gated steps
/// queue behind it for a shared one.
pub const GATE_CLASS: i32 = 4_242;

/// Waits in the handler's transaction until the test lets gate `n` go
/// (a shared advisory lock behind the test's exclusive one), then records
/// when it arrived and when it passed, with the step's success.
async fn pass_gate(ctx: &mut TxContext<'_>, n: i32) -> Result<()> {
    let attempt = i32::try_from(ctx.attempt()).unwrap_or(i32::MAX);
    let id = ctx.operation_id().as_i64();
    ctx.execute(
        sqlx::query(
            "INSERT INTO gates (operation_id, attempt, arrived_at, passed_at) \
             VALUES ($1, $2, clock_timestamp(), 'infinity')",
        )
        .bind(id)
        .bind(attempt),
    )
    .await?;
    ctx.execute(
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
            .bind(GATE_CLASS)
            .bind(n),
    )
    .await?;
    ctx.execute(
        sqlx::query(
            "UPDATE gates SET passed_at = clock_timestamp() WHERE operation_id = $1 AND attempt = $2",
        )
        .bind(id)
        .bind(attempt),
    )
    .await?;
    Ok(())
}

/// A workflow's first dependency, run by the `--gate left` worker: passes
/// gate `n`, then hands `n` on.
#[operation("fault.gate_left", transactional, idempotent)]
pub async fn gate_left(ctx: &mut TxContext<'_>, n: i32) -> Result<i64> {
    pass_gate(ctx, n).await?;
    Ok(i64::from(n))
}

/// A workflow's second dependency, run by the `--gate right` worker:
/// passes the same gate `n`, then hands `1000 n` on.
#[operation("fault.gate_right", transactional, idempotent)]
pub async fn gate_right(ctx: &mut TxContext<'_>, n: i32) -> Result<i64> {
    pass_gate(ctx, n).await?;
    Ok(1_000 * i64::from(n))
}

/// The dependent of both gated steps: a non-idempotent external call
/// (recorded in `side_effects`) that returns the sum of both results.
#[operation("fault.gate_join")]
pub async fn gate_join(
    ctx: &mut Context,
    left: Dep<GateLeft>,
    right: Dep<GateRight>,
) -> Result<i64> {
    let sum = ctx.result(&left)? + ctx.result(&right)?;
    side_effect(ctx.operation_id(), ctx.attempt()).await?;
    Ok(sum)
}

/// The router of a `--gate left` or `--gate right` worker: that side's
/// gated step, and the dependent.
pub fn gate_router(side: &str) -> std::result::Result<WorkflowRouter, String> {
    let router = WorkflowRouter::with_prefix("fault").operation::<GateJoin>();
    match side {
        "left" => Ok(router.operation::<GateLeft>()),
        "right" => Ok(router.operation::<GateRight>()),
        other => Err(format!("`--gate` takes `left` or `right`, not `{other}`")),
    }
}

/// A workflow's source step: an idempotent external call (recorded), slow
/// on its first attempt, that hands `n` on.
#[operation("fault.step_source", idempotent, max_attempts = 10)]
pub async fn step_source(ctx: &mut Context, n: i64, ms: u64) -> Result<i64> {
    side_effect(ctx.operation_id(), ctx.attempt()).await?;
    if ctx.attempt() == 1 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(n)
}

/// A transactional step (a business row with its success): its source's
/// number plus one.
#[operation("fault.step_tx", transactional, idempotent, max_attempts = 10)]
pub async fn step_tx(ctx: &mut TxContext<'_>, from: Dep<StepSource>, ms: u64) -> Result<i64> {
    let n = ctx.result(&from)?;
    side_effect(ctx.operation_id(), ctx.attempt()).await?;
    let id = ctx.operation_id().as_i64();
    ctx.execute(sqlx::query("INSERT INTO business_effects (operation_id) VALUES ($1)").bind(id))
        .await?;
    if ctx.attempt() == 1 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(n + 1)
}

/// A non-idempotent step: an external call that must not run twice, so
/// an in-doubt attempt stalls it (and holds its dependents).
#[operation("fault.step_once")]
pub async fn step_once(ctx: &mut Context, from: Dep<StepSource>, ms: u64) -> Result<i64> {
    let n = ctx.result(&from)?;
    side_effect(ctx.operation_id(), ctx.attempt()).await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(2 * n)
}

/// A step that joins a transactional and a non-idempotent one.
#[operation("fault.step_join", idempotent, max_attempts = 10)]
pub async fn step_join(ctx: &mut Context, left: Dep<StepTx>, right: Dep<StepOnce>) -> Result<i64> {
    let sum = ctx.result(&left)? + ctx.result(&right)?;
    side_effect(ctx.operation_id(), ctx.attempt()).await?;
    Ok(sum)
}

/// A fan-in: the sum of its sources' numbers.
#[operation("fault.step_sum", idempotent, max_attempts = 10)]
pub async fn step_sum(ctx: &mut Context, parts: Vec<Dep<StepSource>>) -> Result<i64> {
    let sum = ctx.results(&parts)?.into_iter().sum();
    side_effect(ctx.operation_id(), ctx.attempt()).await?;
    Ok(sum)
}

/// An order saga's charge (`it/workflow_faults.rs`): an idempotent call
/// (recorded), slow on its first attempt, that fails for good when
/// `fail`; its receipt otherwise.
#[operation("fault.saga_charge", idempotent, max_attempts = 50)]
pub async fn saga_charge(ctx: &mut Context, order: i64, fail: bool, ms: u64) -> Result<String> {
    saga_call(ctx.operation_id(), ctx.attempt(), ms).await?;
    if fail {
        return Err(HandlerError::permanent(format!(
            "card declined for order {order}"
        )));
    }
    Ok(format!("ch_{order}"))
}

/// An order saga's reservation, once its charge is through.
#[operation("fault.saga_reserve", idempotent, max_attempts = 50)]
pub async fn saga_reserve(
    ctx: &mut Context,
    order: i64,
    payment: Dep<SagaCharge>,
    ms: u64,
) -> Result<String> {
    ctx.result(&payment)?;
    saga_call(ctx.operation_id(), ctx.attempt(), ms).await?;
    Ok(format!("res_{order}"))
}

/// An order saga's shipment: fails for good when `fail`.
#[operation("fault.saga_ship", idempotent, max_attempts = 50)]
pub async fn saga_ship(
    ctx: &mut Context,
    order: i64,
    stock: Dep<SagaReserve>,
    fail: bool,
    ms: u64,
) -> Result<()> {
    ctx.result(&stock)?;
    saga_call(ctx.operation_id(), ctx.attempt(), ms).await?;
    if fail {
        return Err(HandlerError::permanent(format!(
            "the carrier refused order {order}"
        )));
    }
    Ok(())
}

/// Refunds a saga's charge (its compensation), reading the receipt.
#[operation("fault.saga_refund", idempotent, max_attempts = 50)]
pub async fn saga_refund(ctx: &mut Context, payment: Dep<SagaCharge>, ms: u64) -> Result<String> {
    let receipt = ctx.result(&payment)?;
    saga_call(ctx.operation_id(), ctx.attempt(), ms).await?;
    Ok(format!("refunded {receipt}"))
}

/// Releases a saga's reservation (its compensation).
#[operation("fault.saga_release", idempotent, max_attempts = 50)]
pub async fn saga_release(ctx: &mut Context, stock: Dep<SagaReserve>, ms: u64) -> Result<String> {
    let reservation = ctx.result(&stock)?;
    saga_call(ctx.operation_id(), ctx.attempt(), ms).await?;
    Ok(format!("released {reservation}"))
}

/// A saga step's external call: recorded, then `ms` long on the first
/// attempt (the window in which a kill meets it).
async fn saga_call(id: OperationId, attempt: u32, ms: u64) -> Result<()> {
    side_effect(id, attempt).await?;
    if attempt == 1 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(())
}

/// One item of a run-time fan-out: its number.
#[operation("fault.fan_item", idempotent, max_attempts = 50)]
pub async fn fan_item(ctx: &mut Context, n: i64) -> Result<i64> {
    let _ = ctx;
    Ok(n)
}

/// The fan-in of a run-time fan-out: the sum of its items.
#[operation("fault.fan_total", idempotent, max_attempts = 50)]
pub async fn fan_total(ctx: &mut Context, items: Vec<Dep<FanItem>>) -> Result<i64> {
    Ok(ctx.results(&items)?.into_iter().sum())
}

/// Adds `items` steps and their fan-in to its workflow, then takes `ms`
/// before returning (the window in which a kill meets it, before its
/// success records them all).
#[operation("fault.fan_split", idempotent, max_attempts = 50)]
pub async fn fan_split(ctx: &mut Context, items: i64, ms: u64) -> Result<()> {
    let items = (1..=items).map(|n| ctx.add_step(FanItem { n })).collect();
    ctx.add_step(FanTotal { items });
    side_effect(ctx.operation_id(), ctx.attempt()).await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

/// [`FanSplit`] in a transactional handler: the steps commit with its
/// transaction, held open for `ms`.
#[operation("fault.fan_split_tx", transactional, idempotent, max_attempts = 50)]
pub async fn fan_split_tx(ctx: &mut TxContext<'_>, items: i64, ms: u64) -> Result<()> {
    let items = (1..=items).map(|n| ctx.add_step(FanItem { n })).collect();
    ctx.add_step(FanTotal { items });
    side_effect(ctx.operation_id(), ctx.attempt()).await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

/// The router of the test worker started with `--idempotent-only`: its
/// idempotent operations alone, which `idempotent_claim_ahead` requires.
pub fn idempotent_router() -> WorkflowRouter {
    WorkflowRouter::with_prefix("fault")
        .operation::<IdempotentEffect>()
        .operation::<TxEffect>()
}

/// The router of the test worker: every `fault.*` operation but the gated
/// ones (`gate_router`).
pub fn router() -> WorkflowRouter {
    WorkflowRouter::with_prefix("fault")
        .operation::<Effect>()
        .operation::<IdempotentEffect>()
        .operation::<TxEffect>()
        .operation::<StepSource>()
        .operation::<StepTx>()
        .operation::<StepOnce>()
        .operation::<StepJoin>()
        .operation::<StepSum>()
        .operation::<SagaCharge>()
        .operation::<SagaReserve>()
        .operation::<SagaShip>()
        .operation::<SagaRefund>()
        .operation::<SagaRelease>()
        .operation::<FanItem>()
        .operation::<FanTotal>()
        .operation::<FanSplit>()
        .operation::<FanSplitTx>()
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
