use pgoutbox::prelude::*;

struct Mailer;

#[operation("mail.send")]
impl Mailer {}

fn main() {}
