use pgoutbox::prelude::*;

#[operation("mail.send")]
async fn send(ctx: &mut Context, to: String) {
    let _ = (ctx, to);
}

fn main() {}
