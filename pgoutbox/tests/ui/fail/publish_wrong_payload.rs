use pgoutbox::prelude::*;

#[operation("billing.charge")]
async fn charge(ctx: &mut Context, amount_cents: i64) -> Result<()> {
    let _ = (ctx, amount_cents);
    Ok(())
}

#[operation("billing.refund")]
async fn refund(ctx: &mut Context, amount_cents: i64) -> Result<()> {
    let _ = (ctx, amount_cents);
    Ok(())
}

async fn publish_it(pool: sqlx::PgPool) {
    let mut tx = pool.begin().await.unwrap();
    publish::<Charge>(&mut tx, Refund { amount_cents: 5 }).await.unwrap();
}

fn main() {
    let _ = publish_it;
}
