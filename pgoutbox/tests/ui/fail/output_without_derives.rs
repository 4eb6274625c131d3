use pgoutbox::prelude::*;

#[derive(Debug, Clone)]
struct Receipt {
    charge_id: String,
}

#[operation("billing.charge")]
async fn charge(ctx: &mut Context, cents: i64) -> Result<Receipt> {
    let _ = (ctx, cents);
    Ok(Receipt { charge_id: "ch_1".into() })
}

fn main() {}
