//! Subjects: fixed, filled from the payload (`events.orders.{region}`), or
//! made from the operation's name. Checked once at start-up against the
//! payload's JSON Schema; filled per message.

use std::fmt::Write as _;

/// Where a relay publishes.
#[derive(Debug, Clone)]
pub(crate) enum Subject {
    /// A subject, possibly with `{field}` placeholders.
    Template(String),
    /// `prefix.name`, or the name alone.
    ByName(Option<String>),
}

/// Why a subject is refused at start-up, or cannot be filled for one
/// payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// Not a valid NATS subject to publish to.
    #[error(
        "invalid subject `{subject}` for `{name}`: {reason} (a subject is tokens of letters, \
         digits, `-` or `_` joined by dots; no wildcards, no spaces)"
    )]
    Invalid {
        /// The operation.
        name: String,
        /// The subject (or template).
        subject: String,
        /// What is wrong.
        reason: String,
    },
    /// A placeholder names a field the payload does not have.
    #[error(
        "subject `{subject}` of `{name}` names field `{field}`, which its payload does not have \
         (fields: {known})"
    )]
    UnknownField {
        /// The operation.
        name: String,
        /// The template.
        subject: String,
        /// The placeholder.
        field: String,
        /// The payload's fields.
        known: String,
    },
    /// A placeholder names a field that is not a required string,
    /// integer or boolean.
    #[error(
        "subject `{subject}` of `{name}` names field `{field}`, which is {what}: a subject \
         field must be a required string, integer or boolean"
    )]
    NotScalar {
        /// The operation.
        name: String,
        /// The template.
        subject: String,
        /// The placeholder.
        field: String,
        /// What the field is.
        what: String,
    },
    /// A payload's value does not make a valid subject token.
    #[error(
        "subject `{subject}` of `{name}`: field `{field}` = {value} does not make a subject token"
    )]
    BadValue {
        /// The operation.
        name: String,
        /// The template.
        subject: String,
        /// The placeholder.
        field: String,
        /// The payload's value.
        value: String,
    },
}

/// A piece of a template: text or a placeholder.
enum Piece<'a> {
    Text(&'a str),
    Field(&'a str),
}

fn pieces(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "a `{` without its `}`".to_owned())?;
        let field = &after[..close];
        if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{{{field}}}` is not a field name"));
        }
        out.push(Piece::Field(field));
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err("a `}` without its `{`".to_owned());
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Why `subject` is not a subject one may publish to, if it is not.
pub(crate) fn invalid(subject: &str) -> Option<String> {
    if subject.is_empty() {
        return Some("it is empty".to_owned());
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Some("it has an empty token".to_owned());
        }
        if token == "*" || token == ">" || token.contains(['*', '>']) {
            return Some(format!("token `{token}` is a wildcard"));
        }
        if let Some(c) = token
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Some(format!("token `{token}` holds {c:?}"));
        }
    }
    None
}

impl Subject {
    /// Checks the subject for operation `name` whose payload has `schema`
    /// (none for an untyped relay); returns a sample subject (placeholders
    /// filled with `x`) for the broker's start-up check.
    pub(crate) fn check(
        &self,
        name: &str,
        schema: Option<&serde_json::Value>,
    ) -> Result<String, SubjectError> {
        let invalid_error = |subject: &str, reason: String| SubjectError::Invalid {
            name: name.to_owned(),
            subject: subject.to_owned(),
            reason,
        };
        let template = match self {
            Subject::ByName(prefix) => {
                let subject = by_name(prefix.as_deref(), name);
                return match invalid(&subject) {
                    Some(reason) => Err(invalid_error(&subject, reason)),
                    None => Ok(subject),
                };
            }
            Subject::Template(template) => template,
        };
        let pieces = pieces(template).map_err(|reason| invalid_error(template, reason))?;
        let mut sample = String::new();
        for piece in &pieces {
            match piece {
                Piece::Text(text) => sample.push_str(text),
                Piece::Field(field) => {
                    if let Some(schema) = schema {
                        check_field(name, template, field, schema)?;
                    }
                    sample.push('x');
                }
            }
        }
        match invalid(&sample) {
            Some(reason) => Err(invalid_error(template, reason)),
            None => Ok(sample),
        }
    }

    /// The subject of one message.
    pub(crate) fn render(
        &self,
        name: &str,
        payload: &serde_json::Value,
    ) -> Result<String, SubjectError> {
        let template = match self {
            Subject::ByName(prefix) => return Ok(by_name(prefix.as_deref(), name)),
            Subject::Template(template) if !template.contains('{') => return Ok(template.clone()),
            Subject::Template(template) => template,
        };
        let mut subject = String::with_capacity(template.len() + 16);
        let pieces = pieces(template).map_err(|reason| SubjectError::Invalid {
            name: name.to_owned(),
            subject: template.clone(),
            reason,
        })?;
        for piece in pieces {
            match piece {
                Piece::Text(text) => subject.push_str(text),
                Piece::Field(field) => {
                    let value = payload.get(field);
                    let bad = || SubjectError::BadValue {
                        name: name.to_owned(),
                        subject: template.clone(),
                        field: field.to_owned(),
                        value: value.map_or_else(|| "nothing".to_owned(), ToString::to_string),
                    };
                    let token = match value {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                            v.to_string()
                        }
                        _ => return Err(bad()),
                    };
                    if token.is_empty()
                        || !token
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    {
                        return Err(bad());
                    }
                    let _ = write!(subject, "{token}");
                }
            }
        }
        Ok(subject)
    }
}

fn by_name(prefix: Option<&str>, name: &str) -> String {
    match prefix {
        Some(prefix) if !prefix.is_empty() => format!("{prefix}.{name}"),
        _ => name.to_owned(),
    }
}

/// Checks that `field` is a required scalar property of `schema`.
fn check_field(
    name: &str,
    template: &str,
    field: &str,
    schema: &serde_json::Value,
) -> Result<(), SubjectError> {
    let properties = schema.get("properties").and_then(|p| p.as_object());
    let Some(property) = properties.and_then(|p| p.get(field)) else {
        let known = properties.map_or_else(
            || "none".to_owned(),
            |p| {
                p.keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        return Err(SubjectError::UnknownField {
            name: name.to_owned(),
            subject: template.to_owned(),
            field: field.to_owned(),
            known,
        });
    };
    let not_scalar = |what: String| SubjectError::NotScalar {
        name: name.to_owned(),
        subject: template.to_owned(),
        field: field.to_owned(),
        what,
    };
    let required = schema
        .get("required")
        .and_then(|r| r.as_array())
        .is_some_and(|r| r.iter().any(|f| f.as_str() == Some(field)));
    if !required {
        return Err(not_scalar("optional".to_owned()));
    }
    let property = resolve(schema, property);
    // An enum of strings (a Rust enum of unit variants) is a string.
    if let Some(values) = property.get("enum").and_then(|e| e.as_array()) {
        return if values.iter().all(serde_json::Value::is_string) {
            Ok(())
        } else {
            Err(not_scalar("an enum of non-string values".to_owned()))
        };
    }
    match property.get("type") {
        Some(serde_json::Value::String(t))
            if matches!(t.as_str(), "string" | "integer" | "boolean") =>
        {
            Ok(())
        }
        Some(serde_json::Value::String(t)) if t == "number" => Err(not_scalar(
            "a floating-point number (its `.` would split the token)".to_owned(),
        )),
        Some(serde_json::Value::String(t)) => Err(not_scalar(format!("of type `{t}`"))),
        Some(other) => Err(not_scalar(format!("of type {other} (nullable or mixed)"))),
        None => Err(not_scalar("of no single type".to_owned())),
    }
}

/// Follows a local `$ref` (`#/$defs/Region`) once.
fn resolve<'s>(
    schema: &'s serde_json::Value,
    property: &'s serde_json::Value,
) -> &'s serde_json::Value {
    property
        .get("$ref")
        .and_then(|r| r.as_str())
        .and_then(|r| r.strip_prefix("#/"))
        .and_then(|path| path.split('/').try_fold(schema, |node, key| node.get(key)))
        .unwrap_or(property)
}

#[cfg(test)]
mod tests {
    use super::{Subject, SubjectError, invalid};
    use serde_json::json;

    fn schema() -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "region": {"type": "string"},
                "shard": {"type": "integer"},
                "note": {"type": ["string", "null"]},
                "amount": {"type": "number"},
                "items": {"type": "array"},
                "kind": {"$ref": "#/$defs/Kind"}
            },
            "required": ["region", "shard", "amount", "items", "kind"],
            "$defs": {"Kind": {"type": "string", "enum": ["a", "b"]}}
        })
    }

    #[test]
    fn valid_subjects() {
        assert_eq!(invalid("events.orders.placed"), None);
        assert!(invalid("events..placed").is_some());
        assert!(invalid("events.*").is_some());
        assert!(invalid("events.>").is_some());
        assert!(invalid("events.or ders").is_some());
        assert!(invalid("").is_some());
    }

    #[test]
    fn templates_are_checked_against_the_schema() {
        let t = |s: &str| Subject::Template(s.to_owned()).check("orders.placed", Some(&schema()));
        assert_eq!(t("events.orders.{region}").unwrap(), "events.orders.x");
        assert_eq!(t("events.{region}.{shard}.{kind}").unwrap(), "events.x.x.x");
        assert!(matches!(
            t("events.{nope}"),
            Err(SubjectError::UnknownField { .. })
        ));
        let e = t("events.{note}").unwrap_err().to_string();
        assert!(e.contains("optional"), "{e}");
        let e = t("events.{amount}").unwrap_err().to_string();
        assert!(e.contains("floating-point"), "{e}");
        let e = t("events.{items}").unwrap_err().to_string();
        assert!(e.contains("`array`"), "{e}");
        assert!(matches!(
            t("events.{region"),
            Err(SubjectError::Invalid { .. })
        ));
        assert!(matches!(t("events.*"), Err(SubjectError::Invalid { .. })));
    }

    #[test]
    fn rendering() {
        let s = Subject::Template("events.{region}.{shard}".to_owned());
        let subject = s.render("o", &json!({"region": "eu", "shard": 3})).unwrap();
        assert_eq!(subject, "events.eu.3");
        assert!(matches!(
            s.render("o", &json!({"region": "eu west", "shard": 3})),
            Err(SubjectError::BadValue { .. })
        ));
        let by_name = Subject::ByName(Some("events".to_owned()));
        assert_eq!(
            by_name.render("orders.placed", &json!({})).unwrap(),
            "events.orders.placed"
        );
    }
}
