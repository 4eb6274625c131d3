use pgoutbox::__private::ErasedHandler;
use pgoutbox::prelude::*;

use crate::fixtures::{self, Charge, RecordEntry, duplicate};

#[test]
fn an_explicit_list_exposes_names_options_schemas_and_hashes() {
    let registry = fixtures::registry();
    assert_eq!(
        registry.iter().map(|(name, _)| name).collect::<Vec<_>>(),
        [
            "billing.charge",
            "billing.refunds.issue",
            "ledger.record",
            "mail.send"
        ]
    );
    let charge = registry.get("billing.charge").unwrap().registration();
    assert_eq!(charge.name(), "billing.charge");
    assert!(charge.options().transactional && charge.options().idempotent);
    assert_eq!(charge.options().max_attempts, Some(3));
    assert!(matches!(
        charge.erased_handler(),
        Some(ErasedHandler::Transactional(_))
    ));
    assert_eq!(charge.schema().hash(), Charge::schema().hash());
    assert_eq!(charge.schema().hash().len(), 64);
    assert!(
        charge.location().contains("fixtures.rs:"),
        "{}",
        charge.location()
    );
    assert!(charge.payload_type_name().ends_with("fixtures::Charge"));
}

#[test]
fn the_schema_hash_is_stable_across_calls_and_distinct_across_types() {
    assert_eq!(Charge::schema().hash(), Charge::schema().hash());
    assert_ne!(Charge::schema().hash(), RecordEntry::schema().hash());
}

#[test]
fn a_contract_handler_pairs_with_its_contract() {
    let registry = fixtures::registry();
    let entry = registry.get("ledger.record").unwrap();
    assert!(entry.is_handler());
    assert_eq!(
        entry.registration().schema().hash(),
        RecordEntry::schema().hash()
    );
}

#[test]
fn a_duplicate_name_is_rejected_naming_both_locations() {
    let err = Registry::from_registrations(pgoutbox::handlers![
        fixtures::send_mail,
        duplicate::send_mail_again
    ])
    .unwrap_err();
    assert_eq!(err.name(), "mail.send");
    let message = err.to_string();
    assert!(
        message.starts_with("operation name `mail.send` is registered twice: "),
        "{message}"
    );
    assert!(
        message.contains("handler `send_mail` at ")
            && message.contains("handler `send_mail_again` at "),
        "{message}"
    );
    assert_eq!(message.matches("fixtures.rs:").count(), 2, "{message}");
}

#[test]
fn link_time_collection_sees_the_duplicate_too() {
    // This binary links `duplicate::send_mail_again`, so the inventory-built
    // registry must refuse to start.
    let err = Registry::from_inventory().unwrap_err();
    assert_eq!(err.name(), "mail.send");
}

#[test]
fn handler_errors_carry_their_kind_and_chain() {
    #[derive(Debug, thiserror::Error)]
    #[error("provider said no")]
    struct Outer(#[source] std::io::Error);

    let err: HandlerError = Outer(std::io::Error::other("card declined")).into();
    assert!(!err.is_permanent());
    assert_eq!(err.chain(), ["provider said no", "card declined"]);
    assert!(HandlerError::permanent("bad amount").is_permanent());
    let snooze = HandlerError::snooze(std::time::Duration::from_secs(5));
    assert_eq!(
        snooze.snoozed_for(),
        Some(std::time::Duration::from_secs(5))
    );
}
