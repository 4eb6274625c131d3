use pgoutbox::prelude::*;

#[operation("mail.send")]
async fn send<T: ToString>(ctx: &mut Context, to: T) -> Result<()> {
    let _ = (ctx, to.to_string());
    Ok(())
}

fn main() {}
