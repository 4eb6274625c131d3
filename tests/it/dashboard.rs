//! The operators' dashboard over HTTP: every route's status, the escaping
//! of database values, filters and pages, refusals, token and CSRF. The
//! router is called as a service (`oneshot`), with a real database.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use pgoutbox::admin::{Action, Admin};
use pgoutbox::dashboard::{self, CONTENT_SECURITY_POLICY, DashboardOptions};
use pgoutbox::prelude::*;
use pgoutbox::testing::{CrashPoint, Harness, TestDatabase};
use pgoutbox::{Identifier, Status};
use tower::ServiceExt as _;

use crate::support::test_db;

/// What a hostile payload and error hold: markup, both quotes, and (in
/// the error) a NUL, which pgoutbox stores as `\0`.
pub(crate) const EVIL: &str = "<script>alert(\"x\")</script> it's";

/// Always fails for good, with an error full of markup and a NUL.
#[operation("dash.evil", max_attempts = 1)]
pub(crate) async fn dash_evil(_ctx: &mut Context, note: String) -> Result<()> {
    Err(HandlerError::permanent(format!("{note} \0 after-nul")))
}

/// Sends a message: not idempotent, so a crash after the call stalls it.
#[operation("dash.sms")]
pub(crate) async fn dash_sms(_ctx: &mut Context, to: String) -> Result<()> {
    let _ = to;
    Ok(())
}

pub(crate) struct Page {
    pub(crate) status: StatusCode,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: String,
}

impl Page {
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix(&format!("{name}=")))
            .map(|c| c.split(';').next().unwrap_or_default().to_owned())
    }

    fn location(&self) -> String {
        self.headers[header::LOCATION].to_str().unwrap().to_owned()
    }
}

async fn send(app: &Router, request: Request<Body>) -> Page {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
        .await
        .unwrap();
    Page {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn get(app: &Router, path: &str, cookie: Option<&str>) -> Page {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    send(app, request.body(Body::empty()).unwrap()).await
}

async fn post(app: &Router, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Page {
    let mut request =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let body = serde_urlencoded_form(form);
    send(app, request.body(Body::from(body)).unwrap()).await
}

fn serde_urlencoded_form(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn admin(db: &TestDatabase) -> Admin {
    Admin::new(db.pool().clone(), &Identifier::default())
}

/// A stalled `dash.sms` (its worker lost after the call) and a dead
/// `dash.evil`; returns their ids.
pub(crate) async fn seed(db: &TestDatabase) -> (OperationId, OperationId) {
    let stalled = Harness::new(db)
        .operation::<DashSms>()
        .crash_at(CrashPoint::AfterExternalCall)
        .run_inline(DashSms {
            to: "+4912345".into(),
        })
        .await
        .unwrap();
    assert_eq!(stalled.operation.status, Status::Stalled);
    let dead = Harness::new(db)
        .operation::<DashEvil>()
        .run_inline(DashEvil { note: EVIL.into() })
        .await
        .unwrap();
    assert_eq!(dead.operation.status, Status::Dead);
    // A running system records its operations' schemas.
    Harness::new(db)
        .operation::<DashEvil>()
        .operation::<DashSms>()
        .run_until_idle()
        .await
        .unwrap();
    (stalled.operation.id, dead.operation.id)
}

fn options_with_token() -> DashboardOptions {
    DashboardOptions {
        token: Some("t0ken-for-tests".into()),
        allow_actions: true,
        actor: "alice".into(),
        ..DashboardOptions::default()
    }
}

const BEARER: &str = "t0ken-for-tests";

async fn authed(app: &Router, path: &str) -> Page {
    send(
        app,
        Request::get(path)
            .header(header::AUTHORIZATION, format!("Bearer {BEARER}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

/// The cookies of a session signed in with the token, carrying `csrf`.
async fn signed_in(app: &Router, csrf: &str) -> String {
    let auth = post(app, "/login", None, &[("token", BEARER)])
        .await
        .cookie("pgoutbox_auth")
        .unwrap();
    format!("pgoutbox_auth={auth}; pgoutbox_csrf={csrf}")
}

/// Posts a bulk action's confirmation and checks that it counts `n` rows.
async fn confirm_bulk(app: &Router, cookies: &str, filter: &[(&str, &str)], n: usize) {
    let confirm = post(app, "/bulk", Some(cookies), filter).await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(
        confirm
            .body
            .contains(&format!("<strong id=\"bulk-count\">{n}</strong>")),
        "{}",
        confirm.body
    );
}

#[tokio::test]
async fn every_page_renders_with_a_strict_csp_and_escapes_database_values() {
    let db = test_db().await;
    let (stalled, dead) = seed(&db).await;
    let app = dashboard::router(admin(&db), DashboardOptions::default());
    let pages = [
        "/".to_owned(),
        "/live".to_owned(),
        "/operations".to_owned(),
        format!("/operations/{stalled}"),
        format!("/operations/{dead}"),
        "/stalled".to_owned(),
        "/schemas".to_owned(),
        "/schemas/dash.evil".to_owned(),
        "/login".to_owned(),
        "/assets/app.css".to_owned(),
        "/assets/app.js".to_owned(),
    ];
    for path in &pages {
        let page = get(&app, path, None).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert_eq!(
            page.headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY,
            "{path}"
        );
        assert_eq!(page.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        // No inline script anywhere, no CDN.
        assert!(!page.body.contains("<script>"), "{path}");
        assert!(!page.body.contains("src=\"http"), "{path}");
        assert!(!page.body.contains("href=\"http"), "{path}");
    }
    assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self'"));
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));

    // The payload and the error: escaped, the NUL shown as `\0`.
    let page = get(&app, &format!("/operations/{dead}"), None).await;
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(
        page.body
            .contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; it's")
    );
    assert!(
        page.body.contains(r"\0 after-nul"),
        "the NUL is shown as `\\0`"
    );
    assert!(!page.body.contains('\0'));
    // The list shows the error too, escaped, and finds it by its text.
    let list = get(&app, "/operations?error=AFTER-NUL", None).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains(&format!("data-id=\"{dead}\"")));
    assert!(!list.body.contains(&format!("data-id=\"{stalled}\"")));
    assert!(!list.body.contains("<script>alert"));
    assert!(list.body.contains("&lt;script&gt;"));

    // The overview: stalled and dead counted, the names listed.
    let overview = get(&app, "/", None).await;
    assert!(overview.body.contains("data-state=\"stalled\""));
    assert!(overview.body.contains("dash.evil") && overview.body.contains("dash.sms"));
    assert!(overview.body.contains("<svg"), "the throughput chart");
    // The stalled page lists the in-doubt one, with its lost attempt.
    let stalled_page = get(&app, "/stalled", None).await;
    assert!(
        stalled_page
            .body
            .contains(&format!("data-id=\"{stalled}\""))
    );
    assert!(stalled_page.body.contains("lost"));
    // The schema page of a name nobody registered: 404.
    assert_eq!(
        get(&app, "/schemas/nope", None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_publish_with_a_nul_in_its_payload_is_refused_before_it_reaches_a_page() {
    let db = test_db().await;
    let mut tx = db.pool().begin().await.unwrap();
    let refused = pgoutbox::publish(
        &mut tx,
        DashEvil {
            note: "a\0b".into(),
        },
    )
    .await;
    assert!(refused.is_err(), "PostgreSQL's jsonb cannot hold a NUL");
}

#[tokio::test]
async fn filters_have_stable_urls_and_every_list_is_paged() {
    let db = test_db().await;
    let mut tx = db.pool().begin().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            pgoutbox::publish(
                &mut tx,
                DashSms {
                    to: format!("+{i}"),
                },
            )
            .await
            .unwrap(),
        );
    }
    tx.commit().await.unwrap();
    let options = DashboardOptions {
        page_size: 3,
        ..DashboardOptions::default()
    };
    let app = dashboard::router(admin(&db), options);
    let first = get(&app, "/operations?name=dash.sms&status=pending", None).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body.matches("data-id=").count(), 3);
    assert!(
        first.body.contains(&format!("data-id=\"{}\"", ids[6])),
        "newest first"
    );
    let next = format!("before={}", ids[4]);
    assert!(
        first.body.contains(&next),
        "the next page's link: {}",
        first.body
    );
    let second = get(
        &app,
        &format!("/operations?name=dash.sms&status=pending&{next}"),
        None,
    )
    .await;
    assert_eq!(second.body.matches("data-id=").count(), 3);
    assert!(second.body.contains(&format!("data-id=\"{}\"", ids[3])));
    let third = get(
        &app,
        &format!("/operations?name=dash.sms&status=pending&before={}", ids[1]),
        None,
    )
    .await;
    assert_eq!(third.body.matches("data-id=").count(), 1);
    assert!(!third.body.contains("rel=\"next\""), "the last page");
    // Other filters.
    let none = get(&app, "/operations?queue=elsewhere", None).await;
    assert_eq!(none.body.matches("data-id=").count(), 0);
    let root = get(&app, &format!("/operations?root={}", ids[2]), None).await;
    assert_eq!(root.body.matches("data-id=").count(), 1);
    let recent = get(&app, "/operations?age=1h", None).await;
    assert_eq!(recent.body.matches("data-id=").count(), 3);
    // Bad input: a clear 400, the value escaped.
    for (path, says) in [
        (
            "/operations?status=%3Cb%3Eweird",
            "unknown state `&lt;b&gt;weird`",
        ),
        ("/operations?age=soon", "invalid age `soon`"),
        ("/operations?root=x", "invalid root `x`"),
        ("/operations?before=x", "invalid page `x`"),
        ("/operations/abc", "invalid operation id `abc`"),
        ("/stalled?after=x", "invalid operation id `x`"),
    ] {
        let page = get(&app, path, None).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(page.body.contains(says), "{path}: {}", page.body);
    }
    assert_eq!(
        get(&app, "/operations/999999", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/nowhere", None).await.status,
        StatusCode::NOT_FOUND
    );
    // Without a token the dashboard is read-only: no forms, POSTs refused.
    let page = get(&app, &format!("/operations/{}", ids[0]), None).await;
    assert!(!page.body.contains("name=\"reason\""));
    let refused = post(
        &app,
        &format!("/operations/{}/act", ids[0]),
        None,
        &[("action", "cancel"), ("reason", "r")],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("--allow-actions"));
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // Every refusal, then the applied actions.
async fn actions_need_the_token_a_csrf_token_and_a_post_and_are_recorded() {
    let db = test_db().await;
    let (stalled, dead) = seed(&db).await;
    let app = dashboard::router(admin(&db), options_with_token());

    // Not signed in: the sign-in page, for pages and actions alike.
    let page = get(&app, "/", None).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("name=\"token\""));
    let wrong = post(&app, "/login", None, &[("token", "guess")]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let signed = post(&app, "/login", None, &[("token", BEARER)]).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER);
    let auth = signed.cookie("pgoutbox_auth").expect("the sign-in cookie");
    assert!(
        !auth.contains(BEARER),
        "the cookie holds a hash, not the token"
    );
    let set = signed.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );

    // Signed in: the page sets a CSRF cookie and puts it in its form.
    let page = get(
        &app,
        &format!("/operations/{stalled}"),
        Some(&format!("pgoutbox_auth={auth}")),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page.cookie("pgoutbox_csrf").expect("a CSRF cookie");
    assert!(
        page.body
            .contains(&format!("name=\"csrf\" value=\"{csrf}\""))
    );
    let cookies = format!("pgoutbox_auth={auth}; pgoutbox_csrf={csrf}");
    let act = format!("/operations/{stalled}/act");

    // Refusals: no CSRF, a wrong one, no reason, an unknown action, GET.
    let no_csrf = post(
        &app,
        &act,
        Some(&cookies),
        &[("action", "resolve-succeeded"), ("reason", "x")],
    )
    .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    assert!(no_csrf.body.contains("CSRF"));
    let bad_csrf = post(
        &app,
        &act,
        Some(&cookies),
        &[
            ("action", "resolve-succeeded"),
            ("reason", "x"),
            ("csrf", "0123456789abcdef0123456789abcdef"),
        ],
    )
    .await;
    assert_eq!(bad_csrf.status, StatusCode::FORBIDDEN);
    let no_reason = post(
        &app,
        &act,
        Some(&cookies),
        &[
            ("action", "resolve-succeeded"),
            ("reason", " "),
            ("csrf", &csrf),
        ],
    )
    .await;
    assert_eq!(no_reason.status, StatusCode::BAD_REQUEST);
    assert!(no_reason.body.contains("a reason is required"));
    let unknown = post(
        &app,
        &act,
        Some(&cookies),
        &[("action", "delete"), ("reason", "x"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let by_get = get(&app, &act, Some(&cookies)).await;
    assert_eq!(by_get.status, StatusCode::METHOD_NOT_ALLOWED);
    let anonymous = post(
        &app,
        &act,
        Some(&format!("pgoutbox_csrf={csrf}")),
        &[
            ("action", "resolve-succeeded"),
            ("reason", "x"),
            ("csrf", &csrf),
        ],
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        admin(&db)
            .show(stalled)
            .await
            .unwrap()
            .unwrap()
            .actions
            .len(),
        0,
        "nothing recorded"
    );

    // Applied: back to the page, which shows the new state and the trail.
    let done = post(
        &app,
        &act,
        Some(&cookies),
        &[
            ("action", "resolve-succeeded"),
            ("reason", "found ch_1 at <the> provider"),
            ("csrf", &csrf),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(
        done.location()
            .starts_with(&format!("../{stalled}?notice="))
    );
    let after = get(
        &app,
        &format!("/operations/{stalled}?notice=resolve%3A+done"),
        Some(&cookies),
    )
    .await;
    assert!(after.body.contains("state-succeeded"));
    assert!(after.body.contains("found ch_1 at &lt;the&gt; provider"));
    assert!(after.body.contains("resolve: done"));
    let detail = admin(&db).show(stalled).await.unwrap().unwrap();
    assert_eq!(detail.operation.status, Status::Succeeded);
    assert_eq!(detail.actions.len(), 1);
    assert_eq!(
        (
            detail.actions[0].actor.as_str(),
            detail.actions[0].action.as_str()
        ),
        ("alice", "resolve")
    );

    // Refused by the state: 409 with the message, recorded as refused.
    let again = post(
        &app,
        &act,
        Some(&cookies),
        &[("action", "cancel"), ("reason", "late"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(
        again.body.contains(&format!(
            "cannot cancel operation {stalled}: it is succeeded"
        )),
        "{}",
        again.body
    );
    let detail = admin(&db).show(stalled).await.unwrap().unwrap();
    assert_eq!(detail.actions.last().unwrap().outcome, "refused");

    // A replay of the dead one: a new operation.
    let replay = post(
        &app,
        &format!("/operations/{dead}/act"),
        Some(&cookies),
        &[("action", "replay"), ("reason", "fixed"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(replay.status, StatusCode::SEE_OTHER);
    assert_eq!(
        admin(&db).show(dead).await.unwrap().unwrap().children.len(),
        1
    );
    // Unknown operation.
    let missing = post(
        &app,
        "/operations/999999/act",
        Some(&cookies),
        &[("action", "retry"), ("reason", "x"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bulk_retry_shows_how_many_it_will_touch_then_does_it() {
    let db = test_db().await;
    let mut dead = Vec::new();
    for i in 0..3 {
        let detail = Harness::new(&db)
            .operation::<DashEvil>()
            .run_inline(DashEvil {
                note: format!("n{i}"),
            })
            .await
            .unwrap();
        dead.push(detail.operation.id);
    }
    let app = dashboard::router(admin(&db), options_with_token());
    let page = authed(&app, "/operations?status=dead&name=dash.evil").await;
    let csrf = page.cookie("pgoutbox_csrf").unwrap();
    assert!(
        page.body.contains("action=\"/bulk\""),
        "the bulk form of a filtered list"
    );
    let cookies = signed_in(&app, &csrf).await;
    let filter = [
        ("status", "dead"),
        ("name", "dash.evil"),
        ("action", "retry"),
        ("reason", "provider back"),
        ("csrf", csrf.as_str()),
    ];
    confirm_bulk(&app, &cookies, &filter, 3).await;
    assert_eq!(
        admin(&db)
            .show(dead[0])
            .await
            .unwrap()
            .unwrap()
            .operation
            .status,
        Status::Dead,
        "a preview changes nothing"
    );
    let upto = dead.iter().max().unwrap().to_string();
    let mut run = filter.to_vec();
    run.push(("upto", &upto));
    let done = post(&app, "/bulk/run", Some(&cookies), &run).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(
        done.location()
            .starts_with("../operations?status=dead&name=dash.evil&notice=")
    );
    for id in &dead {
        let detail = admin(&db).show(*id).await.unwrap().unwrap();
        assert_eq!(detail.operation.status, Status::Pending);
        assert_eq!(detail.actions[0].actor, "alice");
        assert_eq!(detail.actions[0].reason, "provider back");
    }
    // A bulk run without a confirmation's bound, or of another action.
    let unbound = post(&app, "/bulk/run", Some(&cookies), &filter).await;
    assert_eq!(unbound.status, StatusCode::BAD_REQUEST);
    let mut resolve = filter.to_vec();
    resolve[2] = ("action", "resolve-dead");
    assert_eq!(
        post(&app, "/bulk", Some(&cookies), &resolve).await.status,
        StatusCode::BAD_REQUEST
    );
    let _ = Action::Retry;
}

#[tokio::test]
async fn mounted_under_a_prefix_every_link_stays_inside_it() {
    let db = test_db().await;
    let (stalled, _) = seed(&db).await;
    let app = Router::new().nest(
        "/admin/outbox",
        dashboard::router(admin(&db), options_with_token()),
    );
    let root = authed(&app, "/admin/outbox").await;
    assert_eq!(root.status, StatusCode::OK, "{}", root.body);
    assert!(root.body.contains("href=\"/admin/outbox/operations\""));
    assert!(root.body.contains("href=\"/admin/outbox/assets/app.css\""));
    assert!(root.body.contains("data-src=\"/admin/outbox/live\""));
    let set = root.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(set.ends_with("Path=/admin/outbox"), "{set}");
    let op = authed(&app, &format!("/admin/outbox/operations/{stalled}")).await;
    assert_eq!(op.status, StatusCode::OK);
    assert!(op.body.contains("href=\"/admin/outbox\""), "the overview");
    assert!(op.body.contains(&format!(
        "action=\"/admin/outbox/operations/{stalled}/act\""
    )));
    for link in op.body.split("href=\"").skip(1) {
        assert!(
            link.starts_with("/admin/outbox") || link.starts_with('#'),
            "a link out of the prefix: {link}"
        );
    }
    // Signing in lands on the overview, under the prefix.
    let signed = post(&app, "/admin/outbox/login", None, &[("token", BEARER)]).await;
    assert_eq!(signed.location(), "/admin/outbox");
    // The live part that the overview's script fetches.
    let live = authed(&app, "/admin/outbox/live").await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(!live.body.contains("<html"));
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test]
async fn the_schema_page_diffs_two_versions() {
    let db = test_db().await;
    // Two versions of one payload, as two deploys would have recorded them.
    sqlx::query(
        "INSERT INTO pgoutbox.operation_types (name, schema_hash, json_schema, first_seen_at) VALUES \
         ('dash.charge', 'aaaaaaaaaaaa0001', '{\"properties\": {\"amount\": {\"type\": \"integer\"}}}', now() - interval '1 day'), \
         ('dash.charge', 'bbbbbbbbbbbb0002', '{\"properties\": {\"amount\": {\"type\": \"integer\"}, \"currency\": {\"type\": \"string\"}}}', now())",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let app = dashboard::router(admin(&db), DashboardOptions::default());
    let list = get(&app, "/schemas", None).await;
    assert!(list.body.contains("href=\"/schemas/dash.charge\""));
    assert!(list.body.contains("bbbbbbbbbbbb"), "the current version");
    // By default the last version against the one before.
    let page = get(&app, "/schemas/dash.charge", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("version 1 → 2"));
    assert!(page.body.contains("<span class=\"add\">+ "));
    assert!(page.body.contains("currency"));
    assert!(
        !page.body.contains("<span class=\"del\">"),
        "nothing was removed"
    );
    // Either way round, by hash prefix.
    let back = get(
        &app,
        "/schemas/dash.charge?from=bbbbbbbbbbbb&to=aaaaaaaaaaaa",
        None,
    )
    .await;
    assert!(back.body.contains("version 2 → 1"));
    assert!(back.body.contains("<span class=\"del\">- "));
    let unknown = get(&app, "/schemas/dash.charge?from=cccc", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body.contains("no version `cccc` of `dash.charge`"));
}

/// The single actions not covered above (retry, resolve as dead, cancel)
/// and a bulk cancel: each applied through `Admin`, recorded with the
/// dashboard's actor and the reason given.
#[tokio::test]
async fn every_action_and_a_bulk_cancel_apply_and_are_recorded() {
    let db = test_db().await;
    let (stalled, dead) = seed(&db).await;
    let mut tx = db.pool().begin().await.unwrap();
    let mut pending = Vec::new();
    for i in 0..4 {
        let sms = DashSms {
            to: format!("+{i}"),
        };
        pending.push(pgoutbox::publish(&mut tx, sms).await.unwrap());
    }
    tx.commit().await.unwrap();
    let app = dashboard::router(admin(&db), options_with_token());
    let csrf = authed(&app, "/operations")
        .await
        .cookie("pgoutbox_csrf")
        .unwrap();
    let cookies = signed_in(&app, &csrf).await;
    let recorded = async |id: OperationId, status: Status, reason: &str| {
        let detail = admin(&db).show(id).await.unwrap().unwrap();
        assert_eq!(detail.operation.status, status, "operation {id}");
        let last = detail.actions.last().expect("an operator action");
        assert_eq!(
            (
                last.actor.as_str(),
                last.reason.as_str(),
                last.outcome.as_str()
            ),
            ("alice", reason, "applied"),
            "operation {id}"
        );
    };
    for (id, action, status) in [
        (dead, "retry", Status::Pending),
        (stalled, "resolve-dead", Status::Dead),
        (pending[0], "cancel", Status::Cancelled),
    ] {
        let done = post(
            &app,
            &format!("/operations/{id}/act"),
            Some(&cookies),
            &[
                ("action", action),
                ("reason", "by the book"),
                ("csrf", &csrf),
            ],
        )
        .await;
        assert_eq!(
            done.status,
            StatusCode::SEE_OTHER,
            "{action}: {}",
            done.body
        );
        recorded(id, status, "by the book").await;
    }

    // Bulk cancel of the three still pending `dash.sms`: the retried
    // `dash.evil` is pending too, but outside the filter.
    let filter = [
        ("status", "pending"),
        ("name", "dash.sms"),
        ("action", "cancel"),
        ("reason", "customer left"),
        ("csrf", csrf.as_str()),
    ];
    confirm_bulk(&app, &cookies, &filter, 3).await;
    let upto = pending.iter().max().unwrap().to_string();
    let mut run = filter.to_vec();
    run.push(("upto", &upto));
    let done = post(&app, "/bulk/run", Some(&cookies), &run).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    for id in &pending[1..] {
        recorded(*id, Status::Cancelled, "customer left").await;
    }
    let retried = admin(&db).show(dead).await.unwrap().unwrap();
    assert_eq!(
        retried.operation.status,
        Status::Pending,
        "outside the filter"
    );
}
