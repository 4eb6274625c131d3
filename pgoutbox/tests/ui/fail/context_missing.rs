use pgoutbox::prelude::*;

#[operation("mail.send")]
async fn send(to: String) -> Result<()> {
    let _ = to;
    Ok(())
}

fn main() {}
