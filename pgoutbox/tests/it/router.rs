use pgoutbox::RouterError;
use pgoutbox::prelude::*;

use crate::fixtures::{self, Charge, IssueRefund, RecordEntry, SendMail};

#[test]
fn routers_compose_with_prefixes_and_select_by_type() {
    let refunds = WorkflowRouter::with_prefix("billing.refunds").operation::<IssueRefund>();
    let billing = WorkflowRouter::with_prefix("billing")
        .operation::<Charge>()
        .include_router(refunds)
        .concurrency(2);
    let mail = WorkflowRouter::with_prefix("mail").operation::<SendMail>();
    let app = WorkflowRouter::new()
        .include_router(billing)
        .include_router(mail)
        .operation::<RecordEntry>();
    let routes = app.resolve(&fixtures::registry()).unwrap();
    assert_eq!(
        routes.names().collect::<Vec<_>>(),
        [
            "billing.charge",
            "billing.refunds.issue",
            "ledger.record",
            "mail.send"
        ]
    );
    assert_eq!(
        routes.get("billing.refunds.issue").unwrap().concurrency(),
        Some(2)
    );
    assert_eq!(routes.get("mail.send").unwrap().concurrency(), None);
    assert!(routes.get("mail.send").unwrap().registration().is_handler());
}

#[test]
fn an_included_router_reports_its_own_limit_or_its_enclosing_one() {
    let refunds = WorkflowRouter::with_prefix("billing.refunds")
        .operation::<IssueRefund>()
        .concurrency(1);
    let billing = WorkflowRouter::with_prefix("billing")
        .operation::<Charge>()
        .include_router(refunds)
        .concurrency(4);
    let app = WorkflowRouter::new()
        .include_router(billing)
        .operation::<SendMail>();
    let routes = app.resolve(&fixtures::registry()).unwrap();
    assert_eq!(routes.get("billing.charge").unwrap().concurrency(), Some(4));
    assert_eq!(
        routes.get("billing.refunds.issue").unwrap().concurrency(),
        Some(1)
    );
    assert_eq!(routes.get("mail.send").unwrap().concurrency(), None);
}

#[test]
fn a_concurrency_limit_of_zero_is_refused() {
    let err = WorkflowRouter::new()
        .include_router(
            WorkflowRouter::with_prefix("mail")
                .operation::<SendMail>()
                .concurrency(0),
        )
        .resolve(&fixtures::registry())
        .unwrap_err();
    assert_eq!(
        err,
        RouterError::ZeroConcurrency {
            router: "`mail`".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "router `mail` has a concurrency limit of 0: its operations would never run; \
         remove the limit or set one of at least 1"
    );
}

#[test]
fn a_worker_handles_only_what_its_routers_hold() {
    let routes = WorkflowRouter::with_prefix("mail")
        .operation::<SendMail>()
        .resolve(&fixtures::registry())
        .unwrap();
    assert_eq!(routes.len(), 1);
    assert!(routes.get("billing.charge").is_none());
}

#[test]
fn a_prefix_that_disagrees_is_refused() {
    let err = WorkflowRouter::with_prefix("mail")
        .operation::<Charge>()
        .resolve(&fixtures::registry())
        .unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::OutsidePrefix {
                name: "billing.charge",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("is not under its router's prefix `mail`"),
        "{err}"
    );

    // Segment-wise: `billingx` is not under `billing`.
    let err = WorkflowRouter::with_prefix("bill")
        .operation::<Charge>()
        .resolve(&fixtures::registry())
        .unwrap_err();
    assert!(matches!(err, RouterError::OutsidePrefix { .. }), "{err}");
}

#[test]
fn a_nested_prefix_must_extend_its_parent() {
    let err = WorkflowRouter::with_prefix("billing")
        .include_router(WorkflowRouter::with_prefix("mail").operation::<SendMail>())
        .resolve(&fixtures::registry())
        .unwrap_err();
    assert_eq!(
        err,
        RouterError::NestedPrefix {
            parent: "billing".into(),
            child: "mail".into()
        }
    );
}

#[test]
fn an_invalid_prefix_is_refused() {
    let err = WorkflowRouter::with_prefix("Billing!")
        .resolve(&fixtures::registry())
        .unwrap_err();
    assert_eq!(err, RouterError::InvalidPrefix("Billing!".into()));
}

#[test]
fn two_routers_holding_one_name_are_refused_naming_both() {
    let app = WorkflowRouter::new()
        .include_router(WorkflowRouter::with_prefix("mail").operation::<SendMail>())
        .include_router(WorkflowRouter::new().operation::<SendMail>());
    let err = app.resolve(&fixtures::registry()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "operation `mail.send` is included twice: by router `mail` and by router (no prefix)"
    );
}

#[test]
fn an_operation_without_a_handler_is_refused() {
    let registry = Registry::from_registrations(pgoutbox::handlers![fixtures::charge]).unwrap();
    let err = WorkflowRouter::new()
        .operation::<SendMail>()
        .resolve(&registry)
        .unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::NoHandler {
                name: "mail.send",
                ..
            }
        ),
        "{err}"
    );
}
