use pgoutbox::prelude::*;

#[operation("Mail..Send")]
async fn send(ctx: &mut Context, to: String) -> Result<()> {
    let _ = (ctx, to);
    Ok(())
}

fn main() {}
