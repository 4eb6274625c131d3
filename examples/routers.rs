//! Routers, composed the way `FastAPI` composes them: each group of
//! operations under a name prefix, groups included into groups, one worker
//! started from the whole.
//!
//! Run it with `cargo run --example routers`. With `DATABASE_URL` unset it
//! starts a private, throwaway PostgreSQL from the local installation.
//!
//! Operation names are fixed by `#[operation("…")]` (so that `publish` needs
//! no router), so a router does not prepend its prefix: it *checks*, segment
//! by segment, that what it holds is named under it. Mistakes (an operation
//! under the wrong prefix, an included router that does not extend its
//! parent's prefix, an operation in two routers) stop the worker at start-up,
//! before it claims anything. A worker never runs an operation its routers do
//! not select.
//!
//! What to read in its output: the four refused routers, each with the
//! error `start()` returned; what the composed router selects (name and
//! source location); the six handlers that ran; and the seventh operation,
//! which no router selects, still `pending` with no attempt and reported by
//! `Admin::stats` as waiting with no live worker to run it.

use std::time::Duration;

use pgoutbox::admin::Admin;
use pgoutbox::prelude::*;
use pgoutbox::testing::{TestDatabase, wait_until_finished};
use pgoutbox::{Identifier, RouterError, StartError};

type BoxError = Box<dyn std::error::Error>;

fn handled(ctx: &Context, what: &str) {
    println!("  [{} #{}] {what}", ctx.name(), ctx.operation_id());
}

/// Charge a card.
#[operation("billing.charge", idempotent)]
async fn charge(ctx: &mut Context, customer_id: i64, amount_cents: i64) -> Result<()> {
    handled(
        ctx,
        &format!("charged customer {customer_id} {amount_cents} cents"),
    );
    Ok(())
}

/// Issue a refund.
#[operation("billing.refunds.issue", idempotent)]
async fn issue_refund(ctx: &mut Context, customer_id: i64, amount_cents: i64) -> Result<()> {
    handled(
        ctx,
        &format!("refunded customer {customer_id} {amount_cents} cents"),
    );
    Ok(())
}

/// The next version of the charge. Its name, `billing_v2.charge`, starts
/// with the characters `billing` but is not under the prefix `billing`:
/// prefixes are compared segment by segment.
#[operation("billing_v2.charge", idempotent)]
async fn charge_v2(ctx: &mut Context, customer_id: i64, amount_cents: i64) -> Result<()> {
    handled(
        ctx,
        &format!("charged customer {customer_id} {amount_cents} cents (v2)"),
    );
    Ok(())
}

/// Send a welcome mail.
#[operation("mail.welcome")]
async fn send_welcome(ctx: &mut Context, email: String) -> Result<()> {
    handled(ctx, &format!("welcome mail to {email}"));
    Ok(())
}

/// Send the weekly digest.
#[operation("mail.digest.weekly")]
async fn send_weekly_digest(ctx: &mut Context, email: String) -> Result<()> {
    handled(ctx, &format!("weekly digest to {email}"));
    Ok(())
}

/// Print a shipping label.
#[operation("shipping.label")]
async fn print_label(ctx: &mut Context, order_id: i64) -> Result<()> {
    handled(ctx, &format!("label for order {order_id}"));
    Ok(())
}

/// Build the daily report: handled by this binary, but selected by none of
/// the routers below, so this worker never claims it (a reporting worker
/// elsewhere would).
#[operation("reports.daily")]
async fn daily_report(ctx: &mut Context, day: String) -> Result<()> {
    handled(ctx, &format!("report for {day}"));
    Ok(())
}

/// The application's routers, each group in its own function as it would be
/// in its own module.
fn billing_router() -> WorkflowRouter {
    let refunds = WorkflowRouter::with_prefix("billing.refunds").operation::<IssueRefund>();
    WorkflowRouter::with_prefix("billing")
        .operation::<Charge>()
        .include_router(refunds)
}

fn mail_router() -> WorkflowRouter {
    WorkflowRouter::with_prefix("mail")
        .operation::<SendWelcome>()
        .include_router(WorkflowRouter::with_prefix("mail.digest").operation::<SendWeeklyDigest>())
}

fn app_router() -> WorkflowRouter {
    WorkflowRouter::new()
        .include_router(billing_router())
        .include_router(mail_router())
        .include_router(WorkflowRouter::with_prefix("shipping").operation::<PrintLabel>())
}

#[tokio::main]
async fn main() -> std::result::Result<(), BoxError> {
    let db = TestDatabase::new().await?;
    println!("database `{}` ready\n", db.name());
    let mut settings = Settings::default();
    settings.database.url = Some(db.url());
    settings.workflow_system.n_workers = 4;
    settings.workflow_system.poll_interval = Duration::from_millis(200);
    refuse_mistakes(&settings).await?;
    run_composed(settings, &db).await?;
    Ok(())
}

/// Starts a system from each of four faulty routers: each is refused.
async fn refuse_mistakes(settings: &Settings) -> std::result::Result<(), BoxError> {
    // Mistakes first: each is refused by `start()`, with an error that
    // names the operation and the prefixes involved.
    println!("routers that do not start:");
    let mistakes: [(&str, WorkflowRouter); 4] = [
        (
            "a billing operation in the mail router",
            WorkflowRouter::new()
                .include_router(WorkflowRouter::with_prefix("mail").operation::<Charge>()),
        ),
        (
            "`billing_v2.charge` under the prefix `billing`",
            WorkflowRouter::new().include_router(billing_router().operation::<ChargeV2>()),
        ),
        (
            "the digest router included under billing",
            WorkflowRouter::new().include_router(billing_router().include_router(
                WorkflowRouter::with_prefix("mail.digest").operation::<SendWeeklyDigest>(),
            )),
        ),
        (
            "the refund selected by billing and by its refunds router",
            WorkflowRouter::new().include_router(billing_router().operation::<IssueRefund>()),
        ),
    ];
    for (what, router) in mistakes {
        let refused = WorkflowSystem::builder(settings.clone())
            .router(router)
            .start()
            .await;
        match refused {
            Err(StartError::Router(
                e @ (RouterError::OutsidePrefix { .. }
                | RouterError::NestedPrefix { .. }
                | RouterError::Duplicate { .. }),
            )) => println!("  {what}:\n    error: {e}"),
            Err(other) => return Err(format!("{what}: unexpected error: {other}").into()),
            Ok(system) => {
                system.stop().await?;
                return Err(format!("{what}: the system started").into());
            }
        }
    }
    Ok(())
}

/// Runs a few operations with the composed router, and one it does not
/// select.
async fn run_composed(settings: Settings, db: &TestDatabase) -> std::result::Result<(), BoxError> {
    // The composed router.
    let routes = app_router().resolve(&Registry::from_inventory()?)?;
    println!("\nthe composed router selects:");
    for (name, route) in routes.iter() {
        println!("  {name:<22} {}", route.registration().location());
    }
    let system = WorkflowSystem::builder(settings)
        .router(app_router())
        .start()
        .await?;
    println!("worker {} started\n", system.worker_id());

    let report = publish_work(db).await?;
    let finished = wait_until_finished(db, system.names(), Duration::from_secs(30)).await?;
    println!(
        "\nthe worker's operations, by state: {:?}",
        finished.by_status
    );

    // The worker is still running, and has polled many times: the operation
    // outside its routers was never claimed.
    let admin = Admin::new(db.pool().clone(), &Identifier::default());
    let stats = admin.stats(Duration::from_mins(1), 1).await?;
    println!(
        "waiting with no live worker to run them: {:?}",
        stats.unhandled
    );
    system.stop().await?;
    if let Some(detail) = admin.show(report).await? {
        println!(
            "{} (operation {report}): {}, {} attempts",
            detail.operation.name,
            detail.operation.status,
            detail.attempts.len()
        );
    }
    Ok(())
}

/// Publishes six operations the composed router selects and one it does
/// not; returns the latter.
async fn publish_work(db: &TestDatabase) -> std::result::Result<OperationId, BoxError> {
    let mut tx = db.pool().begin().await?;
    publish(
        &mut tx,
        Charge {
            customer_id: 1,
            amount_cents: 1999,
        },
    )
    .await?;
    publish(
        &mut tx,
        Charge {
            customer_id: 2,
            amount_cents: 4999,
        },
    )
    .await?;
    publish(
        &mut tx,
        IssueRefund {
            customer_id: 2,
            amount_cents: 500,
        },
    )
    .await?;
    publish(
        &mut tx,
        SendWelcome {
            email: "ada@example.com".into(),
        },
    )
    .await?;
    publish(
        &mut tx,
        SendWeeklyDigest {
            email: "grace@example.com".into(),
        },
    )
    .await?;
    publish(&mut tx, PrintLabel { order_id: 77 }).await?;
    let report = publish(
        &mut tx,
        DailyReport {
            day: "2025-06-30".into(),
        },
    )
    .await?;
    tx.commit().await?;
    println!("published 7 operations (one of them, reports.daily, outside every router)");
    Ok(report)
}
