use pgoutbox::prelude::*;

#[operation("health.ping", payload = PingPayload)]
async fn ping(ctx: &mut Context) -> Result<()> {
    let _ = ctx;
    Ok(())
}

fn main() {
    let json = serde_json::to_value(PingPayload {}).unwrap();
    assert_eq!(json, serde_json::json!({}));
    let decoded: PingPayload = serde_json::from_value(serde_json::json!({})).unwrap();
    let _ = decoded;
}
