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

/// Order sagas of the compensation fault test (times `PGOUTBOX_SOAK`, as
/// are its kills).
const SAGAS: i64 = 200;

/// What one saga of the fault test was published as: its workflow, its
/// three steps, and which of them fails for good.
struct SagaPlan {
    workflow: i64,
    charge: i64,
    reserve: i64,
    ship: i64,
    charge_fails: bool,
    ship_fails: bool,
}

/// A small deterministic generator (splitmix64), seeded per run and
/// printed, so a failing run can be replayed with `PGOUTBOX_TEST_SEED`.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded(what: &str) -> Rng {
        let seed = std::env::var("PGOUTBOX_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(7, |d| d.as_secs() ^ u64::from(d.subsec_nanos()))
            });
        eprintln!("{what}: seed {seed} (PGOUTBOX_TEST_SEED={seed} replays it)");
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `1 / n`.
    pub(crate) fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    /// A number in `lo..hi`.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// Counts on a private cluster's pool, retrying while the server restarts.
async fn probe(url: &str, sql: &'static str) -> Option<i64> {
    let pool = sqlx::PgPool::connect(url).await.ok()?;
    let n = sqlx::query_scalar(sql).fetch_one(&pool).await.ok();
    pool.close().await;
    n
}

/// Waits (3 minutes per soak factor) until no operation of the private cluster at
/// `url` is open and no workflow is running or compensating; returns a
/// pool on it.
async fn wait_settled_on(url: &str, faults: &str) -> sqlx::PgPool {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_mins(3 * u64::from(soak()));
    loop {
        let open = count_on(
            &pool,
            "SELECT (SELECT count(*) FROM pgoutbox.operations
                     WHERE status IN ('waiting', 'pending', 'retrying', 'running'))
                  + (SELECT count(*) FROM pgoutbox.workflows WHERE state IN ('running', 'compensating'))",
        )
        .await;
        if open == 0 {
            return pool;
        }
        assert!(
            Instant::now() < deadline,
            "{open} operations and workflows still open 3 minutes (times the soak factor) after the {faults}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 200 order sagas (charge → reserve → ship, the first two answered by a
/// refund and a release; the shipment fails for good in a random half,
/// the charge in about one in eight) run by two worker processes that are
/// `SIGKILLed` again and again, on a private cluster restarted in
/// `immediate` mode once while compensations are open. Afterwards, once
/// fresh workers have settled everything: every succeeded step of every
/// failed workflow has exactly one compensation, never cancelled, and it
/// succeeded after reading the step's result, after the later step's
/// compensation ended; no step that never succeeded has one; every
/// workflow's state is what its plan says; nothing is stuck. A compensation
/// may run twice after a kill (they are idempotent): what is counted is
/// operations, not executions.
#[expect(
    clippy::too_many_lines,
    reason = "publish, fault, settle, then one check after another"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensations_survive_sigkills_and_a_postgres_restart() {
    use pgoutbox::testing::ShutdownMode;
    use pgoutbox_tests::{SagaCharge, SagaRefund, SagaRelease, SagaReserve, SagaShip};

    let mut rng = Rng::seeded("compensation fault test");
    let (cluster, url, pool) = private_drain_database().await;
    let mut plans = Vec::new();
    let mut tx = pool.begin().await.unwrap();
    let sagas = SAGAS * i64::from(soak());
    for order in 0..sagas {
        let (charge_fails, ship_fails) = (rng.one_in(8), rng.one_in(2));
        let mut wf = Workflow::new("fault.order");
        let payment = wf.add(SagaCharge {
            order,
            fail: charge_fails,
            ms: 20,
        });
        wf.compensate_with(payment, |payment| SagaRefund { payment, ms: 120 });
        let stock = wf.add(SagaReserve {
            order,
            payment,
            ms: 20,
        });
        wf.compensate_with(stock, |stock| SagaRelease { stock, ms: 120 });
        wf.add(SagaShip {
            order,
            stock,
            fail: ship_fails,
            ms: 40,
        });
        let published = publish_workflow(&mut tx, wf).await.unwrap();
        let [charge, reserve, ship] = published.steps[..] else {
            unreachable!("three steps")
        };
        plans.push(SagaPlan {
            workflow: published.id.as_i64(),
            charge: charge.as_i64(),
            reserve: reserve.as_i64(),
            ship: ship.as_i64(),
            charge_fails,
            ship_fails,
        });
    }
    tx.commit().await.unwrap();
    pool.close().await;

    // Two worker processes; one of them killed (and replaced) every 150 to
    // 450 ms, until the server was restarted with compensations open and
    // at least 16 kills (times the soak factor) were made.
    let mut workers = [Some(Worker::start(&url, 4)), Some(Worker::start(&url, 4))];
    let (mut kills, mut open_at_restart) = (0_usize, None);
    let deadline = Instant::now() + Duration::from_mins(3 * u64::from(soak()));
    while kills < 16 * soak() as usize || open_at_restart.is_none() {
        assert!(
            Instant::now() < deadline,
            "no moment with compensations open in 3 minutes (times the soak factor; {kills} kills)"
        );
        tokio::time::sleep(Duration::from_millis(rng.between(150, 450))).await;
        if open_at_restart.is_none() {
            let open = probe(
                &url,
                "SELECT count(*) FROM pgoutbox.operations
                 WHERE compensates IS NOT NULL AND status IN ('waiting', 'pending', 'retrying', 'running')",
            )
            .await
            .unwrap_or(0);
            if open >= 5 {
                tokio::task::block_in_place(|| cluster.restart(ShutdownMode::Immediate)).unwrap();
                open_at_restart = Some(open);
                // The workers reconnect and work on before the next kill.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        let victim = kills % 2;
        workers[victim].take().expect("a worker").kill();
        workers[victim] = Some(Worker::start(&url, 4));
        kills += 1;
    }
    for worker in workers.into_iter().flatten() {
        worker.kill();
    }
    // Fresh workers settle what is left (the kills' leases expire first).
    let settlers = [Worker::start(&url, 4), Worker::start(&url, 4)];
    let faults = format!(
        "{kills} kills and an immediate restart with {} compensations open",
        open_at_restart.unwrap_or(0)
    );
    let pool = wait_settled_on(&url, &faults).await;
    for worker in settlers {
        assert!(worker.terminate().success());
    }

    // Every workflow ended as its plan says, each step too.
    let states: HashMap<i64, String> =
        sqlx::query_as::<_, (i64, String)>("SELECT id, state FROM pgoutbox.workflows")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let statuses: HashMap<i64, String> = sqlx::query_as::<_, (i64, String)>(
        "SELECT id, status FROM pgoutbox.operations WHERE compensates IS NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let compensations: HashMap<i64, Vec<String>> = sqlx::query_as::<_, (i64, Vec<String>)>(
        "SELECT compensates, array_agg(status ORDER BY id) FROM pgoutbox.operations
         WHERE compensates IS NOT NULL GROUP BY compensates",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let (mut failed, mut compensated) = (0, 0);
    for plan in &plans {
        let expected = if plan.charge_fails {
            ["dead", "cancelled", "cancelled"]
        } else if plan.ship_fails {
            ["succeeded", "succeeded", "dead"]
        } else {
            ["succeeded"; 3]
        };
        let got = [plan.charge, plan.reserve, plan.ship].map(|id| statuses[&id].as_str());
        assert_eq!(got, expected, "steps of workflow {}", plan.workflow);
        let fails = plan.charge_fails || plan.ship_fails;
        assert_eq!(
            states[&plan.workflow],
            if fails { "failed" } else { "succeeded" },
            "workflow {}",
            plan.workflow
        );
        failed += i64::from(fails);
        // Exactly the steps that succeeded in a failed workflow are
        // answered, each by one operation, which succeeded.
        for (step, answered) in [
            (plan.charge, fails && !plan.charge_fails),
            (plan.reserve, fails && !plan.charge_fails),
            (plan.ship, false),
        ] {
            let got = compensations.get(&step).cloned().unwrap_or_default();
            let want: Vec<String> = if answered {
                vec!["succeeded".to_owned()]
            } else {
                Vec::new()
            };
            assert_eq!(
                got, want,
                "compensations of step {step} (workflow {})",
                plan.workflow
            );
            compensated += i64::from(answered);
        }
    }
    assert!(
        failed > 0 && failed < sagas,
        "{failed} of {sagas} sagas failed"
    );
    assert!(compensated > 0, "no saga had anything to compensate");
    // The same, from the rows alone (what an auditor would run).
    assert_eq!(
        count_on(
            &pool,
            "SELECT count(*) FROM pgoutbox.operations s JOIN pgoutbox.workflows w ON w.id = s.workflow_id
             WHERE w.state = 'failed' AND s.compensates IS NULL AND s.status = 'succeeded'
               AND ((SELECT count(*) FROM pgoutbox.operations k WHERE k.compensates = s.id) <> 1
                    OR (SELECT count(*) FROM pgoutbox.operations k
                        WHERE k.compensates = s.id AND k.status = 'succeeded') <> 1)"
        )
        .await,
        0,
        "every succeeded step of a failed workflow has exactly one compensation, which succeeded"
    );
    assert_eq!(
        count_on(
            &pool,
            "SELECT count(*) FROM pgoutbox.operations k JOIN pgoutbox.operations s ON s.id = k.compensates
             JOIN pgoutbox.workflows w ON w.id = s.workflow_id
             WHERE s.status <> 'succeeded' OR w.state <> 'failed'"
        )
        .await,
        0,
        "no step that never succeeded, nor one of a workflow that did not fail, is compensated"
    );
    // Each compensation read the result of the step it answers, and ran
    // in reverse order: the release (of the later step) ended before any
    // attempt of the refund began; both after the shipment failed.
    assert_eq!(
        count_on(
            &pool,
            "SELECT count(*) FROM pgoutbox.operations k
             JOIN pgoutbox.operations s ON s.id = k.compensates
             JOIN pgoutbox.attempts a ON a.operation_id = k.id AND a.outcome = 'succeeded'
             WHERE a.result IS DISTINCT FROM to_jsonb(
                 CASE k.name WHEN 'fault.saga_refund' THEN 'refunded ch_' ELSE 'released res_' END
                 || (s.payload->>'order'))"
        )
        .await,
        0,
        "every compensation received its step's result"
    );
    assert_eq!(
        count_on(
            &pool,
            "SELECT count(*) FROM pgoutbox.operations refund
             JOIN pgoutbox.operations release
               ON release.workflow_id = refund.workflow_id AND release.name = 'fault.saga_release'
             JOIN pgoutbox.operations ship
               ON ship.workflow_id = refund.workflow_id AND ship.name = 'fault.saga_ship'
             JOIN pgoutbox.attempts a ON a.operation_id IN (refund.id, release.id)
             WHERE refund.name = 'fault.saga_refund'
               AND ((a.operation_id = refund.id AND a.started_at < release.finished_at)
                    OR a.started_at < ship.finished_at)"
        )
        .await,
        0,
        "compensations in reverse order, after the failure"
    );
    assert_eq!(
        count_on(
            &pool,
            "SELECT count(*) FROM pgoutbox.workflows w
             WHERE w.steps <> (SELECT count(*) FROM pgoutbox.operations o WHERE o.workflow_id = w.id)
                OR (w.state = 'failed') <> (w.failed_at IS NOT NULL)"
        )
        .await,
        0,
        "every workflow counts its steps and compensations, and records its failure"
    );
    assert_eq!(
        count_on(&pool, "SELECT count(*) FROM pgoutbox.operations").await,
        3 * sagas + compensated,
        "nothing lost"
    );
    assert_eq!(
        count_on(
            &pool,
            "SELECT count(*) FROM pgoutbox.attempts WHERE outcome IS NULL"
        )
        .await,
        0
    );
    assert_eq!(stuck_steps_on(&pool).await, 0);
    assert_eq!(inconsistent_workflows_on(&pool).await, []);

    // The faults really met compensations running; what ran twice.
    let lost = count_on(
        &pool,
        "SELECT count(*) FROM pgoutbox.attempts a JOIN pgoutbox.operations k ON k.id = a.operation_id
         WHERE a.outcome = 'lost' AND k.compensates IS NOT NULL",
    )
    .await;
    let twice = count_on(
        &pool,
        "SELECT count(*) FROM (SELECT s.operation_id FROM side_effects s
         JOIN pgoutbox.operations k ON k.id = s.operation_id AND k.compensates IS NOT NULL
         GROUP BY s.operation_id HAVING count(*) > 1) t",
    )
    .await;
    eprintln!(
        "{faults}: {sagas} sagas, {failed} failed, {compensated} compensations \
         ({lost} attempts lost, {twice} compensations ran more than once)"
    );
    assert!(lost >= 1, "no kill met a running compensation");
    pool.close().await;
}

/// Workflows of the run-time fan-out kill test, and the items each adds.
const FAN_OUTS: i64 = 6;
const ITEMS: i64 = 1_000;

/// Per workflow of the fan-out test: (workflow, its adding step, whether
/// the adder succeeded, its item steps, its fan-ins).
async fn fan_outs(pool: &sqlx::PgPool) -> Vec<(i64, i64, bool, i64, i64)> {
    sqlx::query_as(
        "SELECT w.id, a.id, a.status = 'succeeded',
                (SELECT count(*) FROM pgoutbox.operations o
                 WHERE o.workflow_id = w.id AND o.name = 'fault.fan_item'),
                (SELECT count(*) FROM pgoutbox.operations o
                 WHERE o.workflow_id = w.id AND o.name = 'fault.fan_total')
         FROM pgoutbox.workflows w
         JOIN pgoutbox.operations a ON a.workflow_id = w.id
          AND a.name IN ('fault.fan_split', 'fault.fan_split_tx')
         ORDER BY w.id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Six workflows whose single step adds 1,000 item steps and their fan-in
/// at run time (plain and transactional handlers in turn), each taking
/// 300 ms after adding them; a worker process is `SIGKILLed` again and
/// again, 0 to 700 ms after an adder's attempt began (before, during and
/// after its success is recorded). After each kill, every workflow has
/// exactly 1,000 items and one fan-in, with its adder succeeded, or none
/// and its adder not: never a partial set. In the end each has them once,
/// its adder has one success, and its fan-in received every item.
#[expect(
    clippy::too_many_lines,
    reason = "publish, kill and check, then one check after another"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_added_at_run_time_are_all_or_nothing_under_sigkill() {
    use pgoutbox_tests::{FanSplit, FanSplitTx};

    let mut rng = Rng::seeded("fan-out kill test");
    let db = test_db().await;
    tables(&db).await;
    let url = db.url();
    let mut tx = db.pool().begin().await.unwrap();
    for n in 0..FAN_OUTS {
        let mut wf = Workflow::new("fault.fan_out");
        if n % 2 == 0 {
            wf.add(FanSplit {
                items: ITEMS,
                ms: 300,
            });
        } else {
            wf.add(FanSplitTx {
                items: ITEMS,
                ms: 300,
            });
        }
        publish_workflow(&mut tx, wf).await.unwrap();
    }
    tx.commit().await.unwrap();

    let (mut kills, mut met) = (0, 0);
    let deadline = Instant::now() + Duration::from_mins(3);
    loop {
        let pending: i64 = count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations
             WHERE name IN ('fault.fan_split', 'fault.fan_split_tx') AND status <> 'succeeded'",
        )
        .await;
        if pending == 0 || kills >= 12 {
            break;
        }
        // One adder at a time, so that the kill's moment is its own.
        let since: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(db.pool())
            .await
            .unwrap();
        let worker = Worker::start(&url, 1);
        loop {
            assert!(Instant::now() < deadline, "no adder started in 3 minutes");
            let began: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pgoutbox.attempts a JOIN pgoutbox.operations o ON o.id = a.operation_id
                 WHERE o.name IN ('fault.fan_split', 'fault.fan_split_tx') AND a.started_at > $1",
            )
            .bind(since)
            .fetch_one(db.pool())
            .await
            .unwrap();
            if began > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = fan_outs(db.pool()).await;
        tokio::time::sleep(Duration::from_millis(rng.between(0, 700))).await;
        worker.kill();
        kills += 1;
        let after = fan_outs(db.pool()).await;
        for (wf, adder, succeeded, items, totals) in &after {
            assert!(
                (*succeeded && *items == ITEMS && *totals == 1)
                    || (!*succeeded && *items == 0 && *totals == 0),
                "after kill {kills}: workflow {wf} (adder {adder} succeeded: {succeeded}) \
                 has {items} items and {totals} fan-ins"
            );
        }
        // A kill that met an adder before its success was recorded.
        let done = |rows: &[(i64, i64, bool, i64, i64)]| rows.iter().filter(|r| r.2).count();
        if done(&after) == done(&before) {
            met += 1;
        }
    }
    // A last worker (four at once) finishes the work.
    let finisher = Worker::start(&url, 4);
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.workflows WHERE state = 'succeeded'",
        FAN_OUTS,
        Duration::from_mins(3),
    )
    .await;
    assert!(finisher.terminate().success());
    for (wf, adder, succeeded, items, totals) in fan_outs(db.pool()).await {
        assert!(succeeded, "workflow {wf}: adder {adder} did not succeed");
        assert_eq!((items, totals), (ITEMS, 1), "workflow {wf}");
    }
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations o
             WHERE o.name IN ('fault.fan_split', 'fault.fan_split_tx')
               AND (SELECT count(*) FROM pgoutbox.attempts a
                    WHERE a.operation_id = o.id AND a.outcome = 'succeeded') <> 1"
        )
        .await,
        0,
        "every adder succeeded once"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations o
             JOIN pgoutbox.attempts a ON a.operation_id = o.id AND a.outcome = 'succeeded'
             WHERE o.name = 'fault.fan_total' AND a.result = to_jsonb(500500)"
        )
        .await,
        FAN_OUTS,
        "every fan-in received all 1,000 results"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.workflows w
             WHERE w.steps <> 1002 OR w.steps <> (SELECT count(*) FROM pgoutbox.operations o
                                                  WHERE o.workflow_id = w.id)"
        )
        .await,
        0,
        "every workflow counts its adder, its items and its fan-in"
    );
    let lost = count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts a JOIN pgoutbox.operations o ON o.id = a.operation_id
         WHERE a.outcome = 'lost' AND o.name IN ('fault.fan_split', 'fault.fan_split_tx')",
    )
    .await;
    eprintln!(
        "{kills} kills, {met} before an adder's success was recorded; {lost} adder attempts lost"
    );
    assert!(lost >= 1, "no kill met an adder before its success");
    assert_eq!(stuck_steps(&db).await, 0);
    assert_eq!(inconsistent_workflows(&db).await, []);
}

/// A step that ends while another ends `dead` in the same workflow (two
/// transactions at once, in either order): the failure's transaction
/// publishes the compensation of an earlier step, which waits for the later
/// step while that one looks open. Whichever takes its turn first, the
/// compensation must count the later step's success, never wait for it
/// forever (found by `saga_model` on a first version of migration 11,
/// which read the later step's state unsynchronised with its end). Statuses are set by hand, as the executor
/// sets them, to hold each transaction open at will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_ending_while_its_workflow_fails_is_never_waited_for_forever() {
    use pgoutbox_tests::{SagaCharge, SagaRefund, SagaReserve, SagaShip};

    let db = test_db().await;
    for failure_first in [false, true] {
        // A charge (compensated), its reservation (the later step), and a
        // charge of its own that fails (no dependent: it fails the
        // workflow).
        let mut wf = Workflow::new("fault.order");
        let payment = wf.add(SagaCharge {
            order: 1,
            fail: false,
            ms: 0,
        });
        wf.compensate_with(payment, |payment| SagaRefund { payment, ms: 0 });
        let stock = wf.add(SagaReserve {
            order: 1,
            payment,
            ms: 0,
        });
        wf.add(SagaCharge {
            order: 2,
            fail: true,
            ms: 0,
        });
        // The reservation's own dependent: its success releases one, and
        // so does not settle the workflow's state (which would lock its row).
        wf.add(SagaShip {
            order: 1,
            stock,
            fail: false,
            ms: 0,
        });
        let mut tx = db.pool().begin().await.unwrap();
        let published = publish_workflow(&mut tx, wf).await.unwrap();
        tx.commit().await.unwrap();
        let [charge, reserve, other, _] = published.steps[..] else {
            unreachable!("four steps")
        };
        let [charge, reserve, other] = [charge, reserve, other].map(OperationId::as_i64);
        let set = |id: i64, status: &'static str| {
            sqlx::query(
                "UPDATE pgoutbox.operations SET status = $2, finished_at = now(),
                 lease_owner = CASE WHEN $2 = 'running' THEN gen_random_uuid() END,
                 lease_expires_at = CASE WHEN $2 = 'running' THEN now() + interval '1 hour' END
             WHERE id = $1",
            )
            .bind(id)
            .bind(status)
        };
        set(charge, "running").execute(db.pool()).await.unwrap();
        set(charge, "succeeded").execute(db.pool()).await.unwrap();
        set(reserve, "running").execute(db.pool()).await.unwrap();
        set(other, "running").execute(db.pool()).await.unwrap();

        // The first transaction ends its step and stays open; the second
        // ends the other in a task of its own (it may have to wait for the
        // first), and commits after the first did.
        let (first, second) = if failure_first {
            ((other, "dead"), (reserve, "succeeded"))
        } else {
            ((reserve, "succeeded"), (other, "dead"))
        };
        let mut one = db.pool().begin().await.unwrap();
        set(first.0, first.1).execute(&mut *one).await.unwrap();
        let pool = db.pool().clone();
        let two = tokio::spawn(async move {
            let mut two = pool.begin().await.unwrap();
            sqlx::query(
                "UPDATE pgoutbox.operations SET status = $2, finished_at = now(),
                 lease_owner = CASE WHEN $2 = 'running' THEN gen_random_uuid() END,
                 lease_expires_at = CASE WHEN $2 = 'running' THEN now() + interval '1 hour' END
             WHERE id = $1",
            )
            .bind(second.0)
            .bind(second.1)
            .execute(&mut *two)
            .await
            .unwrap();
            two.commit().await.unwrap();
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        one.commit().await.unwrap();
        two.await.unwrap();

        let refunds: Vec<(String, i32)> = sqlx::query_as(
            "SELECT status, waiting_for FROM pgoutbox.operations WHERE compensates = $1",
        )
        .bind(charge)
        .fetch_all(db.pool())
        .await
        .unwrap();
        assert_eq!(
            refunds,
            [("pending".to_owned(), 0)],
            "failure first: {failure_first}: the refund waits for nothing left open"
        );
        assert_eq!(stuck_steps(&db).await, 0, "failure first: {failure_first}");
        assert_eq!(inconsistent_workflows(&db).await, []);
    }
}

/// Two steps of a failed workflow, one later than the other, whose
/// successes are recorded by one statement (a worker's batch of plain
/// completions): the earlier step's compensation must wait for the later
/// one's, whichever step's trigger runs first (found by `saga_model` on a
/// first version of migration 11, which saw the later step succeeded, with
/// no compensation yet, and let the earlier one's run at once). Statuses are set by hand, as
/// the executor sets them; in several workflows, so that both orders of
/// the rows in the statement occur.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successes_recorded_together_are_still_compensated_in_reverse_order() {
    use pgoutbox_tests::{SagaCharge, SagaRefund, SagaRelease, SagaReserve};

    let db = test_db().await;
    let set = |ids: Vec<i64>, status: &'static str| {
        sqlx::query(
            "UPDATE pgoutbox.operations SET status = $2, finished_at = now(),
                 lease_owner = CASE WHEN $2 = 'running' THEN gen_random_uuid() END,
                 lease_expires_at = CASE WHEN $2 = 'running' THEN now() + interval '1 hour' END
             WHERE id = ANY($1)",
        )
        .bind(ids)
        .bind(status)
    };
    let mut pairs = Vec::new();
    for order in 0..8 {
        // A charge and its reservation, both compensated, and a charge of
        // their own that fails the workflow while both run.
        let mut wf = Workflow::new("fault.order");
        let payment = wf.add(SagaCharge {
            order,
            fail: false,
            ms: 0,
        });
        wf.compensate_with(payment, |payment| SagaRefund { payment, ms: 0 });
        let stock = wf.add(SagaReserve {
            order,
            payment,
            ms: 0,
        });
        wf.compensate_with(stock, |stock| SagaRelease { stock, ms: 0 });
        wf.add(SagaCharge {
            order: -order,
            fail: true,
            ms: 0,
        });
        let mut tx = db.pool().begin().await.unwrap();
        let published = publish_workflow(&mut tx, wf).await.unwrap();
        tx.commit().await.unwrap();
        let ids: Vec<i64> = published.steps.iter().map(|s| s.as_i64()).collect();
        set(ids.clone(), "running")
            .execute(db.pool())
            .await
            .unwrap();
        set(vec![ids[2]], "dead").execute(db.pool()).await.unwrap();
        // Both successes in one statement; the rows in either order.
        let both = if order % 2 == 0 {
            vec![ids[0], ids[1]]
        } else {
            vec![ids[1], ids[0]]
        };
        set(both, "succeeded").execute(db.pool()).await.unwrap();
        pairs.push((ids[0], ids[1]));
    }
    for (charge, reserve) in pairs {
        let row = |step: i64| {
            sqlx::query_as::<_, (i64, String, i32)>(
                "SELECT id, status, waiting_for FROM pgoutbox.operations WHERE compensates = $1",
            )
            .bind(step)
            .fetch_one(db.pool())
        };
        let (release, release_status, _) = row(reserve).await.unwrap();
        let (refund, refund_status, refund_waits) = row(charge).await.unwrap();
        assert_eq!(release_status, "pending", "the release waits for nothing");
        assert_eq!(
            (refund_status.as_str(), refund_waits),
            ("waiting", 1),
            "the refund waits for the release"
        );
        let edge: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pgoutbox.workflow_edges WHERE operation_id = $1 AND dependency_id = $2",
        )
        .bind(refund)
        .bind(release)
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(edge, 1, "the refund waits for the release");
    }
    assert_eq!(stuck_steps(&db).await, 0);
    assert_eq!(inconsistent_workflows(&db).await, []);
}
