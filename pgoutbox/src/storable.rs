//! Values made storable before they are written: PostgreSQL rejects a NUL
//! byte in `text` and `\u0000` in `jsonb`, and an interval or timestamp
//! beyond its range, and an outcome that cannot be written must not leave
//! its operation `running` for ever. Texts are escaped and bounded,
//! durations clamped; payloads, which are the application's data, are
//! refused at publish time instead (`publish.rs`).

use std::fmt::Write as _;
use std::time::Duration;

/// The longest delay pgoutbox writes: a snooze, a retry's backoff or a
/// publish delay (100 × 365 days). A longer snooze or backoff is clamped
/// (and the clamp noted in the attempt's error); a longer publish delay is
/// refused.
pub(crate) const MAX_DELAY: Duration = Duration::from_hours(100 * 365 * 24);

/// The most bytes of one stored text (an error, each entry of its chain);
/// a longer one is cut at a character boundary and marked.
pub(crate) const MAX_TEXT: usize = 16 * 1024;

/// The most entries of a stored error chain; the rest are counted.
pub(crate) const MAX_CHAIN: usize = 32;

/// `text`, storable: each NUL byte written `\0` (visibly: a backslash
/// and a zero), then cut to [`MAX_TEXT`] bytes with a marker saying how
/// much was cut.
pub(crate) fn text(text: &str) -> String {
    let escaped = if text.contains('\0') {
        text.replace('\0', "\\0")
    } else {
        text.to_owned()
    };
    if escaped.len() <= MAX_TEXT {
        return escaped;
    }
    let mut end = MAX_TEXT;
    while !escaped.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… [truncated by pgoutbox: {} more bytes]",
        &escaped[..end],
        escaped.len() - end
    )
}

/// An error chain, storable: each entry as [`text`], at most
/// [`MAX_CHAIN`] entries plus one counting the rest.
pub(crate) fn chain(chain: &[String]) -> Vec<String> {
    let mut out: Vec<String> = chain.iter().take(MAX_CHAIN).map(|e| text(e)).collect();
    if chain.len() > MAX_CHAIN {
        out.push(format!(
            "… [truncated by pgoutbox: {} more errors]",
            chain.len() - MAX_CHAIN
        ));
    }
    out
}

/// `delay` clamped to [`MAX_DELAY`], with a note when it was.
pub(crate) fn delay(delay: Duration) -> (Duration, Option<String>) {
    if delay <= MAX_DELAY {
        (delay, None)
    } else {
        (
            MAX_DELAY,
            Some(format!(
                "{delay:?} is beyond the longest delay pgoutbox stores and was clamped to \
                 {MAX_DELAY:?} (100 × 365 days)"
            )),
        )
    }
}

/// Counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks a JSON document (`what`: a payload, a handler's result) against
/// the rules of a stored one: at most `limit` bytes of JSON text (the
/// callers' `MAX_PAYLOAD_BYTES`), no NUL character, which `jsonb` cannot
/// store. Its size, or why not.
pub(crate) fn json_document(
    value: &serde_json::Value,
    what: &str,
    limit: usize,
) -> Result<usize, String> {
    let mut size = ByteCount(0);
    serde_json::to_writer(&mut size, value).expect("a JSON value serializes");
    if size.0 > limit {
        return Err(format!(
            "it is {} bytes of JSON, over the {limit}-byte limit of {what} \
             (keep large documents in your own tables and store their key)",
            size.0
        ));
    }
    match unstorable_json(value) {
        None => Ok(size.0),
        Some(path) => Err(format!(
            "it holds a NUL character (`\\u0000`) at `{path}`, which PostgreSQL's jsonb \
             cannot store"
        )),
    }
}

/// Where a JSON value holds what `jsonb` cannot store (`\u0000`, in a
/// string or a key), as a path such as `$.items[2].name`.
pub(crate) fn unstorable_json(value: &serde_json::Value) -> Option<String> {
    fn walk(value: &serde_json::Value, path: &mut String) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            serde_json::Value::Object(map) => map.iter().any(|(key, item)| {
                let len = path.len();
                path.push('.');
                path.push_str(&key.replace('\0', "\\0"));
                let found = key.contains('\0') || walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = "$".to_owned();
    walk(value, &mut path).then_some(path)
}

/// Whether `error` is one that retrying cannot cure: PostgreSQL refused
/// the data itself (SQLSTATE class 22, data exception, or 23, integrity
/// constraint violation). Its SQLSTATE and message when it is.
pub(crate) fn data_error(error: &sqlx::Error) -> Option<(String, String)> {
    let db = error.as_database_error()?;
    let code = db.code()?;
    (code.starts_with("22") || code.starts_with("23"))
        .then(|| (code.into_owned(), db.message().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_are_escaped_visibly() {
        assert_eq!(text("a\0b"), "a\\0b");
        assert_eq!(text("plain"), "plain");
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary_and_marked() {
        let long = "é".repeat(MAX_TEXT); // two bytes each
        let cut = text(&long);
        assert!(cut.len() < MAX_TEXT + 60, "{}", cut.len());
        assert!(cut.ends_with(&format!("[truncated by pgoutbox: {MAX_TEXT} more bytes]")));
        let many: Vec<String> = (0..MAX_CHAIN + 5).map(|i| i.to_string()).collect();
        let kept = chain(&many);
        assert_eq!(kept.len(), MAX_CHAIN + 1);
        assert!(kept[MAX_CHAIN].contains("5 more errors"));
    }

    #[test]
    fn delays_are_clamped_with_a_note() {
        assert_eq!(
            delay(Duration::from_secs(5)),
            (Duration::from_secs(5), None)
        );
        let (d, note) = delay(Duration::MAX);
        assert_eq!(d, MAX_DELAY);
        assert!(note.unwrap().contains("clamped"));
    }

    #[test]
    fn nul_in_json_is_found_with_its_path() {
        let v = serde_json::json!({"a": [1, {"b": "x\u{0}y"}], "c": "ok"});
        assert_eq!(unstorable_json(&v).as_deref(), Some("$.a[1].b"));
        assert_eq!(
            unstorable_json(&serde_json::json!({"k\u{0}": 1})).as_deref(),
            Some("$.k\\0")
        );
        assert_eq!(unstorable_json(&serde_json::json!({"a": "fine"})), None);
    }
}
