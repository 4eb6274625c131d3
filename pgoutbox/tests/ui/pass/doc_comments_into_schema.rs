use pgoutbox::prelude::*;

/// Send the receipt of a charge by e-mail.
#[operation("mail.receipt")]
async fn send_receipt(
    ctx: &mut Context,
    /// Where to send it.
    to: String,
    /// The charge's amount, in cents.
    #[serde(default)]
    amount_cents: i64,
) -> Result<()> {
    let _ = (ctx, to, amount_cents);
    Ok(())
}

fn main() {
    let schema = <SendReceipt as Operation>::schema().json();
    assert_eq!(schema["description"], "Send the receipt of a charge by e-mail.");
    assert_eq!(schema["properties"]["to"]["description"], "Where to send it.");
    assert_eq!(schema["properties"]["amount_cents"]["description"], "The charge's amount, in cents.");
    // `#[serde(default)]` moved to the field: the field is optional.
    assert_eq!(schema["required"], serde_json::json!(["to"]));
    let decoded: SendReceipt = serde_json::from_value(serde_json::json!({"to": "a@b.c"})).unwrap();
    assert_eq!(decoded.amount_cents, 0);
}
