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
