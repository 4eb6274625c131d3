//! The publishers' fallback allowance for the coalesced wake-up.
//!
//! A publishing transaction notifies the workers when it takes its name's
//! wake-up lock (`store`'s `{notify}`), so at most one notifying transaction
//! per name and database is in flight at once. If a long transaction holds
//! that lock, the others would wait for the workers' polling; so each
//! publisher (and its clones) also lets one publish per name notify anyway
//! every [`FALLBACK_INTERVAL`]. That bounds the delay a long transaction can
//! cause without letting notifying commits pile up on PostgreSQL's
//! database-wide NOTIFY lock.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most one fallback notification per publisher and name this often.
pub(crate) const FALLBACK_INTERVAL: Duration = Duration::from_millis(10);

/// When each name last had its fallback notification.
#[derive(Debug, Default)]
pub(crate) struct Fallback {
    last: Mutex<HashMap<&'static str, Instant>>,
}

impl Fallback {
    /// Whether a publish of `name` may notify even without the wake-up
    /// lock; if so, the allowance is spent until [`FALLBACK_INTERVAL`] has
    /// passed.
    pub(crate) fn due(&self, name: &'static str) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match last.get(name) {
            Some(at) if now.duration_since(*at) < FALLBACK_INTERVAL => false,
            _ => {
                last.insert(name, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fallback_per_interval_and_name() {
        let fallback = Fallback::default();
        assert!(fallback.due("a.b"));
        assert!(!fallback.due("a.b"));
        assert!(fallback.due("a.c"));
        assert!(Fallback::default().due("a.b"));
        std::thread::sleep(FALLBACK_INTERVAL);
        assert!(fallback.due("a.b"));
    }
}
