//! The operators' web dashboard: what is stuck, what failed and why, how
//! fast work flows, and the attempts, in-doubt outcomes and operator trail
//! of each operation side by side — with the actions of `pgoutbox ops`
//! (retry, cancel, resolve, replay, and bulk retry or cancel of a filtered
//! list), each asking for a reason and recorded exactly as the CLI's.
//!
//! [`router`] returns an [`axum::Router`] that an application mounts under
//! a prefix of its own; every link it renders is relative, so it works
//! under any prefix (and the `pgoutbox dashboard` command serves it at the
//! root). It reads and acts only through [`Admin`]: no SQL of its own.
//! Pages are rendered on the server from compile-time templates (maud,
//! which escapes every value); the stylesheet and the one small script
//! (the overview's live refresh) are embedded in the binary, and every
//! response carries a strict Content-Security-Policy.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use pgoutbox::admin::Admin;
//! use pgoutbox::dashboard::{self, DashboardOptions};
//!
//! let settings = pgoutbox::Settings::load()?;
//! let admin = Admin::new(settings.pool()?, &settings.schema()?);
//! let options = DashboardOptions {
//!     // Actions need a token; the browser signs in with it once.
//!     token: Some("a long random secret".into()),
//!     allow_actions: true,
//!     actor: "ops-team".into(),
//!     ..DashboardOptions::default()
//! };
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "my service" }))
//!     .nest("/admin/outbox", dashboard::router(admin, options));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Safe by default: without a token every page is readable by whoever
//! reaches the address (the command binds to loopback only then) and no
//! action is offered. With a token, every page asks for it (a sign-in form
//! that sets an `HttpOnly`, `SameSite=Strict` cookie, or an
//! `Authorization: Bearer` header); actions need it, `allow_actions`, a
//! POST and the form's CSRF token.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest as _, Sha256};

use crate::admin::{Action, ActionOutcome, Admin, BulkStep, OperationFilter, Resolution};
use crate::definition::OperationId;
use crate::state::Status;

mod chart;
mod pages;

/// How the dashboard behaves.
///
/// ```
/// use pgoutbox::dashboard::DashboardOptions;
///
/// let options = DashboardOptions::default();
/// assert!(!options.allow_actions && options.token.is_none());
/// assert_eq!(options.page_size, 50);
/// ```
#[derive(Clone)]
pub struct DashboardOptions {
    /// The access token; `None`: pages are open to whoever reaches them
    /// and actions are refused.
    pub token: Option<String>,
    /// Offer and accept actions (they also need `token`).
    pub allow_actions: bool,
    /// Who actions are recorded as (`operator_actions.actor`).
    pub actor: String,
    /// Liveness window for workers that recorded no lease of their own.
    pub live_window: Duration,
    /// Rows per page of every list (at most 500).
    pub page_size: i64,
    /// How often the overview refreshes itself.
    pub refresh: Duration,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        DashboardOptions {
            token: None,
            allow_actions: false,
            actor: "dashboard".to_owned(),
            live_window: Duration::from_secs(90),
            page_size: 50,
            refresh: Duration::from_secs(2),
        }
    }
}

impl std::fmt::Debug for DashboardOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardOptions")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("allow_actions", &self.allow_actions)
            .field("actor", &self.actor)
            .field("live_window", &self.live_window)
            .field("page_size", &self.page_size)
            .field("refresh", &self.refresh)
            .finish()
    }
}

/// The most rows any page shows.
const MAX_PAGE: i64 = 500;
/// Children of one operation listed on its page.
const CHILDREN_SHOWN: usize = 100;
/// Operations of a workflow tree drawn on an operation's page.
const TREE_SHOWN: i64 = 200;
/// Rows a bulk action takes at a time.
const BULK_BATCH: i64 = 500;
/// The sign-in cookie: a hash of the token, never the token.
const AUTH_COOKIE: &str = "pgoutbox_auth";
/// The CSRF cookie, repeated in every form.
const CSRF_COOKIE: &str = "pgoutbox_csrf";

/// The Content-Security-Policy of every response: only this server's own
/// stylesheet and script, no inline script, no frames, forms posting only
/// here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

struct Dashboard {
    admin: Admin,
    options: DashboardOptions,
    /// SHA-256 of the token, the sign-in cookie's value.
    token_hash: Option<String>,
}

type Shared = State<Arc<Dashboard>>;

/// The dashboard's routes, to serve as they are or to mount under a prefix
/// with [`Router::nest`]. See the module's example.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// // Read-only, on loopback.
/// let app = pgoutbox::dashboard::router(admin, pgoutbox::dashboard::DashboardOptions::default());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7480").await?;
/// axum::serve(listener, app).await?;
/// # Ok(())
/// # }
/// ```
pub fn router(admin: Admin, options: DashboardOptions) -> Router {
    let token_hash = options.token.as_deref().map(hash);
    let state = Arc::new(Dashboard {
        admin,
        options,
        token_hash,
    });
    Router::new()
        .route("/", get(overview))
        .route("/live", get(live))
        .route("/operations", get(operations))
        .route("/operations/{id}", get(operation))
        .route("/operations/{id}/act", post(act))
        .route("/bulk", post(bulk_preview))
        .route("/bulk/run", post(bulk_run))
        .route("/stalled", get(stalled))
        .route("/schemas", get(schemas))
        .route("/schemas/{name}", get(schema))
        .route("/login", get(login_form).post(login))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .fallback(not_found)
        .with_state(state)
}

fn hash(text: &str) -> String {
    hex::encode(Sha256::digest(
        format!("pgoutbox dashboard {text}").as_bytes(),
    ))
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What went wrong, as a page.
#[derive(Debug)]
enum Failure {
    BadRequest(String),
    NotFound(String),
    /// Not signed in: the sign-in page.
    SignIn {
        root: String,
        home: String,
    },
    Forbidden(String),
    Conflict(String),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Database(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Failure::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Failure::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Failure::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            Failure::Conflict(m) => (StatusCode::CONFLICT, m),
            Failure::SignIn { root, home } => {
                return respond(
                    StatusCode::UNAUTHORIZED,
                    pages::login(&root, &home, None).into_string(),
                    None,
                );
            }
            Failure::Database(e) => {
                tracing::warn!(error = %e, "dashboard: database error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("database error: {e}"),
                )
            }
        };
        respond(status, pages::failure(status, &message).into_string(), None)
    }
}

/// An HTML response with the security headers (and a cookie to set).
fn respond(status: StatusCode, body: String, set_cookie: Option<String>) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(headers);
    if let Some(cookie) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn see_other(location: &str, set_cookie: Option<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    security_headers(headers);
    if let Some(cookie) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

/// One request's view: the relative path to the dashboard's root, and its
/// CSRF token (a new one to set when the browser has none).
struct Request {
    root: String,
    home: String,
    cookie_path: String,
    csrf: String,
    new_csrf: bool,
    can_act: bool,
}

impl Request {
    fn set_cookie(&self) -> Option<String> {
        self.new_csrf.then(|| {
            format!(
                "{CSRF_COOKIE}={}; HttpOnly; SameSite=Strict; Path={}",
                self.csrf, self.cookie_path
            )
        })
    }

    fn page(&self, markup: maud::Markup) -> Response {
        respond(StatusCode::OK, markup.into_string(), self.set_cookie())
    }
}

/// What every page needs of its request: its path within the dashboard,
/// its full path (behind a prefix, they differ) and its headers.
struct Ctx {
    uri: Uri,
    original: Uri,
    headers: HeaderMap,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let original = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| parts.uri.clone(), |o| o.0.clone());
        Ok(Ctx {
            uri: parts.uri.clone(),
            original,
            headers: parts.headers.clone(),
        })
    }
}

impl Ctx {
    /// Where the dashboard is mounted: `/admin/outbox` under
    /// `Router::nest("/admin/outbox", …)`, empty at the root. axum's
    /// `nest` does not route `/admin/outbox/` (with the slash) to the
    /// dashboard, so links cannot be `./`-relative to the overview; they
    /// are built from the request's own prefix instead, which needs no
    /// configuration whatever the mount point.
    fn prefix(&self) -> String {
        let full = self.original.path();
        let inner = self.uri.path();
        let prefix = full
            .strip_suffix(inner)
            .unwrap_or(if inner == "/" { full } else { "" });
        prefix.trim_end_matches('/').to_owned()
    }

    /// The dashboard root with a trailing slash, for links and cookies.
    fn root(&self) -> String {
        format!("{}/", self.prefix())
    }

    /// The overview's own address (`/admin/outbox`, or `/`), also the
    /// cookies' path: it matches itself and everything under it.
    fn home(&self) -> String {
        let prefix = self.prefix();
        if prefix.is_empty() {
            "/".to_owned()
        } else {
            prefix
        }
    }
}

impl Dashboard {
    /// Checks the access token (cookie or bearer header) and finds the
    /// CSRF token.
    fn request(&self, ctx: &Ctx) -> Result<Request, Failure> {
        let headers = &ctx.headers;
        let root = ctx.root();
        if let Some(expected) = &self.token_hash {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(hash);
            let signed_in = cookie(headers, AUTH_COOKIE).is_some_and(|c| same(c, expected))
                || bearer.is_some_and(|b| same(&b, expected));
            if !signed_in {
                return Err(Failure::SignIn {
                    root,
                    home: ctx.home(),
                });
            }
        }
        let (csrf, new_csrf) = match cookie(headers, CSRF_COOKIE) {
            Some(c) if c.len() == 32 && c.bytes().all(|b| b.is_ascii_hexdigit()) => {
                (c.to_owned(), false)
            }
            _ => (uuid::Uuid::new_v4().simple().to_string(), true),
        };
        Ok(Request {
            root,
            cookie_path: ctx.home(),
            home: ctx.home(),
            csrf,
            new_csrf,
            can_act: self.options.allow_actions && self.token_hash.is_some(),
        })
    }

    /// Checks what a POST that changes something needs: actions allowed,
    /// a token, and the form's CSRF token equal to the cookie's.
    fn check_action(&self, request: &Request, form_csrf: &str) -> Result<(), Failure> {
        if !self.options.allow_actions {
            return Err(Failure::Forbidden(
                "actions are off: start the dashboard with `--allow-actions`".to_owned(),
            ));
        }
        if self.token_hash.is_none() {
            return Err(Failure::Forbidden(
                "actions need an access token: set `dashboard.token`".to_owned(),
            ));
        }
        if request.new_csrf || !same(&request.csrf, form_csrf) {
            return Err(Failure::Forbidden(
                "the form's CSRF token does not match: reload the page and try again".to_owned(),
            ));
        }
        Ok(())
    }

    fn page_size(&self, asked: Option<i64>) -> i64 {
        asked
            .unwrap_or(self.options.page_size)
            .clamp(1, MAX_PAGE.min(self.options.page_size.max(1) * 4))
    }
}

async fn css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("dashboard/assets/app.css"),
    )
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("dashboard/assets/app.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    security_headers(headers);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

async fn not_found(uri: Uri) -> Failure {
    Failure::NotFound(format!("no page at `{}`", uri.path()))
}

async fn login_form(ctx: Ctx) -> Response {
    respond(
        StatusCode::OK,
        pages::login(&ctx.root(), &ctx.home(), None).into_string(),
        None,
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(d): Shared, ctx: Ctx, Form(form): Form<LoginForm>) -> Response {
    let root = ctx.root();
    match &d.token_hash {
        Some(expected) if same(&hash(&form.token), expected) => see_other(
            &ctx.home(),
            Some(format!(
                "{AUTH_COOKIE}={expected}; HttpOnly; SameSite=Strict; Path={}",
                ctx.home()
            )),
        ),
        Some(_) => respond(
            StatusCode::UNAUTHORIZED,
            pages::login(&root, &ctx.home(), Some("wrong token")).into_string(),
            None,
        ),
        None => see_other(&ctx.home(), None),
    }
}

/// What the overview shows.
struct Overview {
    now: crate::admin::Overview,
    throughput: Vec<crate::admin::Throughput>,
}

async fn read_overview(d: &Dashboard) -> Result<Overview, Failure> {
    // Two connections at once: the chart's read is independent of the rest.
    let (now, throughput) = tokio::try_join!(
        d.admin.overview(d.options.live_window),
        d.admin.throughput(60)
    )?;
    Ok(Overview { now, throughput })
}

async fn overview(State(d): Shared, ctx: Ctx) -> Result<Response, Failure> {
    let request = d.request(&ctx)?;
    let data = read_overview(&d).await?;
    let refresh_ms = u64::try_from(d.options.refresh.as_millis()).unwrap_or(u64::MAX);
    Ok(request.page(pages::overview(
        &request.root,
        &request.home,
        &data,
        refresh_ms,
    )))
}

async fn live(State(d): Shared, ctx: Ctx) -> Result<Response, Failure> {
    let request = d.request(&ctx)?;
    let data = read_overview(&d).await?;
    Ok(respond(
        StatusCode::OK,
        pages::overview_live(&request.root, &data).into_string(),
        None,
    ))
}

/// The list's filters as they appear in its URL.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
struct ListQuery {
    #[serde(default, skip_serializing_if = "is_blank")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    queue: Option<String>,
    /// Published within this long (`30m`, `2h`, `7d`).
    #[serde(default, skip_serializing_if = "is_blank")]
    age: Option<String>,
    /// Text in the last error.
    #[serde(default, skip_serializing_if = "is_blank")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    root: Option<String>,
    /// The next page: ids below this one.
    #[serde(default, skip_serializing_if = "is_blank")]
    before: Option<String>,
}

#[allow(clippy::ref_option)] // serde's `skip_serializing_if` passes `&Option`.
fn is_blank(value: &Option<String>) -> bool {
    value.as_deref().is_none_or(|v| v.trim().is_empty())
}

fn blank_to_none(value: Option<&String>) -> Option<&str> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty())
}

impl ListQuery {
    /// The filter, or what is wrong with the query.
    fn filter(&self) -> Result<OperationFilter, Failure> {
        let statuses = match blank_to_none(self.status.as_ref()) {
            None => Vec::new(),
            Some(text) => vec![text.parse::<Status>().map_err(|_| {
                Failure::BadRequest(format!(
                    "unknown state `{text}`: expected one of {}",
                    Status::ALL
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?],
        };
        let since = blank_to_none(self.age.as_ref())
            .map(|text| {
                humantime::parse_duration(text).map_err(|e| {
                    Failure::BadRequest(format!(
                        "invalid age `{text}`: {e} (e.g. `30m`, `2h`, `7d`)"
                    ))
                })
            })
            .transpose()?;
        let id = |text: Option<&str>, what: &str| {
            text.map(|t| {
                t.parse::<i64>().map(OperationId::from_i64).map_err(|_| {
                    Failure::BadRequest(format!("invalid {what} `{t}`: expected an operation id"))
                })
            })
            .transpose()
        };
        Ok(OperationFilter {
            statuses,
            name: blank_to_none(self.name.as_ref()).map(str::to_owned),
            queue: blank_to_none(self.queue.as_ref()).map(str::to_owned),
            since,
            error_contains: blank_to_none(self.error.as_ref()).map(str::to_owned),
            root: id(blank_to_none(self.root.as_ref()), "root")?,
            after_id: id(blank_to_none(self.before.as_ref()), "page")?,
            limit: None,
        })
    }

    /// The query string of this list (without the page).
    fn query_string(&self) -> String {
        let mut first_page = self.clone();
        first_page.before = None;
        serde_urlencoded::to_string(&first_page).unwrap_or_default()
    }

    /// Whether any filter is set.
    fn is_filtered(&self) -> bool {
        !self.query_string().is_empty()
    }
}

async fn operations(
    State(d): Shared,
    ctx: Ctx,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let request = d.request(&ctx)?;
    let Query(query) = query.map_err(|e| Failure::BadRequest(e.body_text()))?;
    let mut filter = query.filter()?;
    let size = d.page_size(None);
    // One more than shown, to know whether there is a next page.
    filter.limit = Some(size + 1);
    let mut rows = d.admin.list(&filter).await?;
    let more = rows.len() > usize::try_from(size).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
    let next = more.then(|| rows.last().map(|r| r.id)).flatten();
    Ok(request.page(pages::operations(&request, &query, &rows, next)))
}

#[derive(Debug, Default, serde::Deserialize)]
struct Notice {
    notice: Option<String>,
}

async fn operation(
    State(d): Shared,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Result<Response, Failure> {
    let request = d.request(&ctx)?;
    let id = parse_id(&id)?;
    let page = operation_page(&d, &request, id, notice.notice.as_deref(), None).await?;
    Ok(request.page(page))
}

fn parse_id(text: &str) -> Result<OperationId, Failure> {
    text.parse::<i64>()
        .map(OperationId::from_i64)
        .map_err(|_| Failure::BadRequest(format!("invalid operation id `{text}`")))
}

async fn operation_page(
    d: &Dashboard,
    request: &Request,
    id: OperationId,
    notice: Option<&str>,
    refusal: Option<&str>,
) -> Result<maud::Markup, Failure> {
    let Some(detail) = d.admin.show(id).await? else {
        return Err(Failure::NotFound(format!(
            "no operation with id {id} (never published, or purged by retention)"
        )));
    };
    let root = detail.operation.root_id.unwrap_or(detail.operation.id);
    let tree = d.admin.workflow_page(root, TREE_SHOWN + 1).await?;
    let history = d.admin.schema_history(&detail.operation.name).await?;
    Ok(pages::operation(
        request,
        &detail,
        &tree,
        usize::try_from(TREE_SHOWN).unwrap_or(usize::MAX),
        CHILDREN_SHOWN,
        &history,
        notice,
        refusal,
    ))
}

#[derive(Debug, serde::Deserialize)]
struct ActForm {
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    csrf: String,
}

fn parse_action(text: &str) -> Result<Action, Failure> {
    Ok(match text {
        "retry" => Action::Retry,
        "cancel" => Action::Cancel,
        "resolve-succeeded" => Action::Resolve(Resolution::Succeeded),
        "resolve-dead" => Action::Resolve(Resolution::Dead),
        "replay" => Action::Replay,
        other => {
            return Err(Failure::BadRequest(format!(
                "unknown action `{other}`: expected retry, cancel, resolve-succeeded, \
                 resolve-dead or replay"
            )));
        }
    })
}

fn check_reason(reason: &str) -> Result<&str, Failure> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Failure::BadRequest(
            "a reason is required: it is recorded with the action".to_owned(),
        ));
    }
    Ok(reason)
}

async fn act(
    State(d): Shared,
    ctx: Ctx,
    Path(id): Path<String>,
    Form(form): Form<ActForm>,
) -> Result<Response, Failure> {
    let request = d.request(&ctx)?;
    d.check_action(&request, &form.csrf)?;
    let id = parse_id(&id)?;
    let action = parse_action(&form.action)?;
    let reason = check_reason(&form.reason)?;
    let outcome = d.admin.act(id, action, &d.options.actor, reason).await?;
    let message = outcome.message(id, action);
    match outcome {
        ActionOutcome::Applied { .. } => {
            let query =
                serde_urlencoded::to_string([("notice", message.as_str())]).unwrap_or_default();
            // From `operations/{id}/act` back to `operations/{id}`.
            Ok(see_other(&format!("../{id}?{query}"), None))
        }
        ActionOutcome::NotFound => Err(Failure::NotFound(message)),
        ActionOutcome::Refused { .. } => {
            let page = operation_page(&d, &request, id, None, Some(&message)).await?;
            Ok(respond(StatusCode::CONFLICT, page.into_string(), None))
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct BulkForm {
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    csrf: String,
    /// The highest id the run takes (set by the confirmation).
    #[serde(default)]
    upto: Option<String>,
    #[serde(flatten)]
    list: ListQuery,
}

fn bulk_action(text: &str) -> Result<Action, Failure> {
    match text {
        "retry" => Ok(Action::Retry),
        "cancel" => Ok(Action::Cancel),
        other => Err(Failure::BadRequest(format!(
            "unknown bulk action `{other}`: expected retry or cancel"
        ))),
    }
}

async fn bulk_preview(
    State(d): Shared,
    ctx: Ctx,
    Form(form): Form<BulkForm>,
) -> Result<Response, Failure> {
    let request = d.request(&ctx)?;
    d.check_action(&request, &form.csrf)?;
    let action = bulk_action(&form.action)?;
    let reason = check_reason(&form.reason)?;
    let mut filter = form.list.filter()?;
    filter.after_id = None;
    let preview = d.admin.bulk_preview(action, &filter, 10).await?;
    Ok(request.page(pages::bulk_confirm(
        &request, action, reason, &form.list, &preview,
    )))
}

async fn bulk_run(
    State(d): Shared,
    ctx: Ctx,
    Form(form): Form<BulkForm>,
) -> Result<Response, Failure> {
    let request = d.request(&ctx)?;
    d.check_action(&request, &form.csrf)?;
    let action = bulk_action(&form.action)?;
    let reason = check_reason(&form.reason)?;
    let mut filter = form.list.filter()?;
    filter.after_id = None;
    let upto = parse_id(form.upto.as_deref().unwrap_or_default()).map_err(|_| {
        Failure::BadRequest("a bulk run needs the confirmation's `upto`".to_owned())
    })?;
    let (mut applied, mut skipped) = (0u64, 0u64);
    let mut after = None;
    loop {
        let page = d
            .admin
            .bulk_targets(action, &filter, after, upto, BULK_BATCH)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for target in &page {
            match d
                .admin
                .act_if_matching(target.id, action, &filter, &d.options.actor, reason)
                .await?
            {
                BulkStep::Applied { .. } => applied += 1,
                BulkStep::NotAllowed { .. } | BulkStep::NoLongerMatches { .. } => skipped += 1,
            }
        }
    }
    if applied == 0 && skipped > 0 {
        return Err(Failure::Conflict(format!(
            "{action}: none of the {skipped} operation(s) could be changed (they changed \
             meanwhile, or {action} is not allowed from their state)"
        )));
    }
    let message = format!(
        "{action}: {applied} operation(s) changed, {skipped} skipped (changed meanwhile or \
         not allowed)"
    );
    let query = serde_urlencoded::to_string([("notice", message.as_str())]).unwrap_or_default();
    let list = form.list.query_string();
    // From `bulk/run` back to `operations`.
    Ok(see_other(
        &format!(
            "../operations?{list}{}{query}",
            if list.is_empty() { "" } else { "&" }
        ),
        None,
    ))
}

#[derive(Debug, Default, serde::Deserialize)]
struct StalledQuery {
    after: Option<String>,
}

async fn stalled(
    State(d): Shared,
    ctx: Ctx,
    query: Result<Query<StalledQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let request = d.request(&ctx)?;
    let Query(query) = query.map_err(|e| Failure::BadRequest(e.body_text()))?;
    let after = blank_to_none(query.after.as_ref())
        .map(parse_id)
        .transpose()?;
    let size = d.page_size(None);
    let mut rows = d.admin.stalled(after, size + 1).await?;
    let more = rows.len() > usize::try_from(size).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
    let next = more.then(|| rows.last().map(|r| r.id)).flatten();
    let total = d.admin.stalled_count().await?;
    Ok(request.page(pages::stalled(&request, &rows, total, next)))
}

async fn schemas(State(d): Shared, ctx: Ctx) -> Result<Response, Failure> {
    let request = d.request(&ctx)?;
    let latest = d.admin.latest_schemas().await?;
    Ok(request.page(pages::schemas(&request, &latest)))
}

#[derive(Debug, Default, serde::Deserialize)]
struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn schema(
    State(d): Shared,
    ctx: Ctx,
    Path(name): Path<String>,
    Query(diff): Query<DiffQuery>,
) -> Result<Response, Failure> {
    let request = d.request(&ctx)?;
    let history = d.admin.schema_history(&name).await?;
    if history.is_empty() {
        return Err(Failure::NotFound(format!(
            "no schema recorded for `{name}`"
        )));
    }
    let pick = |hash: Option<&String>, default: usize| -> Result<usize, Failure> {
        match blank_to_none(hash) {
            None => Ok(default),
            Some(h) => history
                .iter()
                .position(|v| v.schema_hash.starts_with(h))
                .ok_or_else(|| Failure::NotFound(format!("no version `{h}` of `{name}`"))),
        }
    };
    let last = history.len() - 1;
    let to = pick(diff.to.as_ref(), last)?;
    let from = pick(diff.from.as_ref(), to.saturating_sub(1))?;
    Ok(request.page(pages::schema(&request, &name, &history, from, to)))
}
