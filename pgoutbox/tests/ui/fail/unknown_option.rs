use pgoutbox::prelude::*;

#[operation("mail.send", retries = 3)]
async fn send(ctx: &mut Context, to: String) -> Result<()> {
    let _ = (ctx, to);
    Ok(())
}

fn main() {}
