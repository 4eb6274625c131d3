//! The grammar of operation names: lower-case segments of `[a-z0-9_]`
//! joined by dots. The macro checks it at compile time; this module checks
//! names and prefixes that arrive at run time.

/// Whether `name` follows the grammar of operation (and queue) names:
/// lower-case segments of `[a-z0-9_]` joined by dots. Re-exported as
/// `pgoutbox::admin::is_operation_name`.
///
/// ```
/// use pgoutbox::admin::is_operation_name;
///
/// assert!(is_operation_name("billing.charge"));
/// assert!(!is_operation_name("../billing"));
/// ```
pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Whether `name` lies under `prefix`, segment-wise: `billing.charge` is
/// under `billing`, `billingx.charge` is not.
pub(crate) fn is_under(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for ok in ["a", "billing.charge", "a_1.b2.c_"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", ".", "a.", ".a", "a..b", "A", "a-b", "a b", "é"] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(is_under("billing.charge", "billing"));
        assert!(is_under("billing", "billing"));
        assert!(!is_under("billingx.charge", "billing"));
        assert!(!is_under("mail.send", "billing"));
    }
}
