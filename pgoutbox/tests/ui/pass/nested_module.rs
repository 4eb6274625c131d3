mod billing {
    pub mod charges {
        use pgoutbox::prelude::*;

        #[operation("billing.charge")]
        pub async fn charge(ctx: &mut Context, amount_cents: i64) -> Result<()> {
            let _ = (ctx, amount_cents);
            Ok(())
        }
    }
}

fn main() {
    let payload = billing::charges::Charge { amount_cents: 5 };
    assert_eq!(<billing::charges::Charge as pgoutbox::Operation>::NAME, "billing.charge");
    let _ = payload;
    let list = pgoutbox::handlers![billing::charges::charge];
    assert_eq!(list[0].name(), "billing.charge");
}
