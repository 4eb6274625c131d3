use std::time::Duration;

use pgoutbox::prelude::*;

#[operation(
    "billing.charge",
    transactional,
    idempotent,
    max_attempts = 7,
    backoff(initial = "500ms", max = "2d"),
    timeout = "30s",
    queue = "billing",
    priority = -5,
)]
pub async fn charge(ctx: &mut TxContext<'_>, customer_id: i64, amount_cents: i64) -> Result<()> {
    let _ = (ctx.idempotency_key(), customer_id, amount_cents);
    Ok(())
}

fn main() {
    let options = <Charge as Operation>::OPTIONS;
    assert!(options.transactional && options.idempotent);
    assert_eq!(options.max_attempts, Some(7));
    assert_eq!(
        options.backoff,
        Some(pgoutbox::Backoff::new(Duration::from_millis(500), Duration::from_secs(2 * 86_400)))
    );
    assert_eq!(options.timeout, Some(Duration::from_secs(30)));
    assert_eq!(options.queue, Some("billing"));
    assert_eq!(options.priority, Some(-5));
    let registry = Registry::from_inventory().unwrap();
    let entry = registry.get("billing.charge").unwrap();
    assert!(matches!(
        entry.handler().unwrap().erased_handler(),
        Some(pgoutbox::__private::ErasedHandler::Transactional(_))
    ));
}
