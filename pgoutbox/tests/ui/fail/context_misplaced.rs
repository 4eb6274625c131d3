use pgoutbox::prelude::*;

#[operation("mail.send")]
async fn send(to: String, ctx: &mut Context) -> Result<()> {
    let _ = (ctx, to);
    Ok(())
}

fn main() {}
