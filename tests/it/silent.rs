//! A connection that goes silent (scenario 4): a loopback TCP proxy between
//! a worker and PostgreSQL that, on command, stops forwarding in both
//! directions without closing anything, for the connections it has and for
//! the ones it accepts meanwhile. Leases and client-side timeouts must
//! recover, and nothing may hang forever.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgoutbox::WorkflowSystem;
use pgoutbox::prelude::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::ops::{Behaviour, IdempotentWait, Work, effects};
use crate::support::{count, settings, test_db, wait_for_count};

/// A TCP proxy on a free loopback port to `upstream`.
struct Proxy {
    port: u16,
    silent: watch::Sender<bool>,
    tasks: Arc<std::sync::Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (silent, _) = watch::channel(false);
        let tasks = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let accept = tokio::spawn({
            let silent = silent.clone();
            let tasks = Arc::clone(&tasks);
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    let silent = silent.subscribe();
                    tasks
                        .lock()
                        .unwrap()
                        .spawn(connection(client, upstream, silent));
                }
            }
        });
        Proxy {
            port,
            silent,
            tasks,
            accept,
        }
    }

    /// Stops forwarding; nothing is closed.
    fn go_silent(&self) {
        self.silent.send_replace(true);
    }

    /// Forwards again what was held and what comes next.
    fn resume(&self) {
        self.silent.send_replace(false);
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.tasks.lock().unwrap().abort_all();
    }
}

/// Waits while the proxy is silent.
async fn while_silent(silent: &mut watch::Receiver<bool>) {
    // An error means the proxy is gone: then nothing is held any more.
    let _ = silent.wait_for(|s| !*s).await;
}

/// One proxied connection. A new connection is not even forwarded to
/// PostgreSQL while the proxy is silent.
async fn connection(client: TcpStream, upstream: SocketAddr, mut silent: watch::Receiver<bool>) {
    while_silent(&mut silent).await;
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, silent.clone()),
        pump(server_read, client_write, silent),
    );
}

/// Copies one direction. The silence is checked after every read, before
/// the write: bytes that arrive once the proxy is silent are held, never
/// forwarded, whichever direction they travel and whenever the read began.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut silent: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while_silent(&mut silent).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn router() -> WorkflowRouter {
    WorkflowRouter::new()
        .operation::<Work>()
        .operation::<IdempotentWait>()
}

/// Whether `worker`'s last heartbeat is more than 1.5 s old.
async fn stale(db: &pgoutbox::testing::TestDatabase, worker: uuid::Uuid) -> bool {
    sqlx::query_scalar(
        "SELECT heartbeat_at < now() - interval '1500 milliseconds' FROM pgoutbox.workers WHERE id = $1",
    )
    .bind(worker)
    .fetch_one(db.pool())
    .await
    .unwrap()
}

/// Publishes `pairs` plain and `pairs` idempotent operations that take
/// `ms` on their first attempt.
async fn publish_pairs(db: &pgoutbox::testing::TestDatabase, key: &str, pairs: i64, ms: u64) {
    let mut tx = db.pool().begin().await.unwrap();
    for _ in 0..pairs {
        let behaviour = if ms == 0 {
            Behaviour::Succeed
        } else {
            Behaviour::SleepMs(ms)
        };
        let work = Work {
            key: key.to_owned(),
            behaviour,
        };
        pgoutbox::publish(&mut tx, work).await.unwrap();
        let wait = IdempotentWait {
            key: key.to_owned(),
            ms,
        };
        pgoutbox::publish(&mut tx, wait).await.unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_loses_the_leases_to_a_worker_that_can_still_reach_the_database() {
    const QUICK: i64 = 20;
    let db = test_db().await;
    let k = uuid::Uuid::new_v4().to_string();
    let (proxy, a) = worker_behind_proxy(&db, &k).await;

    proxy.go_silent();
    let silent_at = Instant::now();
    // The heartbeat cannot pass: two leases later A's row is stale. (The
    // intermittent earlier attempt let bytes read before the silence
    // through; here every byte read afterwards is held.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        stale(&db, a.worker_id()).await,
        "a heartbeat went through the silent proxy"
    );

    // Worker B, on a direct connection, rescues A's expired leases and
    // does the work published meanwhile.
    let b = WorkflowSystem::builder(settings(&db))
        .router(router())
        .start()
        .await
        .unwrap();
    publish_pairs(&db, &k, QUICK / 2, 0).await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status IN ('pending', 'retrying', 'running')",
        0,
        Duration::from_secs(20),
    )
    .await;

    // A stops within a bound although every statement it sends hangs. By
    // design that is shutdown_wait plus a few leases (1-3 s here); the
    // bound is loose because the 2-core CI machine runs this beside the
    // rest of the suite (one run took 10.8 s): what matters is that stop()
    // returns at all.
    let stopping = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(30), a.stop()).await;
    let stop_took = stopping.elapsed();
    assert!(stopped.is_ok(), "stop() hung on the silent connection");
    drop(proxy);
    b.stop().await.unwrap();
    eprintln!(
        "silent for {:?}; A's stop() took {stop_took:?} ({:?})",
        silent_at.elapsed(),
        stopped.unwrap().map(|r| r.aborted)
    );

    // Every operation ended exactly once: A's in-flight attempts are `lost`
    // (recorded by B's rescuer), the non-idempotent ones stalled, the
    // idempotent ones retried by B; the rest succeeded once.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.attempts WHERE outcome = 'lost'"
        )
        .await,
        4
    );
    assert_ended_exactly_once(&db, &k, QUICK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_connection_comes_back_recovers_on_its_own() {
    const QUICK: i64 = 10;
    let db = test_db().await;
    let k = format!("resume-{}", uuid::Uuid::new_v4().simple());
    let (proxy, a) = worker_behind_proxy(&db, &k).await;

    // Silent for three leases: A cannot renew, aborts its handlers and
    // cannot record them either.
    proxy.go_silent();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        stale(&db, a.worker_id()).await,
        "a heartbeat went through the silent proxy"
    );
    // Work published meanwhile waits.
    publish_pairs(&db, &k, QUICK / 2, 0).await;

    // The connection comes back: A settles the in-doubt attempts (its own
    // rescuer, or its records if they get through first) and does the new
    // work, with no other worker's help.
    proxy.resume();
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status IN ('pending', 'retrying', 'running')",
        0,
        Duration::from_secs(30),
    )
    .await;
    let stopped = tokio::time::timeout(Duration::from_secs(30), a.stop()).await;
    assert!(
        stopped.is_ok(),
        "stop() hung after the connection came back"
    );
    stopped.unwrap().unwrap();

    // The in-flight non-idempotent ones are stalled, the idempotent ones
    // retried to success, the new ones succeeded: once each.
    assert_ended_exactly_once(&db, &k, QUICK).await;
    drop(proxy);
}

/// Starts a proxy to `db`'s server and worker A behind it (its pool, its
/// LISTEN connection, its heartbeat all go through the proxy), publishes
/// two pairs of one-minute operations under `key` and waits until all four
/// handlers have started on A (`n_workers` = 4, so A claims nothing more).
async fn worker_behind_proxy(
    db: &pgoutbox::testing::TestDatabase,
    key: &str,
) -> (Proxy, WorkflowSystem) {
    let server = db.connect_options();
    let upstream: SocketAddr = format!("{}:{}", server.get_host(), server.get_port())
        .parse()
        .expect("the test server is on a loopback address");
    let proxy = Proxy::start(upstream).await;
    let mut through = settings(db);
    through.database.url = Some(proxy.url(db.name()));
    through.database.acquire_timeout = Duration::from_secs(2);
    let a = WorkflowSystem::builder(through)
        .router(router())
        .start()
        .await
        .unwrap();
    publish_pairs(db, key, 2, 60_000).await;
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome IS NULL",
        4,
        Duration::from_secs(10),
    )
    .await;
    // A committed claim is not yet a started handler: the claim's answer
    // may still be on its way to A. Go on only once all four handlers have
    // started, or a silence cutting that answer off leaves operations that
    // never ran (rightly `stalled`, but not what these tests count).
    let deadline = Instant::now() + Duration::from_secs(10);
    while effects(key).len() < 4 {
        assert!(Instant::now() < deadline, "A's four handlers did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (proxy, a)
}

/// Every operation of [`worker_behind_proxy`] plus `quick` published
/// later ended exactly once: the two in-flight non-idempotent ones
/// stalled, everything else succeeded once, every attempt has an outcome,
/// and only the two in-flight idempotent handlers ran twice.
async fn assert_ended_exactly_once(db: &pgoutbox::testing::TestDatabase, key: &str, quick: i64) {
    assert_eq!(
        count(db, "SELECT count(*) FROM pgoutbox.operations").await,
        4 + quick
    );
    assert_eq!(
        count(db, "SELECT count(*) FROM pgoutbox.operations WHERE status = 'stalled' AND name = 'test.work'").await,
        2
    );
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'"
        )
        .await,
        2 + quick
    );
    assert_eq!(
        count(
            db,
            "SELECT count(*) FROM pgoutbox.attempts WHERE outcome IS NULL"
        )
        .await,
        0
    );
    assert_eq!(
        count(db, "SELECT count(*) FROM pgoutbox.operations o WHERE o.status = 'succeeded' AND \
                    (SELECT count(*) FROM pgoutbox.attempts a WHERE a.operation_id = o.id AND a.outcome = 'succeeded') <> 1").await,
        0,
        "no duplicate success"
    );
    // Handlers ran once each, the in-flight idempotent ones twice.
    let ran = effects(key);
    let mut once = ran.clone();
    once.sort_unstable();
    once.dedup();
    assert_eq!(once.len(), usize::try_from(4 + quick).unwrap());
    assert_eq!(ran.len(), once.len() + 2, "{ran:?}");
}
