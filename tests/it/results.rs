//! Handlers' results: the value of a handler's `Result<T>` recorded on its
//! succeeded attempt, in the transaction that records the success (for a
//! transactional handler, with its own writes); its type's schema kept
//! beside the payload's; a result that cannot be stored recorded as such.

use std::time::Duration;

use pgoutbox::admin::Admin;
use pgoutbox::prelude::*;
use pgoutbox::{OperationId, WorkflowSystem};
use pgoutbox_migrate::Identifier;

use crate::support::{count, publish_one, settings, settled, test_db, wait_for_count};

const WITHIN: Duration = Duration::from_secs(10);

/// A card payment's receipt.
#[pgoutbox::payload]
#[derive(PartialEq)]
pub(crate) struct Receipt {
    /// The provider's charge id.
    pub(crate) charge_id: String,
    /// What was charged, in cents.
    pub(crate) cents: i64,
}

/// Charges, and returns the receipt.
#[operation("results.charge")]
async fn charge(ctx: &mut Context, order: i64, cents: i64) -> Result<Receipt> {
    let _ = ctx;
    Ok(Receipt {
        charge_id: format!("ch_{order}"),
        cents,
    })
}

/// Writes a row and returns its id, in the dispatcher's transaction.
#[operation("results.record", transactional)]
async fn record(ctx: &mut TxContext<'_>, note: String) -> Result<i64> {
    let row = ctx
        .fetch_one(
            sqlx::query("INSERT INTO results_notes (note) VALUES ($1) RETURNING id").bind(&note),
        )
        .await?;
    Ok(sqlx::Row::try_get(&row, "id")?)
}

/// Returns `text` `repeat` times, with a NUL character when `nul`: what
/// may not be storable.
#[operation("results.echo")]
async fn echo(ctx: &mut Context, text: String, repeat: usize, nul: bool) -> Result<String> {
    let _ = ctx;
    let mut out = text.repeat(repeat);
    if nul {
        out.push('\u{0}');
    }
    Ok(out)
}

/// Writes a row, then returns what cannot be stored.
#[operation("results.record_unstorable", transactional)]
async fn record_unstorable(ctx: &mut TxContext<'_>, note: String) -> Result<String> {
    ctx.execute(sqlx::query("INSERT INTO results_notes (note) VALUES ($1)").bind(&note))
        .await?;
    Ok("nul \u{0} inside".to_owned())
}

/// Returns nothing: no result is stored.
#[operation("results.nothing")]
async fn nothing(ctx: &mut Context, n: i64) -> Result<()> {
    let _ = (ctx, n);
    Ok(())
}

/// Publishes a follow-up and returns a receipt: both recorded with the
/// success, in one transaction.
#[operation("results.charge_then_notify")]
async fn charge_then_notify(ctx: &mut Context, order: i64) -> Result<Option<Receipt>> {
    ctx.publish(Nothing { n: order })?;
    Ok(Some(Receipt {
        charge_id: format!("ch_{order}"),
        cents: 5,
    }))
}

/// Finds something, or not: `None` is stored as no result, and reads back
/// as `None`.
#[operation("results.maybe")]
async fn maybe(ctx: &mut Context, found: bool) -> Result<Option<i64>> {
    let _ = ctx;
    Ok(found.then_some(42))
}

/// A publish-only contract that declares its output.
#[operation("results.refund", output = Receipt)]
pub(crate) struct Refund {
    /// The charge to refund.
    pub(crate) charge_id: String,
}

/// The contract's handler returns the contract's output.
#[operation(contract = Refund)]
async fn refund(ctx: &mut Context, payload: Refund) -> Result<Receipt> {
    let _ = ctx;
    Ok(Receipt {
        charge_id: payload.charge_id,
        cents: -1,
    })
}

async fn start(db: &pgoutbox::testing::TestDatabase) -> WorkflowSystem {
    sqlx::query("CREATE TABLE results_notes (id bigint GENERATED ALWAYS AS IDENTITY, note text)")
        .execute(db.pool())
        .await
        .unwrap();
    WorkflowSystem::builder(settings(db))
        .router(
            WorkflowRouter::new()
                .operation::<Charge>()
                .operation::<Record>()
                .operation::<Echo>()
                .operation::<RecordUnstorable>()
                .operation::<Nothing>()
                .operation::<ChargeThenNotify>()
                .operation::<Maybe>()
                .operation::<Refund>(),
        )
        .start()
        .await
        .expect("system starts")
}

/// The recorded results of an operation's attempts, in order.
async fn results(
    db: &pgoutbox::testing::TestDatabase,
    id: OperationId,
) -> Vec<Option<serde_json::Value>> {
    sqlx::query_scalar("SELECT result FROM pgoutbox.attempts WHERE operation_id = $1 ORDER BY id")
        .bind(id.as_i64())
        .fetch_all(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_handlers_result_is_recorded_with_its_success() {
    let db = test_db().await;
    let system = start(&db).await;
    let charged = publish_one(
        &db,
        Charge {
            order: 7,
            cents: 1999,
        },
    )
    .await;
    let recorded = publish_one(
        &db,
        Record {
            note: "hello".into(),
        },
    )
    .await;
    let nothing = publish_one(&db, Nothing { n: 1 }).await;
    let refunded = publish_one(
        &db,
        Refund {
            charge_id: "ch_7".into(),
        },
    )
    .await;
    let notified = publish_one(&db, ChargeThenNotify { order: 8 }).await;
    let found = publish_one(&db, Maybe { found: true }).await;
    let missing = publish_one(&db, Maybe { found: false }).await;
    for id in [
        charged, recorded, nothing, refunded, notified, found, missing,
    ] {
        assert_eq!(settled(&db, id, WITHIN).await, "succeeded");
    }
    // A handler with a follow-up: its result is recorded with the success
    // and the follow-up, in one transaction.
    assert_eq!(
        results(&db, notified).await,
        [Some(serde_json::json!({"charge_id": "ch_8", "cents": 5}))]
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pgoutbox.operations WHERE name = 'results.nothing' \
             AND parent_id IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(results(&db, found).await, [Some(serde_json::json!(42))]);
    assert_eq!(results(&db, missing).await, [None], "`None` is no result");

    let receipt = Receipt {
        charge_id: "ch_7".into(),
        cents: 1999,
    };
    assert_eq!(
        results(&db, charged).await,
        [Some(serde_json::to_value(&receipt).unwrap())]
    );
    // The transactional handler's row and its result committed together.
    let row: i64 = sqlx::query_scalar("SELECT id FROM results_notes WHERE note = 'hello'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(results(&db, recorded).await, [Some(serde_json::json!(row))]);
    assert_eq!(results(&db, nothing).await, [None], "`()` stores nothing");
    assert_eq!(
        results(&db, refunded).await,
        [Some(serde_json::json!({"charge_id": "ch_7", "cents": -1}))]
    );

    // Operators read it through `Admin` (and so `ops show` and the
    // dashboard), decoded back into the output type here.
    let admin = Admin::new(db.pool().clone(), &Identifier::default());
    let detail = admin.show(charged).await.unwrap().unwrap();
    let shown = detail.attempts[0].result.clone().unwrap();
    assert_eq!(serde_json::from_value::<Receipt>(shown).unwrap(), receipt);
    // Each result names the output schema it was written with, as each
    // payload names its own.
    assert_eq!(
        detail.attempts[0].result_schema_hash.as_deref(),
        Some(Charge::output_schema().hash())
    );
    let recorded_detail = admin.show(recorded).await.unwrap().unwrap();
    assert_eq!(
        recorded_detail.attempts[0].result_schema_hash.as_deref(),
        Some(Record::output_schema().hash())
    );
    let nothing_detail = admin.show(nothing).await.unwrap().unwrap();
    assert_eq!(nothing_detail.attempts[0].result_schema_hash, None);
    system.stop().await.unwrap();
}

#[tokio::test]
async fn output_schemas_are_kept_beside_the_payloads() {
    let db = test_db().await;
    let system = start(&db).await;
    let schemas: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT name, output_hash, json_schema FROM pgoutbox.operation_outputs ORDER BY name",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let names: Vec<&str> = schemas.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "results.charge",
            "results.charge_then_notify",
            "results.echo",
            "results.maybe",
            "results.nothing",
            "results.record",
            "results.record_unstorable",
            "results.refund"
        ]
    );
    let charge = &schemas[0];
    assert_eq!(charge.1, Charge::output_schema().hash());
    assert_eq!(charge.2["title"], "Receipt");
    assert_eq!(
        charge.2["properties"]["charge_id"]["type"], "string",
        "{:#}",
        charge.2
    );
    assert_eq!(schemas[5].2["type"], "integer");
    assert_eq!(schemas[4].2["type"], "null", "`()` has a schema too");
    assert_eq!(
        Refund::output_schema().hash(),
        Charge::output_schema().hash()
    );
    // Operators read them back by name, as the payloads' history.
    let admin = Admin::new(db.pool().clone(), &Identifier::default());
    let history = admin.output_history("results.charge").await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].schema_hash, Charge::output_schema().hash());
    assert_eq!(history[0].json_schema["title"], "Receipt");
    system.stop().await.unwrap();
}

#[tokio::test]
async fn a_result_that_cannot_be_stored_is_recorded_as_such() {
    let db = test_db().await;
    let system = start(&db).await;
    // A plain handler's effects stand: the operation waits for an operator.
    let nul = publish_one(
        &db,
        Echo {
            text: "a".into(),
            repeat: 1,
            nul: true,
        },
    )
    .await;
    let large = publish_one(
        &db,
        Echo {
            text: "x".into(),
            repeat: (1 << 20) + 1,
            nul: false,
        },
    )
    .await;
    // A transactional handler's writes are rolled back with it.
    let tx = publish_one(
        &db,
        RecordUnstorable {
            note: "gone".into(),
        },
    )
    .await;
    assert_eq!(settled(&db, nul, WITHIN).await, "stalled");
    assert_eq!(settled(&db, large, WITHIN).await, "stalled");
    assert_eq!(settled(&db, tx, WITHIN).await, "dead");

    let error = async |id: OperationId| -> String {
        sqlx::query_scalar("SELECT error FROM pgoutbox.attempts WHERE operation_id = $1")
            .bind(id.as_i64())
            .fetch_one(db.pool())
            .await
            .unwrap()
    };
    let nul_error = error(nul).await;
    assert!(
        nul_error.contains("its result cannot be stored")
            && nul_error.contains("NUL character")
            && nul_error.contains("what it did stands"),
        "{nul_error}"
    );
    let large_error = error(large).await;
    assert!(
        large_error.contains("1048579 bytes of JSON, over the 1048576-byte limit"),
        "{large_error}"
    );
    let tx_error = error(tx).await;
    assert!(
        tx_error.contains("its database writes were rolled back"),
        "{tx_error}"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM results_notes WHERE note = 'gone'"
        )
        .await,
        0
    );
    for id in [nul, large, tx] {
        assert_eq!(results(&db, id).await, [None]);
    }
    wait_for_count(
        &db,
        "SELECT count(*) FROM pgoutbox.attempts WHERE outcome IS NULL",
        0,
        WITHIN,
    )
    .await;
    system.stop().await.unwrap();
}
