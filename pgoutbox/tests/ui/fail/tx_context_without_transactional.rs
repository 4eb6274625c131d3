use pgoutbox::prelude::*;

#[operation("billing.charge")]
async fn charge(ctx: &mut TxContext<'_>, amount_cents: i64) -> Result<()> {
    let _ = (ctx, amount_cents);
    Ok(())
}

fn main() {}
