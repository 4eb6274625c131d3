// A contract declared in one place (think: a shared crate) and its handler
// elsewhere: the pair is not a duplicate.
mod contracts {
    use pgoutbox::prelude::*;

    /// Charge a customer.
    #[operation("billing.charge", idempotent, queue = "billing")]
    pub struct Charge {
        /// The amount, in cents.
        pub amount_cents: i64,
    }
}

mod worker {
    use pgoutbox::prelude::*;

    #[operation(contract = crate::contracts::Charge, transactional, timeout = "5s")]
    pub async fn charge(ctx: &mut TxContext<'_>, payload: crate::contracts::Charge) -> Result<()> {
        let _ = (ctx, payload.amount_cents);
        Ok(())
    }
}

fn main() {
    let registry = pgoutbox::Registry::from_inventory().unwrap();
    let entry = registry.get("billing.charge").unwrap();
    let handler = entry.handler().unwrap();
    assert!(handler.options().transactional);
    assert!(handler.options().idempotent, "the contract's options carry over");
    assert_eq!(handler.options().queue, Some("billing"));
    assert_eq!(handler.options().timeout, Some(std::time::Duration::from_secs(5)));
    let _ = worker::charge;
}
