//! The operators' web dashboard: what is stuck, what failed and why, how
//! fast work flows, the attempts, in-doubt outcomes and operator trail of
//! each operation side by side, and each workflow's graph (drawn on the
//! server as SVG) — with the actions of `pgoutbox ops`
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
//! // Each operator signs in with a token of their own (16 characters at
//! // least); the trail records who acted.
//! let options = DashboardOptions::with_operators([
//!     ("alice", "alice-0123456789abcdef"),
//!     ("bob", "bob-0123456789abcdef01"),
//! ])?
//! .allow_actions(true)
//! .allowed_hosts(["ops.example.com", "127.0.0.1:8080"])?;
//! let app = axum::Router::new().route("/", axum::routing::get(|| async { "my service" }));
//! let app = dashboard::mount(app, "/admin/outbox", dashboard::router(admin, options));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // The client's address lets the sign-in rate limit count per client.
//! axum::serve(
//!     listener,
//!     app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
//! )
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! Safe by default: without operators every page is readable by whoever
//! reaches the address (the command binds to loopback only then) and no
//! action is offered. With operators, every page asks to sign in: a form
//! that opens a session (a random 256-bit id in an `HttpOnly`,
//! `SameSite=Strict` cookie, `Secure` when configured or when a proxy says
//! the request came over HTTPS (`X-Forwarded-Proto: https`), that
//! expires after [`DashboardOptions::session_lifetime`] and ends with
//! "Sign out"), or an `Authorization: Bearer` header. Failed sign-ins are
//! rate-limited per client address and in all (429 with `Retry-After`).
//! Actions need `allow_actions`, a POST and, for a session, the form's
//! CSRF token, an HMAC of the session id keyed by a per-process secret.
//! Whatever the mode, the dashboard answers only to the hosts it is
//! configured for (loopback names by default) and refuses a POST from
//! another site (see [`router`]); `docs/operating.md` ("The dashboard")
//! has the details.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::admin::{
    Action, ActionOutcome, Admin, BulkStep, OperationFilter, PlannedStep, Resolution,
    WorkflowAction, WorkflowActionOutcome, WorkflowFilter, WorkflowPlan,
};
use crate::definition::OperationId;
use crate::state::{Status, WorkflowState};
use crate::workflow::WorkflowId;

mod access;
mod chart;
mod graph;
mod pages;

use access::Access;
pub use access::{
    DashboardError, MIN_TOKEN_CHARS, SIGN_IN_FAILURES_IN_ALL, SIGN_IN_FAILURES_PER_CLIENT,
    SIGN_IN_WINDOW,
};

/// How the dashboard behaves, checked as it is built: a dashboard with an
/// empty or short token cannot be built, whoever builds it.
///
/// ```
/// use pgoutbox::dashboard::DashboardOptions;
///
/// // Open and read-only (for loopback): nobody signs in, nothing acts.
/// let open = DashboardOptions::default();
/// assert!(!open.allows_actions() && !open.needs_sign_in());
///
/// // Named operators, each with a token of at least 16 characters: the
/// // trail records who acted.
/// let team = DashboardOptions::with_operators([
///     ("alice", "alice-token-0123456789"),
///     ("bob", "bob-token-0123456789ab"),
/// ])?
/// .allow_actions(true)
/// .allowed_hosts(["ops.example.com"])?;
/// assert!(team.allows_actions() && team.needs_sign_in());
///
/// assert!(DashboardOptions::with_token("short", "ops").is_err());
/// # Ok::<(), pgoutbox::dashboard::DashboardError>(())
/// ```
#[derive(Clone)]
pub struct DashboardOptions {
    /// (name, token); empty: open and read-only.
    operators: Vec<(String, String)>,
    allow_actions: bool,
    live_window: Duration,
    page_size: i64,
    refresh: Duration,
    allowed_hosts: Vec<String>,
    session_lifetime: Duration,
    secure_cookie: bool,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        DashboardOptions {
            operators: Vec::new(),
            allow_actions: false,
            live_window: Duration::from_secs(90),
            page_size: 50,
            refresh: Duration::from_secs(2),
            allowed_hosts: Vec::new(),
            session_lifetime: Duration::from_hours(8),
            secure_cookie: false,
        }
    }
}

impl DashboardOptions {
    /// One access token, whose actions are recorded as `actor`.
    ///
    /// # Errors
    ///
    /// A token shorter than [`MIN_TOKEN_CHARS`] characters (blanks around
    /// it not counted) or an empty actor.
    pub fn with_token(
        token: impl Into<String>,
        actor: impl Into<String>,
    ) -> Result<Self, DashboardError> {
        Self::with_operators([(actor.into(), token.into())])
    }

    /// Named operators (name → token): each signs in with their own token
    /// and the trail records their name.
    ///
    /// # Errors
    ///
    /// No operator, a short or shared token, a repeated or blank name.
    pub fn with_operators<N: Into<String>, T: Into<String>>(
        operators: impl IntoIterator<Item = (N, T)>,
    ) -> Result<Self, DashboardError> {
        let mut options = DashboardOptions::default();
        for (name, token) in operators {
            options = options.operator(name, token)?;
        }
        if options.operators.is_empty() {
            return Err(DashboardError::NoOperator);
        }
        Ok(options)
    }

    /// Adds one named operator.
    ///
    /// # Errors
    ///
    /// As [`with_operators`](Self::with_operators).
    pub fn operator(
        mut self,
        name: impl Into<String>,
        token: impl Into<String>,
    ) -> Result<Self, DashboardError> {
        let (name, token) = (name.into(), token.into());
        access::check_operator(&name, &token)?;
        for (other, other_token) in &self.operators {
            if *other == name {
                return Err(DashboardError::DuplicateOperator(name));
            }
            if other_token.trim() == token.trim() {
                return Err(DashboardError::SharedToken(other.clone(), name));
            }
        }
        self.operators.push((name, token));
        Ok(self)
    }

    /// Offer and accept actions (they also need an operator to sign in).
    #[must_use]
    pub fn allow_actions(mut self, allow: bool) -> Self {
        self.allow_actions = allow;
        self
    }

    /// Liveness window for workers that recorded no lease of their own
    /// (default 90 s).
    #[must_use]
    pub fn live_window(mut self, window: Duration) -> Self {
        self.live_window = window;
        self
    }

    /// Rows per page of every list (default 50, at most 500).
    #[must_use]
    pub fn page_size(mut self, rows: i64) -> Self {
        self.page_size = rows;
        self
    }

    /// How often the overview refreshes itself (default 2 s).
    #[must_use]
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every;
        self
    }

    /// The names (`host` or `host:port`) the dashboard answers to; any
    /// other `Host` is refused (DNS rebinding). Empty (the default):
    /// `localhost`, `127.0.0.1` and `[::1]` only, at any port.
    ///
    /// # Errors
    ///
    /// An entry that is not a host name or address, with an optional port.
    pub fn allowed_hosts<H: AsRef<str>>(
        mut self,
        hosts: impl IntoIterator<Item = H>,
    ) -> Result<Self, DashboardError> {
        for host in hosts {
            let host = access::check_host(host.as_ref())?;
            if !self.allowed_hosts.contains(&host) {
                self.allowed_hosts.push(host);
            }
        }
        Ok(self)
    }

    /// How long a sign-in lasts (default 8 hours).
    ///
    /// # Errors
    ///
    /// A lifetime of zero.
    pub fn session_lifetime(mut self, lifetime: Duration) -> Result<Self, DashboardError> {
        if lifetime.is_zero() {
            return Err(DashboardError::ZeroLifetime);
        }
        self.session_lifetime = lifetime;
        Ok(self)
    }

    /// Mark the sign-in cookie `Secure` whatever the request's scheme
    /// (for a dashboard behind a TLS proxy). Requests that arrive over
    /// HTTPS, or say so with `X-Forwarded-Proto: https`, get it anyway.
    #[must_use]
    pub fn secure_cookie(mut self, secure: bool) -> Self {
        self.secure_cookie = secure;
        self
    }

    /// Whether actions are offered.
    pub fn allows_actions(&self) -> bool {
        self.allow_actions && !self.operators.is_empty()
    }

    /// Whether every page asks to sign in.
    pub fn needs_sign_in(&self) -> bool {
        !self.operators.is_empty()
    }

    /// The names of the operators.
    pub fn operators(&self) -> impl Iterator<Item = &str> {
        self.operators.iter().map(|(name, _)| name.as_str())
    }
}

impl std::fmt::Debug for DashboardOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardOptions")
            .field("operators", &self.operators().collect::<Vec<_>>())
            .field("allow_actions", &self.allow_actions)
            .field("live_window", &self.live_window)
            .field("page_size", &self.page_size)
            .field("refresh", &self.refresh)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("session_lifetime", &self.session_lifetime)
            .field("secure_cookie", &self.secure_cookie)
            .finish()
    }
}

/// The most rows any page shows.
const MAX_PAGE: i64 = 500;
/// Children of one operation listed on its page.
const CHILDREN_SHOWN: usize = 100;
/// Operations of a workflow tree drawn on an operation's page.
const TREE_SHOWN: i64 = 200;
/// Steps listed in the table under a workflow's graph.
const STEPS_SHOWN: usize = 500;
/// Steps listed in each part of a workflow action's confirmation.
const PLANNED_SHOWN: usize = 200;
/// Rows a bulk action takes at a time.
const BULK_BATCH: i64 = 500;
/// The sign-in cookie: a random session id, never the token or a digest
/// of it.
const SESSION_COOKIE: &str = "pgoutbox_session";

/// The Content-Security-Policy of every response: only this server's own
/// stylesheet and script, no inline script, no frames, forms posting only
/// here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

struct Dashboard {
    admin: Admin,
    options: DashboardOptions,
    access: Access,
}

type Shared = State<Arc<Dashboard>>;

/// The dashboard's routes, to serve as they are or to mount under a prefix
/// with [`mount`]. See the module's example.
///
/// Every response, refusals and 404s included, carries the security
/// headers; a request whose `Host` is not one of
/// [`DashboardOptions::allowed_hosts`] is refused, and so is a POST whose
/// `Origin` (or, without one, `Referer`) names another site, or that has
/// neither and no `Authorization: Bearer` header.
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
    let access = Access::new(&options.operators, options.session_lifetime);
    let state = Arc::new(Dashboard {
        admin,
        options,
        access,
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
        .route("/workflows", get(workflows))
        .route("/workflows/{id}", get(workflow))
        .route("/workflows/{id}/confirm", post(workflow_confirm))
        .route("/workflows/{id}/act", post(workflow_act))
        .route("/schemas", get(schemas))
        .route("/schemas/{name}", get(schema))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(axum::middleware::map_response(with_security_headers))
        .with_state(state)
}

/// Nests the dashboard under `prefix` (`/admin/outbox`) of `app`, and
/// redirects `prefix/` (which [`Router::nest`] leaves unrouted) to it.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::dashboard::{self, DashboardOptions};
///
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "my service" }));
/// let app = dashboard::mount(app, "/admin/outbox", dashboard::router(admin, DashboardOptions::default()));
/// # Ok(())
/// # }
/// ```
pub fn mount(app: Router, prefix: &str, dashboard: Router) -> Router {
    let prefix = prefix.trim_end_matches('/');
    // Relative, so that it holds behind a proxy that adds a prefix too.
    let last = prefix.rsplit('/').next().unwrap_or_default();
    let location = format!("../{last}");
    app.nest(prefix, dashboard).route(
        &format!("{prefix}/"),
        get(move || async move {
            let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            with_security_headers(response).await
        }),
    )
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
    /// Too many failed sign-ins: the sign-in page, later.
    TooManyAttempts {
        root: String,
        home: String,
        wait: Duration,
    },
    Forbidden(String),
    MethodNotAllowed(String),
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
            Failure::MethodNotAllowed(m) => (StatusCode::METHOD_NOT_ALLOWED, m),
            Failure::Conflict(m) => (StatusCode::CONFLICT, m),
            Failure::SignIn { root, home } => {
                return respond(
                    StatusCode::UNAUTHORIZED,
                    pages::login(&root, &home, None).into_string(),
                    None,
                );
            }
            Failure::TooManyAttempts { root, home, wait } => {
                let seconds = wait.as_secs() + 1;
                let mut response = respond(
                    StatusCode::TOO_MANY_REQUESTS,
                    pages::login(
                        &root,
                        &home,
                        Some(&format!(
                            "too many failed sign-ins: try again in {seconds} s"
                        )),
                    )
                    .into_string(),
                    None,
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                return response;
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

/// An HTML response (and a cookie to set); the security headers come from
/// the router's layer.
fn respond(status: StatusCode, body: String, set_cookie: Option<String>) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Some(cookie) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

/// The one place every response passes, extractor rejections and 404s
/// included: the security headers (a response that set its own caching
/// keeps it).
async fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under `no-referrer` a browser
    // sends `Origin: null` with a form POST, which the origin check must
    // refuse; `same-origin` still sends nothing to other sites.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The request's `Host` (or HTTP/2 authority), lower-cased.
fn host_of(parts: &axum::http::request::Parts) -> Option<String> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(ToString::to_string))
        .map(|h| h.trim().to_ascii_lowercase())
}

/// The `host[:port]` of an `Origin` or `Referer` URL, lower-cased.
fn authority_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(rest[..end].to_ascii_lowercase())
}

/// Refuses, before any route, a request to a `Host` the dashboard does not
/// answer to (DNS rebinding), and a state-changing request that comes from
/// another site: its `Origin`, or without one its `Referer`, must name the
/// same host; with neither, only a request that carries its own
/// credentials (`Authorization: Bearer`) is accepted, since a browser sends
/// `Origin` with every form POST and never adds that header by itself.
async fn guard(State(d): Shared, request: axum::extract::Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Some(host) = host_of(&parts) else {
        return Failure::BadRequest("the request has no `Host` header".to_owned()).into_response();
    };
    if !access::host_allowed(&d.options.allowed_hosts, &host) {
        return Failure::Forbidden(format!(
            "this dashboard does not answer to the host `{host}`: add it to \
             `dashboard.allowed_hosts` if it is yours"
        ))
        .into_response();
    }
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let header_text = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let from = match (header_text(header::ORIGIN), header_text(header::REFERER)) {
            (Some(origin), _) => Some(authority_of(origin)),
            (None, Some(referer)) => Some(authority_of(referer)),
            (None, None) => None,
        };
        let refusal = match from {
            Some(Some(authority)) if authority == host => None,
            Some(_) => Some(format!(
                "refused: this form was not sent from this dashboard (`Origin`/`Referer` \
                 does not name `{host}`)"
            )),
            None if header_text(header::AUTHORIZATION)
                .is_some_and(|v| v.starts_with("Bearer ")) =>
            {
                None
            }
            None => Some(
                "refused: a request that changes something needs an `Origin` or `Referer` \
                 header naming this dashboard (browsers send one), or an \
                 `Authorization: Bearer` header"
                    .to_owned(),
            ),
        };
        if let Some(message) = refusal {
            return Failure::Forbidden(message).into_response();
        }
    }
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// One signed-in request's view: the relative path to the dashboard's
/// root, who signed in and how, and the CSRF token of its session. Taking
/// it as a handler's first argument is what makes the handler need a
/// sign-in: its rejection, the sign-in page, comes before any other
/// extractor's.
struct Request {
    root: String,
    home: String,
    /// `None`: the dashboard is open (no operators), read-only.
    operator: Option<Arc<str>>,
    /// The session's id; `None` for a bearer request or an open dashboard.
    session: Option<String>,
    /// The session's CSRF token (empty without a session).
    csrf: String,
    can_act: bool,
}

/// A page, 200.
fn page(markup: maud::Markup) -> Response {
    respond(StatusCode::OK, markup.into_string(), None)
}

impl Request {
    /// The operator's name and the sign-out form's CSRF token, when signed
    /// in with a session.
    fn account(&self) -> Option<(&str, &str)> {
        Some((
            self.operator.as_deref()?,
            self.session.as_ref().map(|_| self.csrf.as_str())?,
        ))
    }
}

impl axum::extract::FromRequestParts<Arc<Dashboard>> for Request {
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        d: &Arc<Dashboard>,
    ) -> Result<Self, Self::Rejection> {
        let ctx = Ctx::of(parts);
        let root = ctx.root();
        let home = ctx.home();
        let open = |operator, session: Option<String>| {
            let csrf = session
                .as_deref()
                .map(|s| d.access.csrf(s))
                .unwrap_or_default();
            Request {
                root: root.clone(),
                home: home.clone(),
                can_act: d.options.allows_actions(),
                operator,
                session,
                csrf,
            }
        };
        if d.access.is_open() {
            return Ok(open(None, None));
        }
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(bearer) = bearer {
            let client = client_of(parts);
            if let Some(wait) = d.access.wait(client) {
                return Err(Failure::TooManyAttempts { root, home, wait });
            }
            if let Some(operator) = d.access.operator_of(bearer) {
                return Ok(open(Some(operator), None));
            }
            d.access.failed(client);
            return Err(Failure::SignIn { root, home });
        }
        if let Some(id) = cookie(&parts.headers, SESSION_COOKIE)
            && let Some(operator) = d.access.session(id)
        {
            return Ok(open(Some(operator), Some(id.to_owned())));
        }
        Err(Failure::SignIn { root, home })
    }
}

/// The client's address, when the server recorded it
/// (`into_make_service_with_connect_info`); without it, every client
/// shares one sign-in budget.
fn client_of(parts: &axum::http::request::Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Where a request is, within the dashboard and in full (behind a prefix,
/// they differ).
struct Ctx {
    uri: Uri,
    original: Uri,
    secure: bool,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Ctx::of(parts))
    }
}

impl Ctx {
    fn of(parts: &axum::http::request::Parts) -> Ctx {
        let original = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| parts.uri.clone(), |o| o.0.clone());
        let forwarded_https = parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        Ctx {
            secure: forwarded_https || original.scheme_str() == Some("https"),
            uri: parts.uri.clone(),
            original,
        }
    }

    /// Where the dashboard is mounted: `/admin/outbox` under
    /// `Router::nest("/admin/outbox", …)`, empty at the root. axum's
    /// `nest` does not route `/admin/outbox/` (with the slash) to the
    /// dashboard ([`mount`] redirects it), so links cannot be
    /// `./`-relative to the overview; they are built from the request's
    /// own prefix instead, which needs no configuration whatever the
    /// mount point.
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
    /// cookie's path: it matches itself and everything under it.
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
    /// Checks what a POST that changes something needs: actions allowed,
    /// a signed-in operator, and (for a browser session) the form's CSRF
    /// token equal to the session's. A bearer request carries its own
    /// credentials, which no other site can make a browser send.
    fn check_action<'r>(&self, request: &'r Request, form_csrf: &str) -> Result<&'r str, Failure> {
        if !self.options.allow_actions {
            return Err(Failure::Forbidden(
                "actions are off: start the dashboard with `--allow-actions`".to_owned(),
            ));
        }
        let Some(operator) = request.operator.as_deref() else {
            return Err(Failure::Forbidden(
                "actions need an access token: set `dashboard.token` or `dashboard.operators`"
                    .to_owned(),
            ));
        };
        if let Some(session) = &request.session
            && !self.access.csrf_matches(session, form_csrf)
        {
            return Err(Failure::Forbidden(
                "the form's CSRF token does not match: reload the page and try again".to_owned(),
            ));
        }
        Ok(operator)
    }

    fn page_size(&self, asked: Option<i64>) -> i64 {
        asked
            .unwrap_or(self.options.page_size)
            .clamp(1, MAX_PAGE.min(self.options.page_size.max(1) * 4))
    }

    /// The sign-in cookie for a new session (or, with `None`, the one that
    /// clears it).
    fn session_cookie(&self, ctx: &Ctx, session: Option<&str>) -> String {
        let secure = if self.options.secure_cookie || ctx.secure {
            "; Secure"
        } else {
            ""
        };
        let (value, max_age) = match session {
            Some(id) => (id, self.access.lifetime().as_secs()),
            None => ("", 0),
        };
        format!(
            "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path={}; Max-Age={max_age}{secure}",
            ctx.home()
        )
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
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

/// No such page: said only to a signed-in operator (the [`Request`]
/// extractor answers anyone else with the sign-in).
async fn not_found(_: Request, uri: Uri) -> Failure {
    Failure::NotFound(format!("no page at `{}`", uri.path()))
}

/// A method the page does not take; likewise after the sign-in.
async fn method_not_allowed(_: Request, method: axum::http::Method, uri: Uri) -> Failure {
    Failure::MethodNotAllowed(format!("`{}` does not take {method}", uri.path()))
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

async fn login(
    State(d): Shared,
    ConnectInfoMaybe(client): ConnectInfoMaybe,
    ctx: Ctx,
    Form(form): Form<LoginForm>,
) -> Result<Response, Failure> {
    let (root, home) = (ctx.root(), ctx.home());
    if d.access.is_open() {
        return Ok(see_other(&home, None));
    }
    if let Some(wait) = d.access.wait(client) {
        return Err(Failure::TooManyAttempts { root, home, wait });
    }
    if let Some(operator) = d.access.operator_of(&form.token) {
        let session = d.access.open_session(operator);
        return Ok(see_other(
            &home,
            Some(d.session_cookie(&ctx, Some(&session))),
        ));
    }
    d.access.failed(client);
    Ok(respond(
        StatusCode::UNAUTHORIZED,
        pages::login(&root, &home, Some("wrong token")).into_string(),
        None,
    ))
}

/// The client's address if the server recorded it; never rejects.
struct ConnectInfoMaybe(Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ConnectInfoMaybe {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ConnectInfoMaybe(client_of(parts)))
    }
}

#[derive(serde::Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// Signs out: the session ends on the server, the cookie is cleared.
async fn logout(
    State(d): Shared,
    request: Request,
    ctx: Ctx,
    Form(form): Form<LogoutForm>,
) -> Result<Response, Failure> {
    if let Some(session) = &request.session {
        if !d.access.csrf_matches(session, &form.csrf) {
            return Err(Failure::Forbidden(
                "the form's CSRF token does not match: reload the page and try again".to_owned(),
            ));
        }
        d.access.close_session(session);
    }
    Ok(see_other(
        &format!("{}login", request.root),
        Some(d.session_cookie(&ctx, None)),
    ))
}

fn see_other(location: &str, set_cookie: Option<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    if let Some(cookie) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
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

async fn overview(State(d): Shared, request: Request) -> Result<Response, Failure> {
    let data = read_overview(&d).await?;
    let refresh_ms = u64::try_from(d.options.refresh.as_millis()).unwrap_or(u64::MAX);
    Ok(page(pages::overview(&request, &data, refresh_ms)))
}

async fn live(State(d): Shared, request: Request) -> Result<Response, Failure> {
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
    request: Request,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let Query(query) = query.map_err(|e| Failure::BadRequest(e.body_text()))?;
    let mut filter = query.filter()?;
    let size = d.page_size(None);
    // One more than shown, to know whether there is a next page.
    filter.limit = Some(size + 1);
    let mut rows = d.admin.list(&filter).await?;
    let more = rows.len() > usize::try_from(size).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
    let next = more.then(|| rows.last().map(|r| r.id)).flatten();
    Ok(page(pages::operations(&request, &query, &rows, next)))
}

#[derive(Debug, Default, serde::Deserialize)]
struct Notice {
    notice: Option<String>,
}

async fn operation(
    State(d): Shared,
    request: Request,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Result<Response, Failure> {
    let id = parse_id(&id)?;
    let markup = operation_page(&d, &request, id, notice.notice.as_deref(), None, None).await?;
    Ok(page(markup))
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
    draft: Option<&Draft>,
) -> Result<maud::Markup, Failure> {
    let Some(detail) = d.admin.show(id).await? else {
        return Err(Failure::NotFound(format!(
            "no operation with id {id} (never published, or purged by retention)"
        )));
    };
    let root = detail.operation.root_id.unwrap_or(detail.operation.id);
    let tree = d.admin.workflow_page(root, TREE_SHOWN + 1).await?;
    let history = d.admin.schema_history(&detail.operation.name).await?;
    let step = d.admin.workflow_step(id).await?;
    Ok(pages::operation(
        request,
        &detail,
        &tree,
        usize::try_from(TREE_SHOWN).unwrap_or(usize::MAX),
        CHILDREN_SHOWN,
        &history,
        step.as_ref(),
        notice,
        refusal,
        draft,
    ))
}

#[derive(Debug, serde::Deserialize)]
struct ActForm {
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    csrf: String,
    /// A stalled operation's result, as JSON (resolve as succeeded only).
    #[serde(default)]
    result: String,
}

/// What an operator typed into a refused action's form, shown again.
#[derive(Debug, Default)]
struct Draft {
    action: String,
    reason: String,
    result: String,
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
    request: Request,
    Path(id): Path<String>,
    Form(form): Form<ActForm>,
) -> Result<Response, Failure> {
    let actor = d.check_action(&request, &form.csrf)?;
    let id = parse_id(&id)?;
    let action = parse_action(&form.action)?;
    let reason = check_reason(&form.reason)?;
    let draft = Draft {
        action: form.action.clone(),
        reason: form.reason.clone(),
        result: form.result.clone(),
    };
    let typed = form.result.trim();
    let outcome = if typed.is_empty() {
        d.admin.act(id, action, actor, reason).await?
    } else if action == Action::Resolve(Resolution::Succeeded) {
        match serde_json::from_str::<serde_json::Value>(typed) {
            Ok(result) => {
                d.admin
                    .resolve_with_result(id, Some(result), actor, reason)
                    .await?
            }
            Err(e) => {
                let message = format!("cannot resolve operation {id}: the result is not JSON: {e}");
                let page =
                    operation_page(&d, &request, id, None, Some(&message), Some(&draft)).await?;
                return Ok(respond(StatusCode::BAD_REQUEST, page.into_string(), None));
            }
        }
    } else {
        return Err(Failure::BadRequest(format!(
            "a result goes only with `resolve-succeeded`, not with `{}`: clear the result \
             field, or choose “Resolve as succeeded”",
            form.action
        )));
    };
    let message = outcome.message(id, action);
    match outcome {
        ActionOutcome::Applied { .. } => {
            let query =
                serde_urlencoded::to_string([("notice", message.as_str())]).unwrap_or_default();
            // From `operations/{id}/act` back to `operations/{id}`.
            Ok(see_other(&format!("../{id}?{query}"), None))
        }
        ActionOutcome::NotFound => Err(Failure::NotFound(message)),
        ActionOutcome::Refused { .. } | ActionOutcome::BadResult { .. } => {
            let page = operation_page(&d, &request, id, None, Some(&message), Some(&draft)).await?;
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
    request: Request,
    Form(form): Form<BulkForm>,
) -> Result<Response, Failure> {
    d.check_action(&request, &form.csrf)?;
    let action = bulk_action(&form.action)?;
    let reason = check_reason(&form.reason)?;
    let mut filter = form.list.filter()?;
    filter.after_id = None;
    let preview = d.admin.bulk_preview(action, &filter, 10).await?;
    Ok(page(pages::bulk_confirm(
        &request, action, reason, &form.list, &preview,
    )))
}

async fn bulk_run(
    State(d): Shared,
    request: Request,
    Form(form): Form<BulkForm>,
) -> Result<Response, Failure> {
    let actor = d.check_action(&request, &form.csrf)?;
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
                .act_if_matching(target.id, action, &filter, actor, reason)
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
    request: Request,
    query: Result<Query<StalledQuery>, QueryRejection>,
) -> Result<Response, Failure> {
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
    Ok(page(pages::stalled(&request, &rows, total, next)))
}

/// The workflow list's filters as they appear in its URL.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
struct WorkflowQuery {
    #[serde(default, skip_serializing_if = "is_blank")]
    state: Option<String>,
    #[serde(default, skip_serializing_if = "is_blank")]
    name: Option<String>,
    /// Created within this long (`30m`, `2h`, `7d`).
    #[serde(default, skip_serializing_if = "is_blank")]
    age: Option<String>,
    /// The next page: ids below this one.
    #[serde(default, skip_serializing_if = "is_blank")]
    before: Option<String>,
}

impl WorkflowQuery {
    /// The filter, or what is wrong with the query.
    fn filter(&self) -> Result<WorkflowFilter, Failure> {
        let state = blank_to_none(self.state.as_ref())
            .map(|text| {
                text.parse::<WorkflowState>().map_err(|_| {
                    Failure::BadRequest(format!(
                        "unknown workflow state `{text}`: expected one of {}",
                        WorkflowState::ALL
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .transpose()?;
        let newer_than = blank_to_none(self.age.as_ref())
            .map(|text| {
                humantime::parse_duration(text).map_err(|e| {
                    Failure::BadRequest(format!(
                        "invalid age `{text}`: {e} (e.g. `30m`, `2h`, `7d`)"
                    ))
                })
            })
            .transpose()?;
        let after_id = blank_to_none(self.before.as_ref())
            .map(parse_workflow_id)
            .transpose()?;
        Ok(WorkflowFilter {
            state,
            name: blank_to_none(self.name.as_ref()).map(str::to_owned),
            older_than: None,
            newer_than,
            after_id,
            limit: None,
        })
    }

    /// The query string of this list (without the page).
    fn query_string(&self) -> String {
        let mut first_page = self.clone();
        first_page.before = None;
        serde_urlencoded::to_string(&first_page).unwrap_or_default()
    }
}

fn parse_workflow_id(text: &str) -> Result<WorkflowId, Failure> {
    text.parse::<i64>()
        .map(WorkflowId::from_i64)
        .map_err(|_| Failure::BadRequest(format!("invalid workflow id `{text}`")))
}

async fn workflows(
    State(d): Shared,
    request: Request,
    query: Result<Query<WorkflowQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let Query(query) = query.map_err(|e| Failure::BadRequest(e.body_text()))?;
    let mut filter = query.filter()?;
    let size = d.page_size(None);
    // One more than shown, to know whether there is a next page.
    filter.limit = Some(size + 1);
    let mut rows = d.admin.workflows(&filter).await?;
    let more = rows.len() > usize::try_from(size).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
    let next = more.then(|| rows.last().map(|r| r.id)).flatten();
    Ok(page(pages::workflows(&request, &query, &rows, next)))
}

async fn workflow(
    State(d): Shared,
    request: Request,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Result<Response, Failure> {
    let id = parse_workflow_id(&id)?;
    let markup = workflow_page(&d, &request, id, notice.notice.as_deref(), None).await?;
    Ok(page(markup))
}

/// Workflow `id`'s page, with a notice (an action applied) or a refusal.
async fn workflow_page(
    d: &Dashboard,
    request: &Request,
    id: WorkflowId,
    notice: Option<&str>,
    refusal: Option<&str>,
) -> Result<maud::Markup, Failure> {
    let Some(graph) = d.admin.workflow_graph(id).await? else {
        return Err(Failure::NotFound(format!("no workflow with id {id}")));
    };
    let actions = d.admin.workflow_actions(id).await?;
    Ok(pages::workflow(
        request,
        &graph,
        &actions,
        STEPS_SHOWN,
        notice,
        refusal,
    ))
}

/// An action on a whole workflow, as its forms send it: the first POST
/// (`confirm`) shows its plan, the second (`act`) applies it.
#[derive(Debug, serde::Deserialize)]
struct WorkflowActForm {
    action: String,
    /// For a cancel: `yes` or `no`, the operator's explicit choice.
    #[serde(default)]
    compensate: Option<String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    csrf: String,
    /// The confirmed plan's [`plan_key`] (set by the confirmation).
    #[serde(default)]
    plan: Option<String>,
}

/// A plan's summary for the notice after it, in a redirect's URL: each
/// line cut at 200 characters (a large workflow's would list thousands of
/// steps; its page lists them).
fn short_summary(plan: &WorkflowPlan) -> String {
    plan.summary()
        .lines()
        .map(|line| match line.char_indices().nth(200) {
            Some((at, _)) => format!("{}…", &line[..at]),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a plan changes, as ids: the confirmation carries it, so that what
/// is applied is what the operator saw.
fn plan_key(plan: &WorkflowPlan) -> String {
    let ids = |steps: &[PlannedStep]| {
        steps
            .iter()
            .map(|s| s.id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "cancel:{};compensate:{};retry:{};drop:{}",
        ids(&plan.cancel),
        ids(&plan.compensate),
        ids(&plan.retry),
        ids(&plan.drop_compensations)
    )
}

impl WorkflowActForm {
    /// The action, or what is wrong with the form.
    fn action(&self) -> Result<WorkflowAction, Failure> {
        let compensate = blank_to_none(self.compensate.as_ref());
        match (self.action.as_str(), compensate) {
            ("cancel", Some("yes")) => Ok(WorkflowAction::Cancel { compensate: true }),
            ("cancel", Some("no")) => Ok(WorkflowAction::Cancel { compensate: false }),
            ("cancel", None) => Err(Failure::BadRequest(
                "choose whether to compensate what succeeded: a cancel needs an explicit                  “compensate” or “do not compensate”"
                    .to_owned(),
            )),
            ("cancel", Some(other)) => Err(Failure::BadRequest(format!(
                "invalid compensation choice `{other}`: expected `yes` or `no`"
            ))),
            ("retry", None) => Ok(WorkflowAction::Retry),
            ("retry", Some(_)) => Err(Failure::BadRequest(
                "a retry compensates nothing: the compensation choice goes with a cancel"
                    .to_owned(),
            )),
            (other, _) => Err(Failure::BadRequest(format!(
                "unknown workflow action `{other}`: expected cancel or retry"
            ))),
        }
    }
}

/// The confirmation: what the action would change (or why it does not
/// apply), with the form that applies it. Nothing changes.
async fn workflow_confirm(
    State(d): Shared,
    request: Request,
    Path(id): Path<String>,
    Form(form): Form<WorkflowActForm>,
) -> Result<Response, Failure> {
    d.check_action(&request, &form.csrf)?;
    let id = parse_workflow_id(&id)?;
    let action = form.action()?;
    let reason = check_reason(&form.reason)?;
    let Some(plan) = d.admin.workflow_plan(id, action).await? else {
        return Err(Failure::NotFound(format!("no workflow with id {id}")));
    };
    let status = if plan.refused.is_some() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    Ok(respond(
        status,
        pages::workflow_confirm(&request, &plan, reason, None, PLANNED_SHOWN).into_string(),
        None,
    ))
}

/// Applies a confirmed action: back to the workflow with what changed, or
/// its page with the refusal.
async fn workflow_act(
    State(d): Shared,
    request: Request,
    Path(id): Path<String>,
    Form(form): Form<WorkflowActForm>,
) -> Result<Response, Failure> {
    let actor = d.check_action(&request, &form.csrf)?;
    let id = parse_workflow_id(&id)?;
    let action = form.action()?;
    let reason = check_reason(&form.reason)?;
    let Some(confirmed) = blank_to_none(form.plan.as_ref()) else {
        return Err(Failure::BadRequest(
            "applying an action on a workflow needs the confirmation's plan: confirm it on the \
             workflow's page first"
                .to_owned(),
        ));
    };
    let name = action.name();
    // What the operator confirmed must still be what it does; if the
    // workflow moved on, the new plan is shown to confirm instead.
    let Some(now) = d.admin.workflow_plan(id, action).await? else {
        return Err(Failure::NotFound(format!("no workflow with id {id}")));
    };
    if now.refused.is_none() && plan_key(&now) != confirmed {
        let page = pages::workflow_confirm(
            &request,
            &now,
            reason,
            Some(
                "the workflow changed since this was confirmed: nothing was done; this is what it would change now",
            ),
            PLANNED_SHOWN,
        );
        return Ok(respond(StatusCode::CONFLICT, page.into_string(), None));
    }
    match d.admin.act_on_workflow(id, action, actor, reason).await? {
        WorkflowActionOutcome::Applied { plan, state } => {
            // Only a change between the check above and the action's own
            // locked plan gets here with another plan: said, not hidden.
            let changed = if plan_key(&plan) == confirmed {
                ""
            } else {
                "the workflow changed as this was applied, so it did other than confirmed: "
            };
            let message = format!(
                "{changed}{name} of workflow {id} applied: {} → {state}. {}",
                plan.state,
                short_summary(&plan)
            );
            let query =
                serde_urlencoded::to_string([("notice", message.as_str())]).unwrap_or_default();
            // From `workflows/{id}/act` back to `workflows/{id}`.
            Ok(see_other(&format!("../{id}?{query}"), None))
        }
        WorkflowActionOutcome::Refused { plan } => {
            let message = format!(
                "cannot {name} workflow {id}: {}",
                plan.refused.as_deref().unwrap_or("refused")
            );
            let page = workflow_page(&d, &request, id, None, Some(&message)).await?;
            Ok(respond(StatusCode::CONFLICT, page.into_string(), None))
        }
        _ => Err(Failure::NotFound(format!("no workflow with id {id}"))),
    }
}

async fn schemas(State(d): Shared, request: Request) -> Result<Response, Failure> {
    let latest = d.admin.latest_schemas().await?;
    Ok(page(pages::schemas(&request, &latest)))
}

#[derive(Debug, Default, serde::Deserialize)]
struct DiffQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn schema(
    State(d): Shared,
    request: Request,
    Path(name): Path<String>,
    Query(diff): Query<DiffQuery>,
) -> Result<Response, Failure> {
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
    let outputs = d.admin.output_history(&name).await?;
    Ok(page(pages::schema(
        &request, &name, &history, &outputs, from, to,
    )))
}
