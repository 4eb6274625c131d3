//! W6: the relay to NATS JetStream. 20,000 operations relayed to a local
//! JetStream stream, beside the same run's baseline: the same 20,000
//! payloads, with the same headers, published with `async-nats` directly,
//! at the same in-flight limit (the client's own bound, as the relay's
//! JetStream context uses it).
//!
//! It starts its own `nats-server -js` (the Debian package) on a free
//! loopback port with a temporary store directory, and stops it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgoutbox::prelude::*;
use pgoutbox::relay::async_nats::{self, jetstream};
use pgoutbox::relay::{JetStreamOptions, Relay};
use pgoutbox::testing::TestDatabase;

use crate::Figure;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Operations per run.
const N: usize = 20_000;
/// Messages awaiting their PubAck, on both sides.
const IN_FLIGHT: usize = 256;
/// `workflow_system.idempotent_claim_ahead` of the third relay figure: as
/// many operations claimed beyond the free slots as may await a PubAck.
const CLAIM_AHEAD: usize = IN_FLIGHT;

/// An event as an application would relay it.
#[operation("bench.relayed", idempotent)]
struct Relayed {
    order_id: i64,
    region: String,
    customer: String,
    amount_cents: i64,
}

fn payloads() -> Vec<Relayed> {
    (0..N)
        .map(|i| Relayed {
            order_id: i64::try_from(i).unwrap_or_default(),
            region: ["eu", "us", "ap"][i % 3].to_owned(),
            customer: format!("customer-{:06}", i * 7919 % 1_000_003),
            amount_cents: i64::try_from(i % 10_000).unwrap_or_default() * 13,
        })
        .collect()
}

/// Whether `nats-server` is installed (W6 needs it).
pub(crate) fn available() -> bool {
    program().is_some()
}

fn program() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("nats-server"))
                .find(|p| p.is_file())
        })
        .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()))
}

/// A private `nats-server -js`, killed (and its store removed) on drop.
struct Server {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Server {
    fn start() -> Res<Server> {
        let program = program().ok_or("W6 needs `nats-server` (apt-get install nats-server)")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("pgoutbox-bench-nats-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(program)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("nats-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Server {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh, empty stream `name` capturing `subjects`.
async fn fresh_stream(js: &jetstream::Context, name: &str, subjects: &str) -> Res<()> {
    let _ = js.delete_stream(name).await;
    js.create_stream(jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![subjects.to_owned()],
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// The relay: `N` operations, 64 handler slots (so 256 may await their
/// PubAck), `IN_FLIGHT` for the client; with `async_commit`, the claims
/// and successes of these idempotent operations commit asynchronously
/// (`workflow_system.idempotent_async_commit`: a database crash may forget
/// a success, and the message is then sent again, dropped by JetStream
/// within its duplicate window). Timed by the database's clock from
/// the first attempt's start to the last attempt's end, as the drains of
/// W1 are.
async fn relay_run(
    server: &Server,
    js: &jetstream::Context,
    async_commit: bool,
    claim_ahead: usize,
) -> Res<f64> {
    fresh_stream(js, "W6_RELAY", "bench.relay.>").await?;
    let db = TestDatabase::new().await?;
    let mut conn = db.pool().acquire().await?;
    let all = payloads();
    for chunk in all.chunks(5_000) {
        publish_many(&mut conn, chunk.iter().cloned()).await?;
    }
    drop(conn);
    let client = async_nats::connect(&server.url).await?;
    let options = JetStreamOptions {
        stream: Some("W6_RELAY".to_owned()),
        publish_timeout: Duration::from_secs(10),
        max_in_flight: IN_FLIGHT,
    };
    let router = WorkflowRouter::new().relay::<Relayed>(Relay::jetstream_with(
        &client,
        "bench.relay.{region}",
        options,
    ));
    let mut settings = pgoutbox::Settings::default();
    settings.database.url = Some(db.url());
    settings.workflow_system.n_workers = IN_FLIGHT / 4;
    settings.database.pool_max = u32::try_from(IN_FLIGHT / 4 + 4)?;
    settings.workflow_system.poll_interval = Duration::from_millis(200);
    settings.workflow_system.idempotent_async_commit = async_commit;
    settings.workflow_system.idempotent_claim_ahead = claim_ahead;
    let system = WorkflowSystem::builder(settings)
        .router(router)
        .start()
        .await?;
    let deadline = Instant::now() + Duration::from_mins(5);
    while crate::workloads::busy(&db, Relayed::NAME).await? {
        if Instant::now() > deadline {
            return Err("W6: the relay did not finish within 5 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    system.stop().await?;
    let (succeeded, seconds): (i64, f64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pgoutbox.operations WHERE status = 'succeeded'), \
                extract(epoch FROM max(finished_at) - min(started_at))::float8 \
         FROM pgoutbox.attempts",
    )
    .fetch_one(db.pool())
    .await?;
    let stored = js
        .get_stream("W6_RELAY")
        .await?
        .info()
        .await?
        .state
        .messages;
    if succeeded != i64::try_from(N)? || stored != u64::try_from(N)? {
        return Err(format!("W6: {succeeded} succeeded, {stored} in the stream, of {N}").into());
    }
    #[allow(clippy::cast_precision_loss)]
    Ok(N as f64 / seconds)
}

/// The baseline: the same payloads and headers published with async-nats
/// directly, `IN_FLIGHT` awaiting their PubAck at most (the client's own
/// bound), the acks gathered by a second task. Timed from the first
/// publish to the last PubAck.
async fn baseline_run(server: &Server, js: &jetstream::Context) -> Res<f64> {
    fresh_stream(js, "W6_BASE", "bench.base.>").await?;
    let client = async_nats::connect(&server.url).await?;
    let context = jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_ack_inflight(IN_FLIGHT)
        .backpressure_on_inflight(true)
        .build(client);
    let bodies: Vec<(String, Vec<u8>)> = payloads()
        .iter()
        .map(|p| Ok((p.region.clone(), serde_json::to_vec(p)?)))
        .collect::<Res<_>>()?;
    let hash = Relayed::schema().hash().to_owned();
    let (acks, mut pending) = tokio::sync::mpsc::channel(IN_FLIGHT);
    let gather = tokio::spawn(async move {
        let mut n = 0usize;
        while let Some(ack) = pending.recv().await {
            let ack: jetstream::context::PublishAckFuture = ack;
            ack.await?;
            n += 1;
        }
        Ok::<usize, jetstream::context::PublishError>(n)
    });
    let start = Instant::now();
    for (i, (region, body)) in bodies.into_iter().enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(pgoutbox::relay::MSG_ID, uuid_like(i).as_str());
        headers.insert(pgoutbox::relay::NAME, Relayed::NAME);
        headers.insert(pgoutbox::relay::ID, i.to_string().as_str());
        headers.insert(pgoutbox::relay::ROOT_ID, i.to_string().as_str());
        headers.insert(pgoutbox::relay::SCHEMA_HASH, hash.as_str());
        let ack = context
            .publish_with_headers(format!("bench.base.{region}"), headers, body.into())
            .await?;
        acks.send(ack).await?;
    }
    drop(acks);
    let acked = gather.await??;
    let elapsed = start.elapsed();
    if acked != N {
        return Err(format!("W6 baseline: {acked} of {N} acknowledged").into());
    }
    #[allow(clippy::cast_precision_loss)]
    Ok(N as f64 / elapsed.as_secs_f64())
}

/// A message id of the shape of an external key (a UUID), unique per run.
fn uuid_like(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// W6: relay 20,000 operations to JetStream beside publishing the same
/// payloads directly; target ≥ 0.7×.
pub(crate) async fn w6(runs: usize) -> Res<Vec<Figure>> {
    let server = Server::start()?;
    let client = async_nats::connect(&server.url).await?;
    let js = jetstream::new(client);
    let (mut ours, mut relaxed, mut ahead, mut base, mut bound) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        ours.push(relay_run(&server, &js, false, 0).await?);
        relaxed.push(relay_run(&server, &js, true, 0).await?);
        ahead.push(relay_run(&server, &js, true, CLAIM_AHEAD).await?);
        base.push(baseline_run(&server, &js).await?);
        // What the database alone allows: the raw claim-100 drain of W1-idem's
        // bound, which publishes nothing and writes no attempt rows.
        bound.push(crate::workloads::baseline_run(i64::try_from(N)?, false, 100).await?);
    }
    Ok(vec![
        Figure::new(
            "W6 relay to JetStream (vs async-nats direct)",
            "msgs/s",
            true,
            ours,
            base.clone(),
            0.7,
        ),
        Figure::new(
            "W6 relay, idempotent_async_commit on",
            "msgs/s",
            true,
            relaxed,
            base.clone(),
            0.7,
        ),
        Figure::new(
            "W6 relay, async commit + claim ahead",
            "msgs/s",
            true,
            ahead,
            base.clone(),
            0.7,
        ),
        Figure::new(
            "W6 reference: raw SQL claim-100 drain, no publishing",
            "ops/s",
            true,
            bound,
            base,
            0.7,
        ),
    ])
}
