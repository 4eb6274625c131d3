use pgoutbox::prelude::*;

#[operation("mail.send")]
async fn send(ctx: &mut Context, to: String) -> Result<()> {
    let _ = (ctx, to);
    Ok(())
}

mod again {
    use pgoutbox::prelude::*;

    #[operation("mail.send")]
    async fn send_again(ctx: &mut Context, address: String) -> Result<()> {
        let _ = (ctx, address);
        Ok(())
    }
}

fn main() {
    let err = Registry::from_inventory().unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("operation name `mail.send` is registered twice: "), "{message}");
    assert!(message.contains("handler `send` at "), "{message}");
    assert!(message.contains("handler `send_again` at "), "{message}");
    assert!(message.contains("duplicate_names_rejected_at_startup.rs:3"), "{message}");
    assert!(message.contains("duplicate_names_rejected_at_startup.rs:12"), "{message}");
}
