//! The Prometheus endpoint of `workflow_system.metrics_listen`, scraped
//! while the system runs.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use pgoutbox::WorkflowSystem;
use pgoutbox::prelude::*;

use crate::ops::{Behaviour, Work};
use crate::support::{publish_one, settings, test_db, wait_for_count};

/// `GET /metrics` on `addr`: the response body.
pub(crate) fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("the endpoint accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample `series` (name and labels, as exposed) in a
/// scrape, 0 when absent.
pub(crate) fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn publish_and_wait(db: &pgoutbox::testing::TestDatabase, n: i64) {
    for _ in 0..n {
        publish_one(
            db,
            Work {
                key: uuid::Uuid::new_v4().to_string(),
                behaviour: Behaviour::Succeed,
            },
        )
        .await;
    }
    wait_for_count(
        db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status <> 'succeeded'",
        0,
        Duration::from_secs(30),
    )
    .await;
}

/// With `metrics_listen` set, `/metrics` serves the counters, and they
/// move as operations run. Other tests of this binary run in the same
/// process (and so count into the same recorder): the checks are on
/// growth, not on exact values.
#[tokio::test]
async fn the_metrics_endpoint_serves_counters_that_move() {
    let db = test_db().await;
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let mut s = settings(&db);
    s.workflow_system.metrics_listen = Some(addr);
    let system = WorkflowSystem::builder(s)
        .router(WorkflowRouter::new().operation::<Work>())
        .start()
        .await
        .expect("system starts");
    publish_and_wait(&db, 1).await;
    let claimed = "pgoutbox_claimed_total{name=\"test.work\"}";
    let succeeded = "pgoutbox_succeeded_total{name=\"test.work\"}";
    let first = tokio::task::spawn_blocking(move || scrape(addr))
        .await
        .unwrap();
    assert!(sample(&first, claimed) >= 1.0, "{first}");
    assert!(
        first.contains("# TYPE pgoutbox_claimed_total counter"),
        "{first}"
    );
    assert!(
        first.contains("# TYPE pgoutbox_handler_duration_seconds summary"),
        "{first}"
    );
    publish_and_wait(&db, 3).await;
    let second = tokio::task::spawn_blocking(move || scrape(addr))
        .await
        .unwrap();
    assert!(
        sample(&second, claimed) >= sample(&first, claimed) + 3.0,
        "{first}\n---\n{second}"
    );
    assert!(
        sample(&second, succeeded) >= sample(&first, succeeded) + 3.0,
        "{first}\n---\n{second}"
    );
    system.stop().await.unwrap();
}
