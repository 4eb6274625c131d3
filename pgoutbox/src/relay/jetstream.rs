//! The JetStream backend: asynchronous publishes (many in flight, each
//! acknowledged by a PubAck), deduplicated by `Nats-Msg-Id`.
//!
//! A publish ends in one of three ways: a PubAck (success); a refusal that
//! certainly stored nothing (no stream answered, an error reply, a message
//! over a size limit), an ordinary failure; or no answer after the message
//! was sent (the PubAck timed out, the connection was lost), an unknown
//! outcome: the message may be in the stream. Re-sending it then is safe
//! only within the stream's duplicate window, which the relay reads at
//! start-up, re-reads every 30 seconds, and re-reads before it stalls an
//! operation for its window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::context::{
    GetStreamByNameErrorKind, GetStreamErrorKind, PublishErrorKind,
};

use super::{Ack, Backend, Message, Refusal, RelayError};
use crate::registry::BoxFuture;
use crate::state::Outcome;

/// How often a relay re-reads the duplicate windows of its streams, so
/// that a changed `duplicate_window` is used from then on.
pub(crate) const WINDOW_REFRESH: Duration = Duration::from_secs(30);
/// Before an operation is `stalled` for its window, the windows are read
/// again, unless they were read less than this ago (so that many stalls
/// at once ask the server once).
const WINDOW_REREAD: Duration = Duration::from_secs(1);

/// Options of a JetStream relay.
///
/// ```
/// let options = pgoutbox::relay::JetStreamOptions::default();
/// assert_eq!(options.stream, None); // any stream that captures the subject
/// assert_eq!(options.publish_timeout, std::time::Duration::from_secs(10));
/// assert_eq!(options.max_in_flight, 256);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamOptions {
    /// The stream the subjects must land in, checked at start-up (and
    /// against each PubAck); `None`: any stream that captures them.
    pub stream: Option<String>,
    /// How long a publish may wait for its acknowledgement. A message sent
    /// and not acknowledged in time may be in the stream: its attempt ends
    /// `timed_out` (an unknown outcome), retried only within the stream's
    /// duplicate window of the first send, else `stalled`.
    pub publish_timeout: Duration,
    /// The most messages sent and not yet acknowledged, per relay.
    pub max_in_flight: usize,
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        JetStreamOptions {
            stream: None,
            publish_timeout: Duration::from_secs(10),
            max_in_flight: 256,
        }
    }
}

impl JetStreamOptions {
    /// The options the settings give (`relay.nats.stream`,
    /// `publish_timeout`, `max_in_flight`).
    ///
    /// ```
    /// let mut settings = pgoutbox::Settings::default();
    /// settings.relay.nats.stream = Some("ORDERS".into());
    /// let options = pgoutbox::relay::JetStreamOptions::from_settings(&settings.relay.nats);
    /// assert_eq!(options.stream.as_deref(), Some("ORDERS"));
    /// ```
    pub fn from_settings(settings: &crate::settings::NatsSettings) -> Self {
        JetStreamOptions {
            stream: settings.stream.clone(),
            publish_timeout: settings.publish_timeout,
            max_in_flight: settings.max_in_flight,
        }
    }
}

/// A JetStream context and the options it was built with.
#[derive(Debug)]
pub(crate) struct JetStream {
    client: async_nats::Client,
    context: async_nats::jetstream::Context,
    options: JetStreamOptions,
    /// The duplicate windows of the streams the relay publishes to.
    windows: Arc<Windows>,
    /// Whether the task that re-reads `windows` runs.
    refreshing: std::sync::atomic::AtomicBool,
}

/// The `duplicate_window` of each stream a relay publishes to, by stream
/// name, as last read, and when they were last read.
#[derive(Debug, Default)]
struct Windows {
    by_stream: Mutex<HashMap<String, Duration>>,
    read_at: Mutex<Option<std::time::Instant>>,
}

impl Windows {
    /// The shortest window.
    fn shortest(&self) -> Option<Duration> {
        self.by_stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .min()
            .copied()
    }

    /// Reads the duplicate window of `stream`.
    async fn read(
        &self,
        context: &async_nats::jetstream::Context,
        stream: &str,
    ) -> Result<(), RelayError> {
        let mut found = context
            .get_stream(stream)
            .await
            .map_err(|e| RelayError::Broker(e.to_string()))?;
        let info = found
            .info()
            .await
            .map_err(|e| RelayError::Broker(e.to_string()))?;
        self.record(stream, info.config.duplicate_window);
        Ok(())
    }

    fn record(&self, stream: &str, window: Duration) {
        let previous = self
            .by_stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(stream.to_owned(), window);
        *self
            .read_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::time::Instant::now());
        if previous.is_some_and(|p| p != window) {
            tracing::info!(
                stream,
                ?window,
                ?previous,
                "the stream's duplicate window changed"
            );
        }
    }

    /// Reads every known stream's window again, each within `limit` (a
    /// broker that does not answer keeps the last value), unless they
    /// were read less than `fresh` ago.
    async fn reread(
        &self,
        context: &async_nats::jetstream::Context,
        limit: Duration,
        fresh: Duration,
    ) {
        {
            let mut read_at = self
                .read_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if read_at.is_some_and(|at| at.elapsed() < fresh) {
                return;
            }
            // Callers meanwhile use the values as they are.
            *read_at = Some(std::time::Instant::now());
        }
        let streams: Vec<String> = self
            .by_stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for stream in streams {
            match tokio::time::timeout(limit, self.read(context, &stream)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(stream, error = %e, "cannot re-read the stream's duplicate window");
                }
                Err(_) => {
                    tracing::warn!(
                        stream,
                        "no answer when re-reading the stream's duplicate window"
                    );
                }
            }
        }
    }
}

impl JetStream {
    pub(crate) fn new(client: async_nats::Client, options: JetStreamOptions) -> Self {
        let context = async_nats::jetstream::context::ContextBuilder::new()
            .timeout(options.publish_timeout)
            .max_ack_inflight(options.max_in_flight.max(1))
            // Wait for a free place rather than fail: the runtime bounds
            // what it claims, the client bounds what it sends.
            .backpressure_on_inflight(true)
            .build(client.clone());
        JetStream {
            client,
            context,
            options,
            windows: Arc::default(),
            refreshing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Starts, once, the task that re-reads the windows every
    /// [`WINDOW_REFRESH`]; it ends when the relay is dropped.
    fn keep_windows_fresh(&self) {
        if self
            .refreshing
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let context = self.context.clone();
        let windows: Weak<Windows> = Arc::downgrade(&self.windows);
        let limit = self.options.publish_timeout;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WINDOW_REFRESH).await;
                let Some(windows) = windows.upgrade() else {
                    return;
                };
                windows.reread(&context, limit, Duration::ZERO).await;
            }
        });
    }

    async fn check_subjects(&self, subjects: &[String]) -> Result<(), RelayError> {
        let url = || {
            let info = self.client.server_info();
            format!("{}:{}", info.host, info.port)
        };
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(RelayError::Unreachable {
                url: url(),
                reason: format!("the client is {}", self.client.connection_state()),
            });
        }
        if let Some(stream) = &self.options.stream {
            let mut found = match self.context.get_stream(stream).await {
                Ok(found) => found,
                Err(e)
                    if matches!(e.kind(), GetStreamErrorKind::JetStream(api)
                        if api.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) =>
                {
                    return Err(RelayError::NoStream {
                        stream: stream.clone(),
                    });
                }
                Err(e) => return Err(RelayError::Broker(e.to_string())),
            };
            let info = found
                .info()
                .await
                .map_err(|e| RelayError::Broker(e.to_string()))?;
            self.windows.record(stream, info.config.duplicate_window);
            for subject in subjects {
                if !info
                    .config
                    .subjects
                    .iter()
                    .any(|filter| matches(filter, subject))
                {
                    return Err(RelayError::NotCaptured {
                        subject: subject.clone(),
                        stream: Some(stream.clone()),
                    });
                }
            }
            return Ok(());
        }
        for subject in subjects {
            match self.context.stream_by_subject(subject.clone()).await {
                Ok(stream) => self.windows.read(&self.context, &stream).await?,
                Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => {
                    return Err(RelayError::NotCaptured {
                        subject: subject.clone(),
                        stream: None,
                    });
                }
                Err(e) => return Err(RelayError::Broker(e.to_string())),
            }
        }
        Ok(())
    }
}

/// Whether the stream subject `filter` (with `*` and `>` wildcards)
/// matches `subject`.
pub(crate) fn matches(filter: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in filter.split('.') {
        if token == ">" {
            return subject.next().is_some();
        }
        match subject.next() {
            Some(s) if token == "*" || token == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

impl Backend for JetStream {
    fn check<'a>(&'a self, subjects: &'a [String]) -> BoxFuture<'a, Result<(), RelayError>> {
        Box::pin(async move {
            self.check_subjects(subjects).await?;
            self.keep_windows_fresh();
            Ok(())
        })
    }

    fn duplicate_window(&self) -> Option<Duration> {
        self.windows.shortest()
    }

    fn reread_duplicate_window(&self) -> BoxFuture<'_, Option<Duration>> {
        Box::pin(async move {
            self.windows
                .reread(&self.context, self.options.publish_timeout, WINDOW_REREAD)
                .await;
            self.windows.shortest()
        })
    }

    fn send(&self, message: Message) -> BoxFuture<'_, Result<Ack, Refusal>> {
        Box::pin(async move {
            let mut headers = async_nats::HeaderMap::new();
            for (name, value) in message.headers {
                headers.insert(name, value.as_str());
            }
            let sent = self
                .context
                .publish_with_headers(message.subject, headers, message.body.into())
                .await
                .map_err(|e| refusal(&e, false))?;
            let stream = self.options.stream.clone();
            let ack: Ack = Box::pin(async move {
                let ack = sent.await.map_err(|e| refusal(&e, true))?;
                if let Some(expected) = stream
                    && ack.stream != expected
                {
                    return Err(Refusal::permanent(format!(
                        "the message landed in stream `{}`, not `{expected}`: two streams \
                         capture its subject",
                        ack.stream
                    )));
                }
                Ok(serde_json::json!({
                    "backend": "jetstream",
                    "stream": ack.stream,
                    "sequence": ack.sequence,
                    "duplicate": ack.duplicate,
                }))
            });
            Ok(ack)
        })
    }
}

/// A failed publish as the attempt records it, with the client's message:
/// permanent only when no retry can help; unknown when the message was
/// sent (`sent`: the error came while waiting for its PubAck) and no answer
/// says whether it was stored.
///
/// Before the send (`sent == false`) every error means the message did
/// not leave the client: an invalid subject, a size limit, the client's
/// queue full for the whole timeout or closed. After it, a PubAck timeout
/// (`TimedOut`) or a reply channel dropped by the client (`BrokenPipe`: the
/// connection was lost) is unknown; a "no responders" status
/// (`StreamNotFound`) or a JetStream error reply (`Other` with an API
/// error, `WrongLast*`) certainly stored nothing; a reply that does not
/// parse says nothing, so it is unknown.
fn refusal(e: &async_nats::jetstream::context::PublishError, sent: bool) -> Refusal {
    let source = std::error::Error::source(e);
    let api_error = source.is_some_and(<dyn std::error::Error>::is::<async_nats::jetstream::Error>);
    let source = source.map(ToString::to_string);
    let message = match &source {
        Some(source) => format!("JetStream publish failed ({}): {source}", e.kind()),
        None => format!("JetStream publish failed: {}", e.kind()),
    };
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => {
            Refusal::permanent(format!("{message} (the server's `max_payload`)"))
        }
        // The stream's own limit (`max_msg_size`, JetStream error 10054).
        PublishErrorKind::Other
            if source
                .as_deref()
                .is_some_and(|s| s.contains("message size exceeds maximum")) =>
        {
            Refusal::permanent(message)
        }
        _ if !sent => Refusal::retryable(message),
        PublishErrorKind::TimedOut => Refusal::unknown(
            Outcome::TimedOut,
            format!(
                "{message}; the message was sent, so it may be in the stream: the outcome is \
                 unknown"
            ),
        ),
        PublishErrorKind::BrokenPipe => Refusal::unknown(
            Outcome::Lost,
            format!(
                "{message}: the connection was lost after the message was sent, so it may be in \
                 the stream: the outcome is unknown"
            ),
        ),
        PublishErrorKind::Other if !api_error => Refusal::unknown(
            Outcome::Lost,
            format!(
                "{message}; the answer to a message sent cannot be read, so it may be in the \
                 stream: the outcome is unknown"
            ),
        ),
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::MaxAckPending
        | PublishErrorKind::Other => Refusal::retryable(message),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stream_subject_filters() {
        assert!(matches("events.>", "events.orders.placed"));
        assert!(!matches("events.>", "events"));
        assert!(matches("events.*.placed", "events.orders.placed"));
        assert!(!matches("events.*", "events.orders.placed"));
        assert!(matches("events.orders.placed", "events.orders.placed"));
        assert!(!matches("events.orders", "events.orders.placed"));
    }
}
