use pgoutbox::prelude::*;

// A `Dep` names a step of another operation: `String` is none.
#[operation("shop.ship")]
async fn ship(ctx: &mut Context, order_id: i64, payment: Dep<String>) -> Result<()> {
    let _ = (ctx, order_id, payment);
    Ok(())
}

fn main() {}
