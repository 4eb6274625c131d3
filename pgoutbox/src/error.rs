//! What a handler returns when it fails.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// The result type of handlers: `Result<()>`, or `Result<T>` for a handler
/// whose success records a `T` (see [`Operation::Output`](crate::Operation::Output)).
///
/// Its error type defaults to [`HandlerError`], into which any
/// `std::error::Error + Send + Sync` converts with `?`:
///
/// ```
/// use pgoutbox::Result;
///
/// fn parse(amount: &str) -> Result<i64> {
///     Ok(amount.parse::<i64>()?) // a `ParseIntError` becomes a retryable `HandlerError`
/// }
/// assert!(parse("12").is_ok());
/// assert!(!parse("twelve").unwrap_err().is_permanent());
/// ```
pub type Result<T = (), E = HandlerError> = std::result::Result<T, E>;

/// Why a handler did not succeed, and what should happen next.
///
/// Any error converts into a *retryable* `HandlerError` with `?`; the
/// operation is retried with backoff until its attempts run out, then it is
/// `dead`. [`HandlerError::permanent`] makes it `dead` at once, and
/// [`HandlerError::snooze`] reschedules it without using up an attempt.
/// The error and its `source()` chain are stored with the attempt
/// (`attempts.error`, `attempts.error_chain`) and shown by `pgoutbox ops
/// show`.
///
/// A returned error is a *known* outcome: the operation is retried even when
/// it is not `idempotent`, so return an error only when nothing happened
/// outside the database, or when doing it again is safe. (An unknown outcome
/// — a timeout, an abort, a vanished worker — is what `idempotent` governs;
/// see `docs/consistency.md`.)
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
    /// A failure worth retrying (the default for `?`): the operation is
    /// `retrying` with backoff, or `dead` once its attempts are used up.
    ///
    /// ```
    /// use pgoutbox::HandlerError;
    ///
    /// let e = HandlerError::retryable("the provider answered 503");
    /// assert!(!e.is_permanent());
    /// assert_eq!(e.snoozed_for(), None);
    /// assert_eq!(e.to_string(), "the provider answered 503");
    /// ```
    pub fn retryable(error: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        HandlerError {
            kind: Kind::Retryable,
            error: error.into(),
        }
    }

    /// A failure that no retry can fix: the operation becomes `dead` now,
    /// whatever attempts it has left.
    ///
    /// ```
    /// use pgoutbox::HandlerError;
    ///
    /// let e = HandlerError::permanent("card declined: stolen card");
    /// assert!(e.is_permanent());
    /// ```
    pub fn permanent(error: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        HandlerError {
            kind: Kind::Permanent,
            error: error.into(),
        }
    }

    /// Not a failure: run the operation again after `delay`, without using
    /// up an attempt. The operation goes back to `pending` with `run_at`
    /// `delay` after the database's `now()`; the attempt is recorded as
    /// `snoozed`. A delay longer than 100 × 365 days is clamped to that,
    /// and the attempt's error says so.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pgoutbox::HandlerError;
    ///
    /// // The report is not ready yet: look again in a minute.
    /// let e = HandlerError::snooze(Duration::from_secs(60));
    /// assert_eq!(e.snoozed_for(), Some(Duration::from_secs(60)));
    /// assert!(!e.is_permanent());
    /// ```
    pub fn snooze(delay: Duration) -> Self {
        HandlerError {
            kind: Kind::Snooze(delay),
            error: format!("snoozed for {delay:?}").into(),
        }
    }

    /// Whether the operation should become `dead` without further attempts.
    ///
    /// ```
    /// use pgoutbox::HandlerError;
    ///
    /// assert!(HandlerError::permanent("card declined").is_permanent());
    /// assert!(!HandlerError::retryable("timeout").is_permanent());
    /// ```
    pub fn is_permanent(&self) -> bool {
        self.kind == Kind::Permanent
    }

    /// The delay of a snooze.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pgoutbox::HandlerError;
    ///
    /// assert_eq!(HandlerError::snooze(Duration::from_secs(5)).snoozed_for(), Some(Duration::from_secs(5)));
    /// assert_eq!(HandlerError::permanent("no").snoozed_for(), None);
    /// ```
    pub fn snoozed_for(&self) -> Option<Duration> {
        match self.kind {
            Kind::Snooze(delay) => Some(delay),
            _ => None,
        }
    }

    /// The error and its `source()` chain, outermost first, as stored in
    /// `attempts.error_chain` (where a NUL byte is written `\0` and a
    /// text longer than 16 KiB is cut and marked; see
    /// `docs/consistency.md`).
    ///
    /// ```
    /// use pgoutbox::HandlerError;
    ///
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("cannot charge the card")]
    /// struct ChargeFailed(#[source] std::io::Error);
    ///
    /// let io = std::io::Error::other("connection reset");
    /// let e = HandlerError::retryable(ChargeFailed(io));
    /// assert_eq!(e.chain(), ["cannot charge the card", "connection reset"]);
    /// ```
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
    ///
    /// ```
    /// use pgoutbox::HandlerError;
    ///
    /// let e: HandlerError = "x".parse::<i64>().unwrap_err().into();
    /// assert!(e.inner().downcast_ref::<std::num::ParseIntError>().is_some());
    /// ```
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
