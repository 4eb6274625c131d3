//! The states an operation can be in ([`Status`]) and the ways an attempt
//! can end ([`Outcome`]), as types.
//!
//! Each is converted to and from its SQL text here and nowhere else: the
//! store binds and reads them through their sqlx impls, operators' tools
//! print them with `Display` or serde, and the `pgoutbox` command parses
//! them with `FromStr`. The sets are the migration's `CHECK` constraints
//! (`operations_status_check`, `attempts_outcome_check`), which a test
//! compares with [`Status::ALL`] and [`Outcome::ALL`].
//!
//! ```
//! use pgoutbox::{Outcome, Status};
//!
//! let status: Status = "stalled".parse()?;
//! assert_eq!(status, Status::Stalled);
//! assert_eq!(Outcome::TimedOut.to_string(), "timed_out");
//! assert!("finished".parse::<Status>().is_err());
//! # Ok::<(), pgoutbox::ParseStateError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

/// Text that names no state of its kind.
///
/// ```
/// use pgoutbox::{Outcome, Status};
///
/// let err = "finished".parse::<Status>().unwrap_err();
/// assert_eq!(err.to_string(), "unknown operation status `finished`");
/// let err = "crashed".parse::<Outcome>().unwrap_err();
/// assert_eq!(err.to_string(), "unknown attempt outcome `crashed`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{text}`")]
pub struct ParseStateError {
    kind: &'static str,
    text: String,
}

/// Defines a fieldless enum whose variants are stored as the given texts,
/// with its conversions: `as_str` and `FromStr` (the one mapping), and
/// `Display`, serde and sqlx (text) through them.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($kind:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in the order of the declaration.
            pub const ALL: [$name; [$($name::$variant),+].len()] = [$($name::$variant),+];

            /// The text stored in the database (and printed, and parsed).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = ParseStateError;

            fn from_str(text: &str) -> Result<Self, ParseStateError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseStateError { kind: $kind, text: text.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl PgHasArrayType for $name {
            fn array_type_info() -> PgTypeInfo {
                <&str as PgHasArrayType>::array_type_info()
            }

            fn array_compatible(ty: &PgTypeInfo) -> bool {
                <&str as PgHasArrayType>::array_compatible(ty)
            }
        }

        impl Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $name {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(<&str as Decode<Postgres>>::decode(value)?.parse()?)
            }
        }
    };
}

text_enum! {
    /// The state of an operation (DESIGN's states; the migration's
    /// `operations_status_check`).
    ///
    /// `pending` → `running` → `succeeded` | `retrying` | `dead` |
    /// `stalled`; `cancelled` by an operator. A workflow step with
    /// dependencies starts `waiting` and is released to `pending` by the
    /// transaction that records its last dependency's success. `stalled` and `dead` leave
    /// only by an operator's recorded action (see `docs/operating.md`).
    ///
    /// ```
    /// use pgoutbox::Status;
    ///
    /// assert_eq!(Status::ALL.len(), 8);
    /// assert_eq!(Status::Retrying.as_str(), "retrying");
    /// assert_eq!("dead".parse::<Status>().unwrap(), Status::Dead);
    /// assert_eq!(serde_json::to_value(Status::Stalled).unwrap(), "stalled");
    /// ```
    pub enum Status("operation status") {
        /// A workflow step waiting for its dependencies; never claimed.
        Waiting = "waiting",
        /// Ready, or waiting for its `run_at`.
        Pending = "pending",
        /// Claimed by a worker that holds its lease.
        Running = "running",
        /// A committed transaction recorded its success.
        Succeeded = "succeeded",
        /// An attempt failed; it runs again at its `run_at` (the backoff).
        Retrying = "retrying",
        /// Attempts exhausted or a permanent error; waits for an operator.
        Dead = "dead",
        /// An attempt's outcome is unknown; waits for an operator.
        Stalled = "stalled",
        /// Cancelled by an operator.
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// How an attempt ended (the migration's `attempts_outcome_check`); an
    /// attempt still running has none.
    ///
    /// `lost`, `timed_out` and `aborted` are unknown outcomes: what the
    /// handler did outside the database is not known.
    ///
    /// ```
    /// use pgoutbox::Outcome;
    ///
    /// assert_eq!(Outcome::ALL.len(), 7);
    /// assert_eq!(Outcome::Lost.as_str(), "lost");
    /// assert_eq!("snoozed".parse::<Outcome>().unwrap(), Outcome::Snoozed);
    /// ```
    pub enum Outcome("attempt outcome") {
        /// The handler returned `Ok` and its success was recorded.
        Succeeded = "succeeded",
        /// The handler returned an error or panicked, its payload did not
        /// decode, or its transaction did not commit.
        Failed = "failed",
        /// The worker vanished: its lease expired mid-attempt; or a relay
        /// lost its connection to the broker after sending the message.
        Lost = "lost",
        /// The handler ran past its timeout and was abandoned; or a relay
        /// sent the message and its acknowledgement did not come in time.
        TimedOut = "timed_out",
        /// The handler was abandoned at shutdown, or when its lease could
        /// not be renewed; or a relay did not send again a message whose
        /// earlier send may have landed.
        Aborted = "aborted",
        /// Admitted by the storage for an attempt ended by a cancellation;
        /// not recorded by this version (a running operation cannot be
        /// cancelled).
        Cancelled = "cancelled",
        /// The handler asked to run again later; the attempt does not count.
        Snoozed = "snoozed",
    }
}

text_enum! {
    /// The state of a workflow (the migration's `workflows_state_check`),
    /// kept with its failure and its steps' in the transactions that
    /// change them (`workflow_settle`, migration 11): `stalled` when a
    /// step is (or, once it failed, a compensation is dead); otherwise,
    /// while a step or compensation is open, `running` (not failed) or
    /// `compensating`; otherwise `succeeded`, `cancelled` (by an operator)
    /// or `failed`.
    ///
    /// ```
    /// use pgoutbox::WorkflowState;
    ///
    /// assert_eq!(WorkflowState::ALL.len(), 6);
    /// assert_eq!("failed".parse::<WorkflowState>().unwrap(), WorkflowState::Failed);
    /// ```
    pub enum WorkflowState("workflow state") {
        /// It has not failed, and a step has not ended yet.
        Running = "running",
        /// Every step ended, and it did not fail (a step that failed with
        /// only opted-out dependents does not fail it).
        Succeeded = "succeeded",
        /// It failed (a step ended dead or cancelled), and everything
        /// ended: the steps that had not started were cancelled, the
        /// compensations of those that succeeded ran.
        Failed = "failed",
        /// A step's outcome is unknown (or, once it failed, a compensation
        /// is dead): it waits for an operator.
        Stalled = "stalled",
        /// An operator cancelled it, and everything ended.
        Cancelled = "cancelled",
        /// It failed or was cancelled, and its compensations (or steps
        /// still running then) have not all ended.
        Compensating = "compensating",
    }
}

impl Outcome {
    /// Whether the outcome is unknown (`lost`, `timed_out`, `aborted`):
    /// what the attempt did outside the database is not known.
    ///
    /// ```
    /// use pgoutbox::Outcome;
    ///
    /// assert!(Outcome::TimedOut.is_unknown());
    /// assert!(!Outcome::Failed.is_unknown());
    /// ```
    pub const fn is_unknown(self) -> bool {
        matches!(self, Outcome::Lost | Outcome::TimedOut | Outcome::Aborted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
            assert_eq!(
                serde_json::from_value::<Status>(serde_json::to_value(status).unwrap()).unwrap(),
                status
            );
        }
        for outcome in Outcome::ALL {
            assert_eq!(outcome.as_str().parse::<Outcome>(), Ok(outcome));
            assert_eq!(outcome.to_string(), outcome.as_str());
        }
        assert!("Pending".parse::<Status>().is_err());
        assert!("".parse::<Outcome>().is_err());
    }
}
