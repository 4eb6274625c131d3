//! The generated JSON Schemas, compared with the files committed under
//! `tests/schemas/`. A change to a payload type shows up here as a diff to
//! review; regenerate with `PGOUTBOX_UPDATE_SNAPSHOTS=1 cargo test`.

use std::path::PathBuf;

use pgoutbox::Operation;

use crate::fixtures::{Charge, IssueRefund, RecordEntry, SendMail};

fn check<O: Operation>() {
    compare(&format!("{}.json", O::NAME), O::NAME, O::schema());
}

/// The output type's schema, beside the payload's.
fn check_output<O: Operation>() {
    compare(
        &format!("{}.output.json", O::NAME),
        O::NAME,
        O::output_schema(),
    );
}

fn compare(file: &str, name: &str, schema: &pgoutbox::OperationSchema) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/schemas")
        .join(file);
    let actual = serde_json::to_string_pretty(schema.json()).unwrap() + "\n";
    if std::env::var_os("PGOUTBOX_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with PGOUTBOX_UPDATE_SNAPSHOTS=1)",
            path.display()
        )
    });
    assert_eq!(actual, expected, "{file}: a schema of `{name}` changed");
}

#[test]
fn snapshots() {
    check::<Charge>();
    check::<IssueRefund>();
    check::<SendMail>();
    check::<RecordEntry>();
    check_output::<IssueRefund>();
}

#[test]
fn doc_comments_reach_the_schema() {
    let schema = Charge::schema().json();
    assert_eq!(schema["description"], "Charge a customer's card.");
    assert_eq!(
        schema["properties"]["amount_cents"]["description"],
        "The amount, in cents."
    );
}
