use pgoutbox::prelude::*;

#[payload]
fn address() -> String {
    String::new()
}

fn main() {
    let _ = address();
}
