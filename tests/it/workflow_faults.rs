//! Workflows under concurrency and faults: two dependencies of a step
//! finishing at the same instant on two worker processes, and workflows
//! among the operations of the kill-and-restart harness (`faults.rs`).
//! Every check counts rows afterwards: nothing released twice, nothing
//! left waiting, every workflow's state what its steps say.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgoutbox::prelude::*;
use pgoutbox::testing::TestDatabase;
use pgoutbox_tests::{
    Effect, GATE_CLASS, GATES_TABLE, GateJoin, GateLeft, GateRight, IdempotentEffect, StepJoin,
    StepOnce, StepSource, StepSum, StepTx,
};
use sqlx::Connection as _;

use crate::faults::{count_on, private_drain_database, unrecorded, wait_drained_on};
use crate::processes::{Worker, tables};
use crate::support::{count, soak, test_db, wait_for_count};
use crate::workflows::{
    inconsistent_workflows, inconsistent_workflows_on, stuck_steps, stuck_steps_on,
};

/// Workflows of the release race.
const RACES: i32 = 200;

/// A `--gate left|right` worker process.
fn gate_worker(url: &str, side: &str) -> Worker {
    let mut command = Worker::command(url, 8);
    command.args(["--gate", side]);
    Worker::spawn(command)
}

/// 200 workflows `X, Y → Z`, where every `X` runs on one worker process
/// and every `Y` on another, both in transactional handlers that wait in
/// their transaction at the same gate (a shared advisory lock behind the
/// test's exclusive one). The test lets a gate go once both steps wait at
/// it, so that both commits — each recording a success, each counting `Z`'s
/// dependencies down under `Z`'s row lock — race. Every `Z` must be
/// released exactly once: one attempt, one external call, started after
/// both gates were passed, with both results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dependencies_finishing_at_once_on_two_processes_release_their_dependent_once() {
    let db = test_db().await;
    tables(&db).await;
    sqlx::query(GATES_TABLE).execute(db.pool()).await.unwrap();
    // The gates, shut: held by a session of the test's own.
    let mut gatekeeper = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1, g) FROM generate_series(0, $2 - 1) g")
        .bind(GATE_CLASS)
        .bind(RACES)
        .execute(&mut gatekeeper)
        .await
        .unwrap();
    let mut tx = db.pool().begin().await.unwrap();
    for n in 0..RACES {
        let mut wf = Workflow::new("fault.race");
        let left = wf.add(GateLeft { n });
        let right = wf.add(GateRight { n });
        wf.add(GateJoin { left, right });
        publish_workflow(&mut tx, wf).await.unwrap();
    }
    tx.commit().await.unwrap();
    let left = gate_worker(&db.url(), "left");
    let right = gate_worker(&db.url(), "right");

    let alone = open_gates(&mut gatekeeper).await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.workflows WHERE state <> 'running'",
        i64::from(RACES),
        Duration::from_mins(1),
    )
    .await;
    assert!(left.terminate().success());
    assert!(right.terminate().success());

    check_races(&db, alone).await;
}

/// Lets each gate go once both of its steps wait at it, several gates in
/// one statement; a step whose partner has not come after 5 s (claimed out
/// of step) is let through alone. Returns how many were.
async fn open_gates(gatekeeper: &mut sqlx::PgConnection) -> usize {
    let (mut opened, mut alone) = (0_usize, 0_usize);
    let mut lonely_since: HashMap<i64, Instant> = HashMap::new();
    let deadline = Instant::now() + Duration::from_mins(3);
    while opened < RACES as usize {
        assert!(
            Instant::now() < deadline,
            "{opened} of {RACES} gates opened in 3 minutes"
        );
        let waiting: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT objid::bigint, count(*) FROM pg_locks
             WHERE locktype = 'advisory' AND classid::bigint = $1 AND objsubid = 2 AND NOT granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
             GROUP BY objid",
        )
        .bind(i64::from(GATE_CLASS))
        .fetch_all(&mut *gatekeeper)
        .await
        .unwrap();
        let now = Instant::now();
        let mut open = Vec::new();
        for (gate, waiters) in waiting {
            if waiters >= 2 {
                open.push(gate);
            } else if now.duration_since(*lonely_since.entry(gate).or_insert(now))
                > Duration::from_secs(5)
            {
                open.push(gate);
                alone += 1;
            }
        }
        if open.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        sqlx::query("SELECT pg_advisory_unlock($1, g::int) FROM unnest($2::bigint[]) g")
            .bind(GATE_CLASS)
            .bind(&open)
            .execute(&mut *gatekeeper)
            .await
            .unwrap();
        opened += open.len();
    }
    alone
}

/// The race test's checks, after every workflow ended (`alone`: gates let
/// through with one step).
async fn check_races(db: &TestDatabase, alone: usize) {
    // The race really happened: both steps of a workflow waited at its
    // gate at once (their waits overlap), and passed it together. The
    // attempts' own time ranges cannot show it for a transactional step:
    // its success is stamped with its transaction's start.
    let (overlapped, gap_p50_ms, gap_max_ms): (i64, f64, f64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE gl.arrived_at < gr.passed_at AND gr.arrived_at < gl.passed_at),
                (percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(extract(epoch FROM gl.passed_at - gr.passed_at))))::float8 * 1000,
                max(abs(extract(epoch FROM gl.passed_at - gr.passed_at)))::float8 * 1000
         FROM pgoutbox.operations l
         JOIN pgoutbox.operations r ON r.workflow_id = l.workflow_id AND r.name = 'fault.gate_right'
         JOIN gates gl ON gl.operation_id = l.id
         JOIN gates gr ON gr.operation_id = r.id
         WHERE l.name = 'fault.gate_left'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    eprintln!(
        "{RACES} races: {overlapped} overlapped, {alone} gates let through alone; \
         passed the gate {gap_p50_ms:.2} ms apart (median), {gap_max_ms:.2} ms at most"
    );
    assert!(
        overlapped >= i64::from(RACES) * 9 / 10,
        "only {overlapped} of {RACES} workflows had both dependencies at the gate at once"
    );
    // The two dependencies of every workflow ran on two processes.
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM pgoutbox.operations l
             JOIN pgoutbox.operations r ON r.workflow_id = l.workflow_id AND r.name = 'fault.gate_right'
             JOIN pgoutbox.attempts al ON al.operation_id = l.id AND al.outcome = 'succeeded'
             JOIN pgoutbox.attempts ar ON ar.operation_id = r.id AND ar.outcome = 'succeeded'
             WHERE l.name = 'fault.gate_left' AND al.worker_id <> ar.worker_id"
        )
        .await,
        i64::from(RACES)
    );

    // Every workflow succeeded; every `Z` ran once, after both gates were
    // passed (so after neither commit could have released it early), with
    // both results.
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM pgoutbox.workflows WHERE state = 'succeeded'"
        )
        .await,
        i64::from(RACES)
    );
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM pgoutbox.operations z
             WHERE z.name = 'fault.gate_join' AND z.status = 'succeeded'
               AND (SELECT count(*) FROM pgoutbox.attempts a WHERE a.operation_id = z.id) = 1
               AND (SELECT count(*) FROM side_effects s WHERE s.operation_id = z.id) = 1"
        )
        .await,
        i64::from(RACES),
        "every dependent released, and run, exactly once"
    );
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM pgoutbox.operations z
             JOIN pgoutbox.attempts a ON a.operation_id = z.id
             JOIN pgoutbox.workflow_edges e ON e.operation_id = z.id
             JOIN pgoutbox.operations d ON d.id = e.dependency_id
             JOIN gates g ON g.operation_id = d.id
             WHERE z.name = 'fault.gate_join'
               AND (a.started_at < g.passed_at OR a.started_at < d.finished_at OR d.status <> 'succeeded')"
        )
        .await,
        0,
        "no dependent started before both of its dependencies' successes"
    );
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM pgoutbox.operations z
             JOIN pgoutbox.operations l ON l.workflow_id = z.workflow_id AND l.name = 'fault.gate_left'
             JOIN pgoutbox.attempts a ON a.operation_id = z.id AND a.outcome = 'succeeded'
             WHERE z.name = 'fault.gate_join'
               AND a.result = to_jsonb(1001 * (l.payload->>'n')::bigint)"
        )
        .await,
        i64::from(RACES),
        "every dependent received both results"
    );
    assert_eq!(stuck_steps(db).await, 0);
    assert_eq!(inconsistent_workflows(db).await, []);
}

/// Diamonds `A → B (transactional), A → C (not idempotent), B + C → D`.
const DIAMONDS: i64 = 100;
// (Each of these times `PGOUTBOX_SOAK`, as are the kills.)
/// Fan-ins of `WIDTH` sources into one sum.
const FAN_INS: i64 = 5;
const WIDTH: i64 = 40;
/// Plain operations of each kind beside the workflows.
const PLAIN: i64 = 100;

/// The kill-and-restart harness with workflows among the operations: 100
/// diamonds (one step not idempotent), 5 fan-ins of 40 and 200 plain
/// operations, drained by worker processes that are `SIGKILLed` again and
/// again, on a private cluster restarted in `immediate` mode twice
/// mid-run. Afterwards: nothing lost, no step released twice or before
/// its dependencies' success, none waiting with every dependency met,
/// every workflow's state what its steps say — `succeeded`, or `stalled`
/// where its non-idempotent step's outcome is unknown, its dependent still
/// waiting — and every result handed on right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_survive_sigkills_and_immediate_postgres_restarts() {
    use pgoutbox::testing::ShutdownMode;

    let scale = i64::from(soak());
    let (diamonds, fan_ins, plain) = (DIAMONDS * scale, FAN_INS * scale, PLAIN * scale);
    let (cluster, url, pool) = private_drain_database().await;
    let mut tx = pool.begin().await.unwrap();
    // The diamonds first (a higher priority), so that the kills below
    // meet their non-idempotent steps too, not only the final drain.
    let first = || PublishOptions::new().priority(1);
    for n in 0..diamonds {
        let mut wf = Workflow::new("fault.diamond");
        let a = wf.add_with(StepSource { n, ms: 30 }, first());
        let b = wf.add_with(StepTx { from: a, ms: 30 }, first());
        let c = wf.add_with(StepOnce { from: a, ms: 30 }, first());
        wf.add_with(StepJoin { left: b, right: c }, first());
        publish_workflow(&mut tx, wf).await.unwrap();
    }
    for _ in 0..fan_ins {
        let mut wf = Workflow::new("fault.fan_in");
        let parts = (1..=WIDTH)
            .map(|n| wf.add(StepSource { n, ms: 10 }))
            .collect();
        wf.add(StepSum { parts });
        publish_workflow(&mut tx, wf).await.unwrap();
    }
    pgoutbox::publish_many(&mut tx, (0..plain).map(|_| Effect { ms: 20 }))
        .await
        .unwrap();
    pgoutbox::publish_many(&mut tx, (0..plain).map(|_| IdempotentEffect { ms: 20 }))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    pool.close().await;
    let total = 4 * diamonds + fan_ins * (WIDTH + 1) + 2 * plain;

    let kills = 12 * soak() as usize;
    let mut restarts = 0;
    for kill in 0..kills {
        let worker = Worker::start(&url, 4);
        // Somewhere mid-run: 100 to 480 ms after start.
        tokio::time::sleep(Duration::from_millis(100 + (kill as u64 * 97) % 380)).await;
        if kill % 5 == 2 && restarts == 0 {
            // Mid-run: work is both done and left (checked at the first
            // restart; the later ones may come when little is left).
            let probe = sqlx::PgPool::connect(&url).await.unwrap();
            let left = count_on(
                &probe,
                "SELECT count(*) FROM pgoutbox.operations WHERE status NOT IN ('succeeded', 'stalled')",
            )
            .await;
            probe.close().await;
            assert!(0 < left && left < total, "{left} of {total} left");
        }
        if kill % 5 == 2 {
            tokio::task::block_in_place(|| cluster.restart(ShutdownMode::Immediate)).unwrap();
            restarts += 1;
            // The worker reconnects and works on before it is killed.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        worker.kill();
    }
    let last = Worker::start(&url, 4);
    let pool = wait_drained_on(&url, "kills and restarts").await;
    assert!(last.terminate().success());

    let published = Published {
        operations: total,
        workflows: diamonds + fan_ins,
        fan_ins,
    };
    check_after_faults(
        &pool,
        &published,
        &format!("{kills} kills, {restarts} immediate restarts"),
    )
    .await;
    pool.close().await;
}

/// What the fault test published.
#[derive(Clone, Copy)]
struct Published {
    operations: i64,
    workflows: i64,
    fan_ins: i64,
}

/// The fault test's checks, on the drained database (`faults`: what was
/// done, for the record).
#[expect(
    clippy::too_many_lines,
    reason = "one check after another, each with its message"
)]
async fn check_after_faults(pool: &sqlx::PgPool, published: &Published, faults: &str) {
    let Published {
        operations: total,
        workflows,
        fan_ins,
    } = *published;
    assert_eq!(
        count_on(pool, "SELECT count(*) FROM pgoutbox.operations").await,
        total,
        "nothing lost"
    );
    // Every step ended, or waits behind a stalled dependency.
    assert_eq!(
        count_on(
            pool,
            "SELECT count(*) FROM pgoutbox.operations WHERE status NOT IN ('succeeded', 'stalled', 'waiting')"
        )
        .await,
        0
    );
    assert_eq!(
        count_on(
            pool,
            "SELECT count(*) FROM pgoutbox.operations o WHERE o.status = 'waiting' AND NOT EXISTS (
                 SELECT 1 FROM pgoutbox.workflow_edges e JOIN pgoutbox.operations d ON d.id = e.dependency_id
                 WHERE e.operation_id = o.id AND d.status = 'stalled')"
        )
        .await,
        0,
        "a step waits only behind a stalled dependency"
    );
    assert_eq!(
        count_on(
            pool,
            "SELECT count(*) FROM pgoutbox.workflow_edges e
             JOIN pgoutbox.operations d ON d.id = e.dependency_id
             JOIN pgoutbox.operations o ON o.id = e.operation_id
             WHERE d.status = 'stalled' AND (o.status <> 'waiting'
                   OR EXISTS (SELECT 1 FROM pgoutbox.attempts a WHERE a.operation_id = o.id))"
        )
        .await,
        0,
        "a stalled step holds its dependents: waiting, never attempted"
    );
    assert_eq!(
        count_on(
            pool,
            "SELECT count(*) FROM pgoutbox.operations o WHERE o.status = 'stalled' AND (
                 o.name NOT IN ('fault.effect', 'fault.step_once')
                 OR NOT EXISTS (SELECT 1 FROM pgoutbox.attempts a
                                WHERE a.operation_id = o.id AND a.outcome IN ('lost', 'aborted')))"
        )
        .await,
        0,
        "only non-idempotent steps stall, and only after an in-doubt attempt"
    );
    assert_eq!(stuck_steps_on(pool).await, 0, "no step left waiting");
    assert_eq!(inconsistent_workflows_on(pool).await, []);
    assert_eq!(
        count_on(
            pool,
            "SELECT count(*) FROM pgoutbox.workflows w WHERE NOT (
                 w.state = 'succeeded'
                 OR (w.state = 'stalled' AND EXISTS (
                     SELECT 1 FROM pgoutbox.operations o
                     WHERE o.workflow_id = w.id AND o.status = 'stalled' AND o.name = 'fault.step_once')))"
        )
        .await,
        0,
        "every workflow succeeded, or stalled on its non-idempotent step"
    );

    // No step released twice, or before its dependencies' success: one
    // first attempt at most, at most one attempt that succeeded or has no
    // outcome, none started before a dependency's recorded success.
    assert_eq!(
        count_on(
            pool,
            "SELECT count(*) FROM pgoutbox.operations o WHERE o.workflow_id IS NOT NULL AND (
                 (SELECT count(*) FROM pgoutbox.attempts a WHERE a.operation_id = o.id AND a.number = 1) > 1
                 OR (SELECT count(*) FROM pgoutbox.attempts a WHERE a.operation_id = o.id
                     AND (a.outcome = 'succeeded' OR a.outcome IS NULL)) > 1)"
        )
        .await,
        0,
        "no step released twice"
    );
    assert_eq!(
        count_on(
            pool,
            "SELECT count(*) FROM pgoutbox.workflow_edges e
             JOIN pgoutbox.operations d ON d.id = e.dependency_id
             JOIN pgoutbox.attempts a ON a.operation_id = e.operation_id
             WHERE d.status <> 'succeeded' OR a.started_at < d.finished_at"
        )
        .await,
        0,
        "no step started before its dependencies' success"
    );
    assert_eq!(
        count_on(
            pool,
            "SELECT count(*) FROM pgoutbox.operations o WHERE o.status = 'succeeded' AND
             (SELECT count(*) FROM pgoutbox.attempts a WHERE a.operation_id = o.id AND a.outcome = 'succeeded') <> 1"
        )
        .await,
        0,
        "every success recorded once"
    );
    // Non-idempotent calls at most once, each recorded; transactional
    // writes exactly once per success.
    assert_eq!(
        count_on(
            pool,
            "SELECT count(*) FROM (SELECT s.operation_id FROM side_effects s
             JOIN pgoutbox.operations o ON o.id = s.operation_id
             WHERE o.name IN ('fault.effect', 'fault.step_once')
             GROUP BY s.operation_id HAVING count(*) > 1) twice"
        )
        .await,
        0,
        "no non-idempotent call made twice"
    );
    assert_eq!(
        unrecorded(pool, "'fault.effect', 'fault.step_once'").await,
        0
    );
    assert_eq!(
        count_on(
            pool,
            "SELECT count(*) FROM business_effects b JOIN pgoutbox.operations o ON o.id = b.operation_id"
        )
        .await,
        count_on(
            pool,
            "SELECT count(*) FROM pgoutbox.operations WHERE name = 'fault.step_tx' AND status = 'succeeded'"
        )
        .await,
    );
    assert_eq!(
        count_on(
            pool,
            "SELECT count(*) - count(DISTINCT operation_id) FROM business_effects"
        )
        .await,
        0
    );

    // Results handed on: D = (n + 1) + 2n, a fan-in's sum = 1 + … + 40.
    assert_eq!(
        count_on(
            pool,
            "SELECT count(*) FROM pgoutbox.operations o
             JOIN pgoutbox.attempts a ON a.operation_id = o.id AND a.outcome = 'succeeded'
             LEFT JOIN pgoutbox.operations r ON r.id = o.root_id
             WHERE (o.name = 'fault.step_join'
                    AND a.result IS DISTINCT FROM to_jsonb(3 * (r.payload->>'n')::bigint + 1))
                OR (o.name = 'fault.step_sum' AND a.result IS DISTINCT FROM to_jsonb(820))"
        )
        .await,
        0,
        "every dependent received its dependencies' results"
    );

    // The faults really hit running work, and no attempt was left open.
    let lost_attempts = count_on(
        pool,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome = 'lost'",
    )
    .await;
    let succeeded = count_on(
        pool,
        "SELECT count(*) FROM pgoutbox.workflows WHERE state = 'succeeded'",
    )
    .await;
    let stalled = count_on(
        pool,
        "SELECT count(*) FROM pgoutbox.workflows WHERE state = 'stalled'",
    )
    .await;
    let lost_steps = count_on(
        pool,
        "SELECT count(DISTINCT a.operation_id) FROM pgoutbox.attempts a
         JOIN pgoutbox.operations o ON o.id = a.operation_id
         WHERE a.outcome = 'lost' AND o.workflow_id IS NOT NULL",
    )
    .await;
    eprintln!(
        "{faults}: {total} operations, {lost_attempts} lost attempts \
         ({lost_steps} workflow steps), workflows {succeeded} succeeded, {stalled} stalled"
    );
    assert!(lost_steps >= 1, "no kill hit a running workflow step");
    assert!(
        stalled >= 1,
        "no kill hit a running non-idempotent step: the stalled path went untested"
    );
    assert_eq!(succeeded + stalled, workflows);
    assert!(
        count_on(
            pool,
            "SELECT count(*) FROM pgoutbox.workflows WHERE name = 'fault.fan_in' AND state = 'succeeded'"
        )
        .await
            == fan_ins,
        "fan-ins hold only idempotent steps: they all succeed"
    );
    assert_eq!(
        count_on(
            pool,
            "SELECT count(*) FROM pgoutbox.attempts WHERE outcome IS NULL"
        )
        .await,
        0
    );
}
