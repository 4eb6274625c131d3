//! Real worker processes (`pgoutbox-test-worker`): several at once over one
//! table, and one killed with SIGKILL mid-call.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pgoutbox::testing::TestDatabase;
use pgoutbox_tests::{Effect, IdempotentEffect, SIDE_EFFECTS_TABLE, TxEffect};

use crate::support::{count, outcomes, publish_one, soak, status, test_db, wait_for_count};

/// A worker process on `db`, returned once it has started.
pub(crate) struct Worker {
    child: Child,
    // Kept open: the worker reports on stdout until it exits.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Worker {
    pub(crate) fn start(url: &str, n_workers: usize) -> Worker {
        Worker::start_with(url, n_workers, &[])
    }

    /// [`Worker::start`], with more settings as `PGOUTBOX_*` variables.
    pub(crate) fn start_with(url: &str, n_workers: usize, envs: &[(&str, &str)]) -> Worker {
        let mut command = Worker::command(url, n_workers);
        command.envs(envs.iter().copied());
        Worker::spawn(command)
    }

    /// [`Worker::start_with`], running the idempotent operations only.
    pub(crate) fn start_idempotent_only(
        url: &str,
        n_workers: usize,
        envs: &[(&str, &str)],
    ) -> Worker {
        let mut command = Worker::command(url, n_workers);
        command.arg("--idempotent-only").envs(envs.iter().copied());
        Worker::spawn(command)
    }

    /// A relay process (`pgoutbox-test-worker relay`): `relay.order_placed`
    /// to JetStream at `nats`, into `stream`.
    pub(crate) fn start_relay(url: &str, n_workers: usize, nats: &str, stream: &str) -> Worker {
        let mut command = Worker::command(url, n_workers);
        command.args(["relay", nats, stream]);
        Worker::spawn(command)
    }

    /// The worker's command, configured as [`Worker::start`] does; stderr
    /// inherited unless the caller changes it.
    pub(crate) fn command(url: &str, n_workers: usize) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgoutbox-test-worker"));
        command
            .env("PGOUTBOX_DATABASE__URL", url)
            .env("PGOUTBOX_DATABASE__POOL_MAX", (n_workers + 4).to_string())
            .env("PGOUTBOX_WORKFLOW_SYSTEM__N_WORKERS", n_workers.to_string())
            .env("PGOUTBOX_WORKFLOW_SYSTEM__LEASE", "1s")
            .env("PGOUTBOX_WORKFLOW_SYSTEM__POLL_INTERVAL", "200ms")
            .env("PGOUTBOX_WORKFLOW_SYSTEM__SHUTDOWN_WAIT", "1s")
            .env_remove("PGOUTBOX_CONFIG_FILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        command
    }

    /// Starts `command` (from [`Worker::command`]) and returns once the
    /// worker has started.
    pub(crate) fn spawn(mut command: Command) -> Worker {
        let mut child = command.spawn().expect("worker process starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("worker output");
        assert!(line.starts_with("ready "), "worker said: {line:?}");
        Worker {
            child,
            _stdout: stdout,
        }
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process vanishes mid-call, as in a crash.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then the exit status.
    pub(crate) fn terminate(self) -> std::process::ExitStatus {
        self.signal("TERM")
    }

    /// Sends `signal` (`TERM`, `INT`, …), then returns the exit status.
    pub(crate) fn signal(mut self, signal: &str) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.child.wait().expect("reaped")
    }
}

pub(crate) async fn tables(db: &TestDatabase) {
    create_tables(db.pool()).await;
}

/// The tables the `fault.*` handlers write to.
pub(crate) async fn create_tables(pool: &sqlx::PgPool) {
    sqlx::query(SIDE_EFFECTS_TABLE).execute(pool).await.unwrap();
    sqlx::query("CREATE TABLE business_effects (operation_id bigint NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_run_5000_operations_each_exactly_once() {
    let n = 5_000 * i64::from(soak());
    let db = test_db().await;
    tables(&db).await;
    let mut tx = db.pool().begin().await.unwrap();
    pgoutbox::publish_many(&mut tx, (0..n).map(|_| Effect { ms: 0 }))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let workers: Vec<Worker> = (0..3).map(|_| Worker::start(&db.url(), 4)).collect();
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        n,
        Duration::from_mins(3 * u64::from(soak())),
    )
    .await;
    for worker in workers {
        assert!(worker.terminate().success());
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM side_effects").await,
        n,
        "each ran once"
    );
    assert_eq!(
        count(&db, "SELECT count(DISTINCT operation_id) FROM side_effects").await,
        n
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.attempts WHERE outcome = 'succeeded'"
        )
        .await,
        n
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.attempts").await,
        n
    );
    assert!(
        count(&db, "SELECT count(DISTINCT pid) FROM side_effects").await >= 2,
        "the work was shared"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.workers WHERE stopped_at IS NOT NULL"
        )
        .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_leaves_lost_attempts_and_the_right_next_states() {
    let db = test_db().await;
    tables(&db).await;
    let first = Worker::start(&db.url(), 4);
    let plain = publish_one(&db, Effect { ms: 60_000 }).await;
    let idempotent = publish_one(&db, IdempotentEffect { ms: 60_000 }).await;
    let transactional = publish_one(&db, TxEffect { ms: 60_000 }).await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM side_effects",
        3,
        Duration::from_secs(10),
    )
    .await;
    first.kill();

    let second = Worker::start(&db.url(), 4);
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status IN ('stalled', 'succeeded')",
        3,
        Duration::from_secs(20),
    )
    .await;
    // Not idempotent: its outcome is unknown, so it waits for an operator.
    assert_eq!(status(&db, plain).await, "stalled");
    assert_eq!(outcomes(&db, plain).await, [Some("lost".to_owned())]);
    // Idempotent: retried.
    assert_eq!(status(&db, idempotent).await, "succeeded");
    assert_eq!(
        outcomes(&db, idempotent).await,
        [Some("lost".into()), Some("succeeded".into())]
    );
    // Transactional: the killed attempt's transaction never committed, the
    // retry's did: its database write exists exactly once.
    assert_eq!(status(&db, transactional).await, "succeeded");
    assert_eq!(
        outcomes(&db, transactional).await,
        [Some("lost".into()), Some("succeeded".into())]
    );
    assert_eq!(count(&db, "SELECT count(*) FROM business_effects").await, 1);
    assert!(second.terminate().success());
}
