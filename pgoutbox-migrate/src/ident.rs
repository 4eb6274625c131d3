//! Validated SQL identifiers for names that come from settings.

use std::fmt;
use std::str::FromStr;

/// The longest identifier PostgreSQL keeps without truncating it
/// (`NAMEDATALEN - 1`).
///
/// ```
/// use pgoutbox_migrate::{Identifier, MAX_IDENTIFIER_BYTES};
///
/// assert!(Identifier::new("a".repeat(MAX_IDENTIFIER_BYTES)).is_ok());
/// assert!(Identifier::new("a".repeat(MAX_IDENTIFIER_BYTES + 1)).is_err());
/// ```
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// A PostgreSQL identifier taken from settings, such as a schema or a
/// NOTIFY channel name, checked before any SQL is built with it.
///
/// The accepted grammar is deliberately narrow: 1 to 63 bytes of lower-case
/// ASCII letters, digits and `_`, not starting with a digit and not starting
/// with `pg_` (reserved by PostgreSQL for system schemas). Such a name means
/// the same thing quoted or unquoted, so an operator can type it in `psql`
/// as it is. It is still always double-quoted when it is put into SQL.
///
/// ```
/// use pgoutbox_migrate::Identifier;
///
/// let schema = Identifier::new("billing_outbox")?;
/// assert_eq!(schema.quoted(), "\"billing_outbox\"");
/// assert!(Identifier::new("x; drop table y").is_err());
/// # Ok::<(), pgoutbox_migrate::InvalidIdentifier>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier(String);

/// Why a name is not an acceptable [`Identifier`].
///
/// ```
/// use pgoutbox_migrate::Identifier;
///
/// let err = Identifier::new("Billing").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid identifier `Billing`: expected only lower-case letters, digits and `_`"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid identifier `{name}`: {reason}")]
pub struct InvalidIdentifier {
    name: String,
    reason: &'static str,
}

impl InvalidIdentifier {
    /// The rejected name, as given.
    ///
    /// ```
    /// let err = pgoutbox_migrate::Identifier::new("pg_outbox").unwrap_err();
    /// assert_eq!(err.name(), "pg_outbox");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Identifier {
    /// Checks `name` against the grammar described on [`Identifier`].
    ///
    /// ```
    /// use pgoutbox_migrate::Identifier;
    ///
    /// assert!(Identifier::new("outbox_2").is_ok());
    /// assert!(Identifier::new("").is_err());
    /// assert!(Identifier::new("2outbox").is_err()); // starts with a digit
    /// assert!(Identifier::new("pg_outbox").is_err()); // reserved
    /// ```
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidIdentifier> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > MAX_IDENTIFIER_BYTES {
            Some("it is longer than 63 bytes")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            Some("expected only lower-case letters, digits and `_`")
        } else if name.as_bytes()[0].is_ascii_digit() {
            Some("it must not start with a digit")
        } else if name.starts_with("pg_") {
            Some("names starting with `pg_` are reserved by PostgreSQL")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(InvalidIdentifier { name, reason }),
            None => Ok(Identifier(name)),
        }
    }

    /// The name as given, unquoted.
    ///
    /// ```
    /// let schema = pgoutbox_migrate::Identifier::new("outbox")?;
    /// assert_eq!(schema.as_str(), "outbox");
    /// assert_eq!(pgoutbox_migrate::Identifier::default().as_str(), "pgoutbox");
    /// # Ok::<(), pgoutbox_migrate::InvalidIdentifier>(())
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name double-quoted, ready to be put into SQL text.
    ///
    /// ```
    /// let schema = pgoutbox_migrate::Identifier::new("outbox")?;
    /// assert_eq!(format!("SELECT 1 FROM {}.operations", schema.quoted()), r#"SELECT 1 FROM "outbox".operations"#);
    /// # Ok::<(), pgoutbox_migrate::InvalidIdentifier>(())
    /// ```
    pub fn quoted(&self) -> String {
        // The grammar admits no `"`, so there is nothing to escape.
        format!("\"{}\"", self.0)
    }
}

impl Default for Identifier {
    /// The default schema, `pgoutbox`.
    fn default() -> Self {
        Identifier(crate::DEFAULT_SCHEMA.to_owned())
    }
}

impl FromStr for Identifier {
    type Err = InvalidIdentifier;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Identifier::new(s)
    }
}

impl TryFrom<String> for Identifier {
    type Error = InvalidIdentifier;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Identifier::new(s)
    }
}

impl TryFrom<&str> for Identifier {
    type Error = InvalidIdentifier;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Identifier::new(s)
    }
}

impl AsRef<str> for Identifier {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::Identifier;

    #[test]
    fn accepts_plain_names() {
        for name in ["pgoutbox", "_x", "a1", "billing_outbox_2", &"a".repeat(63)] {
            assert_eq!(Identifier::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn rejects_everything_else() {
        for name in [
            "",
            "x; drop table y",
            "x\"y",
            "Upper",
            "1abc",
            "pg_catalog",
            "with space",
            "dash-ed",
            "é",
            &"a".repeat(64),
        ] {
            let err = Identifier::new(name).unwrap_err();
            assert_eq!(err.name(), name);
            assert!(err.to_string().starts_with("invalid identifier `"), "{err}");
        }
    }
}
