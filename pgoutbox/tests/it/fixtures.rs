//! Operations shared by the tests of this binary.

#![allow(dead_code)]

use pgoutbox::prelude::*;

/// Charge a customer's card.
#[operation("billing.charge", transactional, idempotent, max_attempts = 3)]
pub(crate) async fn charge(
    ctx: &mut TxContext<'_>,
    /// The customer to charge.
    customer_id: i64,
    /// The amount, in cents.
    amount_cents: i64,
) -> Result<()> {
    let _ = (ctx, customer_id, amount_cents);
    Ok(())
}

/// What the provider answered a refund with.
#[pgoutbox::payload]
pub(crate) struct RefundReceipt {
    /// The provider's refund id.
    pub(crate) refund_id: String,
    /// When the money is expected back, if the provider says.
    pub(crate) expected_on: Option<String>,
}

/// Issue a refund.
#[operation("billing.refunds.issue", priority = 5)]
pub(crate) async fn issue_refund(
    ctx: &mut Context,
    charge_id: i64,
    reason: Option<String>,
) -> Result<RefundReceipt> {
    let _ = (ctx, reason);
    Ok(RefundReceipt {
        refund_id: format!("re_{charge_id}"),
        expected_on: None,
    })
}

/// Send an e-mail.
#[operation("mail.send", queue = "mail", backoff(initial = "1s", max = "1h"))]
pub(crate) async fn send_mail(
    ctx: &mut Context,
    to: String,
    subject: String,
    tags: Vec<String>,
) -> Result<()> {
    let _ = (ctx, to, subject, tags);
    Ok(())
}

/// A contract handled elsewhere.
#[operation("ledger.record")]
pub(crate) struct RecordEntry {
    /// Debit account.
    pub(crate) debit: String,
    /// Credit account.
    pub(crate) credit: String,
    /// Amount in cents.
    pub(crate) amount_cents: i64,
}

/// Its handler.
#[operation(contract = RecordEntry)]
pub(crate) async fn record_entry(ctx: &mut Context, entry: RecordEntry) -> Result<()> {
    let _ = (ctx, entry);
    Ok(())
}

/// A second handler under an existing name, in another place.
pub(crate) mod duplicate {
    use pgoutbox::prelude::*;

    #[operation("mail.send")]
    pub(crate) async fn send_mail_again(ctx: &mut Context, to: String) -> Result<()> {
        let _ = (ctx, to);
        Ok(())
    }
}

/// The registry of everything above but the duplicate.
pub(crate) fn registry() -> Registry {
    Registry::from_registrations(pgoutbox::handlers![
        charge,
        issue_refund,
        send_mail,
        record_entry
    ])
    .expect("no duplicates")
}
