//! The operations these tests publish and run.

use pgoutbox::prelude::*;

/// Charge a customer.
#[operation(
    "billing.charge",
    transactional,
    idempotent,
    max_attempts = 3,
    queue = "billing"
)]
pub(crate) async fn charge(
    ctx: &mut TxContext<'_>,
    customer_id: i64,
    amount_cents: i64,
) -> Result<()> {
    let _ = (ctx, customer_id, amount_cents);
    Ok(())
}

/// Send an e-mail.
#[operation("mail.send", priority = 7)]
pub(crate) async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    let _ = (ctx, to);
    Ok(())
}
