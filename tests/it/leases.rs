//! In-flight bookkeeping and lease renewal under stress: one process
//! re-claiming an operation whose previous executor is still finishing,
//! heartbeats that stall, rows locked by someone else, and the reports of
//! work that no live worker would ever claim.

use std::time::Duration;

use pgoutbox::WorkflowSystem;
use pgoutbox::prelude::*;

use crate::ops::{Behaviour, Work};
use crate::support::{outcomes, publish_one, settings, status, test_db, wait_for_count};

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn router() -> WorkflowRouter {
    WorkflowRouter::new().operation::<Work>()
}

/// An operation that snoozed is claimed again by the same process while
/// the executor of its snoozed attempt still lingers: that stale executor
/// must neither take the new attempt's place in the running set nor
/// remove it, so the new attempt keeps its lease and succeeds.
#[tokio::test]
async fn a_reclaim_while_the_previous_executor_is_still_finishing_keeps_its_lease() {
    let db = test_db().await;
    // Lease 1 s; the snoozed attempt's executor lingers 3 leases, and the
    // next attempt runs 5 s: on a map keyed by operation, its entry is gone
    // after 3 s and its lease expires a second later.
    let system = WorkflowSystem::builder(settings(&db))
        .router(router())
        .linger_after_record(Duration::from_secs(3))
        .start()
        .await
        .expect("system starts");
    let id = publish_one(
        &db,
        Work {
            key: key(),
            behaviour: Behaviour::SnoozeThenSleepMs(5_000),
        },
    )
    .await;
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.operations WHERE status IN ('succeeded', 'stalled')",
        1,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        outcomes(&db, id).await,
        [Some("snoozed".to_owned()), Some("succeeded".to_owned())]
    );
    assert_eq!(status(&db, id).await, "succeeded");
    system.stop().await.unwrap();
}
