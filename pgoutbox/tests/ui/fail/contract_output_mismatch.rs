use pgoutbox::prelude::*;

/// A charge's receipt.
#[pgoutbox::payload]
pub struct Receipt {
    /// The provider's id.
    pub charge_id: String,
}

/// Charge a card; its handler returns the receipt.
#[operation("billing.charge", output = Receipt)]
pub struct Charge {
    /// In cents.
    pub cents: i64,
}

#[operation(contract = Charge)]
async fn charge(ctx: &mut Context, payload: Charge) -> Result<u64> {
    let _ = (ctx, payload);
    Ok(1)
}

fn main() {}
