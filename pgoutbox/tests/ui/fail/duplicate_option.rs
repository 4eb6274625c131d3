use pgoutbox::prelude::*;

#[operation("mail.send", idempotent, queue = "mail", idempotent)]
async fn send(ctx: &mut Context, to: String) -> Result<()> {
    let _ = (ctx, to);
    Ok(())
}

fn main() {}
