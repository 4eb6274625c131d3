//! A property test of the saga rules (migration 11's header): random
//! workflows — DAGs of up to 30 steps, each depending on a random subset of
//! earlier ones through `Dep` or `Settled` fields, each succeeding or failing
//! for good, some declaring a compensation — run by a real system, and
//! compared with a small in-memory model of the rules.
//!
//! Which steps got to start before a workflow failed depends on the
//! scheduler (two independent branches race), so the model takes that one
//! fact from the database — the set of steps that ran, each once — and
//! checks it both ways: no step ran that the rules forbid (a required
//! dependency not succeeded), none was left out that the rules release
//! (cancelled only behind a failed dependency, or by the workflow's failure
//! when it has no `Settled` dependency). Everything else follows from the
//! rules and is compared: every step's final status, whether and why the
//! workflow failed and its state, exactly which steps got a compensation
//! (one each), the release order (no step started before its dependencies
//! ended) and the order of compensations (each started once every step of
//! the workflow had ended, and after the compensations of the later steps
//! ended: reverse order).
//!
//! Some workflows declare no compensation and are retried by an operator
//! (`Admin::act_on_workflow`, `WorkflowAction::Retry`) each time they fail,
//! up to twice; their steps may fail on their first two attempts. Each
//! round (the first run, then each retry) is checked as above, the steps
//! that succeeded before it kept, and none of them run again.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pgoutbox::admin::{Admin, WorkflowAction, WorkflowActionOutcome};
use pgoutbox::prelude::*;
use pgoutbox::testing::TestDatabase;
use pgoutbox::workflow::{PublishedWorkflow, StepError};
use proptest::collection::vec;
use proptest::prelude::{Strategy, any};
use proptest::test_runner::{Config, TestError, TestRunner};

use crate::support::{settings, test_db};
use crate::workflows::{inconsistent_workflows, stuck_steps};

/// A step of a random workflow: reads its dependencies' results (a
/// required one must have succeeded; a `Settled` one must have ended),
/// takes `ms`, then fails for good on its first `fails` attempts (an
/// operator's retry keeps the count), and succeeds with its number after.
#[operation("model.step", idempotent)]
async fn model_step(
    ctx: &mut Context,
    n: u32,
    deps: Vec<Dep<ModelStep>>,
    settled: Vec<Settled<ModelStep>>,
    fails: u32,
    ms: u64,
) -> Result<u32> {
    ctx.results(&deps)?;
    for dep in &settled {
        match ctx.result(dep) {
            Ok(_) | Err(StepError::Failed { .. }) => {}
            Err(e) => return Err(HandlerError::permanent(e)),
        }
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    if ctx.attempt() <= fails {
        return Err(HandlerError::permanent(format!(
            "step {n} fails for good on attempt {}",
            ctx.attempt()
        )));
    }
    Ok(n)
}

/// The compensation of a random workflow's step: reads its result.
#[operation("model.undo", idempotent)]
async fn model_undo(ctx: &mut Context, step: Dep<ModelStep>, ms: u64) -> Result<u32> {
    let n = ctx.result(&step)?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(n)
}

/// A step of a generated workflow.
#[derive(Debug, Clone)]
struct StepPlan {
    /// Earlier steps it depends on, by index: `true` for a `Dep`, `false`
    /// for a `Settled` (one entry per step).
    deps: Vec<(usize, bool)>,
    /// How many of its attempts fail for good (two only in a workflow that
    /// is retried).
    fails: u32,
    compensated: bool,
    ms: u64,
}

/// A generated workflow: its steps, in the order they are added, and how
/// many times an operator retries it when it fails (only a workflow
/// without compensations).
#[derive(Debug, Clone)]
struct DagPlan {
    steps: Vec<StepPlan>,
    retries: u32,
}

/// Random workflows: up to 30 steps each depending on up to 3 earlier ones
/// (7 in 10 through a `Dep`), failing one in 12 (none at all in a third
/// of the workflows), 6 in 10 declaring a compensation; or, in a quarter
/// of them, none declaring one, retried by an operator up to twice, a
/// failing step failing its first attempt, or its first two.
fn dag() -> impl Strategy<Value = DagPlan> {
    let step = (
        vec((any::<u32>(), proptest::bool::weighted(0.7)), 0..4),
        proptest::bool::weighted(1.0 / 12.0),
        proptest::bool::weighted(0.5),
        proptest::bool::weighted(0.6),
        0_u64..15,
    );
    let flags = (
        proptest::bool::weighted(1.0 / 3.0),
        proptest::bool::weighted(0.25),
    );
    (vec(step, 1..=30), flags).prop_map(|(raw, (clean, retried))| {
        let steps = raw
            .into_iter()
            .enumerate()
            .map(|(i, (picks, fail, twice, compensated, ms))| {
                let mut deps: Vec<(usize, bool)> = Vec::new();
                if i > 0 {
                    for (pick, required) in picks {
                        let target = pick as usize % i;
                        if !deps.iter().any(|d| d.0 == target) {
                            deps.push((target, required));
                        }
                    }
                }
                let fails = match (fail && !clean, retried && twice) {
                    (false, _) => 0,
                    (true, false) => 1,
                    (true, true) => 2,
                };
                StepPlan {
                    deps,
                    fails,
                    compensated: compensated && !retried,
                    ms,
                }
            })
            .collect();
        DagPlan {
            steps,
            retries: if retried { 2 } else { 0 },
        }
    })
}

fn build(plan: &DagPlan) -> Workflow {
    let mut wf = Workflow::new("model.dag");
    let mut added: Vec<Dep<ModelStep>> = Vec::new();
    for (n, step) in plan.steps.iter().enumerate() {
        let deps = step
            .deps
            .iter()
            .filter(|d| d.1)
            .map(|d| added[d.0])
            .collect();
        let settled = step
            .deps
            .iter()
            .filter(|d| !d.1)
            .map(|d| added[d.0].into())
            .collect();
        let dep = wf.add(ModelStep {
            n: u32::try_from(n).unwrap(),
            deps,
            settled,
            fails: step.fails,
            ms: step.ms,
        });
        if step.compensated {
            wf.compensate_with(dep, |step| ModelUndo { step, ms: 3 });
        }
        added.push(dep);
    }
    wf
}

/// What the database says about one operation.
#[derive(Debug, Clone)]
struct Row {
    status: String,
    compensates: Option<i64>,
    finished_at: Option<DateTime<Utc>>,
    first_start: Option<DateTime<Utc>>,
    last_start: Option<DateTime<Utc>>,
    /// Its attempts, but those lost (a lease that ran out on a slow
    /// machine: the idempotent step runs again).
    attempts: i64,
    /// The number of its last attempt, lost ones included.
    last_number: i64,
}

/// What the database says about one workflow.
#[derive(Debug)]
struct Observed {
    state: String,
    failed: bool,
    failure: Option<String>,
    rows: HashMap<i64, Row>,
}

/// An operation's row as `observe` reads it.
type RawRow = (
    i64,
    String,
    Option<i64>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    i64,
    i64,
);

async fn observe(db: &TestDatabase, wf: &PublishedWorkflow) -> Observed {
    let (state, failed, failure): (String, bool, Option<String>) = sqlx::query_as(
        "SELECT state, failed_at IS NOT NULL, failure FROM pgoutbox.workflows WHERE id = $1",
    )
    .bind(wf.id.as_i64())
    .fetch_one(db.pool())
    .await
    .unwrap();
    let rows: Vec<RawRow> = sqlx::query_as(
        "SELECT o.id, o.status, o.compensates, o.finished_at,
                (SELECT min(a.started_at) FROM pgoutbox.attempts a WHERE a.operation_id = o.id),
                (SELECT max(a.started_at) FROM pgoutbox.attempts a WHERE a.operation_id = o.id),
                (SELECT count(*) FROM pgoutbox.attempts a
                 WHERE a.operation_id = o.id AND a.outcome IS DISTINCT FROM 'lost'),
                (SELECT coalesce(max(a.number), 0)::int8 FROM pgoutbox.attempts a
                 WHERE a.operation_id = o.id)
         FROM pgoutbox.operations o WHERE o.workflow_id = $1",
    )
    .bind(wf.id.as_i64())
    .fetch_all(db.pool())
    .await
    .unwrap();
    Observed {
        state,
        failed,
        failure,
        rows: rows
            .into_iter()
            .map(
                |(
                    id,
                    status,
                    compensates,
                    finished_at,
                    first_start,
                    last_start,
                    attempts,
                    last,
                )| {
                    let row = Row {
                        status,
                        compensates,
                        finished_at,
                        first_start,
                        last_start,
                        attempts,
                        last_number: last,
                    };
                    (id, row)
                },
            )
            .collect(),
    }
}

/// Whether `a` ended no later than `b` began (both known).
fn before(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a <= b)
}

/// The model of migration 11's rules, checked against what the database
/// says about workflow `ids` (its steps' operation ids, in plan order)
/// after a round: `prior` holds each step's attempts (lost ones aside)
/// before the round, and whether it had succeeded.
#[expect(
    clippy::too_many_lines,
    reason = "the model's rules, one after another, each with its message"
)]
fn check(
    plan: &DagPlan,
    ids: &[i64],
    seen: &Observed,
    prior: &[(i64, bool)],
) -> Result<(), String> {
    let steps = &plan.steps;
    let n = steps.len();
    let row = |i: usize| &seen.rows[&ids[i]];
    let mut dependents: Vec<Vec<(usize, bool)>> = vec![Vec::new(); n];
    for (i, step) in steps.iter().enumerate() {
        for &(j, required) in &step.deps {
            dependents[j].push((i, required));
        }
    }
    // The one fact taken from the database: which steps ran (claimed and
    // attempted) in this round, each exactly once since nothing fails but
    // on purpose, and none that had succeeded before.
    let ran: Vec<bool> = (0..n).map(|i| row(i).attempts > prior[i].0).collect();
    for i in 0..n {
        if row(i).attempts > prior[i].0 + 1 {
            return Err(format!(
                "step {i} was attempted {} times in this round",
                row(i).attempts - prior[i].0
            ));
        }
        if ran[i] && prior[i].1 {
            return Err(format!("step {i} ran again after it had succeeded"));
        }
    }
    // A step that succeeded before stays so; one that ran ends as its plan
    // says for its attempt's number; one that did not is cancelled.
    let status: Vec<&str> = (0..n)
        .map(|i| {
            if prior[i].1 {
                "succeeded"
            } else if !ran[i] {
                "cancelled"
            } else if row(i).last_number <= i64::from(steps[i].fails) {
                "dead"
            } else {
                "succeeded"
            }
        })
        .collect();
    // A step's end fails the workflow when it is dead or cancelled and a
    // dependent holds it as a `Dep`, or none holds it at all.
    let failing: Vec<usize> = (0..n)
        .filter(|&i| {
            matches!(status[i], "dead" | "cancelled")
                && (dependents[i].is_empty() || dependents[i].iter().any(|d| d.1))
        })
        .collect();
    let failed = !failing.is_empty();

    // Release: a step ran only once its required dependencies succeeded
    // and every dependency ended, and started after they ended.
    for i in (0..n).filter(|&i| ran[i]) {
        for &(j, required) in &steps[i].deps {
            if required && status[j] != "succeeded" {
                return Err(format!(
                    "step {i} ran though its dependency {j} is {}",
                    status[j]
                ));
            }
            if !before(row(j).finished_at, row(i).last_start) {
                return Err(format!(
                    "step {i} started at {:?}, before its dependency {j} ended at {:?}",
                    row(i).last_start,
                    row(j).finished_at
                ));
            }
        }
    }
    // Nothing left out: a step that never ran is behind a dependency that
    // did not succeed, or was cancelled by the workflow's failure (which
    // leaves a step with a `Settled` dependency to its release rules).
    for i in (0..n).filter(|&i| !ran[i] && !prior[i].1) {
        let blocked = steps[i]
            .deps
            .iter()
            .any(|&(j, required)| required && status[j] != "succeeded");
        let wound_down = failed && steps[i].deps.iter().all(|d| d.1);
        if !blocked && !wound_down {
            return Err(format!(
                "step {i} never ran (it is {}), though its dependencies allowed it{}",
                row(i).status,
                if failed {
                    " and it waits for a `Settled` one"
                } else {
                    " and the workflow did not fail"
                }
            ));
        }
    }
    for (i, expected) in status.iter().enumerate() {
        if row(i).status != *expected {
            return Err(format!(
                "step {i} is {}, the model says {expected}",
                row(i).status
            ));
        }
    }

    // The workflow: failed (once, naming a failing step) or succeeded.
    if seen.failed != failed {
        return Err(format!(
            "the workflow's failure is {:?}, the model says failed: {failed} (failing steps {failing:?})",
            seen.failure
        ));
    }
    let state = if failed { "failed" } else { "succeeded" };
    if seen.state != state {
        return Err(format!(
            "the workflow is {}, the model says {state}",
            seen.state
        ));
    }
    if failed {
        let named = failing.iter().any(|&i| {
            seen.failure.as_deref()
                == Some(&format!("step {} (model.step) is {}", ids[i], status[i]))
        });
        if !named {
            return Err(format!(
                "the failure {:?} names none of the failing steps {failing:?}",
                seen.failure
            ));
        }
    }

    // Compensations: exactly the steps that succeeded in a failed
    // workflow and declared one, one operation each, which succeeded once.
    let mut compensation: HashMap<usize, &Row> = HashMap::new();
    let index: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    for comp in seen.rows.values().filter(|r| r.compensates.is_some()) {
        let Some(&i) = comp.compensates.and_then(|c| index.get(&c)) else {
            return Err(format!(
                "a compensation of {:?}, not a step of this workflow",
                comp.compensates
            ));
        };
        if compensation.insert(i, comp).is_some() {
            return Err(format!("step {i} has more than one compensation"));
        }
    }
    for i in 0..n {
        let expected = failed && status[i] == "succeeded" && steps[i].compensated;
        match (expected, compensation.get(&i)) {
            (false, None) => {}
            (true, Some(comp)) if comp.status == "succeeded" && comp.attempts == 1 => {}
            (true, Some(comp)) => {
                return Err(format!(
                    "step {i}'s compensation is {} after {} attempts",
                    comp.status, comp.attempts
                ));
            }
            (true, None) => return Err(format!("step {i} (succeeded) has no compensation")),
            (false, Some(comp)) => {
                return Err(format!(
                    "step {i} ({}; workflow failed: {failed}; declared: {}) has a compensation ({})",
                    status[i], steps[i].compensated, comp.status
                ));
            }
        }
    }
    // Published once no step of the workflow's own was open any more: each
    // compensation started after every step ended.
    for (&i, comp) in &compensation {
        if let Some(k) = (0..n).find(|&k| !before(row(k).finished_at, comp.first_start)) {
            return Err(format!(
                "step {i}'s compensation started before step {k} ended ({})",
                row(k).status
            ));
        }
    }
    // Reverse order: a step's compensation started after every later
    // step (reachable through dependents) ended, and after their
    // compensations ended.
    for (&i, comp) in &compensation {
        let mut later = dependents[i].iter().map(|d| d.0).collect::<Vec<_>>();
        let mut seen_later = vec![false; n];
        while let Some(k) = later.pop() {
            if std::mem::replace(&mut seen_later[k], true) {
                continue;
            }
            later.extend(dependents[k].iter().map(|d| d.0));
            if ran[k] && !before(row(k).finished_at, comp.first_start) {
                return Err(format!(
                    "step {i}'s compensation started before the later step {k} ended"
                ));
            }
            if let Some(theirs) = compensation.get(&k)
                && !before(theirs.finished_at, comp.first_start)
            {
                return Err(format!(
                    "step {i}'s compensation started before that of the later step {k} ended"
                ));
            }
        }
    }
    Ok(())
}

/// Runs one case: `plans` published at once on a fresh database, drained
/// by a system of four workers, each compared with the model; then the
/// failed workflows meant to be retried are, and compared again, until
/// none is left to retry.
async fn run_case(plans: Vec<DagPlan>) -> Result<Tally, String> {
    let db = test_db().await;
    // A long lease: a step is not lost when a shared machine stalls.
    let mut settings = settings(&db);
    settings.workflow_system.lease = Duration::from_secs(30);
    let system = WorkflowSystem::builder(settings)
        .router(
            WorkflowRouter::new()
                .operation::<ModelStep>()
                .operation::<ModelUndo>(),
        )
        .start()
        .await
        .expect("system starts");
    let admin = Admin::new(db.pool().clone(), &"pgoutbox".parse().unwrap());
    let mut tx = db.pool().begin().await.unwrap();
    let mut published = Vec::new();
    for plan in &plans {
        published.push(publish_workflow(&mut tx, build(plan)).await.unwrap());
    }
    tx.commit().await.unwrap();
    let mut errors = String::new();
    let mut tally = Tally::default();
    // Per workflow: each step's attempts and success before the round, and
    // the retries left (`None`: no longer checked).
    let mut prior: Vec<Vec<(i64, bool)>> = plans
        .iter()
        .map(|p| vec![(0, false); p.steps.len()])
        .collect();
    let mut left: Vec<Option<u32>> = plans.iter().map(|p| Some(p.retries)).collect();
    let mut retries_of = vec![0_usize; plans.len()];
    while left.iter().any(Option::is_some) {
        settle(&db, &plans, &published).await?;
        for (w, (plan, wf)) in plans.iter().zip(&published).enumerate() {
            let Some(retries) = left[w] else { continue };
            let ids: Vec<i64> = wf.steps.iter().map(|s| s.as_i64()).collect();
            let seen = observe(&db, wf).await;
            left[w] = None;
            if let Err(e) = check(plan, &ids, &seen, &prior[w]) {
                let _ = writeln!(
                    errors,
                    "workflow {}: {e}{}",
                    wf.id,
                    dump(&db, plan, wf).await
                );
                continue;
            }
            tally.failed += usize::from(seen.failed);
            tally.compensations += seen
                .rows
                .values()
                .filter(|r| r.compensates.is_some())
                .count();
            if seen.failed && retries > 0 {
                let outcome = admin
                    .act_on_workflow(
                        wf.id,
                        WorkflowAction::Retry,
                        "model",
                        "retried by the model",
                    )
                    .await
                    .unwrap();
                if !matches!(outcome, WorkflowActionOutcome::Applied { .. }) {
                    let _ = writeln!(
                        errors,
                        "workflow {}: the retry did not apply: {outcome:?}",
                        wf.id
                    );
                    continue;
                }
                prior[w] = ids
                    .iter()
                    .map(|id| (seen.rows[id].attempts, seen.rows[id].status == "succeeded"))
                    .collect();
                left[w] = Some(retries - 1);
                retries_of[w] += 1;
                tally.retries += 1;
            }
        }
    }
    system.stop().await.unwrap();
    errors.push_str(&trails(&admin, &plans, &published, &retries_of).await);
    tally.workflows = plans.len();
    tally.steps = plans.iter().map(|p| p.steps.len()).sum();
    let inconsistent = inconsistent_workflows(&db).await;
    if !inconsistent.is_empty() {
        let _ = writeln!(errors, "inconsistent workflows: {inconsistent:?}");
    }
    let stuck = stuck_steps(&db).await;
    if stuck != 0 {
        let _ = writeln!(errors, "{stuck} steps stuck");
    }
    if errors.is_empty() {
        Ok(tally)
    } else {
        Err(errors)
    }
}

/// Each workflow's operator trail: exactly its `retries` (made by the
/// model), applied; what differs, for the report.
async fn trails(
    admin: &Admin,
    plans: &[DagPlan],
    published: &[PublishedWorkflow],
    retries: &[usize],
) -> String {
    let mut errors = String::new();
    for ((plan, wf), &retried) in plans.iter().zip(published).zip(retries) {
        let trail = admin.workflow_actions(wf.id).await.unwrap();
        let applied = trail
            .iter()
            .filter(|a| a.action == "retry" && a.outcome == "applied" && a.actor == "model")
            .count();
        if applied != retried || trail.len() != retried {
            let _ = writeln!(
                errors,
                "workflow {} (retries planned: {}): {retried} retries made, trail {trail:?}",
                wf.id, plan.retries
            );
        }
    }
    errors
}

/// Waits (a minute at most) until no workflow of the case is running or
/// compensating.
async fn settle(
    db: &TestDatabase,
    plans: &[DagPlan],
    published: &[PublishedWorkflow],
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pgoutbox.workflows WHERE state IN ('running', 'compensating')",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        if open == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{open} workflows still open after a minute: {}",
                open_workflows(db, plans, published).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The plans and the steps of the workflows still open, for the report.
async fn open_workflows(
    db: &TestDatabase,
    plans: &[DagPlan],
    published: &[PublishedWorkflow],
) -> String {
    let mut report = String::new();
    for (plan, wf) in plans.iter().zip(published) {
        let state: String =
            sqlx::query_scalar("SELECT state FROM pgoutbox.workflows WHERE id = $1")
                .bind(wf.id.as_i64())
                .fetch_one(db.pool())
                .await
                .unwrap();
        if state == "running" || state == "compensating" {
            report.push_str(&dump(db, plan, wf).await);
        }
    }
    report
}

/// An operation's row as `dump` shows it.
type DumpRow = (
    i64,
    String,
    Option<i64>,
    Option<i32>,
    Option<String>,
    Vec<String>,
    Option<String>,
    Option<String>,
);

/// A workflow's plan, state and operations (status, what it compensates,
/// how many dependencies it waits for, its last error, its dependencies
/// (`?`: opted out), its first attempt's start, its end), for a report.
async fn dump(db: &TestDatabase, plan: &DagPlan, wf: &PublishedWorkflow) -> String {
    let (state, failure): (String, Option<String>) =
        sqlx::query_as("SELECT state, failure FROM pgoutbox.workflows WHERE id = $1")
            .bind(wf.id.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    let steps: Vec<DumpRow> = sqlx::query_as(
        "SELECT o.id, o.status, o.compensates, o.waiting_for, o.last_error,
                coalesce((SELECT array_agg(e.dependency_id || CASE WHEN e.required THEN '' ELSE '?' END
                                           ORDER BY e.dependency_id)
                          FROM pgoutbox.workflow_edges e WHERE e.operation_id = o.id), '{}'),
                (SELECT min(a.started_at)::text FROM pgoutbox.attempts a WHERE a.operation_id = o.id),
                o.finished_at::text
         FROM pgoutbox.operations o WHERE o.workflow_id = $1 ORDER BY o.id",
    )
    .bind(wf.id.as_i64())
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut report = format!("\nworkflow {} {state} ({failure:?}), {plan:?}\n", wf.id);
    for step in steps {
        let _ = writeln!(report, "  {step:?}");
    }
    report
}

/// What the cases ran.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    workflows: usize,
    steps: usize,
    /// Rounds that ended failed (a retried workflow may count several).
    failed: usize,
    compensations: usize,
    retries: usize,
}

/// 32 cases of one to six random workflows each, every case on a fresh
/// database; a failing case is shrunk (a few steps at most) and reported
/// with its plans.
#[test]
fn random_sagas_end_as_the_model_of_the_rules_says() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = Config {
        cases: 32,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let total = std::cell::Cell::new(Tally::default());
    let result = runner.run(&vec(dag(), 1..=6), |plans| {
        let tally = runtime.block_on(run_case(plans)).map_err(|e| {
            eprintln!("a case failed (shrinking follows): {e}");
            proptest::test_runner::TestCaseError::fail(e)
        })?;
        let sum = total.get();
        total.set(Tally {
            workflows: sum.workflows + tally.workflows,
            steps: sum.steps + tally.steps,
            failed: sum.failed + tally.failed,
            compensations: sum.compensations + tally.compensations,
            retries: sum.retries + tally.retries,
        });
        Ok(())
    });
    let Tally {
        workflows,
        steps,
        failed,
        compensations,
        retries,
    } = total.get();
    match result {
        Ok(()) => eprintln!(
            "{workflows} random workflows of {steps} steps matched the model: {failed} rounds \
             failed, {compensations} compensations, {retries} operator retries"
        ),
        Err(TestError::Fail(why, plans)) => panic!("{why}\nminimal case: {plans:#?}"),
        Err(TestError::Abort(why)) => panic!("aborted: {why}"),
    }
}
