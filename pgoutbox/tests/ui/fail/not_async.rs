use pgoutbox::prelude::*;

#[operation("mail.send")]
fn send(ctx: &mut Context, to: String) -> Result<()> {
    let _ = (ctx, to);
    Ok(())
}

fn main() {}
