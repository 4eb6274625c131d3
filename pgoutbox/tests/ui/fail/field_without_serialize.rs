use pgoutbox::prelude::*;

#[derive(Debug, Clone, schemars::JsonSchema, serde::Deserialize)]
struct Address {
    street: String,
}

#[operation("mail.post")]
async fn post(ctx: &mut Context, to: Address) -> Result<()> {
    let _ = (ctx, to.street);
    Ok(())
}

fn main() {}
