//! An order, fulfilled by a workflow: the card is charged and the stock of
//! each line item reserved in parallel; the order ships once all of them
//! have succeeded, with the charge's receipt; a second order whose card is
//! declined never ships, and its shipping step is cancelled with a reason
//! naming the charge, while its customer is still told (a step that runs
//! however its dependency ends).
//!
//! Run it with `cargo run --example orders` (a private, throwaway
//! PostgreSQL is started as for the quickstart, or `DATABASE_URL` is
//! used). What to read in its output: the steps as the worker runs them —
//! never a shipment before its charge and reservations — then each
//! workflow's graph as an operator reads it (`pgoutbox workflow <id>`).

use std::time::Duration;

use pgoutbox::admin::Admin;
use pgoutbox::prelude::*;
use pgoutbox::testing::TestDatabase;
use pgoutbox::workflow::{PublishedWorkflow, Settled};
use pgoutbox::{Identifier, Status, WorkflowState};

/// What the payment provider answered.
#[pgoutbox::payload]
pub struct Receipt {
    /// The provider's charge id.
    pub charge_id: String,
    /// What was charged, in cents.
    pub cents: i64,
}

/// A reservation of one line item's stock.
#[pgoutbox::payload]
pub struct Reservation {
    /// The warehouse's reservation id.
    pub reservation_id: String,
    /// How many were reserved.
    pub quantity: u32,
}

/// Charge the order's card; a card ending in 0 is declined.
#[operation("shop.charge")]
async fn charge(ctx: &mut Context, order_id: i64, card: String, cents: i64) -> Result<Receipt> {
    if card.ends_with('0') {
        println!("  [shop.charge]  order {order_id}: card declined");
        return Err(HandlerError::permanent(std::io::Error::other(
            "card declined (insufficient funds)",
        )));
    }
    // The provider deduplicates on this key: a retried charge is not a
    // second charge.
    let key = ctx.idempotency_key();
    println!("  [shop.charge]  order {order_id}: {cents} cents charged (key {key})");
    Ok(Receipt {
        charge_id: format!("ch_{order_id}"),
        cents,
    })
}

/// Reserve one line item's stock.
#[operation("shop.reserve")]
async fn reserve(
    ctx: &mut Context,
    order_id: i64,
    sku: String,
    quantity: u32,
) -> Result<Reservation> {
    let _ = ctx;
    println!("  [shop.reserve] order {order_id}: {quantity} × {sku} reserved");
    Ok(Reservation {
        reservation_id: format!("res_{order_id}_{sku}"),
        quantity,
    })
}

/// Ship the order: runs only once the charge and every reservation have
/// succeeded, and reads their results as types.
#[operation("shop.ship")]
async fn ship(
    ctx: &mut Context,
    order_id: i64,
    payment: Dep<Charge>,
    items: Vec<Dep<Reserve>>,
) -> Result<String> {
    let receipt: Receipt = ctx.result(&payment)?;
    let reservations: Vec<Reservation> = ctx.results(&items)?;
    let parcels: u32 = reservations.iter().map(|r| r.quantity).sum();
    println!(
        "  [shop.ship]    order {order_id}: {parcels} item(s) shipped, paid by {} ({} cents)",
        receipt.charge_id, receipt.cents
    );
    Ok(format!("parcel_{order_id}"))
}

/// Tell the customer how the payment went: runs however the charge ends.
#[operation("shop.notify")]
async fn notify(ctx: &mut Context, order_id: i64, payment: Settled<Charge>) -> Result<()> {
    match ctx.result(&payment) {
        Ok(receipt) => {
            println!(
                "  [shop.notify]  order {order_id}: receipt {} sent",
                receipt.charge_id
            );
        }
        Err(e) => {
            println!("  [shop.notify]  order {order_id}: payment failed, customer told ({e})");
        }
    }
    Ok(())
}

/// The order's workflow: charge and reservations in parallel, shipping
/// after all of them, the customer told after the charge.
fn order(order_id: i64, card: &str, lines: &[(&str, u32)]) -> Workflow {
    let mut wf = Workflow::new("shop.order");
    let payment = wf.add(Charge {
        order_id,
        card: card.to_owned(),
        cents: 2_500,
    });
    let items = lines
        .iter()
        .map(|(sku, quantity)| {
            wf.add(Reserve {
                order_id,
                sku: (*sku).to_owned(),
                quantity: *quantity,
            })
        })
        .collect();
    wf.add(Ship {
        order_id,
        payment,
        items,
    });
    wf.add(Notify {
        order_id,
        payment: payment.into(),
    });
    wf
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let db = TestDatabase::new().await?;
    let mut settings = Settings::default();
    settings.database.url = Some(db.url());
    settings.workflow_system.n_workers = 4;
    let system = WorkflowSystem::builder(settings)
        .router(
            WorkflowRouter::new()
                .operation::<Charge>()
                .operation::<Reserve>()
                .operation::<Ship>()
                .operation::<Notify>(),
        )
        .start()
        .await?;

    // Both orders in one transaction of the application's own: all their
    // steps become durable together, or none does.
    let mut tx = db.pool().begin().await?;
    let paid = pgoutbox::workflow::publish_workflow(
        &mut tx,
        order(1, "4242", &[("mug", 2), ("tea", 1), ("spoon", 4)]),
    )
    .await?;
    let declined =
        pgoutbox::workflow::publish_workflow(&mut tx, order(2, "4000", &[("mug", 1)])).await?;
    tx.commit().await?;
    println!(
        "published workflows {} and {}; the worker runs them:",
        paid.id, declined.id
    );

    let admin = Admin::new(db.pool().clone(), &Identifier::default());
    for wf in [&paid, &declined] {
        wait_for_end(&admin, wf).await?;
    }
    system.stop().await?;

    for wf in [&paid, &declined] {
        let graph = admin.workflow_graph(wf.id).await?.expect("published above");
        println!(
            "\nworkflow {} `{}`: {} (from a shell: `pgoutbox workflow {}`)",
            wf.id, graph.workflow.name, graph.workflow.state, wf.id
        );
        for step in &graph.steps {
            let after: Vec<String> = step
                .depends_on
                .iter()
                .map(|(id, _)| id.to_string())
                .collect();
            println!(
                "  {:>3} {:<13} {:<9} after [{}] {}",
                step.id,
                step.name,
                step.status,
                after.join(", "),
                step.result_summary(50)
                    .or_else(|| step.last_error.clone())
                    .unwrap_or_else(|| "-".to_owned())
            );
        }
    }
    Ok(())
}

/// Waits until the workflow has ended, and every step with it (the
/// opted-out notification may run after the workflow has failed).
async fn wait_for_end(
    admin: &Admin,
    wf: &PublishedWorkflow,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    for _ in 0..600 {
        let graph = admin.workflow_graph(wf.id).await?.expect("published above");
        let open = graph.steps.iter().any(|s| {
            matches!(
                s.status,
                Status::Waiting | Status::Pending | Status::Running | Status::Retrying
            )
        });
        if graph.workflow.state != WorkflowState::Running && !open {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("workflow {} did not end within 30 s", wf.id).into())
}
