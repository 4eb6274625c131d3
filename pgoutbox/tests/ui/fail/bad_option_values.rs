use pgoutbox::prelude::*;

#[operation(
    "mail.send",
    max_attempts = 0,
    priority = 40000,
    timeout = "ten seconds",
    queue = "Mail Queue",
    backoff(initial = "1m", max = "1s")
)]
async fn send(ctx: &mut Context, to: String) -> Result<()> {
    let _ = (ctx, to);
    Ok(())
}

fn main() {}
