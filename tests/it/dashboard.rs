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

/// The `Host` a browser on loopback sends (any port is allowed there).
const HOST: &str = "127.0.0.1:7480";
/// The `Origin` of a form posted from the dashboard's own pages.
const ORIGIN: &str = "http://127.0.0.1:7480";

/// Sends a request as a browser would: with a `Host` unless it has one.
async fn send(app: &Router, mut request: Request<Body>) -> Page {
    if !request.headers().contains_key(header::HOST) {
        request
            .headers_mut()
            .insert(header::HOST, header::HeaderValue::from_static(HOST));
    }
    send_as_is(app, request).await
}

/// Sends a request exactly as built.
async fn send_as_is(app: &Router, request: Request<Body>) -> Page {
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

/// Posts a form from the dashboard's own page (its `Origin`).
async fn post(app: &Router, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Page {
    let mut request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ORIGIN, ORIGIN);
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
    DashboardOptions::with_token(BEARER, "alice")
        .unwrap()
        .allow_actions(true)
}

const BEARER: &str = "t0ken-for-tests-0123";

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

/// Signs in with `token`: the session's cookie header and its CSRF token
/// (as the forms of its pages carry it).
async fn sign_in_as(app: &Router, token: &str) -> (String, String) {
    let signed = post(app, "/login", None, &[("token", token)]).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.body);
    let session = signed.cookie("pgoutbox_session").unwrap();
    let cookies = format!("pgoutbox_session={session}");
    let page = get(app, "/operations", Some(&cookies)).await;
    (cookies, csrf_of(&page.body))
}

/// Signs in with the test token.
async fn signed_in(app: &Router) -> (String, String) {
    sign_in_as(app, BEARER).await
}

/// The CSRF token a page's forms carry.
fn csrf_of(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token");
    let rest = &body[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
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
        "/workflows".to_owned(),
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
    let options = DashboardOptions::default().page_size(3);
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
    let session = signed
        .cookie("pgoutbox_session")
        .expect("the sign-in cookie");
    assert_eq!(session.len(), 64, "a random 256-bit id");
    let set = signed.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Max-Age="),
        "{set}"
    );

    // Signed in: the page's forms carry the session's CSRF token.
    let cookies = format!("pgoutbox_session={session}");
    let page = get(&app, &format!("/operations/{stalled}"), Some(&cookies)).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = csrf_of(&page.body);
    assert_eq!(csrf.len(), 64);
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
    let (cookies, csrf) = signed_in(&app).await;
    let page = get(
        &app,
        "/operations?status=dead&name=dash.evil",
        Some(&cookies),
    )
    .await;
    assert!(
        page.body.contains("action=\"/bulk\""),
        "the bulk form of a filtered list"
    );
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
    let set = signed.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(set.contains("; Path=/admin/outbox;"), "{set}");
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
    assert!(page.body.contains("Output (0 version(s))"));
    // The output type's versions (what a handler's `Result<T>` records).
    sqlx::query(
        "INSERT INTO pgoutbox.operation_outputs (name, output_hash, json_schema) VALUES \
         ('dash.charge', 'dddddddddddd0001', '{\"title\": \"Receipt\"}')",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let page = get(&app, "/schemas/dash.charge", None).await;
    assert!(page.body.contains("Output (1 version(s))"), "{}", page.body);
    assert!(page.body.contains("dddddddddddd") && page.body.contains("Receipt"));
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
    let (cookies, csrf) = signed_in(&app).await;
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

/// Issue 23: a page fetched with a `Host` the dashboard does not answer
/// to (a DNS-rebinding page) must not read a payload, even on the open,
/// tokenless loopback dashboard.
#[tokio::test]
async fn a_foreign_host_is_refused_before_any_page() {
    let db = test_db().await;
    let (stalled, _) = seed(&db).await;
    let app = dashboard::router(admin(&db), DashboardOptions::default());
    let path = format!("/operations/{stalled}");
    let own = get(&app, &path, None).await;
    assert_eq!(own.status, StatusCode::OK);
    assert!(own.body.contains("+4912345"), "the payload, on loopback");
    for host in [
        "attacker.example",
        "attacker.example:7480",
        "127.0.0.1.nip.io",
    ] {
        let rebound = send(
            &app,
            Request::get(&path)
                .header(header::HOST, host)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(rebound.status, StatusCode::FORBIDDEN, "{host}");
        assert!(
            !rebound.body.contains("+4912345"),
            "{host}: {}",
            rebound.body
        );
        assert!(rebound.body.contains("dashboard.allowed_hosts"));
        assert_eq!(
            rebound.headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
    }
    // No `Host` at all: refused too.
    let hostless = send_as_is(&app, Request::get(&path).body(Body::empty()).unwrap()).await;
    assert_eq!(hostless.status, StatusCode::BAD_REQUEST);
    // A configured name is answered, and then only the configured names.
    let named = dashboard::router(
        admin(&db),
        DashboardOptions::default()
            .allowed_hosts(["ops.example.com", "127.0.0.1:9000"])
            .unwrap(),
    );
    let host = async |host: &str| {
        send(
            &named,
            Request::get("/")
                .header(header::HOST, host)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .status
    };
    assert_eq!(host("ops.example.com").await, StatusCode::OK);
    assert_eq!(host("OPS.example.com:8443").await, StatusCode::OK);
    assert_eq!(host("127.0.0.1:9000").await, StatusCode::OK);
    assert_eq!(host("127.0.0.1:9001").await, StatusCode::FORBIDDEN);
    assert_eq!(host("localhost:9000").await, StatusCode::FORBIDDEN);
    assert!(
        DashboardOptions::default()
            .allowed_hosts(["http://x/"])
            .is_err()
    );
}

/// Issue 23: a state-changing request must come from the dashboard's own
/// pages (`Origin`, or `Referer` without it), or carry a bearer token.
#[tokio::test]
async fn a_post_from_another_site_changes_nothing() {
    let db = test_db().await;
    let (stalled, _) = seed(&db).await;
    let app = dashboard::router(admin(&db), options_with_token());
    let (cookies, csrf) = signed_in(&app).await;
    let act = format!("/operations/{stalled}/act");
    let form = serde_urlencoded_form(&[
        ("action", "resolve-succeeded"),
        ("reason", "x"),
        ("csrf", &csrf),
    ]);
    let attempt = async |headers: &[(header::HeaderName, &str)]| {
        let mut request = Request::post(&act)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, &cookies);
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        send(&app, request.body(Body::from(form.clone())).unwrap()).await
    };
    let cross = attempt(&[(header::ORIGIN, "http://attacker.example")]).await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN, "{}", cross.body);
    let null = attempt(&[(header::ORIGIN, "null")]).await;
    assert_eq!(null.status, StatusCode::FORBIDDEN);
    let referer = attempt(&[(header::REFERER, "http://attacker.example/x")]).await;
    assert_eq!(referer.status, StatusCode::FORBIDDEN);
    let neither = attempt(&[]).await;
    assert_eq!(neither.status, StatusCode::FORBIDDEN);
    assert!(neither.body.contains("Origin"), "{}", neither.body);
    // Only a bearer token stands in for the Origin, not any Authorization.
    let basic = attempt(&[(header::AUTHORIZATION, "Basic YTpi")]).await;
    assert_eq!(basic.status, StatusCode::FORBIDDEN);
    let detail = admin(&db).show(stalled).await.unwrap().unwrap();
    assert_eq!(detail.operation.status, Status::Stalled);
    assert!(detail.actions.is_empty(), "nothing recorded");
    // The page's own Referer (no Origin) is accepted.
    let own = attempt(&[(header::REFERER, "http://127.0.0.1:7480/operations/1")]).await;
    assert_eq!(own.status, StatusCode::SEE_OTHER, "{}", own.body);
    let detail = admin(&db).show(stalled).await.unwrap().unwrap();
    assert_eq!(detail.operation.status, Status::Succeeded);
}

/// Issue 23: the CSRF token is bound to the session: a planted
/// `pgoutbox_csrf` cookie, or another session's token, retries nothing.
#[tokio::test]
async fn a_planted_or_foreign_csrf_token_is_refused() {
    let db = test_db().await;
    let (_, dead) = seed(&db).await;
    let app = dashboard::router(admin(&db), options_with_token());
    let (cookies, csrf) = signed_in(&app).await;
    let (_, other_csrf) = signed_in(&app).await;
    assert_ne!(csrf, other_csrf, "each session has its own token");
    let act = format!("/operations/{dead}/act");
    // The victim's browser holds its sign-in cookie and a CSRF cookie the
    // attacker planted (from a sibling subdomain, say), whose value the
    // attacker's form repeats.
    let planted = "0123456789abcdef0123456789abcdef";
    let sign_in_cookie = cookies.split(';').next().unwrap();
    let with_planted = post(
        &app,
        &act,
        Some(&format!("{sign_in_cookie}; pgoutbox_csrf={planted}")),
        &[("action", "retry"), ("reason", "x"), ("csrf", planted)],
    )
    .await;
    assert_eq!(with_planted.status, StatusCode::FORBIDDEN);
    assert!(with_planted.body.contains("CSRF"));
    let foreign = post(
        &app,
        &act,
        Some(&cookies),
        &[("action", "retry"), ("reason", "x"), ("csrf", &other_csrf)],
    )
    .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    let detail = admin(&db).show(dead).await.unwrap().unwrap();
    assert_eq!(detail.operation.status, Status::Dead, "not retried");
    assert!(detail.actions.is_empty());
    let own = post(
        &app,
        &act,
        Some(&cookies),
        &[("action", "retry"), ("reason", "x"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(own.status, StatusCode::SEE_OTHER, "{}", own.body);
}

/// Issue 23: a sign-in is a random session that expires, ends with
/// "Sign out", and is `Secure` over TLS or when configured.
#[tokio::test]
async fn sessions_expire_and_sign_out_ends_them() {
    let db = test_db().await;
    seed(&db).await;
    let short = options_with_token()
        .session_lifetime(Duration::from_millis(1500))
        .unwrap();
    let app = dashboard::router(admin(&db), short);
    let (cookies, _) = signed_in(&app).await;
    assert_eq!(get(&app, "/", Some(&cookies)).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let expired = get(&app, "/", Some(&cookies)).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED, "expired");
    assert!(expired.body.contains("name=\"token\""));

    let app = dashboard::router(admin(&db), options_with_token());
    let (cookies, csrf) = signed_in(&app).await;
    let page = get(&app, "/", Some(&cookies)).await;
    assert!(page.body.contains("action=\"/logout\""), "a sign-out form");
    assert!(page.body.contains(">alice<"), "who is signed in");
    // Signing out needs the session's CSRF token (no forced sign-out).
    let forced = post(&app, "/logout", Some(&cookies), &[("csrf", "x")]).await;
    assert_eq!(forced.status, StatusCode::FORBIDDEN);
    assert_eq!(get(&app, "/", Some(&cookies)).await.status, StatusCode::OK);
    let out = post(&app, "/logout", Some(&cookies), &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), "/login");
    let cleared = out.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("pgoutbox_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let after = get(&app, "/", Some(&cookies)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "the session ended");

    // `Secure`: when configured, or when the request came over HTTPS.
    let plain = post(&app, "/login", None, &[("token", BEARER)]).await;
    let set = plain.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(!set.contains("Secure"), "{set}");
    let proxied = send(
        &app,
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, ORIGIN)
            .header("x-forwarded-proto", "https")
            .body(Body::from(format!("token={BEARER}")))
            .unwrap(),
    )
    .await;
    let set = proxied.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
    let secure = dashboard::router(admin(&db), options_with_token().secure_cookie(true));
    let signed = post(&secure, "/login", None, &[("token", BEARER)]).await;
    let set = signed.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
}

/// Issue 23: an empty or short token cannot make a dashboard, whoever
/// builds the options.
#[test]
fn short_empty_or_shared_tokens_are_refused_where_the_options_are_built() {
    use pgoutbox::dashboard::DashboardError;
    let err = DashboardOptions::with_token("", "ops").unwrap_err();
    assert_eq!(
        err.to_string(),
        "the dashboard token of `ops` is empty: a token needs at least 16 characters"
    );
    let err = DashboardOptions::with_token("   ", "ops").unwrap_err();
    assert!(matches!(err, DashboardError::ShortToken { chars: 0, .. }));
    let err = DashboardOptions::with_token("t0ken-for-tests", "ops").unwrap_err();
    assert!(
        err.to_string().contains("has only 15 character(s)"),
        "{err}"
    );
    assert!(DashboardOptions::with_token("t0ken-for-tests!", "ops").is_ok());
    let none: [(&str, &str); 0] = [];
    assert_eq!(
        DashboardOptions::with_operators(none).unwrap_err(),
        DashboardError::NoOperator
    );
    assert_eq!(
        DashboardOptions::with_operators([("a", BEARER), ("b", BEARER)]).unwrap_err(),
        DashboardError::SharedToken("a".into(), "b".into())
    );
    assert!(matches!(
        DashboardOptions::with_operators([("", BEARER)]).unwrap_err(),
        DashboardError::BadOperatorName(_)
    ));
    assert!(
        DashboardOptions::default()
            .session_lifetime(Duration::ZERO)
            .is_err()
    );
}

/// Issue 23: failed sign-ins (form or bearer) are rate-limited: past the
/// limit even the right token waits, with `429` and `Retry-After`.
#[tokio::test]
async fn failed_sign_ins_are_rate_limited() {
    let db = test_db().await;
    let app = dashboard::router(admin(&db), options_with_token());
    let limit = dashboard::SIGN_IN_FAILURES_PER_CLIENT;
    for i in 0..limit {
        let page = if i % 2 == 0 {
            post(&app, "/login", None, &[("token", "a-wrong-guess-0000")]).await
        } else {
            send(
                &app,
                Request::get("/")
                    .header(header::AUTHORIZATION, "Bearer a-wrong-guess-0000")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
        };
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let limited = post(&app, "/login", None, &[("token", BEARER)]).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = limited.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&wait), "{wait}");
    assert!(limited.body.contains("too many failed sign-ins"));
    assert_eq!(
        limited.headers[header::CONTENT_SECURITY_POLICY],
        CONTENT_SECURITY_POLICY
    );
    assert!(limited.cookie("pgoutbox_session").is_none());
    let bearer = authed(&app, "/").await;
    assert_eq!(bearer.status, StatusCode::TOO_MANY_REQUESTS);
}

/// Guesses spread over many addresses use up the budget of all clients
/// together, but do not lock out an operator whose own address has not
/// failed: the limit slows guessing without handing anyone a way to keep
/// the operators out.
#[tokio::test]
async fn guesses_from_elsewhere_do_not_lock_an_operator_out() {
    let db = test_db().await;
    let app = dashboard::router(admin(&db), options_with_token());
    let sign_in_from =
        async |last: u8, token: &str| -> Page {
            let body = serde_urlencoded_form(&[("token", token)]);
            let mut request = Request::post("/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::ORIGIN, ORIGIN)
                .body(Body::from(body))
                .unwrap();
            request.extensions_mut().insert(axum::extract::ConnectInfo(
                std::net::SocketAddr::from(([10, 0, 0, last], 4000)),
            ));
            send(&app, request).await
        };
    let per_client = dashboard::SIGN_IN_FAILURES_PER_CLIENT;
    let in_all = dashboard::SIGN_IN_FAILURES_IN_ALL;
    let guessers = u8::try_from(in_all.div_ceil(per_client - 1)).unwrap();
    let mut failures = 0;
    'guessing: for last in 1..=guessers {
        for _ in 0..per_client - 1 {
            if failures == in_all {
                break 'guessing;
            }
            let page = sign_in_from(last, "a-wrong-guess-0000").await;
            assert_eq!(page.status, StatusCode::UNAUTHORIZED);
            failures += 1;
        }
    }
    // Every client together is over the budget: a guesser is held back,
    // even with the right token …
    let guesser = sign_in_from(1, BEARER).await;
    assert_eq!(guesser.status, StatusCode::TOO_MANY_REQUESTS);
    // … and the operator, whose address never failed, signs in.
    let operator = sign_in_from(200, BEARER).await;
    assert_eq!(operator.status, StatusCode::SEE_OTHER, "{}", operator.body);
    assert!(operator.cookie("pgoutbox_session").is_some());
}

/// Issue 23: extractor rejections (bad form, path, query), 404s and 405s
/// carry the security headers, and an unauthenticated request gets the
/// sign-in answer before any of them.
#[tokio::test]
async fn every_rejection_carries_the_headers_and_sign_in_comes_first() {
    let db = test_db().await;
    let (stalled, _) = seed(&db).await;
    let app = dashboard::router(admin(&db), options_with_token());
    let (cookies, csrf) = signed_in(&app).await;
    let bad_query = format!("/operations/{stalled}?notice=a&notice=b");
    let act = format!("/operations/{stalled}/act");
    let bad_form_body: &[(&str, &str)] = &[("reason", "no action"), ("csrf", &csrf)];
    // Unauthenticated: the sign-in answer, whatever else is wrong.
    let anonymous = [
        get(&app, &bad_query, None).await,
        post(&app, &act, None, bad_form_body).await,
        send(
            &app,
            Request::post(&act)
                .header(header::ORIGIN, ORIGIN)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("x"))
                .unwrap(),
        )
        .await,
        // No such page, and a method the page does not take: neither says
        // so before the sign-in.
        get(&app, "/nowhere", None).await,
        get(&app, &act, None).await,
    ];
    for page in &anonymous {
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
        assert!(page.body.contains("name=\"token\""));
    }
    // Signed in: the rejection itself, with the headers.
    let signed = [
        get(&app, &bad_query, Some(&cookies)).await,
        post(&app, &act, Some(&cookies), bad_form_body).await,
        get(&app, "/nowhere", Some(&cookies)).await,
        get(&app, &act, Some(&cookies)).await,
    ];
    let statuses: Vec<StatusCode> = signed.iter().map(|p| p.status).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::BAD_REQUEST,
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::NOT_FOUND,
            StatusCode::METHOD_NOT_ALLOWED
        ]
    );
    for page in anonymous.iter().chain(&signed) {
        assert_eq!(
            page.headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY,
            "{}",
            page.status
        );
        assert_eq!(page.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    }
}

/// Issue 23: named operators each sign in with their own token, and the
/// trail names who acted; the single token stays possible.
#[tokio::test]
async fn named_operators_are_named_in_the_trail() {
    let db = test_db().await;
    let (stalled, dead) = seed(&db).await;
    let options = DashboardOptions::with_operators([
        ("alice", "alice-token-0123456789"),
        ("bob", "bob-token-0123456789ab"),
    ])
    .unwrap()
    .allow_actions(true);
    let app = dashboard::router(admin(&db), options);
    let (cookies, csrf) = sign_in_as(&app, "bob-token-0123456789ab").await;
    let page = get(&app, "/", Some(&cookies)).await;
    assert!(page.body.contains(">bob<"), "signed in as bob");
    let retried = post(
        &app,
        &format!("/operations/{dead}/act"),
        Some(&cookies),
        &[
            ("action", "retry"),
            ("reason", "bob's fix"),
            ("csrf", &csrf),
        ],
    )
    .await;
    assert_eq!(retried.status, StatusCode::SEE_OTHER, "{}", retried.body);
    let resolved = send(
        &app,
        Request::post(format!("/operations/{stalled}/act"))
            .header(header::AUTHORIZATION, "Bearer alice-token-0123456789")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("action=resolve-dead&reason=alice+checked"))
            .unwrap(),
    )
    .await;
    assert_eq!(resolved.status, StatusCode::SEE_OTHER, "{}", resolved.body);
    let actor = async |id| {
        let detail = admin(&db).show(id).await.unwrap().unwrap();
        let last = detail.actions.last().unwrap().clone();
        (last.actor, last.reason)
    };
    assert_eq!(
        actor(dead).await,
        ("bob".to_owned(), "bob's fix".to_owned())
    );
    assert_eq!(
        actor(stalled).await,
        ("alice".to_owned(), "alice checked".to_owned())
    );
}

/// Issue 23: `/admin/outbox/` (with the slash) redirects to the overview
/// instead of a bare 404.
#[tokio::test]
async fn the_prefix_with_a_trailing_slash_redirects_to_the_overview() {
    let db = test_db().await;
    let app = dashboard::mount(
        Router::new(),
        "/admin/outbox",
        dashboard::router(admin(&db), DashboardOptions::default()),
    );
    let slash = get(&app, "/admin/outbox/", None).await;
    assert_eq!(
        slash.status,
        StatusCode::PERMANENT_REDIRECT,
        "{}",
        slash.body
    );
    assert_eq!(slash.location(), "../outbox");
    assert_eq!(
        slash.headers[header::CONTENT_SECURITY_POLICY],
        CONTENT_SECURITY_POLICY
    );
    let home = get(&app, "/admin/outbox", None).await;
    assert_eq!(home.status, StatusCode::OK);
}

/// Issue 23: on a fresh or small table the overview counts succeeded and
/// cancelled exactly (cheap there) instead of showing `?` until the
/// statistics exist.
#[tokio::test]
async fn the_overview_counts_few_finished_operations_exactly() {
    let db = test_db().await;
    let (stalled, _) = seed(&db).await;
    let mut tx = db.pool().begin().await.unwrap();
    for i in 0..3 {
        let sms = DashSms {
            to: format!("+{i}"),
        };
        pgoutbox::publish(&mut tx, sms).await.unwrap();
    }
    tx.commit().await.unwrap();
    Harness::new(&db)
        .operation::<DashSms>()
        .run_until_idle()
        .await
        .unwrap();
    admin(&db)
        .act(stalled, Action::Cancel, "alice", "never sent")
        .await
        .unwrap();
    let overview = admin(&db).overview(Duration::from_secs(90)).await.unwrap();
    assert_eq!(
        overview.finished,
        Some(vec![(Status::Cancelled, 1), (Status::Succeeded, 3)])
    );
    let app = dashboard::router(admin(&db), DashboardOptions::default());
    let page = get(&app, "/live", None).await;
    for (state, n) in [("succeeded", 3), ("cancelled", 1)] {
        let tile = format!("data-state=\"{state}\"><span class=\"n\">{n}</span>");
        assert!(page.body.contains(&tile), "{tile} in {}", page.body);
    }
    assert!(!page.body.contains("(estimate)"));
}

// Workflows on the dashboard.

/// Makes a number: a workflow's first step.
#[operation("dash.wf.make")]
pub(crate) async fn dash_make(_ctx: &mut Context, n: i64) -> Result<i64> {
    Ok(n)
}

/// Adds one to its dependency's number, or fails for good when told to.
#[operation("dash.wf.add", max_attempts = 1)]
pub(crate) async fn dash_add(ctx: &mut Context, from: Dep<DashMake>, fail: bool) -> Result<i64> {
    if fail {
        return Err(HandlerError::permanent("<b>declined</b> by the provider"));
    }
    Ok(ctx.result(&from)? + 1)
}

/// Joins two: it needs `left`'s success, and runs whatever way `right` ends.
#[operation("dash.wf.join")]
pub(crate) async fn dash_join(
    ctx: &mut Context,
    left: Dep<DashAdd>,
    right: Settled<DashAdd>,
) -> Result<i64> {
    Ok(ctx.result(&left)? + ctx.result(&right).unwrap_or(0))
}

/// A charge whose call never answers in time: its outcome is unknown, so
/// the step stalls (not idempotent).
#[operation("dash.wf.slow_charge", timeout = "100ms")]
pub(crate) async fn dash_slow_charge(
    _ctx: &mut Context,
    cents: i64,
) -> Result<crate::results::Receipt> {
    let _ = cents;
    tokio::time::sleep(Duration::from_mins(1)).await;
    Err(HandlerError::permanent("abandoned at its timeout"))
}

/// Ships with the receipt of a charge.
#[operation("dash.wf.ship")]
pub(crate) async fn dash_ship(ctx: &mut Context, payment: Dep<DashSlowCharge>) -> Result<String> {
    Ok(ctx.result(&payment)?.charge_id)
}

/// Sums a fan-in.
#[operation("dash.wf.sum")]
pub(crate) async fn dash_sum(ctx: &mut Context, parts: Vec<Dep<DashMake>>) -> Result<i64> {
    Ok(ctx.results(&parts)?.into_iter().sum())
}

pub(crate) fn workflow_router() -> WorkflowRouter {
    WorkflowRouter::new()
        .operation::<DashMake>()
        .operation::<DashAdd>()
        .operation::<DashJoin>()
        .operation::<DashSlowCharge>()
        .operation::<DashShip>()
        .operation::<DashSum>()
}

/// A diamond (make → add, add → join): the right `add` fails for good
/// when `fail_right`, which cancels nothing but the join's required side.
/// `join` needs `left`'s success and runs whatever way `right` ends, so
/// with `fail_left` it is cancelled (its dependency is dead). Returns the
/// published workflow.
pub(crate) async fn publish_diamond(
    db: &TestDatabase,
    name: &str,
    fail_left: bool,
) -> pgoutbox::workflow::PublishedWorkflow {
    let mut wf = Workflow::new(name);
    let first = wf.add(DashMake { n: 1 });
    let left = wf.add(DashAdd {
        from: first,
        fail: fail_left,
    });
    let right = wf.add(DashAdd {
        from: first,
        fail: false,
    });
    wf.add(DashJoin {
        left,
        right: right.into(),
    });
    let mut tx = db.pool().begin().await.unwrap();
    let published = publish_workflow(&mut tx, wf).await.unwrap();
    tx.commit().await.unwrap();
    published
}

/// Waits until workflow `id` is no longer `running` and none of its steps
/// is ready or running (a workflow is `failed` as soon as a step is dead,
/// while its other branches may still run); its state.
pub(crate) async fn settled_state(
    db: &TestDatabase,
    id: pgoutbox::workflow::WorkflowId,
) -> pgoutbox::WorkflowState {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let graph = admin(db).workflow_graph(id).await.unwrap().unwrap();
        // A `waiting` step moves only through `pending`: once none is
        // ready or running, nothing more happens without an operator.
        let open = graph.steps.iter().any(|s| {
            matches!(
                s.status,
                Status::Pending | Status::Running | Status::Retrying
            )
        });
        if graph.workflow.state != pgoutbox::WorkflowState::Running && !open {
            return graph.workflow.state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workflow {id} still running"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Rows of a table (`data-id="…"` in the body), in order.
fn row_ids(body: &str) -> Vec<String> {
    body.match_indices("<tr data-id=\"")
        .map(|(at, m)| {
            let rest = &body[at + m.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // One list, every filter and the pages.
async fn the_workflows_page_lists_filters_and_pages_workflows_signed_in() {
    let db = test_db().await;
    let system = WorkflowSystem::builder(crate::support::settings(&db))
        .router(workflow_router())
        .start()
        .await
        .unwrap();
    let ok = publish_diamond(&db, "dash.order", false).await;
    let failed = publish_diamond(&db, "dash.order", true).await;
    assert_eq!(
        settled_state(&db, ok.id).await,
        pgoutbox::WorkflowState::Succeeded
    );
    assert_eq!(
        settled_state(&db, failed.id).await,
        pgoutbox::WorkflowState::Failed
    );
    system.stop().await.unwrap();
    // No worker now: this one stays running, its first step pending and
    // the others waiting.
    let running = publish_diamond(&db, "dash.refund", false).await;
    let app = dashboard::router(admin(&db), options_with_token().page_size(2));

    // Signed out: the sign-in page, for the list and a workflow alike.
    for path in ["/workflows".to_owned(), format!("/workflows/{}", ok.id)] {
        let page = get(&app, &path, None).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(page.body.contains("name=\"token\""));
        assert!(!page.body.contains("dash.order"));
    }
    let (cookies, _) = signed_in(&app).await;

    // Newest first, two a page, and the way to the next one.
    let list = get(&app, "/workflows", Some(&cookies)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert!(
        list.body
            .contains("href=\"/workflows\" aria-current=\"page\"")
    );
    assert_eq!(
        row_ids(&list.body),
        [running.id.to_string(), failed.id.to_string()]
    );
    let next = format!("href=\"/workflows?before={}\"", failed.id);
    assert!(list.body.contains(&next), "{}", list.body);
    let older = get(
        &app,
        &format!("/workflows?before={}", failed.id),
        Some(&cookies),
    )
    .await;
    assert_eq!(row_ids(&older.body), [ok.id.to_string()]);
    assert!(!older.body.contains("rel=\"next\""));
    assert!(
        older
            .body
            .contains(&format!("href=\"/workflows/{}\"", ok.id))
    );
    // Per-state step counts: the failed one's dead step, the join that ran
    // anyway; the running one's waiting steps.
    let failed_row = &list.body[list
        .body
        .find(&format!("<tr data-id=\"{}\"", failed.id))
        .unwrap()..];
    let failed_row = &failed_row[..failed_row.find("</tr>").unwrap()];
    assert!(failed_row.contains("state-failed"), "{failed_row}");
    assert!(
        failed_row.contains("1 dead") && failed_row.contains("1 cancelled"),
        "{failed_row}"
    );
    assert!(failed_row.contains("2 succeeded"), "{failed_row}");
    let running_row = &list.body[list
        .body
        .find(&format!("<tr data-id=\"{}\"", running.id))
        .unwrap()..];
    let running_row = &running_row[..running_row.find("</tr>").unwrap()];
    assert!(
        running_row.contains("1 pending") && running_row.contains("3 waiting"),
        "{running_row}"
    );

    // Filters: state, name, age, together; stable URLs.
    let by_state = get(&app, "/workflows?state=failed", Some(&cookies)).await;
    assert_eq!(row_ids(&by_state.body), [failed.id.to_string()]);
    assert!(by_state.body.contains("<option value=\"failed\" selected>"));
    let by_name = get(&app, "/workflows?name=dash.order", Some(&cookies)).await;
    assert_eq!(
        row_ids(&by_name.body),
        [failed.id.to_string(), ok.id.to_string()]
    );
    assert!(!by_name.body.contains("rel=\"next\""));
    let recent = get(
        &app,
        "/workflows?age=1h&name=dash.refund&state=",
        Some(&cookies),
    )
    .await;
    assert_eq!(row_ids(&recent.body), [running.id.to_string()]);
    let none = get(
        &app,
        "/workflows?state=succeeded&name=dash.refund",
        Some(&cookies),
    )
    .await;
    assert!(row_ids(&none.body).is_empty());
    assert!(none.body.contains("No workflow matches."));
    // Bad filters: a clear 400, not a panic.
    for (path, says) in [
        ("/workflows?state=done", "unknown workflow state `done`"),
        ("/workflows?age=soon", "invalid age `soon`"),
        ("/workflows?before=x", "invalid workflow id `x`"),
        ("/workflows/abc", "invalid workflow id `abc`"),
    ] {
        let page = get(&app, path, Some(&cookies)).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(page.body.contains(says), "{path}: {}", page.body);
    }
    let missing = get(&app, "/workflows/999999", Some(&cookies)).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("no workflow with id 999999"));

    // `waiting` is a state like the others: in the list's filter, and it
    // finds the waiting steps.
    let waiting = get(&app, "/operations?status=waiting", Some(&cookies)).await;
    assert!(waiting.body.contains("<option value=\"waiting\" selected>"));
    assert_eq!(
        row_ids(&waiting.body).len(),
        2,
        "two a page: {:?}",
        row_ids(&waiting.body)
    );
    assert!(waiting.body.contains("state state-waiting"));
    let css = get(&app, "/assets/app.css", None).await;
    assert!(css.body.contains(".state-waiting { color: var(--wait); }"));
}

#[tokio::test]
async fn a_workflow_page_draws_one_node_per_step_and_one_edge_per_dependency() {
    let db = test_db().await;
    let system = WorkflowSystem::builder(crate::support::settings(&db))
        .router(workflow_router())
        .start()
        .await
        .unwrap();
    let failed = publish_diamond(&db, "dash.order", true).await;
    assert_eq!(
        settled_state(&db, failed.id).await,
        pgoutbox::WorkflowState::Failed
    );
    system.stop().await.unwrap();
    let [first, left, right, join] = failed.steps[..] else {
        unreachable!()
    };
    let app = dashboard::router(admin(&db), options_with_token());
    let (cookies, _) = signed_in(&app).await;
    let page = get(&app, &format!("/workflows/{}", failed.id), Some(&cookies)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    assert!(body.contains("dash.order") && body.contains("state state-failed"));

    // The SVG: one node per step, each coloured by its state and linking
    // to its operation; one edge per dependency, the settled one dashed.
    let svg = &body[body.find("<svg").expect("an <svg>")..body.find("</svg>").unwrap()];
    assert_eq!(svg.matches("class=\"node ").count(), 4, "{svg}");
    for (id, state) in [
        (first, "succeeded"),
        (left, "dead"),
        (right, "succeeded"),
        (join, "cancelled"),
    ] {
        assert!(
            svg.contains(&format!(
                "<g class=\"node state-{state}\" data-id=\"{id}\" data-state=\"{state}\">"
            )),
            "{id} {state}: {svg}"
        );
        assert!(svg.contains(&format!("<a href=\"/operations/{id}\">")));
    }
    assert_eq!(svg.matches("<path class=\"edge").count(), 4, "{svg}");
    for (from, to) in [(first, left), (first, right), (left, join)] {
        assert!(
            svg.contains(&format!(
                "class=\"edge\" marker-end=\"url(#arrow)\" data-from=\"{from}\" data-to=\"{to}\""
            )),
            "{from} → {to}: {svg}"
        );
    }
    assert!(
        svg.contains(&format!("class=\"edge settled\" marker-end=\"url(#arrow)\" data-from=\"{right}\" data-to=\"{join}\"")),
        "{svg}"
    );
    assert!(!svg.contains("class=\"more"), "nothing capped");
    // The tooltips: attempts, result, last error (escaped).
    assert!(svg.contains("attempts: 1"));
    assert!(svg.contains("result: 2"), "{svg}");
    assert!(
        svg.contains("last error: &lt;b&gt;declined&lt;/b&gt;"),
        "{svg}"
    );
    assert!(!body.contains("<b>declined"));
    // The table under it: every step, its layer, result and what it waits for.
    let table = &body[body.find("id=\"steps\"").unwrap()..];
    assert_eq!(
        row_ids(table),
        [first, left, right, join].map(|id| id.to_string())
    );
    assert!(table.contains("(settled)"));
    assert!(!body.contains("<script>"), "no script needed");

    // The join's operation page: its workflow, and what it waited for.
    let op = get(&app, &format!("/operations/{join}"), Some(&cookies)).await;
    let waits = &op.body[op.body.find("id=\"workflow\"").expect("the workflow")..];
    assert!(waits.contains(&format!("href=\"/workflows/{}\"", failed.id)));
    let waits = &op.body[op.body.find("id=\"waits-for\"").unwrap()..];
    let waits = &waits[..waits.find("</dd>").unwrap()];
    assert!(
        waits.contains(&format!("href=\"/operations/{left}\"")),
        "{waits}"
    );
    assert!(
        waits.contains("state-dead") && waits.contains("settled"),
        "{waits}"
    );
    // The first step waits for nothing.
    let first_page = get(&app, &format!("/operations/{first}"), Some(&cookies)).await;
    assert!(first_page.body.contains("nothing: it has no dependency"));
}

#[tokio::test]
async fn a_thousand_step_fan_in_is_drawn_capped_and_fast() {
    let db = test_db().await;
    let mut wf = Workflow::new("dash.fan_in");
    let parts: Vec<_> = (0..1000).map(|n| wf.add(DashMake { n })).collect();
    wf.add(DashSum { parts });
    let mut tx = db.pool().begin().await.unwrap();
    let published = publish_workflow(&mut tx, wf).await.unwrap();
    tx.commit().await.unwrap();
    let app = dashboard::router(admin(&db), options_with_token());
    let (cookies, _) = signed_in(&app).await;
    let path = format!("/workflows/{}", published.id);
    get(&app, &path, Some(&cookies)).await;
    let started = std::time::Instant::now();
    let page = get(&app, &path, Some(&cookies)).await;
    let took = started.elapsed();
    assert_eq!(page.status, StatusCode::OK);
    let svg = &page.body[page.body.find("<svg").unwrap()..page.body.find("</svg>").unwrap()];
    // 8 of the 1,000 parts, a "+992 more" node, and the sum; an edge from
    // each part drawn and one bundle from the others.
    assert_eq!(svg.matches("class=\"node ").count(), 8 + 1, "{svg}");
    assert!(svg.contains("data-more=\"992\""), "{svg}");
    assert!(svg.contains("+992 more"));
    assert_eq!(svg.matches("<path class=\"edge\"").count(), 8);
    assert_eq!(svg.matches("<path class=\"edge bundle\"").count(), 1);
    assert!(svg.contains("992 dependencies"));
    assert!(svg.len() < 30_000, "{} bytes of SVG", svg.len());
    // The table lists the first 500 steps, and says where the rest are.
    assert_eq!(
        row_ids(&page.body[page.body.find("id=\"steps\"").unwrap()..]).len(),
        500
    );
    assert!(page.body.contains("Only the first 500 steps are listed"));
    // The sum's page lists 20 of its 1,000 dependencies.
    let sum = published.steps[1000];
    let op = get(&app, &format!("/operations/{sum}"), Some(&cookies)).await;
    assert!(op.body.contains("1000 of 1000 not yet met"), "{}", op.body);
    assert!(op.body.contains("and 980 more"));
    eprintln!(
        "a 1,001-step fan-in's workflow page: {took:?}, {} KiB (SVG {} KiB)",
        page.body.len() / 1024,
        svg.len() / 1024
    );
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // Each refusal, then the resolve.
async fn a_stalled_steps_result_form_refuses_bad_json_and_a_misfit_then_resolves() {
    let db = test_db().await;
    let system = WorkflowSystem::builder(crate::support::settings(&db))
        .router(workflow_router())
        .start()
        .await
        .unwrap();
    let mut wf = Workflow::new("dash.ship");
    let payment = wf.add(DashSlowCharge { cents: 500 });
    wf.add(DashShip { payment });
    let mut tx = db.pool().begin().await.unwrap();
    let published = publish_workflow(&mut tx, wf).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        settled_state(&db, published.id).await,
        pgoutbox::WorkflowState::Stalled
    );
    let [charge, ship] = published.steps[..] else {
        unreachable!()
    };
    let app = dashboard::router(admin(&db), options_with_token());
    let (cookies, _) = signed_in(&app).await;

    // The stalled step's page: the result field, and its workflow.
    let page = get(&app, &format!("/operations/{charge}"), Some(&cookies)).await;
    assert!(
        page.body
            .contains("<textarea id=\"result\" name=\"result\""),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(&format!("href=\"/workflows/{}\"", published.id))
    );
    let csrf = csrf_of(&page.body);
    // The waiting one says what it waits for.
    let waiting = get(&app, &format!("/operations/{ship}"), Some(&cookies)).await;
    assert!(
        waiting.body.contains("1 of 1 not yet met"),
        "{}",
        waiting.body
    );
    assert!(
        !waiting.body.contains("<textarea"),
        "no result for a step that is not stalled"
    );

    let act = format!("/operations/{charge}/act");
    let send = async |form: &[(&str, &str)]| post(&app, &act, Some(&cookies), form).await;
    // Without the CSRF token: refused before anything.
    let forged = send(&[
        ("action", "resolve-succeeded"),
        ("reason", "found it"),
        ("result", r#"{"charge_id": "ch_1", "cents": 500}"#),
    ])
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    // Not JSON: 400, the form keeps what was typed.
    let typed = r#"{"charge_id": "ch_<1>", "#;
    let bad = send(&[
        ("action", "resolve-succeeded"),
        ("reason", "found at the provider"),
        ("result", typed),
        ("csrf", &csrf),
    ])
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(bad.body.contains("the result is not JSON"), "{}", bad.body);
    assert!(
        bad.body
            .contains("{&quot;charge_id&quot;: &quot;ch_&lt;1&gt;&quot;, </textarea>"),
        "{}",
        bad.body
    );
    assert!(bad.body.contains("value=\"found at the provider\""));
    assert!(
        bad.body
            .contains("<option value=\"resolve-succeeded\" selected>")
    );
    // JSON that does not fit the output's schema: 409 with the reason.
    let misfit = r#"{"charge_id": 17}"#;
    let refused = send(&[
        ("action", "resolve-succeeded"),
        ("reason", "found at the provider"),
        ("result", misfit),
        ("csrf", &csrf),
    ])
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("does not match the output schema of `dash.wf.slow_charge`"),
        "{}",
        refused.body
    );
    assert!(
        refused
            .body
            .contains("{&quot;charge_id&quot;: 17}</textarea>")
    );
    // No result at all: refused too (its dependent reads one).
    let empty = send(&[
        ("action", "resolve-succeeded"),
        ("reason", "found at the provider"),
        ("csrf", &csrf),
    ])
    .await;
    assert_eq!(empty.status, StatusCode::CONFLICT);
    assert!(empty.body.contains("whose dependents read its result"));
    // A result with another action: 400.
    let retry = send(&[
        ("action", "retry"),
        ("reason", "try again"),
        ("result", misfit),
        ("csrf", &csrf),
    ])
    .await;
    assert_eq!(retry.status, StatusCode::BAD_REQUEST);
    assert!(
        retry
            .body
            .contains("a result goes only with `resolve-succeeded`")
    );
    assert_eq!(crate::support::status(&db, charge).await, "stalled");
    assert_eq!(crate::support::status(&db, ship).await, "waiting");

    // One that fits: applied, and the dependent receives it.
    let good = send(&[
        ("action", "resolve-succeeded"),
        ("reason", "ch_found at the provider"),
        ("result", r#"{"charge_id": "ch_found", "cents": 500}"#),
        ("csrf", &csrf),
    ])
    .await;
    assert_eq!(good.status, StatusCode::SEE_OTHER, "{}", good.body);
    assert_eq!(
        settled_state(&db, published.id).await,
        pgoutbox::WorkflowState::Succeeded
    );
    let graph = admin(&db)
        .workflow_graph(published.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        graph.steps[0].result,
        Some(serde_json::json!({"charge_id": "ch_found", "cents": 500}))
    );
    assert_eq!(graph.steps[1].result, Some(serde_json::json!("ch_found")));
    // The trail: three refusals (the forged one never reached it), then
    // the resolve, by alice.
    let detail = admin(&db).show(charge).await.unwrap().unwrap();
    let trail: Vec<(&str, &str)> = detail
        .actions
        .iter()
        .map(|a| (a.outcome.as_str(), a.actor.as_str()))
        .collect();
    assert_eq!(
        trail,
        [
            ("refused", "alice"),
            ("refused", "alice"),
            ("applied", "alice")
        ]
    );
    system.stop().await.unwrap();
}

/// Undoes a `dash.wf.make`: its compensation.
#[operation("dash.wf.unmake")]
pub(crate) async fn dash_unmake(ctx: &mut Context, made: Dep<DashMake>) -> Result<i64> {
    Ok(-ctx.result(&made)?)
}

/// make → add, make compensated by unmake; make moved to `succeeded` as a
/// worker's record would (the migration's trigger releases add): (the
/// workflow, make, add).
pub(crate) async fn compensable_workflow(
    db: &TestDatabase,
) -> (
    pgoutbox::workflow::WorkflowId,
    pgoutbox::OperationId,
    pgoutbox::OperationId,
) {
    let mut wf = Workflow::new("dash.compensable");
    let made = wf.add(DashMake { n: 3 });
    wf.compensate_with(made, |made| DashUnmake { made });
    wf.add(DashAdd {
        from: made,
        fail: false,
    });
    let mut tx = db.pool().begin().await.unwrap();
    let published = publish_workflow(&mut tx, wf).await.unwrap();
    tx.commit().await.unwrap();
    sqlx::query(
        "UPDATE pgoutbox.operations SET status = 'succeeded', attempt = 1, finished_at = now()
         WHERE id = $1",
    )
    .bind(published.steps[0].as_i64())
    .execute(db.pool())
    .await
    .unwrap();
    (published.id, published.steps[0], published.steps[1])
}

/// The value of the hidden field `name` of a page's form.
fn hidden_value(body: &str, name: &str) -> String {
    let field = format!("type=\"hidden\" name=\"{name}\" value=\"");
    let at = body
        .find(&field)
        .unwrap_or_else(|| panic!("no hidden `{name}` in {body}"));
    let rest = &body[at + field.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// The part of `body` from the element with `id` to the end of its table.
fn table_of<'b>(body: &'b str, id: &str) -> &'b str {
    let at = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {body}"));
    let rest = &body[at..];
    &rest[..rest.find("</table>").unwrap_or(rest.len())]
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // One story: plan, confirm, apply, refuse, retry.
async fn a_workflow_is_cancelled_then_retried_from_its_page_after_confirming_the_plan() {
    let db = test_db().await;
    let (wid, made, added) = compensable_workflow(&db).await;
    let app = dashboard::router(admin(&db), options_with_token());
    let (cookies, _) = signed_in(&app).await;
    let path = format!("/workflows/{wid}");

    // The page offers both actions; the compensation is an explicit
    // choice, none pre-selected.
    let page = get(&app, &path, Some(&cookies)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let form = &page.body[page
        .body
        .find("id=\"cancel-workflow\"")
        .expect("the cancel form")..];
    let form = &form[..form.find("</form>").unwrap()];
    assert_eq!(
        form.matches("type=\"radio\" name=\"compensate\"").count(),
        2,
        "{form}"
    );
    assert!(!form.contains("checked"), "{form}");
    assert!(page.body.contains("id=\"retry-workflow\""));
    assert!(page.body.contains("Operator actions on the workflow (0)"));
    let csrf = csrf_of(&page.body);
    let confirm = format!("{path}/confirm");
    let act = format!("{path}/act");
    let reason = "the customer withdrew <b>";

    // A cancel without the choice, a bad choice, an unknown action, no
    // reason, no CSRF token: refused, nothing planned.
    for (form, status, says) in [
        (
            vec![("action", "cancel")],
            StatusCode::BAD_REQUEST,
            "choose whether to compensate",
        ),
        (
            vec![("action", "cancel"), ("compensate", "maybe")],
            StatusCode::BAD_REQUEST,
            "invalid compensation choice `maybe`",
        ),
        (
            vec![("action", "retry"), ("compensate", "yes")],
            StatusCode::BAD_REQUEST,
            "a retry compensates nothing",
        ),
        (
            vec![("action", "pause")],
            StatusCode::BAD_REQUEST,
            "unknown workflow action `pause`",
        ),
    ] {
        let mut form = form;
        form.extend([("reason", reason), ("csrf", csrf.as_str())]);
        let refused = post(&app, &confirm, Some(&cookies), &form).await;
        assert_eq!(refused.status, status, "{}", refused.body);
        assert!(refused.body.contains(says), "{says}: {}", refused.body);
    }
    let refused = post(
        &app,
        &confirm,
        Some(&cookies),
        &[("action", "retry"), ("reason", " "), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let refused = post(
        &app,
        &act,
        Some(&cookies),
        &[
            ("action", "cancel"),
            ("compensate", "yes"),
            ("reason", reason),
        ],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);

    // The confirmation shows what will change, and changes nothing.
    let cancel = [
        ("action", "cancel"),
        ("compensate", "yes"),
        ("reason", reason),
        ("csrf", &csrf),
    ];
    let plan = post(&app, &confirm, Some(&cookies), &cancel).await;
    assert_eq!(plan.status, StatusCode::OK, "{}", plan.body);
    assert!(
        plan.body
            .contains("Confirm: cancel, compensating what succeeded — workflow")
    );
    assert_eq!(
        row_ids(table_of(&plan.body, "plan-cancel")),
        [added.to_string()]
    );
    assert_eq!(
        row_ids(table_of(&plan.body, "plan-compensate")),
        [made.to_string()]
    );
    assert!(!plan.body.contains("id=\"plan-retry\""));
    assert!(
        plan.body
            .contains("<code>the customer withdrew &lt;b&gt;</code>"),
        "escaped"
    );
    let button = &plan.body[plan.body.find("id=\"confirm\"").expect("the confirm form")..];
    assert!(
        button.contains("name=\"compensate\" value=\"yes\""),
        "{button}"
    );
    assert!(
        button.contains(&format!("action=\"/workflows/{wid}/act\"")),
        "{button}"
    );
    let unchanged = admin(&db).workflow_graph(wid).await.unwrap().unwrap();
    assert_eq!(unchanged.workflow.state, pgoutbox::WorkflowState::Running);
    assert!(admin(&db).workflow_actions(wid).await.unwrap().is_empty());
    // Without compensation: nothing to compensate in the plan.
    let without = post(
        &app,
        &confirm,
        Some(&cookies),
        &[
            ("action", "cancel"),
            ("compensate", "no"),
            ("reason", reason),
            ("csrf", &csrf),
        ],
    )
    .await;
    assert_eq!(without.status, StatusCode::OK);
    assert!(!without.body.contains("id=\"plan-compensate\""));
    assert!(without.body.contains("name=\"compensate\" value=\"no\""));

    // Applying needs the confirmed plan; one the workflow no longer
    // matches (stale, or tampered with) shows the new plan, changing nothing.
    let key = hidden_value(&plan.body, "plan");
    assert_eq!(
        key,
        format!("cancel:{added};compensate:{made};retry:;drop:")
    );
    let unconfirmed = post(&app, &act, Some(&cookies), &cancel).await;
    assert_eq!(unconfirmed.status, StatusCode::BAD_REQUEST);
    assert!(unconfirmed.body.contains("needs the confirmation's plan"));
    let stale = [&cancel[..], &[("plan", "cancel:;compensate:;retry:;drop:")]].concat();
    let moved = post(&app, &act, Some(&cookies), &stale).await;
    assert_eq!(moved.status, StatusCode::CONFLICT, "{}", moved.body);
    assert!(
        moved
            .body
            .contains("the workflow changed since this was confirmed: nothing was done")
    );
    assert_eq!(hidden_value(&moved.body, "plan"), key);
    assert!(admin(&db).workflow_actions(wid).await.unwrap().is_empty());

    // Confirmed: applied, and back to the workflow with what changed.
    let cancel = [&cancel[..], &[("plan", key.as_str())]].concat();
    let done = post(&app, &act, Some(&cookies), &cancel).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let location = done.location();
    assert!(
        location.starts_with(&format!("../{wid}?notice=")),
        "{location}"
    );
    let page = get(
        &app,
        &format!("{path}?{}", location.split_once('?').unwrap().1),
        Some(&cookies),
    )
    .await;
    let body = &page.body;
    assert!(
        body.contains(&format!("cancel of workflow {wid} applied: running → compensating. cancels 1: {added} dash.wf.add (pending); compensates 1: {made} dash.wf.make (succeeded)")),
        "{body}"
    );
    assert!(body.contains("<span class=\"state state-compensating\">compensating</span>"));
    let failure = &body[body.find("id=\"failure\"").expect("the failure")..];
    assert!(
        failure[..failure.find("</dd>").unwrap()]
            .contains("cancelled by alice: the customer withdrew &lt;b&gt;"),
        "{failure}"
    );
    // The compensation: marked in the table and drawn dashed in the graph.
    let graph = admin(&db).workflow_graph(wid).await.unwrap().unwrap();
    let unmake = graph
        .steps
        .iter()
        .find(|s| s.compensates == Some(made))
        .expect("the compensation");
    assert!(
        body.contains(&format!(
            "↩ compensates <a href=\"/operations/{made}\">#{made}</a>"
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!("<g class=\"node state-pending compensation\" data-id=\"{}\" data-state=\"pending\" data-compensates=\"{made}\">", unmake.id)),
        "{body}"
    );
    let trail = table_of(body, "workflow-actions");
    assert!(
        trail.contains("<td>cancel</td><td>applied</td><td>alice</td>"),
        "{trail}"
    );
    assert!(
        !body.contains("id=\"cancel-workflow\""),
        "a failed workflow offers no cancel"
    );

    // Again: refused, with the reason, nothing changed.
    let again = post(&app, &act, Some(&cookies), &cancel).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    let refusal = &again.body[again.body.find("id=\"refusal\"").expect("the refusal")..];
    assert!(
        refusal.contains(&format!(
            "cannot cancel workflow {wid}: workflow {wid} has already failed"
        )),
        "{refusal}"
    );

    // A retry: the cancelled step runs again, the compensation not started is dropped.
    let retry = [
        ("action", "retry"),
        ("reason", "changed their mind"),
        ("csrf", &csrf),
    ];
    let plan = post(&app, &confirm, Some(&cookies), &retry).await;
    assert_eq!(plan.status, StatusCode::OK, "{}", plan.body);
    assert_eq!(
        row_ids(table_of(&plan.body, "plan-retry")),
        [added.to_string()]
    );
    assert_eq!(
        row_ids(table_of(&plan.body, "plan-drop")),
        [unmake.id.to_string()]
    );
    assert!(!plan.body.contains("name=\"compensate\""));
    let key = hidden_value(&plan.body, "plan");
    let retry = [&retry[..], &[("plan", key.as_str())]].concat();
    let done = post(&app, &act, Some(&cookies), &retry).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let graph = admin(&db).workflow_graph(wid).await.unwrap().unwrap();
    assert_eq!(graph.workflow.state, pgoutbox::WorkflowState::Running);
    let status_of = |id| graph.steps.iter().find(|s| s.id == id).unwrap().status;
    assert_eq!(status_of(added), Status::Pending);
    assert_eq!(status_of(unmake.id), Status::Cancelled);
    // Nothing left to retry: the confirmation says why and offers no button.
    let plan = post(&app, &confirm, Some(&cookies), &retry).await;
    assert_eq!(plan.status, StatusCode::CONFLICT);
    assert!(
        plan.body.contains(&format!(
            "Refused: workflow {wid} has no dead or cancelled step to retry"
        )),
        "{}",
        plan.body
    );
    assert!(!plan.body.contains("id=\"confirm\""));
    let trail: Vec<(String, String, String)> = admin(&db)
        .workflow_actions(wid)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.action, a.outcome, a.actor))
        .collect();
    let row = |a: &str, o: &str| (a.to_owned(), o.to_owned(), "alice".to_owned());
    assert_eq!(
        trail,
        [
            row("cancel", "applied"),
            row("cancel", "refused"),
            row("retry", "applied")
        ]
    );

    // No such workflow; and a read-only dashboard offers no action.
    let missing = post(&app, "/workflows/999999/confirm", Some(&cookies), &retry).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let missing = post(&app, "/workflows/999999/act", Some(&cookies), &retry).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let read_only = dashboard::router(
        admin(&db),
        DashboardOptions::with_token(BEARER, "alice").unwrap(),
    );
    let page = authed(&read_only, &path).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("id=\"retry-workflow\"") && !page.body.contains("/confirm"));
}

#[tokio::test]
async fn cancelling_a_thousand_step_workflow_confirms_a_capped_list_then_cancels_every_step() {
    let db = test_db().await;
    let mut wf = Workflow::new("dash.fan_in");
    let parts: Vec<_> = (0..1000).map(|n| wf.add(DashMake { n })).collect();
    wf.add(DashSum { parts });
    let mut tx = db.pool().begin().await.unwrap();
    let published = publish_workflow(&mut tx, wf).await.unwrap();
    tx.commit().await.unwrap();
    let app = dashboard::router(admin(&db), options_with_token());
    let (cookies, csrf) = signed_in(&app).await;
    let path = format!("/workflows/{}", published.id);
    let form = [
        ("action", "cancel"),
        ("compensate", "no"),
        ("reason", "load test"),
        ("csrf", csrf.as_str()),
    ];

    let started = std::time::Instant::now();
    let plan = post(&app, &format!("{path}/confirm"), Some(&cookies), &form).await;
    let confirm_took = started.elapsed();
    assert_eq!(plan.status, StatusCode::OK, "{}", plan.body);
    assert!(
        plan.body.contains("they have not started (1001)"),
        "{}",
        plan.body
    );
    assert_eq!(row_ids(table_of(&plan.body, "plan-cancel")).len(), 200);
    assert!(plan.body.contains("and 801 more, not listed."));
    assert!(plan.body.len() < 200_000, "{} bytes", plan.body.len());

    let key = hidden_value(&plan.body, "plan");
    let form = [&form[..], &[("plan", key.as_str())]].concat();
    let started = std::time::Instant::now();
    let done = post(&app, &format!("{path}/act"), Some(&cookies), &form).await;
    let apply_took = started.elapsed();
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    // The notice rides in the redirect's URL: cut, not 1,001 steps long.
    let location = done.location();
    assert!(
        location.len() < 1_000,
        "{} bytes: {location}",
        location.len()
    );
    assert!(location.contains("cancels+1001%3A"), "{location}");
    let (cancelled, recorded): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pgoutbox.operations WHERE workflow_id = $1 AND status = 'cancelled'),
                (SELECT count(*) FROM pgoutbox.operator_actions WHERE workflow_id = $1)",
    )
    .bind(published.id.as_i64())
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!((cancelled, recorded), (1001, 1 + 1001));
    let graph = admin(&db)
        .workflow_graph(published.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(graph.workflow.state, pgoutbox::WorkflowState::Cancelled);
    eprintln!(
        "a 1,001-step workflow's cancel: confirmation {confirm_took:?} ({} KiB), applied in {apply_took:?}",
        plan.body.len() / 1024
    );
}
