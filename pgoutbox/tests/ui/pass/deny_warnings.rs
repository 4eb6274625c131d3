#![deny(warnings, missing_docs, unused, clippy::pedantic)]
//! A crate that denies warnings around generated code.

use pgoutbox::prelude::*;

/// Send a message.
#[operation("mail.send", idempotent)]
pub async fn send(ctx: &mut Context, to: String) -> Result<()> {
    let _ = (ctx, to);
    Ok(())
}

/// A contract without field docs.
#[operation("mail.bounce")]
pub struct Bounce {
    /// Who bounced.
    pub address: String,
}

#[operation("mail.private")]
async fn private(ctx: &mut Context, to: String) -> Result<()> {
    let _ = (ctx, to);
    Ok(())
}

fn main() {}
