use pgoutbox::prelude::*;

#[operation("geo.locate")]
async fn locate(ctx: &mut Context, (lat, lon): (f64, f64)) -> Result<()> {
    let _ = (ctx, lat, lon);
    Ok(())
}

fn main() {}
