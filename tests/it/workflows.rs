//! Workflows: steps released by the transaction that records their last
//! dependency's success, reading their dependencies' results as types;
//! dependents of a step that ends dead or cancelled cancelled with it; the
//! workflow's state kept with its steps'.

use std::time::{Duration, Instant};

use pgoutbox::prelude::*;
use pgoutbox::testing::TestDatabase;
use pgoutbox::workflow::{PublishedWorkflow, WorkflowError};
use pgoutbox::{HandlerError, OperationId, Status};

use crate::support::{count, settings, settled, status, test_db};

const WITHIN: Duration = Duration::from_secs(30);

/// A number, made by a step.
#[operation("wf.source")]
async fn source(ctx: &mut Context, n: i64) -> Result<i64> {
    let _ = ctx;
    Ok(n)
}

/// Adds one to its dependency's number.
#[operation("wf.inc", transactional)]
async fn inc(ctx: &mut TxContext<'_>, from: Dep<Source>) -> Result<i64> {
    Ok(ctx.result(&from)? + 1)
}

/// Doubles its dependency's number.
#[operation("wf.double")]
async fn double(ctx: &mut Context, from: Dep<Source>) -> Result<i64> {
    Ok(ctx.result(&from)? * 2)
}

/// Adds the results of an `inc` and a `double`.
#[operation("wf.join")]
async fn join(ctx: &mut Context, left: Dep<Inc>, right: Dep<Double>) -> Result<i64> {
    Ok(ctx.result(&left)? + ctx.result(&right)?)
}

/// The next link of a chain: its predecessor's number plus one.
#[operation("wf.link")]
async fn link(
    ctx: &mut Context,
    first: Option<Dep<Source>>,
    previous: Option<Dep<Link>>,
) -> Result<i64> {
    match (first, previous) {
        (Some(first), None) => Ok(ctx.result(&first)? + 1),
        (None, Some(previous)) => Ok(ctx.result(&previous)? + 1),
        _ => Err(HandlerError::permanent(
            "a link needs exactly one predecessor",
        )),
    }
}

/// Sums a fan-in.
#[operation("wf.sum")]
async fn sum(ctx: &mut Context, parts: Vec<Dep<Source>>) -> Result<i64> {
    Ok(ctx.results(&parts)?.into_iter().sum())
}

/// Fails for good.
#[operation("wf.fail")]
async fn fail(ctx: &mut Context, n: i64) -> Result<i64> {
    let _ = (ctx, n);
    Err(HandlerError::permanent("the card was declined"))
}

/// Depends on a failing step.
#[operation("wf.after_fail")]
async fn after_fail(ctx: &mut Context, before: Dep<Fail>) -> Result<()> {
    ctx.result(&before)?;
    Ok(())
}

/// Depends on a step that depends on a failing one.
#[operation("wf.after_after")]
async fn after_after(ctx: &mut Context, before: Dep<AfterFail>) -> Result<()> {
    ctx.result(&before)?;
    Ok(())
}

/// Runs whatever way its dependency ends, and records how it ended.
#[operation("wf.notify", transactional)]
async fn notify(ctx: &mut TxContext<'_>, charge: Settled<Fail>) -> Result<String> {
    match ctx.result(&charge) {
        Ok(n) => Ok(format!("charged {n}")),
        Err(e) => Ok(format!("not charged: {e}")),
    }
}

/// Adds `n` sources and their sum to its workflow at run time.
#[operation("wf.grow")]
async fn grow(ctx: &mut Context, n: i64) -> Result<()> {
    let parts = (1..=n).map(|n| ctx.add_step(Source { n })).collect();
    ctx.add_step(Sum { parts });
    Ok(())
}

fn router() -> WorkflowRouter {
    WorkflowRouter::new()
        .operation::<Source>()
        .operation::<Inc>()
        .operation::<Double>()
        .operation::<Join>()
        .operation::<Link>()
        .operation::<Sum>()
        .operation::<Fail>()
        .operation::<AfterFail>()
        .operation::<AfterAfter>()
        .operation::<Notify>()
        .operation::<Grow>()
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

/// The workflow's state.
pub(crate) async fn state(db: &TestDatabase, wf: &PublishedWorkflow) -> String {
    sqlx::query_scalar("SELECT state FROM pgoutbox.workflows WHERE id = $1")
        .bind(wf.id.as_i64())
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// The workflow's state once it is no longer `running` nor
/// `compensating`.
pub(crate) async fn finished(db: &TestDatabase, wf: &PublishedWorkflow) -> String {
    let deadline = Instant::now() + WITHIN;
    loop {
        let state = state(db, wf).await;
        if state != "running" && state != "compensating" {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "workflow {} still running",
            wf.id
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn result(db: &TestDatabase, id: OperationId) -> serde_json::Value {
    sqlx::query_scalar(
        "SELECT result FROM pgoutbox.attempts WHERE operation_id = $1 AND outcome = 'succeeded'",
    )
    .bind(id.as_i64())
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// Steps whose first attempt started before one of their dependencies'
/// success was committed (its `finished_at`, the recording transaction's
/// time, precedes its commit): must be none.
async fn early_starts(db: &TestDatabase) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pgoutbox.workflow_edges e
         JOIN pgoutbox.operations d ON d.id = e.dependency_id
         JOIN pgoutbox.attempts a ON a.operation_id = e.operation_id
         WHERE e.required AND (d.finished_at IS NULL OR a.started_at < d.finished_at
                               OR d.status <> 'succeeded')",
    )
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// Workflows whose state disagrees with their failure and their steps', by
/// the rule of migration 11 (`workflow_settle`), or that have a failing
/// step (dead or cancelled, not a compensation, with a dependent holding it
/// as a `Dep` or none at all) and no failure recorded: must be none.
pub(crate) async fn inconsistent_workflows(db: &TestDatabase) -> Vec<(i64, String, String)> {
    inconsistent_workflows_on(db.pool()).await
}

/// [`inconsistent_workflows`] on any pool (a private cluster's).
pub(crate) async fn inconsistent_workflows_on(pool: &sqlx::PgPool) -> Vec<(i64, String, String)> {
    sqlx::query_as(
        "SELECT w.id, w.state, s.expected FROM pgoutbox.workflows w
         CROSS JOIN LATERAL (
             SELECT CASE
                 WHEN w.failed_at IS NULL AND bool_or(o.compensates IS NULL
                          AND o.status IN ('dead', 'cancelled')
                          AND (EXISTS (SELECT 1 FROM pgoutbox.workflow_edges e
                                       WHERE e.dependency_id = o.id AND e.required)
                               OR NOT EXISTS (SELECT 1 FROM pgoutbox.workflow_edges e
                                              JOIN pgoutbox.operations d ON d.id = e.operation_id
                                              WHERE e.dependency_id = o.id
                                                AND d.compensates IS NULL)))
                     THEN 'a failure recorded'
                 WHEN bool_or(o.status = 'stalled')
                      OR (w.failed_at IS NOT NULL
                          AND bool_or(o.status = 'dead' AND o.compensates IS NOT NULL))
                     THEN 'stalled'
                 WHEN bool_or(o.status IN ('waiting', 'pending', 'running', 'retrying'))
                     THEN CASE WHEN w.failed_at IS NULL THEN 'running' ELSE 'compensating' END
                 WHEN w.failed_at IS NULL THEN 'succeeded'
                 WHEN w.cancelled THEN 'cancelled'
                 ELSE 'failed' END AS expected
             FROM pgoutbox.operations o WHERE o.workflow_id = w.id
         ) s
         WHERE w.state <> s.expected
         ORDER BY w.id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Waiting steps all of whose dependencies are met, and steps whose
/// `waiting_for` disagrees with their unmet edges: must be none.
pub(crate) async fn stuck_steps(db: &TestDatabase) -> i64 {
    stuck_steps_on(db.pool()).await
}

/// [`stuck_steps`] on any pool (a private cluster's).
pub(crate) async fn stuck_steps_on(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pgoutbox.operations o
         WHERE o.status = 'waiting' AND o.waiting_for <> (
             SELECT count(*) FROM pgoutbox.workflow_edges e
             JOIN pgoutbox.operations d ON d.id = e.dependency_id
             WHERE e.operation_id = o.id
               AND NOT (d.status = 'succeeded'
                        OR (NOT e.required AND d.status IN ('dead', 'cancelled'))))",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_diamond_runs_in_order_and_hands_results_on() {
    let db = test_db().await;
    let system = start(&db).await;
    let mut wf = Workflow::new("wf.diamond");
    let a = wf.add(Source { n: 20 });
    let b = wf.add(Inc { from: a });
    let c = wf.add(Double { from: a });
    wf.add(Join { left: b, right: c });
    let published = publish(&db, wf).await;
    assert_eq!(published.steps.len(), 4);
    assert_eq!(finished(&db, &published).await, "succeeded");
    let [a, b, c, d] = published.steps[..] else {
        unreachable!()
    };
    assert_eq!(result(&db, a).await, 20);
    assert_eq!(result(&db, b).await, 21);
    assert_eq!(result(&db, c).await, 40);
    assert_eq!(result(&db, d).await, 61, "D received B's and C's results");
    // The payload names the dependencies by operation id.
    let payload: serde_json::Value =
        sqlx::query_scalar("SELECT payload FROM pgoutbox.operations WHERE id = $1")
            .bind(d.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(
        payload,
        serde_json::json!({"left": {"pgoutbox.step": b.as_i64()}, "right": {"pgoutbox.step": c.as_i64()}})
    );
    assert_eq!(early_starts(&db).await, 0);
    assert_eq!(stuck_steps(&db).await, 0);
    assert!(inconsistent_workflows(&db).await.is_empty());
    system.stop().await.unwrap();
}

#[tokio::test]
async fn a_chain_of_fifty_runs_link_by_link() {
    let db = test_db().await;
    let system = start(&db).await;
    let mut wf = Workflow::new("wf.chain");
    let first = wf.add(Source { n: 0 });
    let mut previous = wf.add(Link {
        first: Some(first),
        previous: None,
    });
    for _ in 2..50 {
        previous = wf.add(Link {
            first: None,
            previous: Some(previous),
        });
    }
    let published = publish(&db, wf).await;
    assert_eq!(published.steps.len(), 50);
    assert_eq!(finished(&db, &published).await, "succeeded");
    assert_eq!(result(&db, *published.steps.last().unwrap()).await, 49);
    assert_eq!(early_starts(&db).await, 0);
    system.stop().await.unwrap();
}

#[tokio::test]
async fn a_fan_in_of_a_thousand_is_released_once_with_every_result() {
    let db = test_db().await;
    let system = start(&db).await;
    let mut wf = Workflow::new("wf.fan_in");
    let parts: Vec<_> = (1..=1_000).map(|n| wf.add(Source { n })).collect();
    wf.add(Sum { parts });
    let published = publish(&db, wf).await;
    assert_eq!(finished(&db, &published).await, "succeeded");
    let sum = *published.steps.last().unwrap();
    assert_eq!(result(&db, sum).await, 500_500);
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pgoutbox.attempts WHERE operation_id = $1")
            .bind(sum.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(attempts, 1);
    assert_eq!(early_starts(&db).await, 0);
    system.stop().await.unwrap();
}

#[tokio::test]
async fn a_dead_dependency_cancels_its_dependents_and_an_opted_out_step_runs() {
    let db = test_db().await;
    let system = start(&db).await;
    let mut wf = Workflow::new("wf.failing");
    let charge = wf.add(Fail { n: 1 });
    let ship = wf.add(AfterFail { before: charge });
    wf.add(AfterAfter { before: ship });
    wf.add(Notify {
        charge: charge.into(),
    });
    let published = publish(&db, wf).await;
    assert_eq!(finished(&db, &published).await, "failed");
    let [charge, ship, after, notify] = published.steps[..] else {
        unreachable!()
    };
    assert_eq!(
        settled(&db, notify, WITHIN).await,
        "succeeded",
        "the opted-out step runs"
    );
    assert_eq!(status(&db, charge).await, "dead");
    assert_eq!(status(&db, ship).await, "cancelled");
    assert_eq!(status(&db, after).await, "cancelled");
    let reasons: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, last_error FROM pgoutbox.operations WHERE status = 'cancelled' ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        reasons,
        [
            (
                ship.as_i64(),
                format!("cancelled: its dependency {charge} (wf.fail) is dead")
            ),
            (
                after.as_i64(),
                format!(
                    "cancelled: its dependency {ship} was cancelled, because {charge} (wf.fail) is dead"
                )
            ),
        ]
    );
    // Cancelled before they ran: no attempt.
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pgoutbox.attempts WHERE operation_id = ANY($1)")
            .bind([ship.as_i64(), after.as_i64()])
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(attempts, 0);
    let told = result(&db, notify).await;
    assert!(
        told.as_str().unwrap().starts_with(&format!(
            "not charged: dependency {charge} (`wf.fail`) is dead: "
        )),
        "{told}"
    );
    assert!(inconsistent_workflows(&db).await.is_empty());
    system.stop().await.unwrap();
}

#[tokio::test]
async fn mistakes_are_refused_at_publish_and_publish_nothing() {
    let db = test_db().await;
    let mut tx = db.pool().begin().await.unwrap();
    // A `Dep` published outside its workflow.
    let mut other = Workflow::new("wf.other");
    let foreign = other.add(Source { n: 1 });
    let refused = pgoutbox::publish(&mut tx, Double { from: foreign }).await;
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("a `Dep` can be published only with the workflow that made it"),
    );
    // A `Dep` of another workflow.
    let mut wf = Workflow::new("wf.mixed");
    wf.add(Source { n: 2 });
    wf.add(Double { from: foreign });
    let refused = publish_workflow(&mut tx, wf).await.unwrap_err();
    assert!(matches!(
        refused,
        WorkflowError::ForeignDep {
            index: 1,
            operation: "wf.double",
            ..
        }
    ));
    assert_eq!(
        refused.to_string(),
        "step 1 (`wf.double`) of workflow `wf.mixed` holds a `Dep` of another workflow; \
         a step can depend only on steps added to its own workflow before it"
    );
    // No step, a bad name, a keyed step.
    let refused = publish_workflow(&mut tx, Workflow::new("wf.empty"))
        .await
        .unwrap_err();
    assert_eq!(refused.to_string(), "workflow `wf.empty` has no steps");
    let mut wf = Workflow::new("Bad Name");
    wf.add(Source { n: 3 });
    assert!(matches!(
        publish_workflow(&mut tx, wf).await.unwrap_err(),
        WorkflowError::InvalidName(_)
    ));
    let mut wf = Workflow::new("wf.keyed");
    wf.add_with(Source { n: 4 }, PublishOptions::new().idempotency_key("k"));
    assert!(
        publish_workflow(&mut tx, wf)
            .await
            .unwrap_err()
            .to_string()
            .contains("a workflow step takes no idempotency key")
    );
    tx.commit().await.unwrap();
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pgoutbox.operations) + (SELECT count(*) FROM pgoutbox.workflows)",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_rolled_back_workflow_leaves_nothing() {
    let db = test_db().await;
    let mut wf = Workflow::new("wf.rolled_back");
    let a = wf.add(Source { n: 1 });
    wf.add(Double { from: a });
    let mut tx = db.pool().begin().await.unwrap();
    publish_workflow(&mut tx, wf).await.unwrap();
    tx.rollback().await.unwrap();
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pgoutbox.operations) + (SELECT count(*) FROM pgoutbox.workflows)
              + (SELECT count(*) FROM pgoutbox.workflow_edges)",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn ten_thousand_steps_publish_in_one_transaction() {
    let db = test_db().await;
    let mut wf = Workflow::new("wf.wide");
    let first = wf.add(Source { n: 0 });
    for _ in 1..10_000 {
        wf.add(Double { from: first });
    }
    let started = Instant::now();
    let mut tx = db.pool().begin().await.unwrap();
    let published = publish_workflow(&mut tx, wf).await.unwrap();
    tx.commit().await.unwrap();
    let took = started.elapsed();
    assert_eq!(published.steps.len(), 10_000);
    let (waiting, edges): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pgoutbox.operations WHERE status = 'waiting'),
                (SELECT count(*) FROM pgoutbox.workflow_edges)",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!((waiting, edges), (9_999, 9_999));
    // Not a timed assertion (the benchmark has the speeds); printed for the
    // record.
    eprintln!("10,000 steps published in {took:?}");
}

/// A charge whose call never answers in time: its outcome is unknown, so
/// the step is `stalled` (not idempotent).
#[operation("wf.slow_charge", timeout = "100ms")]
async fn slow_charge(ctx: &mut Context, cents: i64) -> Result<crate::results::Receipt> {
    let _ = (ctx, cents);
    tokio::time::sleep(Duration::from_mins(1)).await;
    unreachable!("abandoned at its timeout")
}

/// Ships with the receipt of a charge.
#[operation("wf.ship_with")]
async fn ship_with(ctx: &mut Context, payment: Dep<SlowCharge>) -> Result<String> {
    Ok(ctx.result(&payment)?.charge_id)
}

#[tokio::test]
async fn a_stalled_step_holds_its_dependents_until_resolved_with_a_result_that_fits() {
    use pgoutbox::admin::{Action, ActionOutcome, Admin, Resolution};

    let db = test_db().await;
    let system = WorkflowSystem::builder(settings(&db))
        .router(router().operation::<SlowCharge>().operation::<ShipWith>())
        .start()
        .await
        .unwrap();
    let mut wf = Workflow::new("wf.stalls");
    let payment = wf.add(SlowCharge { cents: 500 });
    wf.add(ShipWith { payment });
    let published = publish(&db, wf).await;
    assert_eq!(finished(&db, &published).await, "stalled");
    let [charge, ship] = published.steps[..] else {
        unreachable!()
    };
    assert_eq!(status(&db, charge).await, "stalled");
    assert_eq!(
        status(&db, ship).await,
        "waiting",
        "a stalled dependency holds it"
    );
    let admin = Admin::new(db.pool().clone(), &"pgoutbox".parse().unwrap());

    // Without a result: refused, recorded, nothing released.
    let refused = admin
        .act(
            charge,
            Action::Resolve(Resolution::Succeeded),
            "alice",
            "found it",
        )
        .await
        .unwrap();
    let ActionOutcome::BadResult { reason } = &refused else {
        panic!("{refused:?}")
    };
    assert!(
        reason.contains("whose dependents read its result"),
        "{reason}"
    );
    // With one that does not fit the output's schema: refused.
    let wrong = serde_json::json!({"charge_id": 17});
    let refused = admin
        .resolve_with_result(charge, Some(wrong), "alice", "found it")
        .await
        .unwrap();
    let ActionOutcome::BadResult { reason } = &refused else {
        panic!("{refused:?}")
    };
    assert!(
        reason.contains("does not match the output schema of `wf.slow_charge`"),
        "{reason}"
    );
    assert_eq!(status(&db, charge).await, "stalled");
    assert_eq!(status(&db, ship).await, "waiting");

    // With one that fits: applied, and the dependent receives it.
    let receipt = serde_json::json!({"charge_id": "ch_found", "cents": 500});
    let applied = admin
        .resolve_with_result(
            charge,
            Some(receipt.clone()),
            "alice",
            "ch_found at the provider",
        )
        .await
        .unwrap();
    assert!(
        matches!(applied, ActionOutcome::Applied { .. }),
        "{applied:?}"
    );
    let deadline = Instant::now() + WITHIN;
    while state(&db, &published).await != "succeeded" {
        assert!(Instant::now() < deadline, "the workflow did not succeed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(result(&db, ship).await, "ch_found");
    let trail: Vec<(String, String, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT action, outcome, result FROM pgoutbox.operator_actions
         WHERE operation_id = $1 ORDER BY id",
    )
    .bind(charge.as_i64())
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(
        trail,
        [
            ("resolve".into(), "refused".into(), None),
            ("resolve".into(), "refused".into(), None),
            ("resolve".into(), "applied".into(), Some(receipt)),
        ]
    );
    // The graph as operators read it.
    let graph = admin.workflow_graph(published.id).await.unwrap().unwrap();
    assert_eq!(graph.workflow.state, pgoutbox::WorkflowState::Succeeded);
    assert_eq!(graph.steps.len(), 2);
    assert_eq!(graph.steps[1].depends_on, [(charge, true)]);
    assert_eq!(graph.steps[1].result_summary(5).unwrap(), "\"ch_f…");
    assert_eq!(graph.workflow.counts[&Status::Succeeded], 2);
    system.stop().await.unwrap();
}

#[tokio::test]
async fn retention_keeps_a_step_whose_dependents_have_not_run() {
    use pgoutbox::admin::Admin;

    let db = test_db().await;
    let mut wf = Workflow::new("wf.retained");
    let a = wf.add(Source { n: 1 });
    let b = wf.add(Source { n: 2 });
    wf.add(Join2 { left: a, right: b });
    let published = publish(&db, wf).await;
    let [a, b, joined] = published.steps[..] else {
        unreachable!()
    };
    // `a` succeeded long ago; `b` has not run yet, so `joined` waits.
    sqlx::query(
        "UPDATE pgoutbox.operations SET status = 'succeeded', finished_at = now() - interval '30 days'
         WHERE id = $1",
    )
    .bind(a.as_i64())
    .execute(db.pool())
    .await
    .unwrap();
    let admin = Admin::new(db.pool().clone(), &"pgoutbox".parse().unwrap());
    let purged = admin
        .purge_batch(&[Status::Succeeded], Duration::from_hours(24), 100)
        .await
        .unwrap();
    assert_eq!(purged, 0);
    assert_eq!(status(&db, a).await, "succeeded");
    // Once its dependent has ended, it goes, and so do the dependent's edges.
    sqlx::query("UPDATE pgoutbox.operations SET status = 'cancelled', finished_at = now() - interval '30 days' WHERE id = ANY($1)")
        .bind([b.as_i64(), joined.as_i64()])
        .execute(db.pool())
        .await
        .unwrap();
    let purged = admin
        .purge_batch(
            &[Status::Succeeded, Status::Cancelled],
            Duration::from_hours(24),
            100,
        )
        .await
        .unwrap();
    assert_eq!(purged, 3);
    let edges: i64 = sqlx::query_scalar("SELECT count(*) FROM pgoutbox.workflow_edges")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(edges, 0);
}

/// Adds two numbers.
#[operation("wf.join2")]
async fn join2(ctx: &mut Context, left: Dep<Source>, right: Dep<Source>) -> Result<i64> {
    Ok(ctx.result(&left)? + ctx.result(&right)?)
}

#[tokio::test]
async fn a_step_released_by_another_process_is_announced_to_its_workers() {
    let db = test_db().await;
    // The sources run in one system, the doubling in another whose polling
    // fallback is a minute away: only the release's notification can wake
    // it in time.
    let mut sources = settings(&db);
    sources.workflow_system.poll_interval = Duration::from_mins(1);
    let sources = WorkflowSystem::builder(sources)
        .router(WorkflowRouter::new().operation::<Source>())
        .start()
        .await
        .unwrap();
    let mut doublers = settings(&db);
    doublers.workflow_system.poll_interval = Duration::from_mins(1);
    let doublers = WorkflowSystem::builder(doublers)
        .router(WorkflowRouter::new().operation::<Double>())
        .start()
        .await
        .unwrap();
    // Let both finish their start-up claims: the release comes later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut wf = Workflow::new("wf.across");
    let a = wf.add(Source { n: 4 });
    wf.add(Double { from: a });
    let published = publish(&db, wf).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while state(&db, &published).await != "succeeded" {
        assert!(
            Instant::now() < deadline,
            "the released step was not picked up before the polling fallback"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(result(&db, published.steps[1]).await, 8);
    sources.stop().await.unwrap();
    doublers.stop().await.unwrap();
}

#[tokio::test]
async fn a_replayed_step_runs_in_its_workflow_with_its_dependencies_results() {
    use pgoutbox::admin::{Action, ActionOutcome, Admin};

    let db = test_db().await;
    let system = start(&db).await;
    let mut wf = Workflow::new("wf.replayed");
    let a = wf.add(Source { n: 20 });
    let b = wf.add(Inc { from: a });
    let c = wf.add(Double { from: a });
    wf.add(Join { left: b, right: c });
    let published = publish(&db, wf).await;
    assert_eq!(finished(&db, &published).await, "succeeded");
    let admin = Admin::new(db.pool().clone(), &"pgoutbox".parse().unwrap());
    let replayed = admin
        .act(
            published.steps[3],
            Action::Replay,
            "alice",
            "resend the parcel label",
        )
        .await
        .unwrap();
    let ActionOutcome::Applied {
        new_operation_id: Some(new),
        ..
    } = replayed
    else {
        panic!("{replayed:?}")
    };
    assert_eq!(
        settled(&db, new, WITHIN).await,
        "succeeded",
        "the replay runs"
    );
    assert_eq!(result(&db, new).await, 61, "it read B's and C's results");
    assert_eq!(finished(&db, &published).await, "succeeded");
    let graph = admin.workflow_graph(published.id).await.unwrap().unwrap();
    assert_eq!((graph.workflow.steps, graph.steps.len()), (5, 5));
    assert!(inconsistent_workflows(&db).await.is_empty());
    system.stop().await.unwrap();
}

/// Names one step twice: once needing its success, once not.
#[operation("wf.both")]
async fn both(ctx: &mut Context, needed: Dep<Source>, told: Settled<Source>) -> Result<i64> {
    Ok(ctx.result(&needed)? + ctx.result(&told)?)
}

/// A note, which may hold what PostgreSQL cannot store.
#[operation("wf.note")]
async fn note(ctx: &mut Context, text: String) -> Result<()> {
    let _ = (ctx, text);
    Ok(())
}

#[tokio::test]
async fn a_dependency_named_twice_is_one_edge_required_once() {
    let db = test_db().await;
    let mut wf = Workflow::new("wf.twice");
    let a = wf.add(Source { n: 5 });
    wf.add(Both {
        needed: a,
        told: a.into(),
    });
    let published = publish(&db, wf).await;
    let edges: Vec<(i64, i64, bool)> =
        sqlx::query_as("SELECT operation_id, dependency_id, required FROM pgoutbox.workflow_edges")
            .fetch_all(db.pool())
            .await
            .unwrap();
    let [a, both] = published.steps[..] else {
        unreachable!()
    };
    assert_eq!(edges, [(both.as_i64(), a.as_i64(), true)]);
    let waiting_for: i32 =
        sqlx::query_scalar("SELECT waiting_for FROM pgoutbox.operations WHERE id = $1")
            .bind(both.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(waiting_for, 1);
    let system = WorkflowSystem::builder(settings(&db))
        .router(
            WorkflowRouter::new()
                .operation::<Source>()
                .operation::<Both>(),
        )
        .start()
        .await
        .unwrap();
    assert_eq!(finished(&db, &published).await, "succeeded");
    assert_eq!(result(&db, both).await, 10);
    system.stop().await.unwrap();
}

#[tokio::test]
async fn an_unstorable_step_is_refused_before_anything_is_sent() {
    let db = test_db().await;
    let mut wf = Workflow::new("wf.unstorable");
    let a = wf.add(Source { n: 1 });
    wf.add(Double { from: a });
    wf.add(Note {
        text: "nul \u{0} inside".into(),
    });
    let mut tx = db.pool().begin().await.unwrap();
    let refused = publish_workflow(&mut tx, wf).await.unwrap_err();
    assert!(
        matches!(
            &refused,
            WorkflowError::Step {
                index: Some(2),
                source: pgoutbox::PublishError::Unstorable {
                    name: "wf.note",
                    ..
                },
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .starts_with("step 2 of workflow `wf.unstorable`: "),
        "{refused}"
    );
    // Nothing was sent: the transaction can go on and commit.
    tx.commit().await.unwrap();
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pgoutbox.operations) + (SELECT count(*) FROM pgoutbox.workflows)",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_released_step_always_reads_the_end_that_released_it() {
    // A claim may take a step released after the claim's statement began;
    // the dependencies it reads must be those of the release, not older.
    let db = test_db().await;
    let system = start(&db).await;
    // One at a time, a few milliseconds apart: the workers are mostly idle,
    // their claims following each wake-up, so that releases often commit
    // while a claim's statement is under way.
    let mut all = Vec::new();
    for n in 0..150 {
        let mut wf = Workflow::new("wf.read_after_release");
        let charge = wf.add(Fail { n });
        wf.add(Notify {
            charge: charge.into(),
        });
        let source = wf.add(Source { n });
        wf.add(Double { from: source });
        all.push(publish(&db, wf).await);
        tokio::time::sleep(Duration::from_millis(u64::try_from(n % 7).unwrap())).await;
    }
    for wf in &all {
        // `wf.fail`'s only dependent opted out: the workflow succeeds.
        assert_eq!(finished(&db, wf).await, "succeeded");
        for step in [wf.steps[1], wf.steps[3]] {
            assert_eq!(settled(&db, step, WITHIN).await, "succeeded");
        }
        let told = result(&db, wf.steps[1]).await;
        assert!(
            told.as_str().unwrap().contains("(`wf.fail`) is dead"),
            "{told}"
        );
    }
    // No dependent failed an attempt for want of its dependency's result.
    let failed_attempts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pgoutbox.attempts WHERE operation_name <> 'wf.fail' AND outcome <> 'succeeded'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(failed_attempts, 0);
    system.stop().await.unwrap();
}

/// A diamond keyed `key`.
fn keyed_diamond(key: &str, n: i64) -> Workflow {
    let mut wf = Workflow::new("wf.keyed").idempotency_key(key);
    let source = wf.add(Source { n });
    let left = wf.add(Inc { from: source });
    let right = wf.add(Double { from: source });
    wf.add(Join { left, right });
    wf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_publishes_with_one_key_make_one_workflow() {
    let db = test_db().await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8_i64)
        .map(|n| {
            let pool = db.pool().clone();
            let barrier = std::sync::Arc::clone(&barrier);
            tokio::spawn(async move {
                let mut tx = pool.begin().await.unwrap();
                barrier.wait().await;
                let published = publish_workflow(&mut tx, keyed_diamond("order-7", n))
                    .await
                    .expect("publishes");
                // Held open a little, so that the others meet an
                // uncommitted key.
                tokio::time::sleep(Duration::from_millis(50)).await;
                tx.commit().await.unwrap();
                published
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.unwrap());
    }
    assert_eq!(all.iter().filter(|p| p.created).count(), 1, "{all:?}");
    let first = &all[0];
    assert_eq!(first.steps.len(), 4);
    for p in &all {
        assert_eq!((p.id, &p.steps), (first.id, &first.steps));
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.workflows").await,
        1
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations").await,
        4
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.workflow_edges").await,
        4
    );
    let key: String = sqlx::query_scalar("SELECT idempotency_key FROM pgoutbox.workflows")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(key, "order-7");
    // The losers met the winner's key uncommitted (they drew ids, then
    // `ON CONFLICT` waited for the winner's commit): the race was run,
    // not avoided by the probe.
    let drawn: i64 = sqlx::query_scalar("SELECT last_value FROM pgoutbox.operations_id_seq")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(drawn > 4, "only the winner drew ids: {drawn}");

    // Once committed, again: the same, nothing new; the steps still run
    // as one workflow, the winner's.
    let again = publish(&db, keyed_diamond("order-7", 99)).await;
    assert!(!again.created);
    assert_eq!((again.id, &again.steps), (first.id, &first.steps));
    let winner: i64 =
        sqlx::query_scalar("SELECT (payload->>'n')::bigint FROM pgoutbox.operations WHERE id = $1")
            .bind(first.steps[0].as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    let system = start(&db).await;
    assert_eq!(finished(&db, first).await, "succeeded");
    assert_eq!(
        result(&db, first.steps[3]).await,
        serde_json::json!(3 * winner + 1)
    );
    system.stop().await.unwrap();
    assert!(inconsistent_workflows(&db).await.is_empty());
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.workflows").await,
        1
    );

    // Another key is another workflow.
    let other = publish(&db, keyed_diamond("order-8", 1)).await;
    assert!(other.created);
    assert_ne!(other.id, first.id);
}

#[tokio::test]
async fn a_second_publish_in_the_same_transaction_returns_the_first() {
    let db = test_db().await;
    let mut tx = db.pool().begin().await.unwrap();
    let first = publish_workflow(&mut tx, keyed_diamond("k", 1))
        .await
        .unwrap();
    let again = publish_workflow(&mut tx, keyed_diamond("k", 2))
        .await
        .unwrap();
    assert!(first.created && !again.created);
    assert_eq!((again.id, &again.steps), (first.id, &first.steps));
    tx.rollback().await.unwrap();
    // Rolled back: the key is free again.
    let after = publish(&db, keyed_diamond("k", 3)).await;
    assert!(after.created);
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations").await,
        4
    );
}

#[tokio::test]
async fn a_bad_workflow_key_is_refused_and_publishes_nothing() {
    let db = test_db().await;
    let long = "k".repeat(pgoutbox::workflow::MAX_KEY_BYTES + 1);
    for (key, reason) in [
        ("", "the key is empty".to_owned()),
        (long.as_str(), "1025 bytes, longer than 1024".to_owned()),
        (
            "a\0b",
            "the key holds a NUL character, which PostgreSQL cannot store".to_owned(),
        ),
    ] {
        let mut tx = db.pool().begin().await.unwrap();
        let err = publish_workflow(&mut tx, keyed_diamond(key, 1))
            .await
            .unwrap_err();
        assert!(matches!(err, WorkflowError::InvalidKey { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("invalid idempotency key for workflow `wf.keyed`: {reason}")
        );
        tx.commit().await.unwrap();
    }
    // The longest key allowed is stored.
    let longest = "k".repeat(pgoutbox::workflow::MAX_KEY_BYTES);
    assert!(publish(&db, keyed_diamond(&longest, 1)).await.created);
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.workflows").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_key_returns_the_published_steps_not_those_added_at_run_time() {
    let db = test_db().await;
    let keyed = || {
        let mut wf = Workflow::new("wf.grown").idempotency_key("grown-1");
        wf.add(Source { n: 1 });
        wf.add(Grow { n: 3 });
        wf
    };
    let first = publish(&db, keyed()).await;
    let system = start(&db).await;
    assert_eq!(finished(&db, &first).await, "succeeded");
    system.stop().await.unwrap();
    // Four steps were added at run time: six in all.
    let steps: i32 = sqlx::query_scalar("SELECT steps FROM pgoutbox.workflows WHERE id = $1")
        .bind(first.id.as_i64())
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(steps, 6);
    let again = publish(&db, keyed()).await;
    assert!(!again.created);
    assert_eq!((again.id, &again.steps), (first.id, &first.steps));
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations").await,
        6
    );
}
