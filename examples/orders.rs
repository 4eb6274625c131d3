//! An order, fulfilled by a workflow (a saga): the card is charged and the
//! stock of each line item reserved in parallel; the order ships once all
//! of them have succeeded, with the charge's receipt. Each charge declares
//! its refund and each reservation its release: they run only if the
//! order fails after those succeeded. A second order's card is declined:
//! it never ships (its shipping step is cancelled with a reason naming the
//! charge), the stock it had reserved is released, and its customer is
//! still told (a step that runs however its dependency ends). A third
//! order's shipment fails for good: its reservations are released and its
//! charge refunded, in reverse order.
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

/// Refund a charge: the order failed after it succeeded.
#[operation("shop.refund")]
async fn refund(ctx: &mut Context, payment: Dep<Charge>) -> Result<()> {
    let receipt: Receipt = ctx.result(&payment)?;
    println!(
        "  [shop.refund]  {} refunded ({} cents)",
        receipt.charge_id, receipt.cents
    );
    Ok(())
}

/// Release a reservation: the order failed after it succeeded.
#[operation("shop.release")]
async fn release(ctx: &mut Context, stock: Dep<Reserve>) -> Result<()> {
    let reservation: Reservation = ctx.result(&stock)?;
    println!("  [shop.release] {} released", reservation.reservation_id);
    Ok(())
}

/// Ship the order: runs only once the charge and every reservation have
/// succeeded, and reads their results as types. The carrier refuses an
/// empty address, for good.
#[operation("shop.ship")]
async fn ship(
    ctx: &mut Context,
    order_id: i64,
    address: String,
    payment: Dep<Charge>,
    items: Vec<Dep<Reserve>>,
) -> Result<String> {
    let receipt: Receipt = ctx.result(&payment)?;
    let reservations: Vec<Reservation> = ctx.results(&items)?;
    if address.is_empty() {
        println!("  [shop.ship]    order {order_id}: the carrier refuses it (no address)");
        return Err(HandlerError::permanent(std::io::Error::other(
            "the carrier refuses a parcel without an address",
        )));
    }
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

/// The order's workflow: charge and reservations in parallel, each with
/// its compensation, shipping after all of them, the customer told after
/// the charge.
fn order(order_id: i64, card: &str, address: &str, lines: &[(&str, u32)]) -> Workflow {
    let mut wf = Workflow::new("shop.order");
    let payment = wf.add(Charge {
        order_id,
        card: card.to_owned(),
        cents: 2_500,
    });
    wf.compensate_with(payment, |payment| Refund { payment });
    let items = lines
        .iter()
        .map(|(sku, quantity)| {
            let stock = wf.add(Reserve {
                order_id,
                sku: (*sku).to_owned(),
                quantity: *quantity,
            });
            wf.compensate_with(stock, |stock| Release { stock });
            stock
        })
        .collect();
    wf.add(Ship {
        order_id,
        address: address.to_owned(),
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
                .operation::<Notify>()
                .operation::<Refund>()
                .operation::<Release>(),
        )
        .start()
        .await?;

    // The orders in one transaction of the application's own: all their
    // steps become durable together, or none does.
    let mut tx = db.pool().begin().await?;
    let mut orders = Vec::new();
    for (id, card, address, lines) in [
        (
            1,
            "4242",
            "1 Main St",
            &[("mug", 2), ("tea", 1), ("spoon", 4)][..],
        ),
        (2, "4000", "2 Main St", &[("mug", 1)][..]),
        (3, "4242", "", &[("mug", 1), ("tea", 2)][..]),
    ] {
        let wf = order(id, card, address, lines);
        orders.push(pgoutbox::workflow::publish_workflow(&mut tx, wf).await?);
    }
    tx.commit().await?;
    let ids: Vec<String> = orders.iter().map(|wf| wf.id.to_string()).collect();
    println!(
        "published workflows {}; the worker runs them:",
        ids.join(", ")
    );

    let admin = Admin::new(db.pool().clone(), &Identifier::default());
    for wf in &orders {
        wait_for_end(&admin, wf).await?;
    }
    system.stop().await?;

    for wf in &orders {
        let graph = admin.workflow_graph(wf.id).await?.expect("published above");
        println!(
            "\nworkflow {} `{}`: {}{} (from a shell: `pgoutbox workflow {}`)",
            wf.id,
            graph.workflow.name,
            graph.workflow.state,
            graph
                .workflow
                .failure
                .as_deref()
                .map(|why| format!(" ({why})"))
                .unwrap_or_default(),
            wf.id
        );
        for step in &graph.steps {
            let after: Vec<String> = step
                .depends_on
                .iter()
                .map(|(id, _)| id.to_string())
                .collect();
            let role = match step.compensates {
                Some(of) => format!("↩ compensates {of}"),
                None => format!("after [{}]", after.join(", ")),
            };
            println!(
                "  {:>3} {:<13} {:<9} {role} {}",
                step.id,
                step.name,
                step.status,
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
        let ended = !matches!(
            graph.workflow.state,
            WorkflowState::Running | WorkflowState::Compensating
        );
        if ended && !open {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("workflow {} did not end within 30 s", wf.id).into())
}
