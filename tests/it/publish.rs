//! Typed publishing: atomic with the caller's transaction, NOTIFY on commit
//! only, idempotency keys, other schemas and channels.

use std::time::Duration;

use pgoutbox::prelude::*;
use pgoutbox::{Identifier, Publisher};
use sqlx::postgres::PgListener;

use crate::ops::{Charge, SendMail};
use crate::support::{count, test_db};

async fn listener(db: &pgoutbox::testing::TestDatabase, channel: &str) -> PgListener {
    let mut listener = PgListener::connect(&db.url()).await.unwrap();
    listener.listen(channel).await.unwrap();
    listener
}

/// The next notification within `wait`, if any.
async fn next_notification(listener: &mut PgListener, wait: Duration) -> Option<String> {
    tokio::time::timeout(wait, listener.recv())
        .await
        .ok()
        .map(|n| n.unwrap().payload().to_owned())
}

#[tokio::test]
async fn a_rolled_back_publish_leaves_nothing_and_wakes_nobody() {
    let db = test_db().await;
    let mut listener = listener(&db, "pgoutbox").await;
    let mut tx = db.pool().begin().await.unwrap();
    publish::<SendMail>(
        &mut tx,
        SendMail {
            to: "a@example.com".into(),
        },
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations").await,
        0
    );
    assert_eq!(
        next_notification(&mut listener, Duration::from_millis(300)).await,
        None
    );
}

#[tokio::test]
async fn a_committed_publish_is_durable_typed_and_wakes_the_workers_on_commit() {
    let db = test_db().await;
    let mut listener = listener(&db, "pgoutbox").await;
    let mut tx = db.pool().begin().await.unwrap();
    let id = publish::<Charge>(
        &mut tx,
        Charge {
            customer_id: 7,
            amount_cents: 1999,
        },
    )
    .await
    .unwrap();
    // Not before commit.
    assert_eq!(
        next_notification(&mut listener, Duration::from_millis(200)).await,
        None
    );
    tx.commit().await.unwrap();
    assert_eq!(
        next_notification(&mut listener, Duration::from_secs(5))
            .await
            .as_deref(),
        Some("billing.charge")
    );

    let row: (String, serde_json::Value, String, String, i16, String, i32, bool, i32) = sqlx::query_as(
        "SELECT name, payload, schema_hash, status, priority, queue, max_attempts, idempotent, attempt \
         FROM pgoutbox.operations WHERE id = $1",
    )
    .bind(id.as_i64())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(row.0, "billing.charge");
    assert_eq!(
        row.1,
        serde_json::json!({"customer_id": 7, "amount_cents": 1999})
    );
    assert_eq!(row.2, Charge::schema().hash());
    assert_eq!(
        (row.3.as_str(), row.4, row.5.as_str(), row.6, row.7, row.8),
        ("pending", 0, "billing", 3, true, 0)
    );

    // The schema is in the history, once.
    let stored: serde_json::Value = sqlx::query_scalar(
        "SELECT json_schema FROM pgoutbox.operation_types WHERE name = 'billing.charge' AND schema_hash = $1",
    )
    .bind(Charge::schema().hash())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(&stored, Charge::schema().json());
    let mut conn = db.pool().acquire().await.unwrap();
    publish(
        &mut conn,
        Charge {
            customer_id: 8,
            amount_cents: 1,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operation_types").await,
        1
    );
}

#[tokio::test]
async fn an_idempotency_key_returns_the_existing_operation() {
    let db = test_db().await;
    let publisher = Publisher::default();
    let options = PublishOptions::new().idempotency_key("order-1");
    let mut conn = db.pool().acquire().await.unwrap();
    let first = publisher
        .publish_with(&mut conn, SendMail { to: "a@x".into() }, options.clone())
        .await
        .unwrap();
    let again = publisher
        .publish_with(
            &mut conn,
            SendMail {
                to: "other@x".into(),
            },
            options.clone(),
        )
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations").await,
        1
    );
    // The key is unique per operation name only.
    let charge = publisher
        .publish_with(
            &mut conn,
            Charge {
                customer_id: 1,
                amount_cents: 1,
            },
            options,
        )
        .await
        .unwrap();
    assert_ne!(charge, first);
}

#[tokio::test]
async fn options_override_the_attribute() {
    let db = test_db().await;
    let mut conn = db.pool().acquire().await.unwrap();
    let parent = publish(&mut conn, SendMail { to: "p@x".into() })
        .await
        .unwrap();
    let child = Publisher::default()
        .publish_with(
            &mut conn,
            SendMail { to: "c@x".into() },
            PublishOptions::new()
                .delay(Duration::from_hours(1))
                .priority(-3)
                .queue("slow")
                .parent(parent),
        )
        .await
        .unwrap();
    let (priority, queue, delayed, parent_id, root_id): (
        i16,
        String,
        bool,
        Option<i64>,
        Option<i64>,
    ) = sqlx::query_as(
        "SELECT priority, queue, run_at > now() + interval '59 minutes', parent_id, root_id \
             FROM pgoutbox.operations WHERE id = $1",
    )
    .bind(child.as_i64())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!((priority, queue.as_str(), delayed), (-3, "slow", true));
    assert_eq!(
        (parent_id, root_id),
        (Some(parent.as_i64()), Some(parent.as_i64()))
    );
    // Without options, the attribute's priority applies.
    let plain: i16 = sqlx::query_scalar("SELECT priority FROM pgoutbox.operations WHERE id = $1")
        .bind(parent.as_i64())
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(plain, 7);
}

#[tokio::test]
async fn a_publisher_for_another_schema_without_notify() {
    let db = test_db().await;
    let schema = Identifier::new("outbox_two").unwrap();
    pgoutbox::migrate::run(db.pool(), &schema).await.unwrap();
    let mut listener = listener(&db, "pgoutbox").await;
    let publisher = Publisher::new(&schema, None, 4);
    let mut tx = db.pool().begin().await.unwrap();
    publisher
        .publish(&mut tx, SendMail { to: "x@y".into() })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM outbox_two.operations WHERE max_attempts = 4"
        )
        .await,
        1
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations").await,
        0
    );
    assert_eq!(
        next_notification(&mut listener, Duration::from_millis(300)).await,
        None
    );
}

/// `publish_many` sends a large input in chunks of `PUBLISH_MANY_CHUNK`,
/// all in the caller's transaction, and refuses a payload over
/// `MAX_PAYLOAD_BYTES` before sending anything.
#[tokio::test]
async fn publish_many_sends_chunks_and_refuses_an_oversized_payload() {
    let db = test_db().await;
    let n = pgoutbox::PUBLISH_MANY_CHUNK * 2 + 7;
    let mut tx = db.pool().begin().await.unwrap();
    let ids = publish_many(
        &mut tx,
        (0..n).map(|i| SendMail {
            to: format!("user{i}@example.com"),
        }),
    )
    .await
    .unwrap();
    assert_eq!(ids.len(), n);
    let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), n, "every operation its own id");
    tx.rollback().await.unwrap();
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations").await,
        0,
        "the chunks were all in the caller's transaction"
    );

    let huge = "x".repeat(pgoutbox::MAX_PAYLOAD_BYTES);
    let mut tx = db.pool().begin().await.unwrap();
    let err = publish_many(
        &mut tx,
        [
            SendMail {
                to: "a@example.com".into(),
            },
            SendMail { to: huge.clone() },
        ],
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, pgoutbox::PublishError::Unstorable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("1048576-byte limit"), "{err}");
    let err = publish(&mut tx, SendMail { to: huge }).await.unwrap_err();
    assert!(err.to_string().contains("over the"), "{err}");
    tx.commit().await.unwrap();
    assert_eq!(
        count(&db, "SELECT count(*) FROM pgoutbox.operations").await,
        0
    );
}
