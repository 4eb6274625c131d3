use pgoutbox::prelude::*;

#[operation("billing.charge", output = u64)]
async fn charge(ctx: &mut Context, cents: i64) -> Result<u64> {
    let _ = ctx;
    Ok(cents as u64)
}

fn main() {}
