//! Operations as Rust types: the [`Operation`] trait, its options and its
//! JSON Schema.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

/// A payload type that names an operation.
///
/// Implemented by `#[operation]`, on the payload struct it generates from a
/// handler's parameters or on a struct it annotates (a publish-only
/// contract). [`publish`](crate::publish) accepts only such types, so no
/// operation name is ever written as a string in application code.
///
/// ```
/// use pgoutbox::prelude::*;
///
/// /// Charge a customer's card.
/// #[operation("billing.charge", idempotent, max_attempts = 5)]
/// pub struct Charge {
///     /// The customer to charge.
///     pub customer_id: i64,
///     /// The amount, in cents.
///     pub amount_cents: i64,
/// }
///
/// assert_eq!(Charge::NAME, "billing.charge");
/// assert!(Charge::OPTIONS.idempotent);
/// assert_eq!(Charge::OPTIONS.max_attempts, Some(5));
/// assert_eq!(Charge::schema().hash().len(), 64);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pgoutbox operation",
    label = "not an operation",
    note = "annotate the handler `async fn` (or a payload struct) with `#[operation(\"name\")]` to make `{Self}` an operation"
)]
pub trait Operation: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The operation's name: lower-case segments of `[a-z0-9_]` joined by
    /// dots, unique in the binary. It is what the database stores.
    const NAME: &'static str;

    /// The options given in the attribute.
    const OPTIONS: OperationOptions;

    /// What a successful handler returns: the `T` of its `Result<T>`,
    /// `()` when it returns `Result<()>` (the common case, stored as
    /// nothing). A contract declares it with `output = Type`. The value is
    /// recorded on the succeeded attempt, in the transaction that records
    /// the success.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// /// A card payment's receipt.
    /// #[pgoutbox::payload]
    /// pub struct Receipt {
    ///     /// The provider's charge id.
    ///     pub charge_id: String,
    /// }
    ///
    /// /// Charge a card.
    /// #[operation("billing.charge_card")]
    /// async fn charge_card(ctx: &mut Context, cents: i64) -> Result<Receipt> {
    ///     let _ = (ctx, cents);
    ///     Ok(Receipt { charge_id: "ch_1".into() })
    /// }
    ///
    /// fn output_of<O: Operation>() -> &'static str { std::any::type_name::<O::Output>() }
    /// assert!(output_of::<ChargeCard>().ends_with("Receipt"));
    /// assert_eq!(ChargeCard::output_schema().json()["title"], "Receipt");
    /// ```
    type Output: Serialize + DeserializeOwned + schemars::JsonSchema + Send + 'static;

    /// The payload's JSON Schema and its hash, computed once.
    fn schema() -> &'static OperationSchema;

    /// The output's JSON Schema and its hash, computed once.
    fn output_schema() -> &'static OperationSchema;
}

/// The options of an operation, as written in `#[operation(…)]`.
///
/// Every option that is `None` here takes its value from the settings
/// (`workflow_system`); an option on the operation overrides the setting.
///
/// | option | syntax | default |
/// | --- | --- | --- |
/// | `transactional` | `transactional` | off: the handler runs outside any transaction |
/// | `idempotent` | `idempotent` | off: an unknown outcome makes the operation `stalled` |
/// | `max_attempts` | `max_attempts = 5` (≥ 1) | the `max_attempts` setting |
/// | `backoff` | `backoff(initial = "1s", max = "10m")` | the backoff settings |
/// | `timeout` | `timeout = "30s"` | the `handler_timeout` setting |
/// | `queue` | `queue = "billing"` | `"default"` |
/// | `priority` | `priority = 10` (an `i16`) | `0`; **higher runs first** |
///
/// Durations are written as the settings write them (`humantime`): a number
/// and a unit, `250ms`, `30s`, `5m`, `1h` or `2d`, or a sum such as `1h 30m`.
///
/// The attribute builds this value at compile time; the `const` builder
/// methods build the same value in code, and [`Operation::OPTIONS`] reads
/// it back:
///
/// ```
/// use std::time::Duration;
/// use pgoutbox::prelude::*;
/// use pgoutbox::{Backoff, OperationOptions};
///
/// /// Send a receipt.
/// #[operation("mail.receipt", idempotent, max_attempts = 10, queue = "mail", timeout = "30s")]
/// async fn send_receipt(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// const EXPECTED: OperationOptions = OperationOptions::new()
///     .idempotent(true)
///     .max_attempts(10)
///     .queue("mail")
///     .timeout(Duration::from_secs(30));
/// assert_eq!(SendReceipt::OPTIONS, EXPECTED);
/// assert!(!SendReceipt::OPTIONS.transactional);
/// assert_eq!(SendReceipt::OPTIONS.backoff, None::<Backoff>); // from the settings
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationOptions {
    /// The handler runs inside a transaction that the dispatcher owns and
    /// commits together with the success record.
    pub transactional: bool,
    /// Running the operation again after an unknown outcome is safe.
    pub idempotent: bool,
    /// Attempts before the operation is `dead`.
    pub max_attempts: Option<u32>,
    /// Delay between failed attempts.
    pub backoff: Option<Backoff>,
    /// How long one attempt may run before it is abandoned as `timed_out`.
    pub timeout: Option<Duration>,
    /// The queue the operation is published into.
    pub queue: Option<&'static str>,
    /// Claim order among ready operations; higher runs first.
    pub priority: Option<i16>,
}

impl OperationOptions {
    /// No options: everything from the settings.
    pub const fn new() -> Self {
        OperationOptions {
            transactional: false,
            idempotent: false,
            max_attempts: None,
            backoff: None,
            timeout: None,
            queue: None,
            priority: None,
        }
    }

    /// Sets `transactional`.
    ///
    /// ```
    /// use pgoutbox::OperationOptions;
    ///
    /// // What `#[operation("ledger.record", transactional)]` builds.
    /// const OPTIONS: OperationOptions = OperationOptions::new().transactional(true);
    /// assert!(OPTIONS.transactional);
    /// assert!(!OPTIONS.idempotent);
    /// ```
    #[must_use]
    pub const fn transactional(mut self, on: bool) -> Self {
        self.transactional = on;
        self
    }

    /// Sets `idempotent`.
    #[must_use]
    pub const fn idempotent(mut self, on: bool) -> Self {
        self.idempotent = on;
        self
    }

    /// Sets `max_attempts`.
    #[must_use]
    pub const fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Sets the backoff.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pgoutbox::{Backoff, OperationOptions};
    ///
    /// // `backoff(initial = "1s", max = "10m")`
    /// let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(600));
    /// let options = OperationOptions::new().backoff(backoff);
    /// assert_eq!(options.backoff.map(|b| b.max()), Some(Duration::from_secs(600)));
    /// ```
    #[must_use]
    pub const fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Sets the timeout of one attempt.
    #[must_use]
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the queue.
    #[must_use]
    pub const fn queue(mut self, queue: &'static str) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Sets the priority; higher runs first.
    ///
    /// ```
    /// use pgoutbox::OperationOptions;
    ///
    /// let urgent = OperationOptions::new().priority(10);
    /// assert!(urgent.priority > OperationOptions::new().priority(0).priority);
    /// assert_eq!(OperationOptions::new().priority, None); // 0 unless published with one
    /// ```
    #[must_use]
    pub const fn priority(mut self, priority: i16) -> Self {
        self.priority = Some(priority);
        self
    }
}

impl Default for OperationOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Exponential backoff between failed attempts, with jitter.
///
/// The delay before attempt `n + 1` (after `n` failures) is
/// `initial × 2^(n−1)` capped at `max`, plus up to a quarter of that as
/// jitter, and never more than `max`: always within `[initial, max]`.
///
/// ```
/// use std::time::Duration;
/// use pgoutbox::Backoff;
///
/// let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
/// assert_eq!(b.delay(1, 0.0), Duration::from_secs(1));
/// assert_eq!(b.delay(3, 0.0), Duration::from_secs(4));
/// assert_eq!(b.delay(30, 0.99), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max` (`max` is raised to
    /// `initial` if smaller).
    pub const fn new(initial: Duration, max: Duration) -> Self {
        let max = if max.as_nanos() < initial.as_nanos() {
            initial
        } else {
            max
        };
        Backoff { initial, max }
    }

    /// The first delay.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pgoutbox::Backoff;
    ///
    /// let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    /// assert_eq!(b.initial(), Duration::from_millis(500));
    /// assert_eq!(b.delay(1, 0.0), b.initial());
    /// ```
    pub const fn initial(&self) -> Duration {
        self.initial
    }

    /// The largest delay.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pgoutbox::Backoff;
    ///
    /// let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1)); // max below initial
    /// assert_eq!(b.max(), Duration::from_secs(2)); // raised to initial
    /// assert_eq!(b.delay(10, 0.9), b.max());
    /// ```
    pub const fn max(&self) -> Duration {
        self.max
    }

    /// The delay after `failures` failed attempts (counted from 1), with
    /// `jitter` in `[0, 1)` choosing where in the jitter band it falls.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exponent = failures.saturating_sub(1);
        let base = if exponent >= 32 {
            self.max
        } else {
            self.initial
                .checked_mul(1u32 << exponent)
                .map_or(self.max, |d| d.min(self.max))
        };
        let jitter = jitter.clamp(0.0, 1.0);
        base.saturating_add(base.mul_f64(jitter / 4.0))
            .min(self.max)
    }
}

/// An operation's payload schema: the JSON Schema (draft 2020-12) of its
/// payload type and the schema hash stored on every published row.
///
/// The hash is the lower-case hex SHA-256 of the schema serialized as
/// canonical JSON: object keys sorted, no insignificant whitespace. Two
/// binaries whose payload types have the same schema get the same hash, so
/// the history in `operation_types` grows only when the schema changes.
///
/// ```
/// use pgoutbox::OperationSchema;
///
/// #[derive(schemars::JsonSchema)]
/// struct Refund {
///     amount_cents: i64,
/// }
///
/// let schema = OperationSchema::of::<Refund>();
/// assert_eq!(schema.json()["properties"]["amount_cents"]["type"], "integer");
/// assert_eq!(schema.hash(), OperationSchema::from_json(schema.json().clone()).hash());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationSchema {
    json: serde_json::Value,
    canonical: String,
    hash: String,
}

impl OperationSchema {
    /// Generates the schema of `T`.
    pub fn of<T: schemars::JsonSchema>() -> Self {
        let json = schemars::generate::SchemaSettings::draft2020_12()
            .into_generator()
            .into_root_schema_for::<T>()
            .to_value();
        Self::from_json(json)
    }

    /// Wraps an already generated schema, computing its hash.
    pub fn from_json(json: serde_json::Value) -> Self {
        let mut canonical = String::new();
        write_canonical(&json, &mut canonical);
        let hash = hex::encode(Sha256::digest(canonical.as_bytes()));
        OperationSchema {
            json,
            canonical,
            hash,
        }
    }

    /// The JSON Schema.
    pub fn json(&self) -> &serde_json::Value {
        &self.json
    }

    /// The schema hash (64 hex digits).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The canonical JSON text the hash is computed from (keys sorted,
    /// compact), made once: publishing sends it as text, not re-encoded.
    pub(crate) fn canonical_json(&self) -> &str {
        &self.canonical
    }
}

/// Canonical JSON: keys sorted at every level whatever the map type
/// (`serde_json`'s `preserve_order` feature may be on elsewhere in the
/// build), compact separators.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The id of a published operation, as stored in `operations.id` and
/// accepted by the `pgoutbox` command (`pgoutbox ops show 42`).
///
/// ```
/// use pgoutbox::OperationId;
///
/// let id = OperationId::from_i64(42);
/// assert_eq!(id.as_i64(), 42);
/// assert_eq!(id.to_string(), "42");
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct OperationId(i64);

impl OperationId {
    /// Wraps a raw id as stored in `operations.id`.
    pub const fn from_i64(id: i64) -> Self {
        OperationId(id)
    }

    /// The raw id.
    pub const fn as_i64(self) -> i64 {
        self.0
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_hash_ignores_key_order() {
        let a = OperationSchema::from_json(json!({"a": 1, "b": {"y": [1, 2], "x": null}}));
        let b = OperationSchema::from_json(json!({"b": {"x": null, "y": [1, 2]}, "a": 1}));
        assert_eq!(a.hash(), b.hash());
        let c = OperationSchema::from_json(json!({"a": 1, "b": {"y": [2, 1], "x": null}}));
        assert_ne!(a.hash(), c.hash());
    }

    #[test]
    fn canonical_form_is_compact_and_sorted() {
        let mut out = String::new();
        write_canonical(&json!({"b": "\"q\"", "a": [true, 1.5]}), &mut out);
        assert_eq!(out, r#"{"a":[true,1.5],"b":"\"q\""}"#);
    }
}

#[cfg(test)]
mod backoff_properties {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::Backoff;

    proptest! {
        #[test]
        fn delay_stays_within_bounds(
            initial_ms in 1u64..60_000,
            extra_ms in 0u64..3_600_000,
            failures in 0u32..200,
            jitter in 0.0f64..1.0,
        ) {
            let b = Backoff::new(Duration::from_millis(initial_ms), Duration::from_millis(initial_ms + extra_ms));
            let d = b.delay(failures, jitter);
            prop_assert!(b.initial() <= d && d <= b.max(), "{d:?} outside [{:?}, {:?}]", b.initial(), b.max());
        }

        #[test]
        fn delay_grows_monotonically_to_the_cap(
            initial_ms in 1u64..60_000,
            extra_ms in 0u64..3_600_000,
            failures in 1u32..200,
        ) {
            let b = Backoff::new(Duration::from_millis(initial_ms), Duration::from_millis(initial_ms + extra_ms));
            prop_assert!(b.delay(failures, 0.0) <= b.delay(failures + 1, 0.0));
            prop_assert_eq!(b.delay(200, 0.0), b.max());
        }
    }
}

/// A workflow's id (`workflows.id`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct WorkflowId(i64);

impl WorkflowId {
    /// Wraps a raw id as stored in `workflows.id`.
    pub const fn from_i64(id: i64) -> Self {
        WorkflowId(id)
    }

    /// The raw id.
    pub const fn as_i64(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}
