use std::rc::Rc;

use pgoutbox::prelude::*;

async fn later() {}

#[operation("mail.send")]
async fn send(ctx: &mut Context, to: String) -> Result<()> {
    let shared = Rc::new(to);
    later().await;
    let _ = (ctx, shared);
    Ok(())
}

fn main() {}
