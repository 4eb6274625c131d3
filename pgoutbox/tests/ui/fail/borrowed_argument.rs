use pgoutbox::prelude::*;

#[operation("mail.send")]
async fn send(ctx: &mut Context, to: &str) -> Result<()> {
    let _ = (ctx, to);
    Ok(())
}

fn main() {}
