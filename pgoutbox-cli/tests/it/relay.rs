//! `pgoutbox relay` against a real `nats-server` (behind the switch
//! `PGOUTBOX_TEST_NATS=1`, like the relay tests of `tests/it/relay.rs`),
//! and its refusals that need no server.

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgoutbox::relay::async_nats::{self, jetstream};
use pgoutbox::testing::TestDatabase;

/// Published by the test, relayed by the command without its type.
#[pgoutbox::operation("cli.relay_event")]
struct RelayEvent {
    n: i64,
}

/// Published by the test, relayed by the command; `idempotent`, so an
/// unknown outcome may be re-sent (within the stream's duplicate window).
#[pgoutbox::operation("cli.relay_idempotent", idempotent)]
struct IdempotentEvent {
    n: i64,
}

fn wanted(test: &str) -> bool {
    match std::env::var("PGOUTBOX_TEST_NATS").as_deref() {
        Ok("1") => true,
        Ok("0") | Err(std::env::VarError::NotPresent) => {
            eprintln!(
                "{test}: not run: set PGOUTBOX_TEST_NATS=1 to run the relay tests (needs `nats-server`)"
            );
            false
        }
        Ok(other) => panic!("PGOUTBOX_TEST_NATS must be `1` or `0`, not {other:?}"),
        Err(e) => panic!("PGOUTBOX_TEST_NATS: {e}"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `nats-server -js` on a free port with a store in `dir`; killed on drop.
struct Server(Child, PathBuf);

impl Server {
    fn start() -> (Server, String) {
        let program = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .expect("nats-server is not installed, but PGOUTBOX_TEST_NATS=1 asks for it: `apt-get install nats-server`");
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("pgoutbox-cli-nats-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(program)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server does not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        (Server(child, dir), format!("nats://127.0.0.1:{port}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn pgoutbox(db: &TestDatabase) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("pgoutbox"));
    cmd.env_remove("PGOUTBOX_SCHEMA")
        .env_remove("PGOUTBOX_CONFIG_FILE")
        .env("DATABASE_URL", db.url());
    cmd
}

async fn publish(db: &TestDatabase, n: i64) {
    let mut tx = db.pool().begin().await.unwrap();
    pgoutbox::publish_many(&mut tx, (0..n).map(|n| RelayEvent { n }))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Forwards the payloads as stored to `prefix.name`, records the PubAck
/// that `ops show` prints, and stops on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_forwards_payloads_by_name() {
    if !wanted("relay::relay_forwards_payloads_by_name") {
        return;
    }
    let (_server, url) = Server::start();
    let client = async_nats::connect(&url).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: "EVENTS".into(),
        subjects: vec!["events.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let db = TestDatabase::new().await.unwrap();
    publish(&db, 100).await;
    refuses_a_pattern_that_matches_nothing(&db, &url);

    let mut child = pgoutbox(&db)
        .args([
            "relay",
            "--nats",
            &url,
            "--names",
            "cli.*",
            "--subject-prefix",
            "events",
            "--stream",
            "EVENTS",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("relaying cli.relay_event to NATS"),
        "{line}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        if done == 100 {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of 100 relayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());

    let mut stream = js.get_stream("EVENTS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 100);
    let message = stream.get_raw_message(1).await.unwrap();
    assert_eq!(message.subject.as_str(), "events.cli.relay_event");
    let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    let id: i64 = message
        .headers
        .get(pgoutbox::relay::ID)
        .unwrap()
        .as_str()
        .parse()
        .unwrap();
    let stored: serde_json::Value =
        sqlx::query_scalar("SELECT payload FROM pgoutbox.operations WHERE id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(body, stored);

    let show = pgoutbox(&db)
        .args(["ops", "show", &id.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("published to JetStream stream EVENTS, sequence 1"),
        "{text}"
    );
    let json = pgoutbox(&db)
        .args(["ops", "show", &id.to_string(), "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["attempts"][0]["result"]["sequence"], 1, "{json}");
}

/// The reproduction: `pgoutbox relay --publish-timeout 2s` (no
/// `--stream`: the stream found by subject), nats-server stopped (SIGSTOP)
/// while an operation is published, then resumed (SIGCONT); the stream's duplicate
/// window 500 ms, the backoff 4 s. The attempt is `timed_out` (an unknown
/// outcome, with the client's message), and since a retry would come after
/// the window, the operation is `stalled` with a reason naming it; nothing
/// is re-sent: one message per operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // One scenario, step by step.
async fn relay_stalls_an_unknown_outcome_past_the_duplicate_window() {
    if !wanted("relay::relay_stalls_an_unknown_outcome_past_the_duplicate_window") {
        return;
    }
    let (server, url) = Server::start();
    let client = async_nats::connect(&url).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(jetstream::stream::Config {
        name: "EVENTS".into(),
        subjects: vec!["events.>".into()],
        duplicate_window: Duration::from_millis(500),
        ..Default::default()
    })
    .await
    .unwrap();
    let db = TestDatabase::new().await.unwrap();
    let status = async |id: pgoutbox::OperationId| -> String {
        sqlx::query_scalar("SELECT status FROM pgoutbox.operations WHERE id = $1")
            .bind(id.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap()
    };
    let publish_one = async |n: i64| {
        let mut tx = db.pool().begin().await.unwrap();
        let id = pgoutbox::publish(&mut tx, IdempotentEvent { n })
            .await
            .unwrap();
        tx.commit().await.unwrap();
        id
    };
    // The name is known before the command starts.
    let first = publish_one(1).await;
    let mut child = pgoutbox(&db)
        .args([
            "relay",
            "--nats",
            &url,
            "--names",
            "cli.relay_idempotent",
            "--subject-prefix",
            "events",
            "--publish-timeout",
            "2s",
        ])
        .env("PGOUTBOX_WORKFLOW_SYSTEM__BACKOFF_INITIAL", "4s")
        .env("PGOUTBOX_WORKFLOW_SYSTEM__BACKOFF_MAX", "4s")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("relaying cli.relay_idempotent"), "{line}");
    let wait_for = async |id, states: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = status(id).await;
            if states.contains(&state.as_str()) {
                return state;
            }
            assert!(Instant::now() < deadline, "operation {id}: {state}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait_for(first, &["succeeded"]).await;
    let signal = |signal: &str| {
        assert!(
            Command::new("kill")
                .args([signal, &server.0.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    let second = publish_one(2).await;
    // Claimed and sent while the server is frozen, then past the 2 s
    // publish timeout.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pgoutbox.attempts WHERE operation_id = $1")
                .bind(second.as_i64())
                .fetch_one(db.pool())
                .await
                .unwrap();
        if started > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "operation {second} never claimed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal("-CONT");
    let state = wait_for(second, &["stalled", "succeeded", "dead"]).await;
    // Past the 4 s backoff: a retry would have been sent by now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = status(second).await;
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
    let attempts: Vec<(String, String)> = sqlx::query_as(
        "SELECT outcome, coalesce(error, '') FROM pgoutbox.attempts
         WHERE operation_id = $1 ORDER BY id",
    )
    .bind(second.as_i64())
    .fetch_all(db.pool())
    .await
    .unwrap();
    eprintln!("relay: {state}, then {later}: {attempts:?}");
    assert_eq!(
        (state.as_str(), later.as_str()),
        ("stalled", "stalled"),
        "{attempts:?}"
    );
    assert_eq!(attempts.len(), 1, "not re-sent: {attempts:?}");
    assert_eq!(attempts[0].0, "timed_out", "{attempts:?}");
    assert!(
        attempts[0].1.contains("didn't receive ack in time")
            && attempts[0]
                .1
                .contains("past the stream's 500ms duplicate window"),
        "{attempts:?}"
    );
    let mut stream = js.get_stream("EVENTS").await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        2,
        "one message per operation"
    );
}

/// `nothing.else` matches no name: the command refuses to start.
fn refuses_a_pattern_that_matches_nothing(db: &TestDatabase, url: &str) {
    let output = pgoutbox(db)
        .args([
            "relay",
            "--nats",
            url,
            "--names",
            "cli.*,nothing.else",
            "--stream",
            "EVENTS",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "nothing relayed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no operation name matches `nothing.else`"),
        "{stderr}"
    );
}

/// An unreachable NATS URL and a bad setting: clear errors, nothing
/// claimed.
#[tokio::test]
async fn relay_refuses_what_cannot_work() {
    let db = TestDatabase::new().await.unwrap();
    publish(&db, 1).await;
    let port = free_port();
    let output = pgoutbox(&db)
        .args([
            "relay",
            "--nats",
            &format!("nats://127.0.0.1:{port}"),
            "--names",
            "cli.*",
            "--publish-timeout",
            "2s",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot reach NATS at nats://127.0.0.1:{port}")),
        "{stderr}"
    );
    let output = pgoutbox(&db)
        .args(["relay", "--nats", "http://x", "--names", "cli.*"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid setting `relay.nats.url`"),
        "{stderr}"
    );
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM pgoutbox.attempts")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(attempts, 0, "nothing claimed");
}
