//! Sagas: a workflow that fails answers what it did. The compensations of
//! the steps that succeeded run in reverse dependency order, exactly once;
//! steps that never ran are cancelled; a stalled step holds its own
//! compensation until an operator decides. And steps added at run time by
//! a running step, atomically with its success.

use std::time::Duration;

use pgoutbox::admin::{Admin, Resolution};
use pgoutbox::prelude::*;
use pgoutbox::testing::TestDatabase;
use pgoutbox::workflow::PublishedWorkflow;
use pgoutbox::{HandlerError, OperationId};

use crate::support::{settings, settled, status, test_db};
use crate::workflows::{finished, inconsistent_workflows, stuck_steps};

const WITHIN: Duration = Duration::from_secs(30);

/// Charges an order's card: the charge's id.
#[operation("saga.charge")]
async fn charge(ctx: &mut Context, order: i64, cents: i64) -> Result<String> {
    let _ = (ctx, cents);
    Ok(format!("ch_{order}"))
}

/// Reserves an order's stock once it is paid: the reservation's id.
#[operation("saga.reserve")]
async fn reserve(ctx: &mut Context, order: i64, payment: Dep<Charge>) -> Result<String> {
    ctx.result(&payment)?;
    Ok(format!("res_{order}"))
}

/// Ships an order, or fails for good.
#[operation("saga.ship")]
async fn ship(ctx: &mut Context, order: i64, stock: Dep<Reserve>, refuse: bool) -> Result<()> {
    ctx.result(&stock)?;
    if refuse {
        return Err(HandlerError::permanent(format!(
            "the carrier refused order {order}"
        )));
    }
    Ok(())
}

/// Refunds a charge, reading its receipt.
#[operation("saga.refund")]
async fn refund(ctx: &mut Context, payment: Dep<Charge>) -> Result<String> {
    Ok(format!("refunded {}", ctx.result(&payment)?))
}

/// Releases a reservation.
#[operation("saga.release")]
async fn release(ctx: &mut Context, stock: Dep<Reserve>) -> Result<String> {
    Ok(format!("released {}", ctx.result(&stock)?))
}

/// A charge whose call never answers in time: `stalled` (not idempotent).
#[operation("saga.slow_charge", timeout = "100ms")]
async fn slow_charge(ctx: &mut Context, order: i64) -> Result<String> {
    let _ = (ctx, order);
    tokio::time::sleep(Duration::from_mins(1)).await;
    unreachable!("abandoned at its timeout")
}

/// Refunds a slow charge.
#[operation("saga.slow_refund")]
async fn slow_refund(ctx: &mut Context, payment: Dep<SlowCharge>) -> Result<String> {
    Ok(format!("refunded {}", ctx.result(&payment)?))
}

/// Fails for good, at once.
#[operation("saga.boom")]
async fn boom(ctx: &mut Context, order: i64) -> Result<()> {
    let _ = ctx;
    Err(HandlerError::permanent(format!("order {order} is void")))
}

/// Notes how a `Boom` ended, once the charge is through: the opt-out.
#[operation("saga.note")]
async fn note(ctx: &mut Context, after: Settled<Boom>, payment: Dep<Charge>) -> Result<String> {
    ctx.result(&payment)?;
    Ok(format!("{:?}", ctx.result(&after).err()))
}

/// Whether the carrier takes parcels (`saga.flaky_ship` fails for good
/// until it does).
static CARRIER_UP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Ships, once the carrier is up.
#[operation("saga.flaky_ship")]
async fn flaky_ship(ctx: &mut Context, payment: Dep<Charge>) -> Result<()> {
    ctx.result(&payment)?;
    if !CARRIER_UP.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(HandlerError::permanent("the carrier is down"));
    }
    Ok(())
}

/// Confirms a shipment.
#[operation("saga.confirm")]
async fn confirm(ctx: &mut Context, shipped: Dep<FlakyShip>) -> Result<()> {
    ctx.result(&shipped)?;
    Ok(())
}

/// A call that takes a few seconds.
#[operation("saga.slow_call", timeout = "30s")]
async fn slow_call(ctx: &mut Context, seconds: u64) -> Result<()> {
    let _ = ctx;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    Ok(())
}

/// Packs one item: its number.
#[operation("saga.pack")]
async fn pack(ctx: &mut Context, item: i64) -> Result<i64> {
    let _ = ctx;
    Ok(item)
}

/// Sums the packed items.
#[operation("saga.total")]
async fn total(ctx: &mut Context, packed: Vec<Dep<Pack>>) -> Result<i64> {
    Ok(ctx.results(&packed)?.into_iter().sum())
}

/// Splits an order into one step per item, and a total of them.
#[operation("saga.split")]
async fn split(ctx: &mut Context, items: i64) -> Result<()> {
    let packed = (1..=items)
        .map(|item| ctx.add_step(Pack { item }))
        .collect();
    ctx.add_step(Total { packed });
    Ok(())
}

/// [`Split`], in a transactional handler.
#[operation("saga.split_tx", transactional)]
async fn split_tx(ctx: &mut TxContext<'_>, items: i64) -> Result<()> {
    let packed = (1..=items)
        .map(|item| ctx.add_step(Pack { item }))
        .collect();
    ctx.add_step(Total { packed });
    Ok(())
}

/// Adds a step, though it is not a workflow step.
#[operation("saga.lone_split")]
async fn lone_split(ctx: &mut Context, items: i64) -> Result<()> {
    ctx.add_step(Pack { item: items });
    Ok(())
}

fn router() -> WorkflowRouter {
    WorkflowRouter::new()
        .operation::<Charge>()
        .operation::<Reserve>()
        .operation::<Ship>()
        .operation::<Refund>()
        .operation::<Release>()
        .operation::<SlowCharge>()
        .operation::<SlowRefund>()
        .operation::<Boom>()
        .operation::<Note>()
        .operation::<FlakyShip>()
        .operation::<Confirm>()
        .operation::<SlowCall>()
        .operation::<Pack>()
        .operation::<Total>()
        .operation::<Split>()
        .operation::<SplitTx>()
        .operation::<LoneSplit>()
}

async fn start(db: &TestDatabase) -> WorkflowSystem {
    WorkflowSystem::builder(settings(db))
        .router(router())
        .start()
        .await
        .expect("system starts")
}

async fn publish(db: &TestDatabase, wf: Workflow) -> PublishedWorkflow {
    let mut tx = db.pool().begin().await.unwrap();
    let published = publish_workflow(&mut tx, wf).await.expect("publishes");
    tx.commit().await.unwrap();
    published
}

/// The order saga: charge, then reserve, then ship; refund and release
/// answer the first two.
fn order(id: i64, refuse: bool) -> Workflow {
    let mut wf = Workflow::new("saga.order");
    let payment = wf.add(Charge {
        order: id,
        cents: 1999,
    });
    wf.compensate_with(payment, |payment| Refund { payment });
    let stock = wf.add(Reserve { order: id, payment });
    wf.compensate_with(stock, |stock| Release { stock });
    wf.add(Ship {
        order: id,
        stock,
        refuse,
    });
    wf
}

/// The compensations of step `id`: (id, name, status).
async fn compensations(db: &TestDatabase, id: OperationId) -> Vec<(i64, String, String)> {
    sqlx::query_as(
        "SELECT id, name, status FROM pgoutbox.operations WHERE compensates = $1 ORDER BY id",
    )
    .bind(id.as_i64())
    .fetch_all(db.pool())
    .await
    .unwrap()
}

async fn result(db: &TestDatabase, id: i64) -> serde_json::Value {
    sqlx::query_scalar(
        "SELECT result FROM pgoutbox.attempts WHERE operation_id = $1 AND outcome = 'succeeded'",
    )
    .bind(id)
    .fetch_one(db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn the_order_saga_refunds_and_releases_in_reverse_order_once_each() {
    let db = test_db().await;
    let system = start(&db).await;
    let good = publish(&db, order(1, false)).await;
    let bad = publish(&db, order(2, true)).await;
    assert_eq!(finished(&db, &good).await, "succeeded");
    assert_eq!(finished(&db, &bad).await, "failed");

    // Nothing compensated in the workflow that succeeded.
    for step in &good.steps {
        assert!(compensations(&db, *step).await.is_empty());
    }
    let [charge, reserve, ship] = bad.steps[..] else {
        unreachable!()
    };
    assert_eq!(status(&db, charge).await, "succeeded");
    assert_eq!(status(&db, reserve).await, "succeeded");
    assert_eq!(status(&db, ship).await, "dead");
    let refunds = compensations(&db, charge).await;
    let releases = compensations(&db, reserve).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(releases.len(), 1, "{releases:?}");
    assert!(
        compensations(&db, ship).await.is_empty(),
        "ship never succeeded"
    );
    let (refund, release) = (&refunds[0], &releases[0]);
    assert_eq!(
        (refund.1.as_str(), refund.2.as_str()),
        ("saga.refund", "succeeded")
    );
    assert_eq!(
        (release.1.as_str(), release.2.as_str()),
        ("saga.release", "succeeded")
    );
    // Each read the result of the step it answers.
    assert_eq!(result(&db, refund.0).await, "refunded ch_2");
    assert_eq!(result(&db, release.0).await, "released res_2");
    // In reverse order: the release (of the later step) ended before the
    // refund began.
    let (release_end, refund_start): (
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    ) = sqlx::query_as(
        "SELECT (SELECT finished_at FROM pgoutbox.attempts WHERE operation_id = $1),
                    (SELECT started_at FROM pgoutbox.attempts WHERE operation_id = $2)",
    )
    .bind(release.0)
    .bind(refund.0)
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(
        release_end <= refund_start,
        "{release_end} > {refund_start}"
    );
    // One attempt each, and the workflow's trail says why.
    let attempts: Vec<(i64, String)> = sqlx::query_as(
        "SELECT operation_id, outcome FROM pgoutbox.attempts
         WHERE operation_id IN (SELECT id FROM pgoutbox.operations WHERE workflow_id = $1)
         ORDER BY operation_id",
    )
    .bind(bad.id.as_i64())
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut expected = vec![
        (charge.as_i64(), "succeeded".to_owned()),
        (reserve.as_i64(), "succeeded".to_owned()),
        (ship.as_i64(), "failed".to_owned()),
        (refund.0, "succeeded".to_owned()),
        (release.0, "succeeded".to_owned()),
    ];
    expected.sort();
    assert_eq!(attempts, expected);
    let (failure, steps, finished_at): (String, i32, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT failure, steps, finished_at FROM pgoutbox.workflows WHERE id = $1")
            .bind(bad.id.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(failure, format!("step {ship} (saga.ship) is dead"));
    assert_eq!(steps, 5, "three steps and two compensations");
    assert!(finished_at.is_some());
    assert!(inconsistent_workflows(&db).await.is_empty());
    assert_eq!(stuck_steps(&db).await, 0);
    system.stop().await.unwrap();
}

#[tokio::test]
async fn steps_that_never_ran_are_cancelled_not_compensated() {
    let db = test_db().await;
    // No worker yet: publish, then fail one step by hand (an operator's
    // cancel), with its siblings still pending.
    let mut wf = Workflow::new("saga.never_ran");
    let payment = wf.add(Charge { order: 3, cents: 1 });
    wf.compensate_with(payment, |payment| Refund { payment });
    let stock = wf.add(Reserve { order: 3, payment });
    wf.compensate_with(stock, |stock| Release { stock });
    let other = wf.add(Boom { order: 3 });
    let published = publish(&db, wf).await;
    let _ = other;
    let admin = Admin::new(db.pool().clone(), &"pgoutbox".parse().unwrap());
    let boom = published.steps[2];
    let outcome = admin
        .act(boom, pgoutbox::admin::Action::Cancel, "alice", "void order")
        .await
        .unwrap();
    assert!(
        matches!(outcome, pgoutbox::admin::ActionOutcome::Applied { .. }),
        "{outcome:?}"
    );
    let (state, failure): (String, String) =
        sqlx::query_as("SELECT state, failure FROM pgoutbox.workflows WHERE id = $1")
            .bind(published.id.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(state, "failed");
    assert_eq!(failure, format!("step {boom} (saga.boom) is cancelled"));
    let [charge, reserve, _] = published.steps[..] else {
        unreachable!()
    };
    assert_eq!(status(&db, charge).await, "cancelled");
    assert_eq!(status(&db, reserve).await, "cancelled");
    assert!(compensations(&db, charge).await.is_empty());
    assert!(compensations(&db, reserve).await.is_empty());
    assert!(inconsistent_workflows(&db).await.is_empty());
}

#[tokio::test]
async fn a_stalled_step_holds_its_compensation_until_an_operator_resolves_it() {
    let db = test_db().await;
    let system = start(&db).await;
    let admin = Admin::new(db.pool().clone(), &"pgoutbox".parse().unwrap());
    let mut ids = Vec::new();
    for order in [10, 11] {
        let mut wf = Workflow::new("saga.stalls");
        let payment = wf.add(SlowCharge { order });
        wf.compensate_with(payment, |payment| SlowRefund { payment });
        wf.add(Boom { order });
        ids.push(publish(&db, wf).await);
    }
    for wf in &ids {
        assert_eq!(finished(&db, wf).await, "stalled");
        assert_eq!(settled(&db, wf.steps[0], WITHIN).await, "stalled");
        assert_eq!(status(&db, wf.steps[1]).await, "dead");
        assert!(
            compensations(&db, wf.steps[0]).await.is_empty(),
            "held while stalled"
        );
    }
    // Resolved as succeeded: compensated, once.
    let applied = admin
        .resolve_with_result(
            ids[0].steps[0],
            Some(serde_json::json!("ch_10")),
            "alice",
            "the provider shows charge ch_10",
        )
        .await
        .unwrap();
    assert!(
        matches!(applied, pgoutbox::admin::ActionOutcome::Applied { .. }),
        "{applied:?}"
    );
    assert_eq!(finished(&db, &ids[0]).await, "failed");
    let refunds = compensations(&db, ids[0].steps[0]).await;
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].2, "succeeded");
    assert_eq!(result(&db, refunds[0].0).await, "refunded ch_10");
    // Resolved as dead: nothing to answer.
    let applied = admin
        .act(
            ids[1].steps[0],
            pgoutbox::admin::Action::Resolve(Resolution::Dead),
            "alice",
            "the provider has no such charge",
        )
        .await
        .unwrap();
    assert!(
        matches!(applied, pgoutbox::admin::ActionOutcome::Applied { .. }),
        "{applied:?}"
    );
    assert_eq!(finished(&db, &ids[1]).await, "failed");
    assert!(compensations(&db, ids[1].steps[0]).await.is_empty());
    assert!(inconsistent_workflows(&db).await.is_empty());
    system.stop().await.unwrap();
}

#[tokio::test]
async fn a_failure_opted_out_by_every_dependent_does_not_fail_the_workflow() {
    let db = test_db().await;
    let system = start(&db).await;
    let mut wf = Workflow::new("saga.opted_out");
    let payment = wf.add(Charge { order: 4, cents: 1 });
    wf.compensate_with(payment, |payment| Refund { payment });
    let boom = wf.add(Boom { order: 4 });
    wf.add(Note {
        after: boom.into(),
        payment,
    });
    let published = publish(&db, wf).await;
    assert_eq!(finished(&db, &published).await, "succeeded");
    assert_eq!(status(&db, published.steps[1]).await, "dead");
    assert_eq!(status(&db, published.steps[2]).await, "succeeded");
    assert!(compensations(&db, published.steps[0]).await.is_empty());
    assert!(inconsistent_workflows(&db).await.is_empty());
    system.stop().await.unwrap();
}

#[tokio::test]
async fn a_running_step_adds_a_thousand_steps_and_their_fan_in_with_its_success() {
    let db = test_db().await;
    let system = start(&db).await;
    for (split, items) in [(true, 1_000), (false, 50)] {
        let mut wf = Workflow::new("saga.fan_out");
        if split {
            wf.add(Split { items });
        } else {
            wf.add(SplitTx { items });
        }
        let published = publish(&db, wf).await;
        assert_eq!(finished(&db, &published).await, "succeeded");
        let (packs, totals, steps): (i64, i64, i32) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE name = 'saga.pack'),
                    count(*) FILTER (WHERE name = 'saga.total'),
                    (SELECT steps FROM pgoutbox.workflows WHERE id = $1)
             FROM pgoutbox.operations WHERE workflow_id = $1",
        )
        .bind(published.id.as_i64())
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!((packs, totals), (items, 1));
        assert_eq!(i64::from(steps), items + 2);
        let sum: serde_json::Value = sqlx::query_scalar(
            "SELECT a.result FROM pgoutbox.attempts a JOIN pgoutbox.operations o ON o.id = a.operation_id
             WHERE o.workflow_id = $1 AND o.name = 'saga.total' AND a.outcome = 'succeeded'",
        )
        .bind(published.id.as_i64())
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(sum, items * (items + 1) / 2);
    }
    // Outside a workflow: the attempt fails for good, saying why, and adds
    // nothing.
    let lone = crate::support::publish_one(&db, LoneSplit { items: 1 }).await;
    assert_eq!(settled(&db, lone, WITHIN).await, "dead");
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM pgoutbox.operations WHERE id = $1")
            .bind(lone.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(error.contains("is not a workflow step"), "{error}");
    assert!(inconsistent_workflows(&db).await.is_empty());
    assert_eq!(stuck_steps(&db).await, 0);
    system.stop().await.unwrap();
}

fn admin(db: &TestDatabase) -> Admin {
    Admin::new(db.pool().clone(), &"pgoutbox".parse().unwrap())
}

#[tokio::test]
#[allow(clippy::too_many_lines, clippy::type_complexity)] // One story; the trail's rows as tuples.
async fn a_workflow_retry_resumes_where_it_stopped_and_succeeds() {
    use pgoutbox::WorkflowState;
    use pgoutbox::admin::{WorkflowAction, WorkflowActionOutcome};

    let db = test_db().await;
    let system = start(&db).await;
    let mut wf = Workflow::new("saga.resume");
    let payment = wf.add(Charge {
        order: 20,
        cents: 1,
    });
    let shipped = wf.add(FlakyShip { payment });
    wf.add(Confirm { shipped });
    let published = publish(&db, wf).await;
    assert_eq!(finished(&db, &published).await, "failed");
    let [charge, ship, confirm] = published.steps[..] else {
        unreachable!()
    };
    assert_eq!(status(&db, ship).await, "dead");
    assert_eq!(status(&db, confirm).await, "cancelled");

    // What it would do, then done.
    let plan = admin(&db)
        .workflow_plan(published.id, WorkflowAction::Retry)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plan.refused, None);
    let retried: Vec<OperationId> = plan.retry.iter().map(|s| s.id).collect();
    assert_eq!(retried, [ship, confirm]);
    CARRIER_UP.store(true, std::sync::atomic::Ordering::SeqCst);
    let outcome = admin(&db)
        .act_on_workflow(
            published.id,
            WorkflowAction::Retry,
            "alice",
            "the carrier is back",
        )
        .await
        .unwrap();
    let WorkflowActionOutcome::Applied { state, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(state, WorkflowState::Running);
    assert_eq!(finished(&db, &published).await, "succeeded");
    for step in [charge, ship, confirm] {
        assert_eq!(status(&db, step).await, "succeeded");
    }
    // The charge ran once: the workflow resumed where it stopped.
    let charges: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pgoutbox.attempts WHERE operation_id = $1")
            .bind(charge.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(charges, 1);
    // The trail: the workflow's row and one per step.
    let trail: Vec<(Option<i64>, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT operation_id, action, outcome, from_status, to_status FROM pgoutbox.operator_actions
         WHERE workflow_id = $1 ORDER BY operation_id NULLS FIRST, id",
    )
    .bind(published.id.as_i64())
    .fetch_all(db.pool())
    .await
    .unwrap();
    let retry = |id: OperationId, from: &str, to: &str| {
        (
            Some(id.as_i64()),
            "retry".to_owned(),
            "applied".to_owned(),
            from.to_owned(),
            Some(to.to_owned()),
        )
    };
    assert_eq!(
        trail,
        [
            (
                None,
                "retry".into(),
                "applied".into(),
                "failed".into(),
                Some("running".into())
            ),
            retry(ship, "dead", "pending"),
            retry(confirm, "cancelled", "waiting"),
        ]
    );
    // Now it succeeded: refused, and recorded.
    let outcome = admin(&db)
        .act_on_workflow(published.id, WorkflowAction::Retry, "alice", "again")
        .await
        .unwrap();
    let WorkflowActionOutcome::Refused { plan } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        plan.refused.as_deref(),
        Some(
            format!(
                "workflow {} has succeeded: there is nothing to retry",
                published.id
            )
            .as_str()
        )
    );
    let actions = admin(&db).workflow_actions(published.id).await.unwrap();
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[1].outcome, "refused");
    assert!(inconsistent_workflows(&db).await.is_empty());
    assert_eq!(stuck_steps(&db).await, 0);
    system.stop().await.unwrap();
}

#[tokio::test]
async fn a_retry_is_refused_once_compensations_ran() {
    use pgoutbox::admin::{WorkflowAction, WorkflowActionOutcome};

    let db = test_db().await;
    let system = start(&db).await;
    let published = publish(&db, order(30, true)).await;
    assert_eq!(finished(&db, &published).await, "failed");
    let outcome = admin(&db)
        .act_on_workflow(published.id, WorkflowAction::Retry, "alice", "try again")
        .await
        .unwrap();
    let WorkflowActionOutcome::Refused { plan } = outcome else {
        panic!("{outcome:?}")
    };
    let why = plan.refused.unwrap();
    assert!(
        why.contains("has already run or is running (succeeded): a retry would redo what it undid"),
        "{why}"
    );
    system.stop().await.unwrap();
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // One story: both cancels, then the refusals.
async fn a_workflow_cancel_leaves_nothing_running_or_pending() {
    use pgoutbox::WorkflowState;
    use pgoutbox::admin::{WorkflowAction, WorkflowActionOutcome};

    let db = test_db().await;
    let system = start(&db).await;
    let later = PublishOptions::new().delay(Duration::from_hours(1));
    // One cancelled without compensating, one compensating what succeeded.
    let mut cancelled = Vec::new();
    for compensate in [false, true] {
        let mut wf = Workflow::new("saga.cancelled");
        let payment = wf.add(Charge {
            order: 40,
            cents: 1,
        });
        wf.compensate_with(payment, |payment| Refund { payment });
        let stock = wf.add_with(Reserve { order: 40, payment }, later.clone());
        wf.add(Ship {
            order: 40,
            stock,
            refuse: false,
        });
        let published = publish(&db, wf).await;
        assert_eq!(settled(&db, published.steps[0], WITHIN).await, "succeeded");
        let action = WorkflowAction::Cancel { compensate };
        let plan = admin(&db)
            .workflow_plan(published.id, action)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(plan.cancel.len(), 2, "{plan:?}");
        assert_eq!(plan.compensate.len(), usize::from(compensate), "{plan:?}");
        let outcome = admin(&db)
            .act_on_workflow(published.id, action, "bob", "the customer withdrew")
            .await
            .unwrap();
        assert!(
            matches!(outcome, WorkflowActionOutcome::Applied { .. }),
            "{outcome:?}"
        );
        assert_eq!(finished(&db, &published).await, "cancelled");
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pgoutbox.operations WHERE workflow_id = $1
             AND status IN ('waiting', 'pending', 'running', 'retrying')",
        )
        .bind(published.id.as_i64())
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(open, 0);
        let refunds = compensations(&db, published.steps[0]).await;
        assert_eq!(refunds.len(), usize::from(compensate));
        if compensate {
            assert_eq!(refunds[0].2, "succeeded");
        }
        let failure: String =
            sqlx::query_scalar("SELECT failure FROM pgoutbox.workflows WHERE id = $1")
                .bind(published.id.as_i64())
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!(failure, "cancelled by bob: the customer withdrew");
        cancelled.push(published);
    }
    // Again: refused, it has failed already.
    let outcome = admin(&db)
        .act_on_workflow(
            cancelled[0].id,
            WorkflowAction::Cancel { compensate: false },
            "bob",
            "again",
        )
        .await
        .unwrap();
    let WorkflowActionOutcome::Refused { plan } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(plan.state, WorkflowState::Cancelled);
    assert!(plan.refused.unwrap().contains("has already failed"));
    // A step running right now: refused, nothing changed.
    let mut wf = Workflow::new("saga.busy");
    wf.add(SlowCall { seconds: 3 });
    wf.add(Charge {
        order: 41,
        cents: 1,
    });
    let busy = publish(&db, wf).await;
    crate::support::wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE name = 'saga.slow_call' AND status = 'running'",
        1,
        WITHIN,
    )
    .await;
    let outcome = admin(&db)
        .act_on_workflow(
            busy.id,
            WorkflowAction::Cancel { compensate: true },
            "bob",
            "stop",
        )
        .await
        .unwrap();
    let WorkflowActionOutcome::Refused { plan } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        plan.refused.unwrap(),
        format!(
            "step {} (saga.slow_call) is running right now: cancel the workflow once it has ended",
            busy.steps[0]
        )
    );
    assert_eq!(finished(&db, &busy).await, "succeeded");
    assert!(inconsistent_workflows(&db).await.is_empty());
    assert_eq!(stuck_steps(&db).await, 0);
    system.stop().await.unwrap();
}
