// Like an application that depends on pgoutbox alone: no serde, no
// schemars, yet its own types nest in payloads.
use pgoutbox::prelude::*;

/// A postal address.
#[payload]
pub struct Address {
    /// Street and number.
    pub street: String,
    pub city: String,
}

/// How a letter travels.
#[pgoutbox::payload]
pub enum Service {
    Standard,
    Registered { signature: bool },
    Courier(Address),
}

/// A letter, nesting the types above.
#[payload]
pub struct Letter {
    pub to: Address,
    pub service: Service,
    #[serde(rename = "cc")]
    pub copies: Vec<Address>,
}

#[operation("mail.post")]
async fn post(ctx: &mut Context, letter: Letter, return_to: Option<Address>) -> Result<()> {
    let _ = (ctx, letter.to.street, return_to);
    Ok(())
}

/// A publish-only contract with a nested field.
#[operation("mail.bounce")]
pub struct Bounce {
    pub from: Address,
}

fn main() {
    let letter = Letter {
        to: Address { street: "1 Main St".into(), city: "Springfield".into() },
        service: Service::Registered { signature: true },
        copies: Vec::new(),
    };
    let payload = Post { letter: letter.clone(), return_to: None };
    assert!(format!("{payload:?}").contains("Springfield"));

    let schema = <Post as Operation>::schema().json().to_string();
    for name in ["Letter", "Address", "Service", "Courier", "\"cc\"", "Street and number."] {
        assert!(schema.contains(name), "{name} missing from {schema}");
    }
    assert!(<Bounce as Operation>::schema().json().to_string().contains("Address"));
}
