//! The relay to NATS JetStream against real `nats-server` processes: one
//! server, or a cluster of three, started here on free loopback ports with
//! temporary store directories, and stopped (or killed, or frozen) here.
//!
//! `nats-server` is a Debian package (`apt-get install nats-server`, which
//! `.ci/run` does when it is missing), so the tests that need it are
//! behind a switch: they run when `PGOUTBOX_TEST_NATS=1`, fail loudly when
//! the switch is on and the program is missing, and otherwise say on stderr
//! that they did not run. The router checks at the end need no server.
//!
//! Every fault test ends by counting: every operation `succeeded` with one
//! succeeded attempt holding a PubAck sequence, the stream holds one
//! message per operation (by `Nats-Msg-Id`) whose body is the payload, and
//! no sequence is recorded twice.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgoutbox::relay::async_nats::{self, jetstream};
use pgoutbox::relay::{Relay, RelayError};
use pgoutbox::testing::TestDatabase;
use pgoutbox::{RouterError, StartError, WorkflowRouter, WorkflowSystem};
use pgoutbox_tests::OrderPlaced;

use crate::processes::Worker;
use crate::support::{count, settings, soak, test_db};

/// The switch that turns these tests on.
const SWITCH: &str = "PGOUTBOX_TEST_NATS";
/// The stream every test relays into.
const STREAM: &str = "EVENTS";
/// The servers' `max_payload`, small enough for a test to exceed.
const MAX_PAYLOAD: usize = 16 * 1024;

fn wanted(test: &str) -> bool {
    match std::env::var(SWITCH).as_deref() {
        Ok("1") => true,
        Ok("0") | Err(std::env::VarError::NotPresent) => {
            eprintln!(
                "{test}: not run: set {SWITCH}=1 to run the relay tests (needs `nats-server`)"
            );
            false
        }
        Ok(other) => panic!("{SWITCH} must be `1` or `0`, not {other:?}"),
        Err(e) => panic!("{SWITCH}: {e}"),
    }
}

fn nats_server_program() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()))
        .expect(
            "nats-server is not installed, but PGOUTBOX_TEST_NATS=1 asks for the relay tests: \
             `apt-get install nats-server` (`.ci/run` does it), or unset the switch",
        )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `nats-server` with JetStream, its own store directory and log.
struct Server {
    child: Option<Child>,
    config: PathBuf,
    port: u16,
    dir: PathBuf,
}

impl Server {
    /// A server alone, or node `i` of a cluster whose route ports are
    /// `routes`.
    fn start(dir: &Path, i: usize, routes: &[u16]) -> Server {
        let port = free_port();
        let store = dir.join(format!("store-{i}"));
        std::fs::create_dir_all(&store).unwrap();
        let mut config = format!(
            "listen: 127.0.0.1:{port}\nserver_name: n{i}\nmax_payload: {MAX_PAYLOAD}\n\
             jetstream {{ store_dir: \"{}\" }}\n",
            store.display()
        );
        if !routes.is_empty() {
            let others: Vec<String> = routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            let _ = writeln!(
                config,
                "cluster {{ name: pgoutbox, listen: 127.0.0.1:{}, routes: [{}] }}",
                routes[i],
                others.join(", ")
            );
        }
        let path = dir.join(format!("n{i}.conf"));
        std::fs::write(&path, config).unwrap();
        let mut server = Server {
            child: None,
            config: path,
            port,
            dir: dir.to_owned(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = Command::new(nats_server_program())
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the node vanishes.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen server does not die of SIGKILL until it runs again.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "pgoutbox-nats-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

fn fastrand_suffix() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn client(url: &str) -> async_nats::Client {
    let mut nats = pgoutbox::Settings::default().relay.nats;
    nats.url = Some(url.to_owned());
    pgoutbox::relay::connect(&nats).await.expect("NATS client")
}

/// Creates the stream `events.>` with `replicas`, retrying while a new
/// cluster elects its leader.
async fn create_stream(client: &async_nats::Client, replicas: usize) -> jetstream::stream::Stream {
    let js = jetstream::new(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let created = js
            .get_or_create_stream(jetstream::stream::Config {
                name: STREAM.to_owned(),
                subjects: vec!["events.>".to_owned()],
                num_replicas: replicas,
                ..Default::default()
            })
            .await;
        match created {
            Ok(stream) => return stream,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot create the stream: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn publish_orders(db: &TestDatabase, n: usize) {
    let mut tx = db.pool().begin().await.unwrap();
    pgoutbox::publish_many(
        &mut tx,
        (0..n).map(|i| OrderPlaced {
            order_id: i64::try_from(i).unwrap(),
            region: ["eu", "us", "ap"][i % 3].to_owned(),
            note: format!("order {i}"),
        }),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

fn relay_settings(db: &TestDatabase) -> pgoutbox::Settings {
    let mut settings = settings(db);
    settings.workflow_system.n_workers = 16;
    settings.database.pool_max = 20;
    settings
}

async fn wait_all_succeeded(db: &TestDatabase, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let done = count(
            db,
            "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        )
        .await;
        if done == n {
            return;
        }
        if Instant::now() > deadline {
            let states: Vec<(String, i64)> = sqlx::query_as(
                "SELECT status, count(*) FROM pgoutbox.operations GROUP BY 1 ORDER BY 1",
            )
            .fetch_all(db.pool())
            .await
            .unwrap();
            panic!("after {within:?}: {done} of {n} succeeded; by state: {states:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The counts after a run: every operation `succeeded` with exactly one
/// succeeded attempt recording a PubAck of `STREAM`; the stream holds one
/// message per operation, with its external key as `Nats-Msg-Id` and its
/// payload as body; no sequence recorded for two operations. Returns the
/// number of `PubAck`s that JetStream marked as duplicates (re-sent messages
/// it dropped).
async fn check_exactly_once(db: &TestDatabase, client: &async_nats::Client, n: usize) -> usize {
    type Row = (
        i64,
        uuid::Uuid,
        serde_json::Value,
        i64,
        Option<serde_json::Value>,
        i64,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT o.id, o.external_key, o.payload,
                    (SELECT count(*) FROM pgoutbox.attempts a
                      WHERE a.operation_id = o.id AND a.outcome = 'succeeded'),
                    (SELECT a.result FROM pgoutbox.attempts a
                      WHERE a.operation_id = o.id AND a.outcome = 'succeeded' LIMIT 1),
                    coalesce(o.root_id, o.id), o.schema_hash
             FROM pgoutbox.operations o WHERE o.status = 'succeeded'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), n, "every operation succeeded");
    let mut by_sequence: HashMap<u64, Row> = HashMap::new();
    let mut duplicates = 0;
    for row in rows {
        let (id, _, _, succeeded, ref result, _, _) = row;
        assert_eq!(succeeded, 1, "operation {id}: one succeeded attempt");
        let result = result
            .as_ref()
            .unwrap_or_else(|| panic!("operation {id}: no PubAck recorded"));
        assert_eq!(result["backend"], "jetstream");
        assert_eq!(result["stream"], STREAM);
        if result["duplicate"] == true {
            duplicates += 1;
        }
        let sequence = result["sequence"].as_u64().expect("a sequence");
        let earlier = by_sequence.insert(sequence, row);
        assert!(earlier.is_none(), "sequence {sequence} recorded twice");
    }
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(
        info.state.messages, n as u64,
        "the stream holds one message per operation"
    );
    let mut ids = HashSet::new();
    for (sequence, (id, key, payload, _, _, root_id, schema_hash)) in &by_sequence {
        let message = stream.get_raw_message(*sequence).await.unwrap();
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .unwrap_or_else(|| panic!("sequence {sequence}: no {name} header"))
                .as_str()
                .to_owned()
        };
        let msg_id = header(pgoutbox::relay::MSG_ID);
        assert_eq!(
            msg_id,
            key.to_string(),
            "sequence {sequence}: the operation's key"
        );
        assert!(ids.insert(msg_id), "a message id twice");
        let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(
            &body, payload,
            "sequence {sequence}: the body is the payload"
        );
        assert_eq!(header(pgoutbox::relay::NAME), "relay.order_placed");
        assert_eq!(header(pgoutbox::relay::ID), id.to_string());
        assert_eq!(header(pgoutbox::relay::ROOT_ID), root_id.to_string());
        assert_eq!(&header(pgoutbox::relay::SCHEMA_HASH), schema_hash);
    }
    duplicates
}

/// 10,000 operations through 3 relay processes: the stream holds 10,000
/// messages, one per operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_operations_through_three_processes() {
    if !wanted("relay::ten_thousand_operations_through_three_processes") {
        return;
    }
    let dir = TempDir::new();
    let server = Server::start(&dir.0, 0, &[]);
    let client = client(&server.url()).await;
    create_stream(&client, 1).await;
    let db = test_db().await;
    let n = 10_000 * soak() as usize;
    publish_orders(&db, n).await;
    let url = server.url();
    let relays: Vec<Worker> = (0..3)
        .map(|_| Worker::start_relay(&db.url(), 16, &url, STREAM))
        .collect();
    wait_all_succeeded(&db, i64::try_from(n).unwrap(), Duration::from_mins(2)).await;
    for relay in relays {
        assert!(relay.terminate().success());
    }
    let duplicates = check_exactly_once(&db, &client, n).await;
    // Without a fault, a message is re-sent only after its PubAck timed
    // out (a loaded machine), and JetStream drops the copy.
    let failed = count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome <> 'succeeded'",
    )
    .await;
    assert!(
        i64::try_from(duplicates).unwrap() <= failed,
        "{duplicates} duplicates but only {failed} failed attempts"
    );
    eprintln!("relay: 3 processes, {failed} timed-out attempts, {duplicates} duplicates dropped");
    let processes = count(
        &db,
        "SELECT count(DISTINCT worker_id) FROM pgoutbox.attempts WHERE outcome = 'succeeded'",
    )
    .await;
    assert_eq!(processes, 3, "all three processes relayed");
}

/// Relay processes killed with SIGKILL mid-run, ten times, each replaced:
/// nothing lost, nothing doubled in the stream; the attempts of the killed
/// ones are `lost` and re-sent (JetStream drops the copies).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_processes_killed_ten_times() {
    if !wanted("relay::relay_processes_killed_ten_times") {
        return;
    }
    let dir = TempDir::new();
    let server = Server::start(&dir.0, 0, &[]);
    let client = client(&server.url()).await;
    create_stream(&client, 1).await;
    let db = test_db().await;
    let n = 5_000 * soak() as usize;
    publish_orders(&db, n).await;
    let url = server.url();
    let start = || Worker::start_relay(&db.url(), 16, &url, STREAM);
    let mut relays: Vec<Worker> = (0..3).map(|_| start()).collect();
    for kill in 0..10 * soak() as usize {
        tokio::time::sleep(Duration::from_millis(150)).await;
        relays.remove(kill % relays.len()).kill();
        relays.push(start());
    }
    wait_all_succeeded(&db, i64::try_from(n).unwrap(), Duration::from_mins(2)).await;
    for relay in relays {
        assert!(relay.terminate().success());
    }
    let lost = count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome = 'lost'",
    )
    .await;
    // The kills landed while relays held claimed messages: their attempts
    // were found `lost` and re-sent (JetStream dropping the copies it had).
    assert!(lost > 0, "no kill landed mid-relay");
    let duplicates = check_exactly_once(&db, &client, n).await;
    eprintln!(
        "relay: 10 kills, {lost} lost attempts, {duplicates} duplicates dropped by JetStream"
    );
}

/// An in-process relay of `n` orders, with the fault `fault` injected
/// once a first part is relayed; then the counts.
async fn relay_through_fault(
    server_url: &str,
    client: &async_nats::Client,
    n: usize,
    fault: impl AsyncFnOnce(),
) -> usize {
    let db = test_db().await;
    publish_orders(&db, n).await;
    let relay_client = self::client(server_url).await;
    let system = WorkflowSystem::builder(relay_settings(&db))
        .router(pgoutbox_tests::relay_router(&relay_client, STREAM))
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
    )
    .await
        < i64::try_from(n / 10).unwrap()
    {
        assert!(Instant::now() < deadline, "the relay does not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let succeeded = "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'";
    let before = count(&db, succeeded).await;
    fault().await;
    let after = count(&db, succeeded).await;
    assert!(
        after < i64::try_from(n).unwrap(),
        "the fault came after the run: {after} of {n} already relayed"
    );
    eprintln!("relay: {before} relayed when the fault began, {after} when it ended, of {n}");
    wait_all_succeeded(&db, i64::try_from(n).unwrap(), Duration::from_mins(2)).await;
    system.stop().await.unwrap();
    let failed = count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome <> 'succeeded'",
    )
    .await;
    let duplicates = check_exactly_once(&db, client, n).await;
    eprintln!(
        "relay: {failed} attempts failed or lost during the fault, {duplicates} duplicates dropped"
    );
    duplicates
}

/// nats-server restarted (SIGKILL, same store) mid-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_server_restarted_mid_run() {
    if !wanted("relay::nats_server_restarted_mid_run") {
        return;
    }
    let dir = TempDir::new();
    let mut server = Server::start(&dir.0, 0, &[]);
    let url = server.url();
    let client = client(&url).await;
    create_stream(&client, 1).await;
    let server_ref = &mut server;
    relay_through_fault(&url, &client, 5_000 * soak() as usize, async move || {
        server_ref.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        server_ref.spawn();
    })
    .await;
}

/// nats-server frozen (SIGSTOP) for three leases, then thawed: publishes
/// time out and are retried, leases are renewed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_server_unreachable_longer_than_a_lease() {
    if !wanted("relay::nats_server_unreachable_longer_than_a_lease") {
        return;
    }
    let dir = TempDir::new();
    let server = Server::start(&dir.0, 0, &[]);
    let url = server.url();
    let client = client(&url).await;
    create_stream(&client, 1).await;
    let server_ref = &server;
    relay_through_fault(&url, &client, 5_000 * soak() as usize, async move || {
        server_ref.signal("STOP");
        // The test settings' lease is 1s.
        tokio::time::sleep(Duration::from_secs(3)).await;
        server_ref.signal("CONT");
    })
    .await;
}

/// A 3-node JetStream cluster, the stream replicated 3 times; one node
/// killed mid-relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_node_killed_mid_relay() {
    if !wanted("relay::cluster_node_killed_mid_relay") {
        return;
    }
    let dir = TempDir::new();
    let routes = [free_port(), free_port(), free_port()];
    let mut nodes: Vec<Server> = (0..3).map(|i| Server::start(&dir.0, i, &routes)).collect();
    let urls: Vec<String> = nodes.iter().map(Server::url).collect();
    let all = urls.join(",");
    let client = client(&all).await;
    create_stream(&client, 3).await;
    let nodes = &mut nodes;
    let js = jetstream::new(client.clone());
    relay_through_fault(&all, &client, 5_000 * soak() as usize, async move || {
        // The stream's leader: its loss forces an election mid-relay.
        let info = js
            .get_stream(STREAM)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        let leader = info
            .cluster
            .and_then(|c| c.leader)
            .expect("the stream has a leader");
        let victim = leader.trim_start_matches('n').parse::<usize>().unwrap();
        eprintln!("relay: killing node {leader}, the stream's leader");
        nodes[victim].kill();
    })
    .await;
}

// ---- Unknown outcomes (issue 23): a PubAck that never came ----

/// Creates the stream `events.>` with `window` as its duplicate window.
async fn create_stream_with_window(client: &async_nats::Client, window: Duration) {
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: STREAM.to_owned(),
        subjects: vec!["events.>".to_owned()],
        duplicate_window: window,
        ..Default::default()
    })
    .await
    .expect("the stream");
}

/// The messages the stream holds.
async fn stream_messages(client: &async_nats::Client) -> u64 {
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream(STREAM).await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// An attempt as the history shows it: number, outcome, error, result.
type AttemptRow = (
    i32,
    Option<String>,
    Option<String>,
    Option<serde_json::Value>,
);

async fn history(db: &TestDatabase, id: pgoutbox::OperationId) -> Vec<AttemptRow> {
    sqlx::query_as(
        "SELECT number, outcome, error, result FROM pgoutbox.attempts
         WHERE operation_id = $1 ORDER BY id",
    )
    .bind(id.as_i64())
    .fetch_all(db.pool())
    .await
    .unwrap()
}

/// Waits until operation `id` is in one of `states`; returns its state.
async fn wait_for_state(
    db: &TestDatabase,
    id: pgoutbox::OperationId,
    states: &[&str],
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let state = crate::support::status(db, id).await;
        if states.contains(&state.as_str()) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "after {within:?} operation {id} is `{state}`, not one of {states:?}: {:?}",
            history(db, id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn one_order() -> OrderPlaced {
    OrderPlaced {
        order_id: 1,
        region: "eu".into(),
        note: "the one".into(),
    }
}

/// nats-server frozen (SIGSTOP) across the PubAck timeout (2 s), with the
/// operation published meanwhile, then thawed: the first attempt is an
/// unknown outcome (`timed_out`, with the client's message), never
/// `failed`; the retry, within the stream's duplicate window, is dropped
/// by JetStream as a duplicate: one message in the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_puback_timeout_is_an_unknown_outcome() {
    if !wanted("relay::a_puback_timeout_is_an_unknown_outcome") {
        return;
    }
    let dir = TempDir::new();
    let server = Server::start(&dir.0, 0, &[]);
    let client = client(&server.url()).await;
    create_stream_with_window(&client, Duration::from_mins(2)).await;
    let db = test_db().await;
    let relay_client = self::client(&server.url()).await;
    let system = WorkflowSystem::builder(relay_settings(&db))
        .router(pgoutbox_tests::relay_router(&relay_client, STREAM))
        .start()
        .await
        .unwrap();
    server.signal("STOP");
    let id = crate::support::publish_one(&db, one_order()).await;
    // Past the 2 s publish timeout of the first attempt.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    server.signal("CONT");
    let state = wait_for_state(
        &db,
        id,
        &["succeeded", "stalled", "dead"],
        Duration::from_secs(30),
    )
    .await;
    system.stop().await.unwrap();
    let attempts = history(&db, id).await;
    eprintln!("relay: PubAck timeout: {attempts:?}");
    assert_eq!(state, "succeeded", "{attempts:?}");
    let (_, outcome, error, _) = &attempts[0];
    assert_eq!(outcome.as_deref(), Some("timed_out"), "{attempts:?}");
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("didn't receive ack in time")),
        "the broker's message is kept: {attempts:?}"
    );
    assert!(
        attempts
            .iter()
            .all(|(_, o, _, _)| o.as_deref() != Some("failed")),
        "no attempt `failed`: {attempts:?}"
    );
    let (_, _, _, receipt) = attempts.last().unwrap();
    assert_eq!(
        receipt.as_ref().unwrap()["duplicate"],
        true,
        "the first send had landed: {attempts:?}"
    );
    assert_eq!(
        stream_messages(&client).await,
        1,
        "one message in the stream"
    );
}

/// The same unknown outcome with a stream whose duplicate window (500 ms)
/// is shorter than the time to the retry (the 2 s PubAck timeout, then a
/// 4 s backoff): a retry would not be deduplicated, so the operation is
/// `stalled` with a reason naming the window, and nothing is re-sent: the
/// stream still holds one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_outcome_past_the_duplicate_window_stalls() {
    if !wanted("relay::an_unknown_outcome_past_the_duplicate_window_stalls") {
        return;
    }
    let dir = TempDir::new();
    let server = Server::start(&dir.0, 0, &[]);
    let client = client(&server.url()).await;
    create_stream_with_window(&client, Duration::from_millis(500)).await;
    let db = test_db().await;
    let mut settings = relay_settings(&db);
    settings.workflow_system.backoff_initial = Duration::from_secs(4);
    settings.workflow_system.backoff_max = Duration::from_secs(4);
    let relay_client = self::client(&server.url()).await;
    let system = WorkflowSystem::builder(settings)
        .router(pgoutbox_tests::relay_router(&relay_client, STREAM))
        .start()
        .await
        .unwrap();
    server.signal("STOP");
    let id = crate::support::publish_one(&db, one_order()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.signal("CONT");
    let state = wait_for_state(
        &db,
        id,
        &["succeeded", "stalled", "dead"],
        Duration::from_secs(30),
    )
    .await;
    // Long enough for a retry after the 4 s backoff to have been sent.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = crate::support::status(&db, id).await;
    system.stop().await.unwrap();
    let attempts = history(&db, id).await;
    eprintln!("relay: window shorter than the backoff: {state}, {attempts:?}");
    assert_eq!(state, "stalled", "{attempts:?}");
    assert_eq!(later, "stalled", "it stays stalled: {attempts:?}");
    assert_eq!(attempts.len(), 1, "not re-sent: {attempts:?}");
    let (_, outcome, error, _) = &attempts[0];
    assert_eq!(outcome.as_deref(), Some("timed_out"));
    let error = error.as_deref().unwrap_or_default();
    assert!(
        error.contains("500ms duplicate window") && error.contains("after the first send"),
        "the reason names the window: {error}"
    );
    assert_eq!(stream_messages(&client).await, 1, "still one message");
}

/// A relay process killed (SIGKILL) while nats-server is frozen with its message
/// sent and the PubAck outstanding, the stream's duplicate window 500 ms:
/// the rescuer records the attempt `lost` a lease later, and the next
/// relay, checking the window again before it sends, does not re-send (a
/// copy would be stored): `stalled`, its attempt `aborted` naming the
/// window; the stream holds the one message that landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_with_a_puback_outstanding_does_not_resend_past_the_window() {
    if !wanted("relay::a_relay_killed_with_a_puback_outstanding_does_not_resend_past_the_window") {
        return;
    }
    let dir = TempDir::new();
    let server = Server::start(&dir.0, 0, &[]);
    let client = client(&server.url()).await;
    create_stream_with_window(&client, Duration::from_millis(500)).await;
    let db = test_db().await;
    let killed = Worker::start_relay(&db.url(), 4, &server.url(), STREAM);
    server.signal("STOP");
    let id = crate::support::publish_one(&db, one_order()).await;
    crate::support::wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome IS NULL",
        1,
        Duration::from_secs(10),
    )
    .await;
    // The claim is committed; the send follows at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    killed.kill();
    server.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream_messages(&client).await == 0 {
        assert!(Instant::now() < deadline, "the message sent never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let relay_client = self::client(&server.url()).await;
    let system = WorkflowSystem::builder(relay_settings(&db))
        .router(pgoutbox_tests::relay_router(&relay_client, STREAM))
        .start()
        .await
        .unwrap();
    let state = wait_for_state(
        &db,
        id,
        &["succeeded", "stalled", "dead"],
        Duration::from_secs(30),
    )
    .await;
    system.stop().await.unwrap();
    let attempts = history(&db, id).await;
    eprintln!("relay: killed with a PubAck outstanding: {state}, {attempts:?}");
    assert_eq!(state, "stalled", "{attempts:?}");
    let outcomes: Vec<Option<&str>> = attempts.iter().map(|(_, o, _, _)| o.as_deref()).collect();
    assert_eq!(outcomes, [Some("lost"), Some("aborted")], "{attempts:?}");
    let error = attempts[1].2.as_deref().unwrap_or_default();
    assert!(
        error.contains("did not send the message again")
            && error.contains("500ms duplicate window"),
        "{error}"
    );
    assert_eq!(
        stream_messages(&client).await,
        1,
        "one message in the stream"
    );
}

/// A relay stopped (`stop()`, `shutdown_wait` 2 s) while nats-server is
/// frozen with three messages sent and their acknowledgements outstanding (publish
/// timeout 30 s): the three attempts are `aborted` (unknown), not `failed`;
/// the next relay re-sends them within the duplicate window and JetStream
/// drops the copies: three messages, each operation `succeeded` once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stopped_with_pubacks_outstanding_records_them_unknown() {
    if !wanted("relay::a_relay_stopped_with_pubacks_outstanding_records_them_unknown") {
        return;
    }
    let dir = TempDir::new();
    let server = Server::start(&dir.0, 0, &[]);
    let client = client(&server.url()).await;
    create_stream_with_window(&client, Duration::from_mins(2)).await;
    let db = test_db().await;
    let router = |client: &async_nats::Client| {
        let options = pgoutbox::relay::JetStreamOptions {
            stream: Some(STREAM.to_owned()),
            publish_timeout: Duration::from_secs(30),
            max_in_flight: 256,
        };
        WorkflowRouter::with_prefix("relay").relay::<OrderPlaced>(Relay::jetstream_with(
            client,
            "events.orders.{region}",
            options,
        ))
    };
    let relay_client = self::client(&server.url()).await;
    let system = WorkflowSystem::builder(relay_settings(&db))
        .router(router(&relay_client))
        .start()
        .await
        .unwrap();
    server.signal("STOP");
    publish_orders(&db, 3).await;
    crate::support::wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome IS NULL",
        3,
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = system.stop().await.unwrap();
    server.signal("CONT");
    let outcomes: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT outcome, error FROM pgoutbox.attempts ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
    eprintln!("relay: stopped with PubAcks outstanding: {report:?}, {outcomes:?}");
    assert_eq!(report.aborted, 3, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|(o, e)| o.as_deref() == Some("aborted")
            && e.as_deref()
                .is_some_and(|e| e.contains("stopped waiting for the PubAck"))),
        "unknown, not failed: {outcomes:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream_messages(&client).await < 3 {
        assert!(Instant::now() < deadline, "the messages sent never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let system = WorkflowSystem::builder(relay_settings(&db))
        .router(router(&relay_client))
        .start()
        .await
        .unwrap();
    wait_all_succeeded(&db, 3, Duration::from_secs(30)).await;
    system.stop().await.unwrap();
    let duplicates = check_exactly_once(&db, &client, 3).await;
    assert_eq!(duplicates, 3, "the re-sent copies were dropped");
}

/// A TCP proxy in front of nats-server that can swallow the server's
/// replies and cut every connection, as a network that breaks after the
/// message was sent.
struct Proxy {
    port: u16,
    swallow: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: u16) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let swallow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (swallow_in, connections_in) = (swallow.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let swallow = swallow_in.clone();
                let task = tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = async {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    };
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n) = server_read.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            if !swallow.load(Ordering::SeqCst)
                                && client_write.write_all(&buf[..n]).await.is_err()
                            {
                                break;
                            }
                        }
                    };
                    tokio::select! { () = up => {}, () = down => {} }
                });
                connections_in.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            port,
            swallow,
            connections,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn swallow_replies(&self, on: bool) {
        self.swallow.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes every connection through the proxy (new ones are accepted).
    fn cut(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// The connection to nats-server cut after the message was sent (the
/// server stored it; its PubAck never reached the relay): an unknown
/// outcome (`timed_out` or `lost`), never `failed`; the retry is dropped
/// by JetStream as a duplicate; one message in the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_after_the_send_is_an_unknown_outcome() {
    if !wanted("relay::a_connection_cut_after_the_send_is_an_unknown_outcome") {
        return;
    }
    let dir = TempDir::new();
    let server = Server::start(&dir.0, 0, &[]);
    let client = client(&server.url()).await;
    create_stream_with_window(&client, Duration::from_mins(2)).await;
    let proxy = Proxy::start(server.port).await;
    let db = test_db().await;
    let relay_client = self::client(&proxy.url()).await;
    let system = WorkflowSystem::builder(relay_settings(&db))
        .router(pgoutbox_tests::relay_router(&relay_client, STREAM))
        .start()
        .await
        .unwrap();
    proxy.swallow_replies(true);
    let id = crate::support::publish_one(&db, one_order()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream_messages(&client).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the message never reached the stream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.cut();
    proxy.swallow_replies(false);
    let state = wait_for_state(
        &db,
        id,
        &["succeeded", "stalled", "dead"],
        Duration::from_secs(30),
    )
    .await;
    system.stop().await.unwrap();
    let attempts = history(&db, id).await;
    eprintln!("relay: connection cut after the send: {attempts:?}");
    assert_eq!(state, "succeeded", "{attempts:?}");
    let (_, outcome, error, _) = &attempts[0];
    assert!(
        matches!(outcome.as_deref(), Some("timed_out" | "lost")),
        "unknown, not failed: {attempts:?}"
    );
    assert!(
        error.as_deref().is_some_and(|e| e.contains("JetStream")),
        "{attempts:?}"
    );
    let (_, _, _, receipt) = attempts.last().unwrap();
    assert_eq!(receipt.as_ref().unwrap()["duplicate"], true, "{attempts:?}");
    assert_eq!(
        stream_messages(&client).await,
        1,
        "one message in the stream"
    );
}

/// The stream's duplicate window changed after the relay started (500 ms
/// at start-up, then 2 minutes): before stalling an operation for the
/// window it read at start, the relay reads it again, so the unknown
/// outcome (a PubAck swallowed on the way back) is retried, and JetStream
/// drops the copy: `succeeded`, one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_duplicate_window_is_read_again_before_stalling() {
    if !wanted("relay::a_changed_duplicate_window_is_read_again_before_stalling") {
        return;
    }
    let dir = TempDir::new();
    let server = Server::start(&dir.0, 0, &[]);
    let client = client(&server.url()).await;
    create_stream_with_window(&client, Duration::from_millis(500)).await;
    let proxy = Proxy::start(server.port).await;
    let db = test_db().await;
    let relay_client = self::client(&proxy.url()).await;
    let system = WorkflowSystem::builder(relay_settings(&db))
        .router(pgoutbox_tests::relay_router(&relay_client, STREAM))
        .start()
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    js.update_stream(jetstream::stream::Config {
        name: STREAM.to_owned(),
        subjects: vec!["events.>".to_owned()],
        duplicate_window: Duration::from_mins(2),
        ..Default::default()
    })
    .await
    .expect("the stream's window changed");
    proxy.swallow_replies(true);
    let id = crate::support::publish_one(&db, one_order()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream_messages(&client).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the message never reached the stream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its PubAck is gone; what follows gets through.
    proxy.swallow_replies(false);
    let state = wait_for_state(
        &db,
        id,
        &["succeeded", "stalled", "dead"],
        Duration::from_secs(30),
    )
    .await;
    system.stop().await.unwrap();
    let attempts = history(&db, id).await;
    eprintln!("relay: window changed after start-up: {attempts:?}");
    assert_eq!(state, "succeeded", "{attempts:?}");
    assert_eq!(attempts[0].1.as_deref(), Some("timed_out"), "{attempts:?}");
    let (_, _, _, receipt) = attempts.last().unwrap();
    assert_eq!(receipt.as_ref().unwrap()["duplicate"], true, "{attempts:?}");
    assert_eq!(
        stream_messages(&client).await,
        1,
        "one message in the stream"
    );
}

/// 10,000 operations while nats-server is frozen (SIGSTOP) past the
/// PubAck timeout and thawed three times (more in soak mode): exactly one
/// stream message per operation, every operation `succeeded` or
/// `stalled`, and no attempt `failed` for an operation whose message is in
/// the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_operations_through_freezes_and_thaws() {
    if !wanted("relay::ten_thousand_operations_through_freezes_and_thaws") {
        return;
    }
    let started = Instant::now();
    let dir = TempDir::new();
    let server = Server::start(&dir.0, 0, &[]);
    let client = client(&server.url()).await;
    create_stream_with_window(&client, Duration::from_mins(2)).await;
    let db = test_db().await;
    let n = 10_000 * soak() as usize;
    publish_orders(&db, n).await;
    let relay_client = self::client(&server.url()).await;
    let system = WorkflowSystem::builder(relay_settings(&db))
        .router(pgoutbox_tests::relay_router(&relay_client, STREAM))
        .start()
        .await
        .unwrap();
    let succeeded = "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'";
    let freezes = 3 * soak();
    for freeze in 0..freezes {
        // Each freeze begins once a further part of the run is relayed.
        let target = i64::try_from(n * (freeze as usize + 1) / (freezes as usize + 2)).unwrap();
        let deadline = Instant::now() + Duration::from_mins(1);
        while count(&db, succeeded).await < target {
            assert!(Instant::now() < deadline, "the relay does not progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.signal("STOP");
        // Past the 2 s PubAck timeout of what was in flight.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        server.signal("CONT");
    }
    let done = "SELECT count(*) FROM pgoutbox.operations WHERE status IN ('succeeded', 'stalled')";
    crate::support::wait_for_count(&db, done, i64::try_from(n).unwrap(), Duration::from_mins(2))
        .await;
    system.stop().await.unwrap();
    // One message per operation, by `Nats-Msg-Id`.
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut in_stream: HashMap<String, usize> = HashMap::new();
    for sequence in state.first_sequence..=state.last_sequence {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let msg_id = message
            .headers
            .get(pgoutbox::relay::MSG_ID)
            .expect("a message id")
            .as_str()
            .to_owned();
        *in_stream.entry(msg_id).or_default() += 1;
    }
    let rows: Vec<(uuid::Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT o.external_key, o.status,
                (SELECT count(*) FROM pgoutbox.attempts a
                  WHERE a.operation_id = o.id AND a.outcome = 'failed'),
                (SELECT count(*) FROM pgoutbox.attempts a
                  WHERE a.operation_id = o.id AND a.outcome IN ('timed_out', 'lost', 'aborted'))
         FROM pgoutbox.operations o",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), n);
    let (mut stalled, mut unknown) = (0, 0);
    for (key, status, failed, in_doubt) in &rows {
        let copies = in_stream.get(&key.to_string()).copied().unwrap_or(0);
        assert_eq!(
            copies, 1,
            "operation {key} ({status}): {copies} messages in the stream"
        );
        assert!(
            *failed == 0,
            "operation {key} ({status}) has {failed} `failed` attempts but its message is in the stream"
        );
        stalled += usize::from(status == "stalled");
        unknown += in_doubt;
    }
    assert_eq!(in_stream.len(), n, "no message of another operation");
    assert!(unknown > 0, "no freeze landed mid-relay");
    eprintln!(
        "relay: {n} operations, {freezes} freezes: {unknown} unknown outcomes, {stalled} stalled, \
         1 message each, in {:?}",
        started.elapsed()
    );
}

/// A message over the server's `max_payload`: the operation becomes
/// `dead`, its error naming the limit; the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_payload_is_dead() {
    if !wanted("relay::a_message_over_max_payload_is_dead") {
        return;
    }
    let dir = TempDir::new();
    let server = Server::start(&dir.0, 0, &[]);
    let client = client(&server.url()).await;
    create_stream(&client, 1).await;
    let db = test_db().await;
    let big = crate::support::publish_one(
        &db,
        OrderPlaced {
            order_id: 1,
            region: "eu".into(),
            note: "x".repeat(MAX_PAYLOAD + 1),
        },
    )
    .await;
    publish_orders(&db, 10).await;
    let system = WorkflowSystem::builder(relay_settings(&db))
        .router(pgoutbox_tests::relay_router(&client, STREAM))
        .start()
        .await
        .unwrap();
    crate::support::wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status IN ('succeeded', 'dead')",
        11,
        Duration::from_secs(30),
    )
    .await;
    system.stop().await.unwrap();
    assert_eq!(crate::support::status(&db, big).await, "dead");
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM pgoutbox.operations WHERE id = $1")
            .bind(big.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(
        error.contains(&MAX_PAYLOAD.to_string()) && error.contains("max_payload"),
        "{error}"
    );
    let attempts = count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome = 'failed'",
    )
    .await;
    assert_eq!(attempts, 1, "not retried");
}

/// Start-up refusals that need a server: a stream that does not exist, a
/// subject no stream captures. Nothing is claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_checks_of_the_stream() {
    if !wanted("relay::start_up_checks_of_the_stream") {
        return;
    }
    let dir = TempDir::new();
    let server = Server::start(&dir.0, 0, &[]);
    let client = client(&server.url()).await;
    create_stream(&client, 1).await;
    let db = test_db().await;
    publish_orders(&db, 3).await;
    let missing = pgoutbox_tests::relay_router(&client, "NO_SUCH_STREAM");
    let err = WorkflowSystem::builder(relay_settings(&db))
        .router(missing)
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StartError::Relay(RelayError::NoStream { stream }) if stream == "NO_SUCH_STREAM"),
        "{err}"
    );
    assert!(
        err.to_string().contains("`NO_SUCH_STREAM` does not exist"),
        "{err}"
    );
    let elsewhere = WorkflowRouter::new()
        .relay::<OrderPlaced>(Relay::jetstream(&client, "elsewhere.orders.{region}"));
    let err = WorkflowSystem::builder(relay_settings(&db))
        .router(elsewhere)
        .start()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no JetStream stream captures subject `elsewhere.orders.x`"),
        "{err}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.attempts").await,
        0,
        "nothing claimed"
    );
}

/// An unreachable NATS URL: a clear error, before anything is claimed.
#[tokio::test]
async fn an_unreachable_url_is_a_clear_error() {
    let mut nats = pgoutbox::Settings::default().relay.nats;
    let port = free_port(); // nobody listens there
    nats.url = Some(format!("nats://127.0.0.1:{port}"));
    nats.publish_timeout = Duration::from_secs(2);
    let err = pgoutbox::relay::connect(&nats).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, RelayError::Unreachable { .. })
            && text.contains(&format!("127.0.0.1:{port}")),
        "{text}"
    );
    // A client that never connected is refused at start-up too.
    let pending = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap();
    let db = test_db().await;
    publish_orders(&db, 3).await;
    let err = WorkflowSystem::builder(relay_settings(&db))
        .router(pgoutbox_tests::relay_router(&pending, STREAM))
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("cannot reach NATS at"), "{err}");
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.attempts").await,
        0,
        "nothing claimed"
    );
}

/// A client that has not connected (no server needed).
async fn offline_client() -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(format!("nats://127.0.0.1:{}", free_port()))
        .await
        .unwrap()
}

/// The router's refusals: a subject that is not valid, a template field
/// the payload does not have or that is not a scalar, an operation with
/// both a handler and a relay (both places named), a relayed operation
/// not declared idempotent.
#[tokio::test]
async fn the_router_refuses_bad_relays() {
    let client = offline_client().await;
    let registry = pgoutbox::Registry::from_inventory().unwrap();
    let resolve = |subject: &str| {
        WorkflowRouter::new()
            .relay::<OrderPlaced>(Relay::jetstream(&client, subject))
            .resolve(&registry)
            .map(|_| ())
    };
    resolve("events.orders.{region}").unwrap();
    for (subject, expected) in [
        ("events..placed", "has an empty token"),
        ("events.*", "is a wildcard"),
        ("events.orders placed", "holds ' '"),
        (
            "events.{nope}",
            "names field `nope`, which its payload does not have",
        ),
        ("events.{region", "a `{` without its `}`"),
    ] {
        let err = resolve(subject).unwrap_err();
        assert!(matches!(err, RouterError::RelaySubject { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{subject}: {err}");
        assert!(
            err.to_string().contains("relay.rs:"),
            "names the relay's place: {err}"
        );
    }

    // A handler and a relay for one name.
    let err = WorkflowRouter::new()
        .relay::<pgoutbox_tests::IdempotentEffect>(Relay::jetstream(&client, "events.x"))
        .resolve(&registry)
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RouterError::RelayAndHandler { .. }), "{text}");
    assert!(
        text.contains("handler `idempotent_effect` at") && text.contains("relay (at "),
        "{text}"
    );

    // Not idempotent.
    #[pgoutbox::operation("relay.not_idempotent")]
    struct NotIdempotent {
        id: i64,
    }
    let _ = NotIdempotent { id: 0 }.id;
    let err = WorkflowRouter::new()
        .relay::<NotIdempotent>(Relay::jetstream(&client, "events.x"))
        .resolve(&registry)
        .unwrap_err();
    assert!(
        matches!(err, RouterError::RelayNotIdempotent { .. }),
        "{err}"
    );

    // A field that is not a scalar, or optional.
    #[pgoutbox::operation("relay.shaped", idempotent)]
    struct Shaped {
        tags: Vec<String>,
        maybe: Option<String>,
        price: f64,
    }
    let _ = Shaped {
        tags: vec![],
        maybe: None,
        price: 0.0,
    }
    .tags;
    for (subject, expected) in [
        ("events.{tags}", "of type `array`"),
        ("events.{maybe}", "optional"),
        ("events.{price}", "floating-point"),
    ] {
        let err = WorkflowRouter::new()
            .relay::<Shaped>(Relay::jetstream(&client, subject))
            .resolve(&registry)
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{subject}: {err}");
    }
}

/// The consumer's helper: the name and the payload checked, the schema
/// change reported.
#[test]
fn decode_checks_name_and_payload() {
    use pgoutbox::Operation as _;
    use pgoutbox::relay::{DecodeError, decode, schema_changed};
    let message = |name: &str, hash: &str, body: &str| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(pgoutbox::relay::NAME, name);
        headers.insert(pgoutbox::relay::SCHEMA_HASH, hash);
        async_nats::Message {
            subject: "events.orders.eu".into(),
            reply: None,
            payload: body.to_owned().into(),
            headers: Some(headers),
            status: None,
            description: None,
            length: 0,
        }
    };
    let hash = OrderPlaced::schema().hash();
    let ok = message(
        "relay.order_placed",
        hash,
        r#"{"order_id":1,"region":"eu","note":""}"#,
    );
    assert_eq!(decode::<OrderPlaced>(&ok).unwrap().order_id, 1);
    assert!(!schema_changed::<OrderPlaced>(&ok));
    let other = message("relay.other", hash, "{}");
    assert!(matches!(
        decode::<OrderPlaced>(&other),
        Err(DecodeError::UnknownName { .. })
    ));
    let stale = message("relay.order_placed", "0ld", r#"{"order_id":"one"}"#);
    let err = decode::<OrderPlaced>(&stale).unwrap_err();
    assert!(
        err.to_string().contains("no longer decodes")
            && err.to_string().contains("another version"),
        "{err}"
    );
}

/// The relay's settings: each bad value refused naming its key, the URL's
/// secrets masked.
#[test]
fn relay_settings_are_validated_and_masked() {
    let check = |edit: &dyn Fn(&mut pgoutbox::NatsSettings)| {
        let mut settings = pgoutbox::Settings::default();
        edit(&mut settings.relay.nats);
        settings.validate().map_err(|e| e.to_string())
    };
    check(&|_| {}).unwrap();
    check(&|n| n.url = Some("nats://a:4222, tls://b:4222".into())).unwrap();
    let err = check(&|n| n.url = Some("http://a:4222".into())).unwrap_err();
    assert!(
        err.starts_with("invalid setting `relay.nats.url`: `http://`"),
        "{err}"
    );
    let err = check(&|n| n.url = Some("nats://user:s3cret@".into())).unwrap_err();
    assert!(
        err.contains("relay.nats.url") && !err.contains("s3cret"),
        "{err}"
    );
    let err = check(&|n| n.credentials_file = Some("/nonexistent/x.creds".into())).unwrap_err();
    assert!(
        err.contains("relay.nats.credentials_file") && err.contains("no such file"),
        "{err}"
    );
    let err = check(&|n| n.stream = Some("EVENTS.X".into())).unwrap_err();
    assert!(err.contains("relay.nats.stream"), "{err}");
    let err = check(&|n| n.max_in_flight = 0).unwrap_err();
    assert!(err.contains("relay.nats.max_in_flight"), "{err}");
    let err = check(&|n| n.publish_timeout = Duration::ZERO).unwrap_err();
    assert!(err.contains("relay.nats.publish_timeout"), "{err}");
    let mut settings = pgoutbox::Settings::default();
    settings.relay.nats.url = Some("nats://relay:s3cret@a:4222,nats://t0ken@b:4222".into());
    let printed = format!("{settings:?}");
    assert!(
        !printed.contains("s3cret") && !printed.contains("t0ken"),
        "{printed}"
    );
    assert!(
        printed.contains("nats://relay:***@a:4222,nats://***@b:4222"),
        "{printed}"
    );
}
