//! The JetStream backend: asynchronous publishes (many in flight, each
//! acknowledged by a PubAck), deduplicated by `Nats-Msg-Id`.

use std::time::Duration;

use async_nats::jetstream::context::{
    GetStreamByNameErrorKind, GetStreamErrorKind, PublishErrorKind,
};

use super::{Ack, Backend, Message, Refusal, RelayError};
use crate::registry::BoxFuture;

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
    /// How long a publish may wait for its acknowledgement before the
    /// attempt fails (and is retried).
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
        }
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
                Ok(_) => {}
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
        Box::pin(self.check_subjects(subjects))
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
                .map_err(|e| refusal(&e))?;
            let stream = self.options.stream.clone();
            let ack: Ack = Box::pin(async move {
                let ack = sent.await.map_err(|e| refusal(&e))?;
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

/// A failed publish as the attempt records it: the server's message,
/// permanent only when no retry can help.
fn refusal(e: &async_nats::jetstream::context::PublishError) -> Refusal {
    let source = std::error::Error::source(e).map(ToString::to_string);
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
        _ => Refusal::retryable(message),
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
