//! What a handler returns when it fails.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// The result type of handlers: `Result<()>` is what a handler returns.
pub type Result<T = (), E = HandlerError> = std::result::Result<T, E>;

/// Why a handler did not succeed, and what should happen next.
///
/// Any error converts into a *retryable* `HandlerError` with `?`; the
/// operation is retried with backoff until its attempts run out, then it is
/// `dead`. [`HandlerError::permanent`] makes it `dead` at once, and
/// [`HandlerError::snooze`] reschedules it without using up an attempt.
///
/// ```
/// use pgoutbox::HandlerError;
///
/// fn check(amount_cents: i64) -> Result<(), HandlerError> {
///     if amount_cents <= 0 {
///         return Err(HandlerError::permanent(format!("cannot charge {amount_cents} cents")));
///     }
///     let _parsed: u32 = "42".parse()?; // any error: retryable
///     Ok(())
/// }
/// assert!(check(-1).unwrap_err().is_permanent());
/// ```
pub struct HandlerError {
    kind: Kind,
    error: Box<dyn StdError + Send + Sync + 'static>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Retryable,
    Permanent,
    Snooze(Duration),
}

impl HandlerError {
    /// A failure worth retrying (the default for `?`).
    pub fn retryable(error: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        HandlerError {
            kind: Kind::Retryable,
            error: error.into(),
        }
    }

    /// A failure that no retry can fix: the operation becomes `dead` now.
    pub fn permanent(error: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        HandlerError {
            kind: Kind::Permanent,
            error: error.into(),
        }
    }

    /// Not a failure: run the operation again after `delay`, without using
    /// up an attempt.
    pub fn snooze(delay: Duration) -> Self {
        HandlerError {
            kind: Kind::Snooze(delay),
            error: format!("snoozed for {delay:?}").into(),
        }
    }

    /// Whether the operation should become `dead` without further attempts.
    pub fn is_permanent(&self) -> bool {
        self.kind == Kind::Permanent
    }

    /// The delay of a snooze.
    pub fn snoozed_for(&self) -> Option<Duration> {
        match self.kind {
            Kind::Snooze(delay) => Some(delay),
            _ => None,
        }
    }

    /// The error and its `source()` chain, outermost first, as stored in
    /// `attempts.error_chain`.
    pub fn chain(&self) -> Vec<String> {
        let mut chain = vec![self.error.to_string()];
        let mut source = self.error.source();
        while let Some(error) = source {
            chain.push(error.to_string());
            source = error.source();
        }
        chain
    }

    /// The underlying error.
    pub fn inner(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.error
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError::retryable(error)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("kind", &self.kind)
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}
