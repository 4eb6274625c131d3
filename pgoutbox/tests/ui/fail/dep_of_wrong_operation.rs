use pgoutbox::prelude::*;

/// A receipt.
#[pgoutbox::payload]
pub struct Receipt {
    pub charge_id: String,
}

#[operation("shop.charge")]
async fn charge(ctx: &mut Context, cents: i64) -> Result<Receipt> {
    let _ = (ctx, cents);
    Ok(Receipt { charge_id: "ch".into() })
}

#[operation("shop.reserve")]
async fn reserve(ctx: &mut Context, sku: String) -> Result<()> {
    let _ = (ctx, sku);
    Ok(())
}

// `stock` is a `Dep<Reserve>`: its result is `()`, not a `Receipt`.
#[operation("shop.ship")]
async fn ship(ctx: &mut Context, payment: Dep<Charge>, stock: Dep<Reserve>) -> Result<()> {
    let _ = payment;
    let receipt: Receipt = ctx.result(&stock)?;
    let _ = receipt;
    Ok(())
}

fn main() {}
