//! Relays: operations handed to a distributed log instead of a handler.
//!
//! The transactional outbox's classic use is publishing events to the rest
//! of a company without dual writes: the application publishes an
//! operation in its own transaction, and a relay forwards it to a broker
//! that clusters, replicates and fans out. A relay is the operation's
//! handler, run by the same runtime (claim, lease, heartbeat, retries,
//! in-doubt handling): the attempt succeeds when the broker acknowledges
//! the message, and the receipt (for JetStream, the stream and sequence)
//! is recorded on the attempt.
//!
//! ```no_run
//! use pgoutbox::prelude::*;
//! use pgoutbox::relay::Relay;
//!
//! /// An order was placed (published by the order service).
//! #[operation("orders.placed", idempotent)]
//! pub struct OrderPlaced {
//!     order_id: i64,
//!     region: String,
//! }
//!
//! # async fn example(settings: pgoutbox::Settings) -> Result<(), Box<dyn std::error::Error>> {
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let router = WorkflowRouter::new()
//!     .relay::<OrderPlaced>(Relay::jetstream(&client, "events.orders.{region}"));
//! let system = WorkflowSystem::builder(settings).router(router).start().await?;
//! # let _ = system;
//! # Ok(())
//! # }
//! ```
//!
//! What a message carries:
//!
//! - its body is the operation's JSON payload, as stored;
//! - [`MSG_ID`] (`Nats-Msg-Id`) is the operation's stable external key, so
//!   JetStream drops a re-sent message within the stream's duplicate window;
//! - [`NAME`], [`ID`], [`ROOT_ID`] and [`SCHEMA_HASH`] say which operation
//!   it is, and with which payload schema it was published.
//!
//! A relayed operation must be declared `idempotent`: a message sent whose
//! PubAck never came (a timeout, a connection lost after the send, a relay
//! stopped or vanished) may be in the stream; its attempt is recorded as
//! an unknown outcome (`timed_out`, `lost`, `aborted`), and the message is
//! sent again only while JetStream still drops the copy: when the retry is
//! sent within the stream's duplicate window of the first send that may
//! have landed. Otherwise the operation is `stalled`, its error naming the
//! window, for an operator to decide. A refusal that certainly stored
//! nothing (no stream, an error reply) is an ordinary retryable failure.
//! The guarantees and what a consumer does beyond the window are in
//! `docs/consistency.md`.
//!
//! Consumers decode with [`decode`], which checks the name and the schema
//! hash.
//!
//! The backends sit behind one small trait, one module each: [`jetstream`]
//! today; a Kafka backend would be a sibling module.

pub mod jetstream;
mod subject;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::definition::{Operation, OperationSchema};
use crate::registry::BoxFuture;

/// The NATS client the relay is built with, so that an application uses
/// the same version.
pub use async_nats;
pub use jetstream::JetStreamOptions;
pub(crate) use subject::Subject;
pub use subject::SubjectError;

/// The header holding the message id that JetStream deduplicates on: the
/// operation's external key (a UUID, stable across attempts).
pub const MSG_ID: &str = "Nats-Msg-Id";
/// The header holding the operation's name.
pub const NAME: &str = "Pgoutbox-Name";
/// The header holding the operation's id.
pub const ID: &str = "Pgoutbox-Id";
/// The header holding the id of the root of the operation's workflow.
pub const ROOT_ID: &str = "Pgoutbox-Root-Id";
/// The header holding the hash of the payload schema the operation was
/// published with.
pub const SCHEMA_HASH: &str = "Pgoutbox-Schema-Hash";

/// One message for a broker.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) subject: String,
    /// `(name, value)` pairs, [`MSG_ID`] first.
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

/// Why a publish did not end with the broker's acknowledgement.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) message: String,
    pub(crate) kind: RefusalKind,
}

/// What a [`Refusal`] says about the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalKind {
    /// Certainly not stored, and sending it again may help (no stream
    /// captured it, a permission, an error reply from the server).
    Retryable,
    /// Certainly not stored, and sending it again cannot help (it is
    /// larger than the server allows).
    Permanent,
    /// Perhaps stored: it was sent and no answer came (no PubAck in time:
    /// `timed_out`; the connection lost after the send: `lost`).
    Unknown(crate::state::Outcome),
}

impl Refusal {
    pub(crate) fn retryable(message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            kind: RefusalKind::Retryable,
        }
    }

    pub(crate) fn permanent(message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            kind: RefusalKind::Permanent,
        }
    }

    /// A message sent whose fate is unknown: `outcome` is `timed_out` or
    /// `lost`.
    pub(crate) fn unknown(outcome: crate::state::Outcome, message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            kind: RefusalKind::Unknown(outcome),
        }
    }
}

/// The acknowledgement of a message sent: the broker's receipt, as
/// recorded on the attempt (`attempts.result`).
pub(crate) type Ack = BoxFuture<'static, Result<serde_json::Value, Refusal>>;

/// A broker the relay publishes to. One module per broker implements it
/// ([`jetstream`]); the runtime sees only this.
pub(crate) trait Backend: Send + Sync + fmt::Debug {
    /// Checks at start-up that the broker is reachable and that a stream
    /// captures each of `subjects` (given as samples: a template's
    /// placeholders replaced by a token).
    fn check<'a>(&'a self, subjects: &'a [String]) -> BoxFuture<'a, Result<(), RelayError>>;

    /// Sends `message`: returns once the client has taken it, with the
    /// future of its acknowledgement, so that many can be in flight.
    fn send(&self, message: Message) -> BoxFuture<'_, Result<Ack, Refusal>>;

    /// How long after a first send the broker still drops a copy of the
    /// message (JetStream: the shortest `duplicate_window` among the
    /// streams the relay publishes to), as last read; `None` before it
    /// was read, or when the broker does not deduplicate.
    fn duplicate_window(&self) -> Option<Duration>;

    /// Reads the duplicate window again from the broker (unless it was
    /// just read) and returns it, as [`Backend::duplicate_window`]: before
    /// an operation is stalled for a window that may have changed.
    fn reread_duplicate_window(&self) -> BoxFuture<'_, Option<Duration>>;
}

/// Why re-sending a message whose first send may have landed is not safe:
/// the retry would reach the broker after `window` (the broker's
/// duplicate window, `None` when unknown) from the first send, when a
/// copy would no longer be dropped. `since_first` is the time from the
/// first send that may have landed to the retry's send; `None`: safe.
///
/// ```text
/// the retry would be sent 4.1s after the first send, past the stream's 500ms duplicate window
/// ```
pub(crate) fn resend_refused(since_first: Duration, window: Option<Duration>) -> Option<String> {
    let since = human(since_first);
    match window {
        Some(window) if since_first < window => None,
        Some(window) => Some(format!(
            "the retry would be sent {since} after the first send, past the stream's {} \
             duplicate window",
            human(window)
        )),
        None => Some(format!(
            "the retry would be sent {since} after the first send, and the stream's duplicate \
             window is not known"
        )),
    }
}

/// Where an operation's messages go: a broker and a subject.
///
/// Built with [`Relay::jetstream`] (or [`Relay::jetstream_with`]) and given
/// to a router with [`WorkflowRouter::relay`](crate::WorkflowRouter::relay).
#[derive(Clone)]
pub struct Relay {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) subject: Subject,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("backend", &self.backend)
            .field("subject", &self.subject)
            .finish()
    }
}

impl Relay {
    /// A relay to JetStream through `client`, publishing to `subject`: a
    /// fixed subject (`events.orders.placed`) or a template whose `{field}`
    /// placeholders are filled from the payload (`events.orders.{region}`),
    /// checked against the operation's schema when the router is
    /// resolved. The defaults of [`JetStreamOptions`] apply.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    /// let relay = pgoutbox::relay::Relay::jetstream(&client, "events.orders.placed");
    /// # let _ = relay;
    /// # Ok(())
    /// # }
    /// ```
    pub fn jetstream(client: &async_nats::Client, subject: impl Into<String>) -> Relay {
        Relay::jetstream_with(client, subject, JetStreamOptions::default())
    }

    /// [`Relay::jetstream`] with options: the stream the subjects must land
    /// in, the publish timeout, the most messages in flight.
    ///
    /// A worker keeps at most `4 × n_workers` outcomes unrecorded, so it
    /// relays at most `4 × n_workers` messages at once whatever
    /// `max_in_flight` says: set `workflow_system.n_workers` to at least
    /// `max_in_flight / 4` (as `pgoutbox relay` does).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use pgoutbox::relay::{JetStreamOptions, Relay};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    /// let options = JetStreamOptions {
    ///     stream: Some("ORDERS".into()),
    ///     publish_timeout: Duration::from_secs(5),
    ///     max_in_flight: 512,
    /// };
    /// let relay = Relay::jetstream_with(&client, "events.orders.placed", options);
    /// # let _ = relay;
    /// # Ok(())
    /// # }
    /// ```
    pub fn jetstream_with(
        client: &async_nats::Client,
        subject: impl Into<String>,
        options: JetStreamOptions,
    ) -> Relay {
        Relay {
            backend: Arc::new(jetstream::JetStream::new(client.clone(), options)),
            subject: Subject::Template(subject.into()),
        }
    }

    /// A relay to JetStream for operations known by name only (the
    /// `pgoutbox relay` command): each goes to `prefix.name`, or to its
    /// name without a prefix.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    /// let relay = pgoutbox::relay::Relay::jetstream_by_name(&client, Some("events"), Default::default());
    /// // `orders.placed` goes to `events.orders.placed`.
    /// # let _ = relay;
    /// # Ok(())
    /// # }
    /// ```
    pub fn jetstream_by_name(
        client: &async_nats::Client,
        prefix: Option<&str>,
        options: JetStreamOptions,
    ) -> Relay {
        Relay {
            backend: Arc::new(jetstream::JetStream::new(client.clone(), options)),
            subject: Subject::ByName(prefix.map(str::to_owned)),
        }
    }
}

/// Connects to the NATS server(s) of `settings.url` (with the credentials
/// file, when set), failing with a clear [`RelayError::Unreachable`]
/// within `publish_timeout` rather than retrying forever. After the first
/// connection the client reconnects on its own.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let settings = pgoutbox::Settings::load()?;
/// let client = pgoutbox::relay::connect(&settings.relay.nats).await?;
/// let options = pgoutbox::relay::JetStreamOptions::from_settings(&settings.relay.nats);
/// let relay = pgoutbox::relay::Relay::jetstream_with(&client, "events.orders.placed", options);
/// # let _ = relay;
/// # Ok(())
/// # }
/// ```
pub async fn connect(
    settings: &crate::settings::NatsSettings,
) -> Result<async_nats::Client, RelayError> {
    let url = settings
        .url
        .clone()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let unreachable = |reason: String| RelayError::Unreachable {
        url: crate::settings::redact_nats_url(&url),
        reason,
    };
    let mut options = async_nats::ConnectOptions::new()
        .name("pgoutbox-relay")
        .connection_timeout(settings.publish_timeout);
    if let Some(file) = &settings.credentials_file {
        options = options.credentials_file(file).await.map_err(|e| {
            unreachable(format!(
                "cannot read credentials file {}: {e}",
                file.display()
            ))
        })?;
    }
    let servers: Vec<async_nats::ServerAddr> = url
        .split(',')
        .map(|one| one.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<_, _>>()
        .map_err(|e| unreachable(format!("invalid URL: {e}")))?;
    tokio::time::timeout(
        settings.publish_timeout,
        async_nats::connect_with_options(servers, options),
    )
    .await
    .map_err(|_| unreachable(format!("no answer within {:?}", settings.publish_timeout)))?
    .map_err(|e| unreachable(e.to_string()))
}

/// Why a relay cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The broker cannot be reached.
    #[error("cannot reach NATS at {url}: {reason}")]
    Unreachable {
        /// Where it was looked for.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// The stream named in the options does not exist.
    #[error(
        "JetStream stream `{stream}` does not exist: create it (`nats stream add {stream}`) or name another one"
    )]
    NoStream {
        /// The stream's name.
        stream: String,
    },
    /// No stream (or not the stream named) captures a subject the relay
    /// publishes to.
    #[error("no JetStream stream captures subject `{subject}`{}", stream.as_ref().map(|s| format!(" (stream `{s}` does not list it)")).unwrap_or_default())]
    NotCaptured {
        /// The subject (a template's placeholders filled with a sample).
        subject: String,
        /// The stream named in the options, if any.
        stream: Option<String>,
    },
    /// The broker answered a start-up check with an error.
    #[error("JetStream refused the start-up check: {0}")]
    Broker(String),
    /// An untyped relay's names match nothing.
    #[error(
        "no operation name matches `{0}`: names are matched against those published or registered before the relay starts"
    )]
    NoNames(String),
}

/// Why a message could not be decoded by [`decode`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message has no `Pgoutbox-Name` header: it was not relayed by
    /// pgoutbox.
    #[error("the message has no `{NAME}` header: it was not relayed by pgoutbox")]
    NoName,
    /// The message is another operation's.
    #[error("the message is operation `{found}`, not `{expected}`")]
    UnknownName {
        /// The name expected (the type's).
        expected: &'static str,
        /// The name in the header.
        found: String,
    },
    /// The payload does not decode into the type; the schema hash says
    /// whether it was published with another schema.
    #[error(
        "the payload of `{name}` no longer decodes: {source}{}",
        if *stale { " (it was published with another version of the payload schema)" } else { "" }
    )]
    Payload {
        /// The operation's name.
        name: &'static str,
        /// Whether the message's schema hash differs from the type's.
        stale: bool,
        /// What serde said.
        source: serde_json::Error,
    },
}

/// Decodes a relayed message into its operation's payload type, checking
/// that it is that operation's message (the `Pgoutbox-Name` header). A
/// payload published with another schema version (the `Pgoutbox-Schema-Hash`
/// header) is still decoded when it can be: a schema change that kept the
/// old payloads readable (a new optional field) must not stop consumers;
/// [`schema_changed`] tells them.
///
/// ```
/// use pgoutbox::prelude::*;
/// use pgoutbox::relay::{self, DecodeError};
///
/// #[operation("orders.placed", idempotent)]
/// pub struct OrderPlaced {
///     order_id: i64,
/// }
///
/// let mut headers = async_nats::HeaderMap::new();
/// headers.insert(relay::NAME, "orders.placed");
/// headers.insert(relay::SCHEMA_HASH, OrderPlaced::schema().hash());
/// let message = async_nats::Message {
///     subject: "events.orders.placed".into(),
///     reply: None,
///     payload: br#"{"order_id": 7}"#.as_slice().into(),
///     headers: Some(headers),
///     status: None,
///     description: None,
///     length: 0,
/// };
/// let order: OrderPlaced = relay::decode(&message)?;
/// assert!(!relay::schema_changed::<OrderPlaced>(&message));
///
/// #[operation("orders.cancelled", idempotent)]
/// pub struct OrderCancelled {
///     order_id: i64,
/// }
/// assert!(matches!(relay::decode::<OrderCancelled>(&message), Err(DecodeError::UnknownName { .. })));
/// # let _ = order;
/// # Ok::<(), DecodeError>(())
/// ```
pub fn decode<O: Operation>(message: &async_nats::Message) -> Result<O, DecodeError> {
    let name = header(message, NAME).ok_or(DecodeError::NoName)?;
    if name != O::NAME {
        return Err(DecodeError::UnknownName {
            expected: O::NAME,
            found: name.to_owned(),
        });
    }
    serde_json::from_slice(&message.payload).map_err(|source| DecodeError::Payload {
        name: O::NAME,
        stale: schema_changed::<O>(message),
        source,
    })
}

/// Whether the message was published with a payload schema other than
/// `O`'s current one (or carries no schema hash).
///
/// See [`decode`] for an example.
pub fn schema_changed<O: Operation>(message: &async_nats::Message) -> bool {
    header(message, SCHEMA_HASH) != Some(O::schema().hash())
}

fn header<'m>(message: &'m async_nats::Message, name: &str) -> Option<&'m str> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(async_nats::HeaderValue::as_str)
}

/// A relay as a router holds it: typed (its payload's schema known) or
/// by name only.
#[derive(Debug, Clone)]
pub(crate) struct RouteRelay {
    pub(crate) relay: Relay,
    /// Where `.relay::<T>()` was called (`file:line`), or the command's
    /// description for an untyped relay.
    pub(crate) location: String,
    /// Whether the route knows the payload type (and so records its schema).
    pub(crate) typed: bool,
}

impl RouteRelay {
    /// Checks the subject for operation `name` with `schema`; returns a
    /// sample subject for the start-up check of the broker.
    pub(crate) fn check_subject(
        &self,
        name: &str,
        schema: Option<&OperationSchema>,
    ) -> Result<String, SubjectError> {
        self.relay
            .subject
            .check(name, schema.map(OperationSchema::json))
    }

    /// The message of an operation: its subject, headers and body.
    pub(crate) fn message(
        &self,
        name: &str,
        id: i64,
        root_id: i64,
        external_key: uuid::Uuid,
        schema_hash: &str,
        payload: &serde_json::Value,
    ) -> Result<Message, Refusal> {
        let subject = self
            .relay
            .subject
            .render(name, payload)
            .map_err(|e| Refusal::permanent(e.to_string()))?;
        let body = serde_json::to_vec(payload)
            .map_err(|e| Refusal::permanent(format!("the payload cannot be encoded: {e}")))?;
        Ok(Message {
            subject,
            headers: vec![
                (MSG_ID, external_key.to_string()),
                (NAME, name.to_owned()),
                (ID, id.to_string()),
                (ROOT_ID, root_id.to_string()),
                (SCHEMA_HASH, schema_hash.to_owned()),
            ],
            body,
        })
    }
}

/// `d` to the millisecond, as people write it (`500ms`, `4s 100ms`, `2m`).
fn human(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// Whether `name` matches `pattern`, where `*` stands for any run of
/// characters (dots included): `orders.*` matches `orders.placed` and
/// `orders.eu.placed`.
pub(crate) fn name_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn a_resend_is_refused_past_the_window() {
        use std::time::Duration;

        use super::resend_refused;
        let window = Some(Duration::from_millis(500));
        assert_eq!(resend_refused(Duration::from_millis(499), window), None);
        assert_eq!(
            resend_refused(Duration::from_millis(4100), window).as_deref(),
            Some(
                "the retry would be sent 4s 100ms after the first send, past the stream's 500ms \
                 duplicate window"
            )
        );
        assert!(resend_refused(Duration::from_millis(500), window).is_some());
        assert!(
            resend_refused(Duration::ZERO, None)
                .is_some_and(|r| r.contains("duplicate window is not known"))
        );
    }

    #[test]
    fn name_patterns() {
        assert!(name_matches("orders.*", "orders.placed"));
        assert!(name_matches("orders.*", "orders.eu.placed"));
        assert!(!name_matches("orders.*", "billing.charge"));
        assert!(!name_matches("orders.*", "orders"));
        assert!(name_matches("orders.placed", "orders.placed"));
        assert!(!name_matches("orders.placed", "orders.placed2"));
        assert!(name_matches("*.placed", "orders.placed"));
        assert!(name_matches("*", "anything.at.all"));
        assert!(name_matches("a*b*c", "aXbYc"));
        assert!(!name_matches("a*b*c", "aXcYb"));
        assert!(!name_matches("ab*ba", "aba"));
    }
}
