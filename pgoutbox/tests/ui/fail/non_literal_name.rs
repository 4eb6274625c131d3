use pgoutbox::prelude::*;

const NAME: &str = "mail.send";

#[operation(NAME)]
async fn send(ctx: &mut Context, to: String) -> Result<()> {
    let _ = (ctx, to);
    Ok(())
}

fn main() {}
