use pgoutbox::prelude::*;

#[operation("mail.send")]
async fn send(ctx: &mut Context, to: String) -> Result<()> {
    let _ = (ctx.operation_id(), to);
    Ok(())
}

fn main() {
    let payload = Send { to: "a@example.com".into() };
    assert_eq!(<Send as Operation>::NAME, "mail.send");
    assert_eq!(<Send as Operation>::OPTIONS, pgoutbox::OperationOptions::new());
    let json = serde_json::to_value(&payload).unwrap();
    assert_eq!(json, serde_json::json!({"to": "a@example.com"}));
}
