use pgoutbox::prelude::*;

// Forgot `#[payload]`: the error on `Address` says to add it.
#[derive(Debug, Clone)]
pub struct Address {
    pub street: String,
}

#[operation("mail.post")]
async fn post(ctx: &mut Context, to: Address, copies: Vec<Address>) -> Result<()> {
    let _ = (ctx, to.street, copies);
    Ok(())
}

fn main() {}
