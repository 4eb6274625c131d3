use pgoutbox::prelude::*;

#[operation("billing.charge", transactional)]
async fn charge(ctx: &mut TxContext<'_>, customer_id: i64, amount_cents: i64) -> Result<()> {
    let _ = (ctx, customer_id, amount_cents);
    Ok(())
}

// Compiled, not run: the forms of `publish` that must keep compiling.
#[allow(dead_code)]
async fn forms(pool: sqlx::PgPool) -> std::result::Result<(), pgoutbox::PublishError> {
    let mut tx = pool.begin().await.unwrap();
    let _id: pgoutbox::OperationId =
        publish::<Charge>(&mut tx, Charge { customer_id: 7, amount_cents: 1999 }).await?;
    publish(&mut tx, Charge { customer_id: 7, amount_cents: 1999 }).await?;
    publish(&mut *tx, Charge { customer_id: 7, amount_cents: 1999 }).await?;
    tx.commit().await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    publish::<Charge>(&mut *conn, Charge { customer_id: 7, amount_cents: 1999 }).await?;
    let mut conn = pool.acquire().await.unwrap();
    publish(&mut conn, Charge { customer_id: 7, amount_cents: 1999 }).await?;
    Ok(())
}

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send_future<F: std::future::Future + Send>(_: fn(sqlx::PgPool) -> F) {}

fn main() {
    // Public handles are Send + Sync; publishing futures are Send.
    assert_send_sync::<pgoutbox::Registry>();
    assert_send_sync::<pgoutbox::WorkflowRouter>();
    assert_send_sync::<pgoutbox::Publisher>();
    assert_send_sync::<pgoutbox::HandlerError>();
    assert_send_sync::<pgoutbox::Context>();
    assert_send_sync::<pgoutbox::TxContext<'static>>();
    assert_send_future(forms);
}
