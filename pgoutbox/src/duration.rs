//! Durations as pgoutbox writes them: in settings, text that `humantime`
//! reads (`250ms`, `30s`, `5m`, `2h`, `7d`, `1h 30m`) or a number of
//! milliseconds; in SQL, whole milliseconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// `d` in whole milliseconds, as statements bind it (saturating: no
/// setting comes near 292 million years).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Reads a duration as settings spell it.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!(
            "invalid duration `{text}`: {e}; expected an integer and a unit (`ms`, `s`, `m`, \
             `h`, `d`), e.g. `30s` or `1h 30m`"
        )
    })
}

/// Serde's `with` for settings: writes milliseconds with their unit.
pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

/// Serde's `with` for settings: reads text ([`parse`]) or a number of
/// milliseconds.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        Raw::Text(text) => parse(&text).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{millis, parse};

    #[test]
    fn every_unit_documented_before_humantime_still_parses() {
        for (text, ms) in [
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("7d", 604_800_000),
            (" 0s ", 0),
        ] {
            assert_eq!(parse(text), Ok(Duration::from_millis(ms)), "{text}");
        }
    }

    #[test]
    fn humantime_adds_sums_and_long_names() {
        assert_eq!(parse("1h 30m"), Ok(Duration::from_mins(90)));
        assert_eq!(parse("10 minutes"), Ok(Duration::from_mins(10)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn a_bad_duration_says_what_is_expected() {
        for text in ["", "10", "ten minutes", "30 parsecs", "-5s"] {
            let err = parse(text).unwrap_err();
            assert!(
                err.starts_with(&format!("invalid duration `{text}`: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn milliseconds_saturate() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), i64::MAX);
    }
}
