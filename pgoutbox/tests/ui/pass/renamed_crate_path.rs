// The application reaches pgoutbox only through its own re-export.
mod outbox {
    pub use pgoutbox as engine;
}

use outbox::engine::{Context, Result};

#[outbox::engine::payload(crate = crate::outbox::engine)]
pub struct Address {
    pub street: String,
}

#[outbox::engine::operation("mail.send", crate = crate::outbox::engine)]
async fn send(ctx: &mut Context, to: String, address: Address) -> Result<()> {
    let _ = (ctx, to, address.street);
    Ok(())
}

fn main() {
    assert_eq!(<Send as outbox::engine::Operation>::NAME, "mail.send");
}
