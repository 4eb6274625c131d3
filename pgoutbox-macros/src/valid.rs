//! Checks of values that the grammar of Rust cannot express: operation
//! names, queue names and durations.

use syn::LitStr;

use crate::attr::DurationArg;
use crate::ctxt::Ctxt;

const NAME_GRAMMAR: &str = "expected lower-case segments of `[a-z0-9_]` joined by dots, \
                            e.g. `billing.charge`";

/// Whether `name` is lower-case segments of `[a-z0-9_]` joined by dots.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Reports a bad operation name inside its string literal.
pub(crate) fn check_name(lit: &LitStr, cx: &Ctxt) {
    let name = lit.value();
    if name.is_empty() {
        cx.error_at(
            lit.span(),
            format!("the operation name is empty: {NAME_GRAMMAR}"),
        );
    } else if !is_valid_name(&name) {
        cx.error_at(
            lit.span(),
            format!("invalid operation name `{name}`: {NAME_GRAMMAR}"),
        );
    }
}

/// Queue names follow the same grammar as operation names.
pub(crate) fn check_queue(lit: &LitStr, cx: &Ctxt) {
    let queue = lit.value();
    if !is_valid_name(&queue) {
        cx.error_at(
            lit.span(),
            format!("invalid queue name `{queue}`: {NAME_GRAMMAR}"),
        );
    }
}

/// Parses `"250ms"`, `"30s"`, `"5m"` or `"2h"` into a positive number of
/// milliseconds.
pub(crate) fn duration(lit: &LitStr, cx: &Ctxt) -> Option<DurationArg> {
    let text = lit.value();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let factor: Option<u64> = match unit {
        "ms" => Some(1),
        "s" => Some(1_000),
        "m" => Some(60_000),
        "h" => Some(3_600_000),
        _ => None,
    };
    let millis = digits
        .parse::<u64>()
        .ok()
        .zip(factor)
        .and_then(|(n, f)| n.checked_mul(f));
    match millis {
        Some(0) => {
            cx.error_at(
                lit.span(),
                format!("duration `{text}` must be longer than zero"),
            );
            None
        }
        Some(millis) => Some(DurationArg {
            lit: lit.clone(),
            millis,
        }),
        None => {
            cx.error_at(
                lit.span(),
                format!(
                    "invalid duration `{text}`: expected an integer and a unit \
                     (`ms`, `s`, `m` or `h`), e.g. `30s`"
                ),
            );
            None
        }
    }
}
