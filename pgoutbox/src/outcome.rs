//! What an attempt's end means for its operation (invariant 5: an unknown
//! outcome re-runs only an idempotent operation).

use std::fmt::Write as _;
use std::time::Duration;

use crate::definition::Backoff;
use crate::duration::millis;
use crate::error::HandlerError;
use crate::state::{Outcome, Status};
use crate::storable;
use crate::store::Failure;

/// How an attempt ended, as the executor saw it.
#[derive(Debug)]
pub(crate) enum AttemptEnd {
    /// The handler returned `Ok`.
    Succeeded,
    /// The stored payload does not decode into the payload type.
    Decode {
        error: serde_json::Error,
        stored_hash: String,
        current_hash: &'static str,
    },
    /// The handler returned an error.
    Failed(HandlerError),
    /// The handler panicked.
    Panicked(String),
    /// The handler ran past its timeout and was abandoned.
    TimedOut(Duration),
    /// The handler was abandoned: shutdown, or a lease that could not be
    /// renewed.
    Aborted(&'static str),
    /// A transactional handler returned `Ok`, but its transaction (its
    /// writes and the success) did not commit: the database is settled,
    /// what the handler did outside it is not.
    NotCommitted(String),
    /// A transactional handler ended the dispatcher's transaction (raw
    /// `COMMIT` or `ROLLBACK`), then did not succeed: what it wrote may be
    /// committed, so its failure is not a plain one.
    EndedTransaction(HandlerError),
    /// The handler returned `Ok`, but its result cannot be stored (why).
    /// A transactional handler's writes are then rolled back; a plain
    /// handler's effects stand.
    UnstorableResult { why: String, transactional: bool },
    /// What the attempt did outside the database is unknown, for the
    /// reason `error` gives (a relay's message sent and never
    /// acknowledged): recorded as `outcome` (`timed_out`, `lost`,
    /// `aborted`).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))] // Only relays end so.
    Unknown { outcome: Outcome, error: String },
}

/// What to record.
#[derive(Debug)]
pub(crate) enum Decision {
    Success,
    Snooze { delay_ms: i64, note: String },
    Failure(Failure),
}

// Only relays decide so.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
impl Decision {
    /// The delay before the operation runs again, when this decision
    /// retries it after an unknown outcome.
    pub(crate) fn in_doubt_retry(&self) -> Option<Duration> {
        match self {
            Decision::Failure(f) if f.next_status == Status::Retrying && f.outcome.is_unknown() => {
                Some(Duration::from_millis(
                    u64::try_from(f.retry_delay_ms).unwrap_or(0),
                ))
            }
            _ => None,
        }
    }

    /// This decision with the operation `stalled` rather than retried (or
    /// `dead`), for `reason` (added to the attempt's error unless empty):
    /// re-running it is not safe, and what an earlier attempt did is not
    /// known.
    pub(crate) fn stall(self, reason: &str) -> Decision {
        match self {
            Decision::Failure(mut f)
                if matches!(f.next_status, Status::Retrying | Status::Dead) =>
            {
                f.next_status = Status::Stalled;
                if !reason.is_empty() {
                    let _ = write!(f.error, "; not retried: {reason}");
                    f.error = storable::text(&f.error);
                    f.chain
                        .push(storable::text(&format!("not retried: {reason}")));
                }
                Decision::Failure(f)
            }
            other => other,
        }
    }
}

/// What the attempt means for the operation.
pub(crate) struct Attempt {
    pub(crate) name: String,
    pub(crate) number: i32,
    /// How many earlier attempts were snoozed: they do not count.
    pub(crate) snoozes: i32,
    pub(crate) max_attempts: i32,
    pub(crate) idempotent: bool,
    pub(crate) backoff: Backoff,
}

impl Attempt {
    /// Decides; `jitter` in `[0, 1)` places the retry delay in its band.
    #[allow(clippy::too_many_lines)] // One arm per way an attempt ends, in order.
    pub(crate) fn decide(&self, end: AttemptEnd, jitter: f64) -> Decision {
        // Attempt numbers only grow; snoozed attempts do not count.
        let counted = self.number.saturating_sub(self.snoozes);
        let attempts_left = counted < self.max_attempts;
        let (retry_delay, retry_clamped) = storable::delay(
            self.backoff
                .delay(u32::try_from(counted).unwrap_or(u32::MAX), jitter),
        );
        let retry_delay_ms = millis(retry_delay);
        // Every value is made storable here (issue 13): an outcome that
        // cannot be written would leave its operation `running`.
        let failure = |outcome, next_status, error: String, chain: Vec<String>| {
            let mut error = storable::text(&error);
            if let (Status::Retrying, Some(note)) = (next_status, &retry_clamped) {
                let _ = write!(error, " (retry delay: {note})");
            }
            Decision::Failure(Failure {
                outcome,
                next_status,
                retry_delay_ms,
                error,
                chain: storable::chain(&chain),
            })
        };
        let retry_or_dead = if attempts_left {
            Status::Retrying
        } else {
            Status::Dead
        };
        // Unknown outcome: only an idempotent operation runs again, while
        // it has attempts left; otherwise the unknown waits for an
        // operator (`dead` would claim more than is known).
        let in_doubt = if self.idempotent && attempts_left {
            Status::Retrying
        } else {
            Status::Stalled
        };
        match end {
            AttemptEnd::Succeeded => Decision::Success,
            AttemptEnd::Decode {
                error,
                stored_hash,
                current_hash,
            } => {
                let error = format!(
                    "the stored payload of `{}` no longer decodes into this binary's payload type \
                     (schema hash {} when published, {} now): {error}",
                    self.name,
                    short(&stored_hash),
                    short(current_hash),
                );
                failure(Outcome::Failed, Status::Dead, error.clone(), vec![error])
            }
            AttemptEnd::Failed(error) => {
                if let Some(delay) = error.snoozed_for() {
                    let (delay, clamped) = storable::delay(delay);
                    let mut note = storable::text(&error.to_string());
                    if let Some(clamped) = clamped {
                        let _ = write!(note, " (the snooze of {clamped})");
                    }
                    return Decision::Snooze {
                        delay_ms: millis(delay),
                        note,
                    };
                }
                let next = if error.is_permanent() {
                    Status::Dead
                } else {
                    retry_or_dead
                };
                failure(Outcome::Failed, next, error.to_string(), error.chain())
            }
            AttemptEnd::Panicked(message) => {
                let error = format!("the handler panicked: {message}");
                failure(Outcome::Failed, retry_or_dead, error.clone(), vec![error])
            }
            AttemptEnd::TimedOut(after) => {
                let error = format!(
                    "the handler did not finish within {after:?} and was abandoned; what it did \
                     outside the database is unknown"
                );
                failure(Outcome::TimedOut, in_doubt, error.clone(), vec![error])
            }
            AttemptEnd::Aborted(reason) => {
                let error = format!(
                    "the handler was aborted ({reason}); what it did outside the database is unknown"
                );
                failure(Outcome::Aborted, in_doubt, error.clone(), vec![error])
            }
            AttemptEnd::EndedTransaction(error) => {
                let message = format!(
                    "the handler ended the dispatcher's transaction (COMMIT or ROLLBACK through \
                     raw SQL), then failed: {error}; what it committed stays committed, so the \
                     attempt is in doubt"
                );
                let mut chain = vec![message.clone()];
                chain.extend(error.chain());
                failure(Outcome::Failed, in_doubt, message, chain)
            }
            AttemptEnd::UnstorableResult {
                why,
                transactional: true,
            } => {
                let error = format!(
                    "the handler succeeded, but its result cannot be stored: {why}; its database \
                     writes were rolled back"
                );
                failure(Outcome::Failed, Status::Dead, error.clone(), vec![error])
            }
            AttemptEnd::UnstorableResult {
                why,
                transactional: false,
            } => {
                // What the handler did stands, and running it again is not
                // what it asked for: an operator decides.
                let error = format!(
                    "the handler succeeded, but its result cannot be stored: {why}; what it did \
                     stands, so the operation waits for an operator"
                );
                failure(Outcome::Failed, Status::Stalled, error.clone(), vec![error])
            }
            AttemptEnd::Unknown { outcome, error } => {
                failure(outcome, in_doubt, error.clone(), vec![error])
            }
            AttemptEnd::NotCommitted(reason) => {
                let error = format!(
                    "the handler succeeded but {reason}; its database writes were rolled back, \
                     what it did outside the database is unknown"
                );
                failure(Outcome::Failed, in_doubt, error.clone(), vec![error])
            }
        }
    }
}

impl Attempt {
    /// What to record instead of `decision` when PostgreSQL refused to
    /// store it for a reason that retrying cannot cure (`why`, see
    /// `storable::data_error`): a `failed` attempt whose error names what
    /// could not be stored. The operation follows the rules of the outcome
    /// it replaces: a failure keeps its next state; a snooze is a retryable
    /// failure; a success (whose follow-ups could not be stored) is a
    /// permanent one, since running the handler again is not what it asked
    /// for.
    pub(crate) fn unstorable(&self, decision: &Decision, why: &str) -> Decision {
        let (what, end) = match decision {
            Decision::Success => (
                "the success and its follow-up operations",
                AttemptEnd::Failed(HandlerError::permanent(String::new())),
            ),
            Decision::Snooze { .. } => (
                "the snooze",
                AttemptEnd::Failed(HandlerError::retryable(String::new())),
            ),
            Decision::Failure(_) => (
                "the failure",
                AttemptEnd::Failed(HandlerError::retryable(String::new())),
            ),
        };
        let error = format!("pgoutbox could not store the outcome of this attempt ({what}): {why}");
        match (self.decide(end, 0.0), decision) {
            (Decision::Failure(mut failure), previous) => {
                if let Decision::Failure(previous) = previous {
                    failure.next_status = previous.next_status;
                    failure.retry_delay_ms = previous.retry_delay_ms;
                }
                failure.outcome = Outcome::Failed;
                failure.error = storable::text(&error);
                failure.chain = vec![failure.error.clone()];
                Decision::Failure(failure)
            }
            (other, _) => other,
        }
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(number: i32, idempotent: bool) -> Attempt {
        Attempt {
            name: "t.op".into(),
            number,
            snoozes: 0,
            max_attempts: 3,
            idempotent,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_mins(1)),
        }
    }

    fn next(decision: &Decision) -> Status {
        match decision {
            Decision::Success => Status::Succeeded,
            Decision::Snooze { .. } => Status::Pending,
            Decision::Failure(f) => f.next_status,
        }
    }

    #[test]
    fn failures_retry_until_attempts_run_out() {
        let err = || AttemptEnd::Failed(HandlerError::retryable("boom"));
        assert_eq!(
            next(&attempt(1, false).decide(err(), 0.0)),
            Status::Retrying
        );
        assert_eq!(next(&attempt(3, false).decide(err(), 0.0)), Status::Dead);
        let permanent = AttemptEnd::Failed(HandlerError::permanent("no"));
        assert_eq!(
            next(&attempt(1, false).decide(permanent, 0.0)),
            Status::Dead
        );
        assert_eq!(
            next(&attempt(1, false).decide(AttemptEnd::Panicked("x".into()), 0.0)),
            Status::Retrying
        );
    }

    #[test]
    fn unknown_outcomes_stall_unless_idempotent() {
        let timeout = || AttemptEnd::TimedOut(Duration::from_secs(1));
        assert_eq!(
            next(&attempt(1, false).decide(timeout(), 0.0)),
            Status::Stalled
        );
        assert_eq!(
            next(&attempt(1, true).decide(timeout(), 0.0)),
            Status::Retrying
        );
        assert_eq!(
            next(&attempt(3, true).decide(timeout(), 0.0)),
            Status::Stalled,
            "an idempotent operation out of attempts waits, in doubt, for an operator"
        );
        assert_eq!(
            next(&attempt(1, false).decide(AttemptEnd::Aborted("shutdown"), 0.0)),
            Status::Stalled
        );
        let ended = || AttemptEnd::EndedTransaction(HandlerError::retryable("boom"));
        assert_eq!(
            next(&attempt(1, false).decide(ended(), 0.0)),
            Status::Stalled
        );
        assert_eq!(
            next(&attempt(1, true).decide(ended(), 0.0)),
            Status::Retrying
        );
        let not_committed = || AttemptEnd::NotCommitted("the commit failed".into());
        assert_eq!(
            next(&attempt(1, false).decide(not_committed(), 0.0)),
            Status::Stalled
        );
        assert_eq!(
            next(&attempt(1, true).decide(not_committed(), 0.0)),
            Status::Retrying
        );
    }

    #[test]
    fn a_result_that_cannot_be_stored_is_dead_when_rolled_back_else_stalled() {
        let unstorable = |transactional| AttemptEnd::UnstorableResult {
            why: "it is too large".into(),
            transactional,
        };
        // Idempotent or not, with attempts left or not: never retried.
        for idempotent in [false, true] {
            let rolled_back = attempt(1, idempotent).decide(unstorable(true), 0.0);
            assert_eq!(next(&rolled_back), Status::Dead);
            let stands = attempt(1, idempotent).decide(unstorable(false), 0.0);
            assert_eq!(next(&stands), Status::Stalled);
            let Decision::Failure(f) = stands else {
                panic!("a failure")
            };
            assert_eq!(f.outcome, Outcome::Failed);
            assert!(
                f.error
                    .contains("its result cannot be stored: it is too large")
            );
        }
    }

    #[test]
    fn an_unknown_end_retries_an_idempotent_operation_unless_stalled() {
        let unknown = || AttemptEnd::Unknown {
            outcome: Outcome::TimedOut,
            error: "no PubAck".into(),
        };
        let d = attempt(1, true).decide(unknown(), 0.0);
        assert_eq!(next(&d), Status::Retrying);
        assert!(d.in_doubt_retry().is_some());
        let d = d.stall("past the window");
        assert_eq!(next(&d), Status::Stalled);
        let Decision::Failure(f) = d else {
            panic!("a failure")
        };
        assert_eq!(f.outcome, Outcome::TimedOut);
        assert_eq!(f.error, "no PubAck; not retried: past the window");
        assert_eq!(
            next(&attempt(1, false).decide(unknown(), 0.0)),
            Status::Stalled
        );
        let failed = attempt(1, true).decide(AttemptEnd::Failed(HandlerError::retryable("x")), 0.0);
        assert!(
            failed.in_doubt_retry().is_none(),
            "a plain failure is not in doubt"
        );
    }

    #[test]
    fn a_snooze_is_not_a_failure() {
        let d = attempt(3, false).decide(
            AttemptEnd::Failed(HandlerError::snooze(Duration::from_secs(2))),
            0.0,
        );
        assert!(matches!(d, Decision::Snooze { delay_ms: 2000, .. }));
    }

    #[test]
    fn snoozed_attempts_do_not_count() {
        let err = || AttemptEnd::Failed(HandlerError::retryable("boom"));
        let mut a = attempt(4, false);
        a.snoozes = 2;
        assert_eq!(next(&a.decide(err(), 0.0)), Status::Retrying);
        a.snoozes = 1;
        assert_eq!(next(&a.decide(err(), 0.0)), Status::Dead);
    }
}
