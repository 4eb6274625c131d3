use pgoutbox::prelude::*;

#[operation("mail.send")]
trait Mailer {}

fn main() {}
