use pgoutbox::prelude::*;

#[operation("mail.by_type")]
async fn r#type(ctx: &mut Context, r#type: String, r#match: bool) -> Result<()> {
    let _ = (ctx, r#type, r#match);
    Ok(())
}

fn main() {
    let payload = Type { r#type: "welcome".into(), r#match: true };
    let json = serde_json::to_value(&payload).unwrap();
    assert_eq!(json, serde_json::json!({"type": "welcome", "match": true}));
}
