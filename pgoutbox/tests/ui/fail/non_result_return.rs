use pgoutbox::prelude::*;

#[operation("mail.send")]
async fn send(ctx: &mut Context, to: String) -> bool {
    let _ = (ctx, to);
    true
}

fn main() {}
