use pgoutbox::prelude::*;

#[operation(idempotent)]
async fn send(ctx: &mut Context, to: String) -> Result<()> {
    let _ = (ctx, to);
    Ok(())
}

fn main() {}
