//! Who may use the dashboard: the operators and their tokens, the sign-in
//! sessions, the CSRF tokens bound to them, the sign-in rate limit and the
//! `Host`/`Origin` rule that defeats DNS rebinding.
//!
//! Nothing here is stored in the database: a session is a random 256-bit
//! id held in the dashboard process's memory (a restart signs everybody
//! out), and every digest is an HMAC-SHA-256 keyed by a random secret drawn
//! when the router is built, so no value a browser holds can be computed
//! offline from a token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hmac::Mac as _;

type HmacSha256 = hmac::Hmac<sha2_hmac::Sha256>;

/// The fewest characters a dashboard token may have.
pub const MIN_TOKEN_CHARS: usize = 16;
/// Failed sign-ins (form or bearer) one client address may make per
/// window before it must wait.
pub const SIGN_IN_FAILURES_PER_CLIENT: u32 = 10;
/// Failed sign-ins all clients together may make per window; past it, a
/// client that failed at least once in the window must wait, one that did
/// not may still sign in (so that guesses from elsewhere cannot lock the
/// operators out).
pub const SIGN_IN_FAILURES_IN_ALL: u32 = 100;
/// The rate limit's fixed window.
pub const SIGN_IN_WINDOW: Duration = Duration::from_mins(1);

/// Why dashboard options cannot be built.
///
/// ```
/// use pgoutbox::dashboard::{DashboardError, DashboardOptions};
///
/// let err = DashboardOptions::with_token("", "ops").unwrap_err();
/// assert!(matches!(err, DashboardError::ShortToken { .. }));
/// assert_eq!(
///     err.to_string(),
///     "the dashboard token of `ops` is empty: a token needs at least 16 characters"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// A token shorter than [`MIN_TOKEN_CHARS`] (or empty).
    #[error(
        "the dashboard token of `{operator}` {}: a token needs at least {MIN_TOKEN_CHARS} characters",
        if *.chars == 0 { "is empty".to_owned() } else { format!("has only {} character(s)", .chars) }
    )]
    ShortToken {
        /// Whose token.
        operator: String,
        /// How many characters it has (surrounding blanks not counted).
        chars: usize,
    },
    /// An operator without a name, or whose name has control characters.
    #[error(
        "invalid dashboard operator name `{0}`: expected a non-empty name without control characters"
    )]
    BadOperatorName(String),
    /// The same operator named twice.
    #[error("the dashboard operator `{0}` is named twice")]
    DuplicateOperator(String),
    /// Two operators with one token: the trail could not tell them apart.
    #[error(
        "the dashboard operators `{0}` and `{1}` have the same token: each operator needs a token of their own"
    )]
    SharedToken(String, String),
    /// No operator at all where one was asked for.
    #[error("no dashboard operator given: name at least one (name → token)")]
    NoOperator,
    /// An allowed host that is not a host name or `host:port`.
    #[error(
        "invalid dashboard allowed host `{0}`: expected a host name, an IP address, or either with `:port`"
    )]
    BadHost(String),
    /// A session lifetime of zero.
    #[error("the dashboard session lifetime must be longer than zero")]
    ZeroLifetime,
}

/// Checks one operator's name and token.
pub(super) fn check_operator(name: &str, token: &str) -> Result<(), DashboardError> {
    if name.trim().is_empty() || name.trim() != name || name.chars().any(char::is_control) {
        return Err(DashboardError::BadOperatorName(name.to_owned()));
    }
    let chars = token.trim().chars().count();
    if chars < MIN_TOKEN_CHARS {
        return Err(DashboardError::ShortToken {
            operator: name.to_owned(),
            chars,
        });
    }
    Ok(())
}

/// Checks an allowed host: `name`, `name:port`, `1.2.3.4[:port]`,
/// `[::1][:port]`; returns it lower-cased.
pub(super) fn check_host(host: &str) -> Result<String, DashboardError> {
    let bad = || DashboardError::BadHost(host.to_owned());
    let lower = host.trim().to_ascii_lowercase();
    let (name, port) = split_host(&lower).ok_or_else(bad)?;
    if let Some(port) = port {
        port.parse::<u16>().map_err(|_| bad())?;
    }
    let name_ok = if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    if name_ok { Ok(lower) } else { Err(bad()) }
}

/// `host[:port]` → (host, port); an IPv6 host keeps its brackets.
pub(super) fn split_host(text: &str) -> Option<(&str, Option<&str>)> {
    if text.starts_with('[') {
        let end = text.find(']')?;
        let (name, rest) = text.split_at(end + 1);
        match rest {
            "" => Some((name, None)),
            _ => rest.strip_prefix(':').map(|p| (name, Some(p))),
        }
    } else {
        match text.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') => Some((name, Some(port))),
            Some(_) => None,
            None => Some((text, None)),
        }
    }
}

/// Whether `host` (a request's `Host`, lower-cased) is one of `allowed`
/// (an entry without a port allows any port); with no entries, only the
/// loopback names are.
pub(super) fn host_allowed(allowed: &[String], host: &str) -> bool {
    let Some((name, port)) = split_host(host) else {
        return false;
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return false;
    }
    if allowed.is_empty() {
        return matches!(name, "localhost" | "127.0.0.1" | "[::1]");
    }
    allowed.iter().any(|entry| match split_host(entry) {
        Some((n, None)) => n == name,
        Some((n, Some(p))) => n == name && Some(p) == port,
        None => false,
    })
}

/// One signed-in browser.
struct Session {
    operator: Arc<str>,
    expires: Instant,
}

/// Failed sign-ins in the current window.
struct Limiter {
    window_start: Instant,
    all: u32,
    per_client: HashMap<Option<IpAddr>, u32>,
}

/// The operators, the sessions and the rate limit of one dashboard.
pub(super) struct Access {
    secret: [u8; 32],
    /// (name, HMAC of the token).
    operators: Vec<(Arc<str>, [u8; 32])>,
    /// By HMAC of the session id, so a lookup's timing says nothing of ids.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    limiter: Mutex<Limiter>,
    lifetime: Duration,
}

fn random32() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    // The operating system's generator failing is not something a
    // dashboard can recover from or should serve on: a predictable
    // session id would be worse than no dashboard.
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    bytes
}

/// Equal, compared without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Access {
    pub(super) fn new(operators: &[(String, String)], lifetime: Duration) -> Self {
        let mut access = Access {
            secret: random32(),
            operators: Vec::new(),
            sessions: Mutex::new(HashMap::new()),
            limiter: Mutex::new(Limiter {
                window_start: Instant::now(),
                all: 0,
                per_client: HashMap::new(),
            }),
            lifetime,
        };
        access.operators = operators
            .iter()
            .map(|(name, token)| {
                (
                    Arc::from(name.as_str()),
                    access.mac("token", token.trim().as_bytes()),
                )
            })
            .collect();
        access
    }

    /// Whether anyone must sign in.
    pub(super) fn is_open(&self) -> bool {
        self.operators.is_empty()
    }

    pub(super) fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC takes a key of any length");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(data);
        let tag = mac.finalize().into_bytes();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_slice());
        out
    }

    /// The operator whose token this is; every operator is compared.
    pub(super) fn operator_of(&self, token: &str) -> Option<Arc<str>> {
        let presented = self.mac("token", token.trim().as_bytes());
        let mut found = None;
        for (name, digest) in &self.operators {
            if same(&presented, digest) {
                found = Some(name.clone());
            }
        }
        found
    }

    /// Opens a session for `operator`: its id, for the cookie.
    pub(super) fn open_session(&self, operator: Arc<str>) -> String {
        let id = hex::encode(random32());
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            self.mac("session", id.as_bytes()),
            Session {
                operator,
                expires: now + self.lifetime,
            },
        );
        id
    }

    /// The operator of a live session.
    pub(super) fn session(&self, id: &str) -> Option<Arc<str>> {
        let key = self.mac("session", id.as_bytes());
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.operator.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends a session (signing out).
    pub(super) fn close_session(&self, id: &str) {
        let key = self.mac("session", id.as_bytes());
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
    }

    /// The CSRF token of a session: an HMAC of its id, so a token planted
    /// in a browser or taken from another session does not match.
    pub(super) fn csrf(&self, session: &str) -> String {
        hex::encode(self.mac("csrf", session.as_bytes()))
    }

    /// Whether a form's CSRF token is the session's.
    pub(super) fn csrf_matches(&self, session: &str, form: &str) -> bool {
        same(self.csrf(session).as_bytes(), form.as_bytes())
    }

    /// How long `client` must wait before it may try to sign in again, if
    /// it must.
    pub(super) fn wait(&self, client: Option<IpAddr>) -> Option<Duration> {
        let mut limiter = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.duration_since(limiter.window_start);
        if elapsed >= SIGN_IN_WINDOW {
            limiter.window_start = now;
            limiter.all = 0;
            limiter.per_client.clear();
            return None;
        }
        let mine = limiter.per_client.get(&client).copied().unwrap_or(0);
        let over_all = limiter.all >= SIGN_IN_FAILURES_IN_ALL && mine > 0;
        (over_all || mine >= SIGN_IN_FAILURES_PER_CLIENT)
            .then(|| SIGN_IN_WINDOW.saturating_sub(elapsed))
    }

    /// Counts a failed sign-in of `client`.
    pub(super) fn failed(&self, client: Option<IpAddr>) {
        let mut limiter = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        limiter.all = limiter.all.saturating_add(1);
        let mine = limiter.per_client.entry(client).or_insert(0);
        *mine = mine.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_by_name_and_port() {
        let allowed = vec!["127.0.0.1:7480".to_owned(), "ops.example.com".to_owned()];
        assert!(host_allowed(&allowed, "127.0.0.1:7480"));
        assert!(!host_allowed(&allowed, "127.0.0.1:7481"));
        assert!(host_allowed(&allowed, "ops.example.com"));
        assert!(host_allowed(&allowed, "ops.example.com:8443"));
        assert!(!host_allowed(&allowed, "attacker.example"));
        assert!(!host_allowed(&allowed, "attacker.example:7480"));
        assert!(host_allowed(&[], "localhost:9"));
        assert!(host_allowed(&[], "[::1]:9"));
        assert!(!host_allowed(&[], "attacker.example"));
        assert!(!host_allowed(&[], "127.0.0.1:x"));
        assert!(check_host("a b").is_err());
        assert!(check_host("[::1]:80").is_ok());
        assert!(check_host("host:99999").is_err());
    }

    #[test]
    fn tokens_need_sixteen_characters() {
        assert!(check_operator("ops", "0123456789abcdef").is_ok());
        assert_eq!(
            check_operator("ops", " 0123456789abcde ")
                .unwrap_err()
                .to_string(),
            "the dashboard token of `ops` has only 15 character(s): a token needs at least 16 characters"
        );
        assert!(check_operator("", "0123456789abcdef").is_err());
    }
}
