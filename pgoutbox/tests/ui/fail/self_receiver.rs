use pgoutbox::prelude::*;

struct Mailer;

impl Mailer {
    #[operation("mail.send")]
    async fn send(&self, ctx: &mut Context, to: String) -> Result<()> {
        let _ = (ctx, to);
        Ok(())
    }
}

fn main() {}
