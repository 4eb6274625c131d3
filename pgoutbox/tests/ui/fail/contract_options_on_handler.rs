use pgoutbox::prelude::*;

#[operation("billing.charge")]
pub struct Charge {
    pub amount_cents: i64,
}

#[operation(contract = Charge, queue = "billing", transactional)]
async fn charge(ctx: &mut TxContext<'_>, payload: Charge) -> Result<()> {
    let _ = (ctx, payload);
    Ok(())
}

#[operation("billing.refund", transactional)]
pub struct Refund {
    pub amount_cents: i64,
}

fn main() {}
