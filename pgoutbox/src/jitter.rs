//! Randomness in timing, so that workers started together do not keep
//! acting in step: where a retry delay falls in its band (see
//! [`Backoff::delay`](crate::Backoff::delay)) and how long the producer
//! waits between polls.
//!
//! One source, `fastrand`: jitter needs speed and spread, not secrecy.

use std::time::Duration;

/// A uniformly random point in `[0, 1)`.
pub(crate) fn jitter() -> f64 {
    fastrand::f64()
}

/// How long the producer waits between polls: `interval` ± 20%, at random.
pub(crate) fn jittered(interval: Duration) -> Duration {
    spread(interval, jitter())
}

/// `interval` scaled by a factor from 0.8 (`at` = 0) to 1.2 (`at` = 1),
/// saturating rather than panicking on a huge interval.
fn spread(interval: Duration, at: f64) -> Duration {
    let factor = (0.8 + 0.4 * at.clamp(0.0, 1.0)).clamp(0.8, 1.2);
    scale(interval, factor)
}

fn scale(interval: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(interval.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod properties {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::{jitter, jittered, scale, spread};

    fn interval() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (0u64..3_600_000).prop_map(Duration::from_millis),
            (0u64..=u64::MAX).prop_map(Duration::from_secs),
        ]
    }

    proptest! {
        #[test]
        fn jitter_stays_in_the_unit_interval(_draw in 0u8..255) {
            let j = jitter();
            prop_assert!((0.0..1.0).contains(&j), "{j}");
        }

        #[test]
        fn a_poll_wait_stays_within_twenty_percent(interval in interval()) {
            let (min, max) = (scale(interval, 0.8), scale(interval, 1.2));
            let d = jittered(interval);
            prop_assert!(min <= d && d <= max, "{d:?} outside [{min:?}, {max:?}]");
        }

        #[test]
        fn the_band_is_reached_at_both_ends_and_crossed_monotonically(
            interval in interval(),
            a in 0.0f64..=1.0,
            b in 0.0f64..=1.0,
        ) {
            prop_assert_eq!(spread(interval, 0.0), scale(interval, 0.8));
            prop_assert_eq!(spread(interval, 1.0), scale(interval, 1.2));
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(spread(interval, low) <= spread(interval, high));
        }
    }
}
