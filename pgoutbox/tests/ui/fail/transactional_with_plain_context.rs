use pgoutbox::prelude::*;

#[operation("billing.charge", transactional)]
async fn charge(ctx: &mut Context, amount_cents: i64) -> Result<()> {
    let _ = (ctx, amount_cents);
    Ok(())
}

fn main() {}
