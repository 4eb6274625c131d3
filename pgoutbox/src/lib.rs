//! pgoutbox: a PostgreSQL-backed workflow and outbox engine for operations
//! whose side effects cannot be taken back.
//!
//! Application code records the *intent* to run an operation inside its own
//! database transaction; workers carry it out later and record in the same
//! database what happened, including "unknown" when a worker died mid-call.
//! Operations are Rust types: `#[operation]` turns a handler's parameters
//! into a payload struct, so publishing and handling share one schema and no
//! operation name is ever written as a string in application code.
//!
//! ```
//! use pgoutbox::prelude::*;
//!
//! /// Charge a customer's card through the payment provider, which
//! /// deduplicates on `ctx.idempotency_key()`.
//! #[operation("billing.charge", transactional, idempotent)]
//! async fn charge(ctx: &mut TxContext<'_>, customer_id: i64, amount_cents: i64) -> Result<()> {
//!     let _ = (ctx.idempotency_key(), customer_id, amount_cents);
//!     Ok(())
//! }
//!
//! // `#[operation]` generated the payload struct `Charge`:
//! let payload = Charge { customer_id: 7, amount_cents: 1999 };
//! assert_eq!(<Charge as Operation>::NAME, "billing.charge");
//! # let _ = payload;
//! ```
//!
//! # A tour
//!
//! - **Declare** operations with [`#[operation]`](operation): a handler
//!   (`async fn` taking a [`Context`], or a [`TxContext`] with
//!   `transactional`) or a publish-only contract on a struct. Its options
//!   ([`OperationOptions`]) say whether it is `idempotent`, how often to try
//!   ([`Backoff`]) and where it goes (queue, priority). Your own types
//!   inside a payload get [`#[payload]`](payload).
//! - **Publish** inside your own transaction with [`publish`] or
//!   [`publish_many`] (they never commit), or with a [`Publisher`] built
//!   from [`Settings`] for another schema, NOTIFY off, or pgbouncer;
//!   [`PublishOptions`] add a delay, an idempotency key, a priority or a
//!   queue.
//! - **Handle** them in a worker: a [`WorkflowSystem`] built from
//!   [`Settings::load`] runs the operations its [`WorkflowRouter`]s select
//!   (resolved against the binary's [`Registry`]) until
//!   [`WorkflowSystem::stop`]. Handlers fail with a [`HandlerError`]:
//!   retryable, permanent, or a snooze.
//! - **Schedule** periodic operations on a router with
//!   [`WorkflowRouter::schedule`] and a cron [`Schedule`] in a time zone:
//!   one operation per tick across every worker, missed ticks handled by
//!   [`MissedTicks`].
//! - **Operate** with [`admin::Admin`] or the `pgoutbox` command (crate
//!   `pgoutbox-cli`): inspect, retry, cancel, resolve, replay; apply the
//!   storage's migrations with [`migrate::run`].
//! - **Test** with the `testing` feature: `pgoutbox::testing` starts a
//!   throwaway PostgreSQL and gives each test a fresh database.
//!
//! ```no_run
//! use pgoutbox::prelude::*;
//!
//! #[operation("billing.charge", transactional, idempotent)]
//! async fn charge(ctx: &mut TxContext<'_>, customer_id: i64, amount_cents: i64) -> Result<()> {
//!     # let _ = (ctx, customer_id, amount_cents);
//!     Ok(())
//! }
//!
//! # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let settings = Settings::load()?;
//! let pool = settings.pool()?;
//! pgoutbox::migrate::run(&pool, &settings.schema()?).await?;
//!
//! // The application: intent recorded in its own transaction.
//! let mut tx = pool.begin().await?;
//! publish(&mut tx, Charge { customer_id: 7, amount_cents: 1999 }).await?;
//! tx.commit().await?;
//!
//! // A worker: runs what its router selects until stopped.
//! let system = WorkflowSystem::builder(settings)
//!     .router(WorkflowRouter::with_prefix("billing").operation::<Charge>())
//!     .start()
//!     .await?;
//! system.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Further reading
//!
//! In the repository's `docs/` directory:
//!
//! - `docs/consistency.md` — what is and is not guaranteed, and what
//!   happens when a worker is killed, a lease expires, a handler times out,
//!   a commit fails, a notification is lost, or a payload no longer decodes;
//! - `docs/operating.md` — the `pgoutbox` command, states and operator
//!   actions, retention, migrations, metrics and traces, pgbouncer;
//! - `docs/tuning.md` — the settings that change throughput and latency,
//!   and how to measure with the benchmark.
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate self as pgoutbox;

pub mod admin;
mod completer;
mod context;
#[cfg(feature = "dashboard")]
#[cfg_attr(docsrs, doc(cfg(feature = "dashboard")))]
pub mod dashboard;
mod definition;
mod duration;
mod error;
mod executor;
mod exporter;
mod jitter;
mod limits;
mod maintenance;
mod name;
mod notifier;
mod outcome;
mod producer;
mod publish;
mod registry;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod relay;
mod router;
mod runtime;
mod schedule;
mod scheduler;
mod settings;
mod state;
mod storable;
mod store;
mod system;
pub mod workflow;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use context::{Context, TxContext};
pub use definition::{Backoff, Operation, OperationId, OperationOptions, OperationSchema};
pub use error::{HandlerError, Result};
/// Declares an operation.
///
/// # On an `async fn`: a handler
///
/// ```
/// use pgoutbox::prelude::*;
///
/// /// Send the receipt of a charge.
/// #[operation("mail.receipt", idempotent, max_attempts = 10, queue = "mail")]
/// pub async fn send_receipt(
///     ctx: &mut Context,
///     /// Where to send it.
///     to: String,
///     amount_cents: i64,
/// ) -> Result<()> {
///     let _ = (ctx.idempotency_key(), to, amount_cents);
///     Ok(())
/// }
///
/// // Generated beside it: `pub struct SendReceipt { pub to: String, pub amount_cents: i64 }`
/// let payload = SendReceipt { to: "a@example.com".into(), amount_cents: 1999 };
/// # let _ = payload;
/// ```
///
/// - The first parameter is the context: `&mut Context`, or
///   `&mut TxContext<'_>` with `transactional` (a mismatch is a compile
///   error on that parameter).
/// - The other parameters become the fields of the payload struct, named
///   after the function in `UpperCamelCase` (`payload = Name` overrides it),
///   with the function's visibility, deriving `Serialize`, `Deserialize`,
///   `JsonSchema`, `Debug` and `Clone`. Doc comments on the function and its
///   parameters, and `#[serde(…)]` / `#[schemars(…)]` attributes on
///   parameters, move to the struct and its fields (and so into the JSON
///   Schema). Parameters must be plain names of owned types; a type of
///   your own used in a parameter is annotated [`#[payload]`](payload).
/// - The function returns `Result<()>`, or `Result<T>` to record a result
///   (`T` is the operation's [`Operation::Output`], a
///   [`#[payload]`](payload) type or any `Serialize + Deserialize +
///   JsonSchema` one; write the return type as a path ending in `Result`,
///   such as `Result<T>`, `anyhow::Result<T>` or `Result<T, E>`: through
///   another alias the output reads as `()`). Any `E` that converts into
///   [`HandlerError`] will do, and the future must be `Send`.
/// - Also generated: `impl Operation for SendReceipt`, a link-time
///   registration (name, options, schema, handler, file and line), and a
///   braced struct named like the function (type namespace only) that
///   [`handlers!`] uses to list handlers explicitly.
///
/// # On a struct: a publish-only contract
///
/// For crates that publish an operation handled elsewhere. The handler
/// attaches by type, and takes the payload whole:
///
/// ```
/// use pgoutbox::prelude::*;
///
/// /// Record a ledger entry.
/// #[operation("ledger.record", idempotent)]
/// pub struct RecordEntry {
///     /// Amount in cents.
///     pub amount_cents: i64,
/// }
///
/// #[operation(contract = RecordEntry, transactional)]
/// async fn record(ctx: &mut TxContext<'_>, entry: RecordEntry) -> Result<()> {
///     let _ = (ctx, entry.amount_cents);
///     Ok(())
/// }
/// ```
///
/// # Options
///
/// The name comes first: lower-case segments of `[a-z0-9_]` joined by dots.
/// Options follow, each at most once; their syntax and defaults are in the
/// table on [`OperationOptions`]. An option on the operation overrides the
/// corresponding setting. `idempotent`, `max_attempts`, `queue` and
/// `priority` describe the published row and belong to the contract;
/// `transactional`, `backoff` and `timeout` belong to the handler. A
/// contract (the attribute on a struct) declares its output type with
/// `output = Type` (a handler's output is the `T` of its `Result<T>`).
/// `crate = path` names the `pgoutbox` crate when it is re-exported under
/// another path; `PGOUTBOX_MACROS_DEBUG=1` prints the expansion.
pub use pgoutbox_macros::operation;
/// Makes a struct or an enum of your own usable inside an operation payload.
///
/// A payload's fields must implement `Serialize`, `Deserialize` and
/// `JsonSchema`. `#[payload]` derives them (with `Debug` and `Clone`)
/// through pgoutbox's own copies of serde and schemars, so the application
/// needs neither as a dependency. A field whose type lacks them is a
/// compile error on that type saying to add `#[payload]`.
///
/// ```
/// use pgoutbox::prelude::*;
///
/// /// A postal address.
/// #[payload]
/// pub struct Address {
///     pub street: String,
///     pub city: String,
/// }
///
/// /// How the letter travels.
/// #[payload]
/// pub enum Service {
///     Standard,
///     Registered { signature: bool },
/// }
///
/// #[operation("mail.post")]
/// async fn post(ctx: &mut Context, to: Address, service: Service) -> Result<()> {
///     let _ = (ctx, to.city, service);
///     Ok(())
/// }
///
/// // `Address` and `Service` are in the payload's JSON Schema.
/// let schema = <Post as Operation>::schema().json().to_string();
/// assert!(schema.contains("Address") && schema.contains("Registered"));
/// ```
///
/// Field attributes of serde and schemars (`#[serde(rename = "…")]`,
/// `#[schemars(…)]`) work as with the derives. `crate = path` names the
/// `pgoutbox` crate when it is re-exported under another path.
pub use pgoutbox_macros::payload;
pub use pgoutbox_migrate::{Identifier, InvalidIdentifier};
pub use publish::{
    MAX_PAYLOAD_BYTES, PUBLISH_MANY_CHUNK, PUBLISH_MANY_CHUNK_BYTES, PublishError, PublishOptions,
    Publisher, publish, publish_many,
};
pub use registry::{Entry, Handler, Registration, Registry, RegistryError};
pub use router::{Route, RouterError, Routes, WorkflowRouter};
pub use schedule::{MAX_MISSED_TICKS, MissedTicks, Schedule, ScheduleError, Tick, schedule_key};
pub use settings::{
    DEFAULT_CHANNEL, DEFAULT_MAX_ATTEMPTS, DashboardSettings, DatabaseSettings, MAX_CLAIM_AHEAD,
    MAX_DURATION, MAX_N_WORKERS, MAX_POOL, NatsSettings, RelaySettings, RetentionSettings,
    Settings, SettingsError, WorkflowSettings, redact_nats_url, redact_url,
};
pub use state::{Outcome, ParseStateError, Status, WorkflowState};
pub use system::{STOP_MARGIN, StartError, StopReport, WorkflowSystem, WorkflowSystemBuilder};

/// The storage's migrations (the `pgoutbox-migrate` crate, re-exported so
/// that an application depends on `pgoutbox` alone): apply them with
/// [`run`](migrate::run), check a database's version with
/// [`check`](migrate::check) (a worker does at start-up), or export the
/// SQL with [`script`](migrate::script) for your own migration tool.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let settings = pgoutbox::Settings::load()?;
/// let pool = settings.pool()?;
/// let schema = settings.schema()?;
/// let applied = pgoutbox::migrate::run(&pool, &schema).await?;
/// println!("applied {} migration(s)", applied.len());
/// pgoutbox::migrate::check(&pool, &schema).await?;
/// # Ok(())
/// # }
/// ```
pub mod migrate {
    pub use pgoutbox_migrate::{
        AppliedMigration, DEFAULT_SCHEMA, Error, Identifier, InvalidIdentifier,
        MAX_IDENTIFIER_BYTES, Migration, Status, VERSION_TABLE, check, latest_version, migrations,
        run, script, status,
    };
}

/// What handlers and publishers need, in one import.
///
/// ```
/// use pgoutbox::prelude::*;
///
/// // Enough for declaring, publishing and routing, with no other import.
/// #[operation("mail.send", idempotent)]
/// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx.idempotency_key(), to);
///     Ok(())
/// }
///
/// let router = WorkflowRouter::with_prefix("mail").operation::<SendMail>();
/// let registry = Registry::from_registrations(pgoutbox::handlers![send_mail]).unwrap();
/// assert_eq!(router.resolve(&registry).unwrap().len(), 1);
/// let _options = PublishOptions::new().priority(5);
/// ```
pub mod prelude {
    pub use crate::workflow::{Dep, Settled, Workflow, publish_workflow};
    pub use crate::{
        Context, HandlerError, Operation, OperationId, PublishOptions, Registry, Result, Settings,
        TxContext, WorkflowRouter, WorkflowSystem, operation, payload, publish, publish_many,
    };
}

/// What the code generated by `#[operation]` refers to, including the
/// type-erased handler plumbing (`ErasedHandler`, `BoxFuture`, …). Not
/// public API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use schemars;
    pub use serde;
    pub use serde_json;

    pub use crate::context::{Context, TxContext};
    pub use crate::definition::{Backoff, Operation, OperationOptions, OperationSchema};
    pub use crate::error::HandlerError;
    pub use crate::registry::{
        BoxFuture, ErasedHandler, Handler, HandlerFailure, PlainHandler, Registered, Registration,
        TxHandler,
    };

    pub use std::boxed::Box;
    pub use std::sync::OnceLock;
    pub use std::time::Duration;

    /// Decodes a stored payload into its type.
    pub fn decode<T: serde::de::DeserializeOwned>(
        payload: serde_json::Value,
    ) -> Result<T, HandlerFailure> {
        serde_json::from_value(payload).map_err(HandlerFailure::Decode)
    }

    /// Turns a handler's result into the type-erased one: its output as
    /// JSON, checked against the rules of a stored document. A value that
    /// is JSON `null` (`()`, `Option::None`) is stored as SQL `NULL`: it
    /// decodes back the same.
    pub fn finish<T: serde::Serialize, E: Into<HandlerError>>(
        result: Result<T, E>,
    ) -> Result<Option<serde_json::Value>, HandlerFailure> {
        let output = result.map_err(|e| HandlerFailure::Failed(e.into()))?;
        match serde_json::to_value(&output) {
            Ok(serde_json::Value::Null) => Ok(None),
            Ok(value) => match crate::storable::json_document(
                &value,
                "a handler's result",
                crate::MAX_PAYLOAD_BYTES,
            ) {
                Ok(_) => Ok(Some(value)),
                Err(why) => Err(HandlerFailure::Unstorable(why)),
            },
            Err(e) => Err(HandlerFailure::Unstorable(format!(
                "it does not encode as JSON: {e}"
            ))),
        }
    }

    /// What a handler's output type needs. Generated code checks it on the
    /// `T` of the handler's `Result<T>`; the message says what to add.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be an operation's output",
        label = "needs `Serialize`, `Deserialize` and `JsonSchema`",
        note = "annotate the type with `#[pgoutbox::payload]`, which derives all three; for a type from another crate, look for its `serde` and `schemars` features"
    )]
    pub trait OutputType {}

    #[diagnostic::do_not_recommend]
    impl<T: serde::Serialize + serde::de::DeserializeOwned + schemars::JsonSchema + Send + 'static>
        OutputType for T
    {
    }

    /// Fails to compile, on the output type, when it is no [`OutputType`].
    pub const fn assert_output<T: OutputType>() {}

    /// What a type needs to be part of an operation payload. Generated code
    /// checks it on each field's type; the message says what to add.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be part of an operation payload",
        label = "needs `Serialize`, `Deserialize` and `JsonSchema`",
        note = "annotate the type with `#[pgoutbox::payload]`, which derives all three; for a type from another crate, look for its `serde` and `schemars` features"
    )]
    pub trait PayloadField {}

    // `do_not_recommend` makes rustc report the unmet `PayloadField` bound,
    // with the message above, rather than the unmet bound of this impl.
    #[diagnostic::do_not_recommend]
    impl<T: serde::Serialize + serde::de::DeserializeOwned + schemars::JsonSchema> PayloadField for T {}

    /// Fails to compile, on the field's type, when it is no [`PayloadField`].
    pub const fn assert_payload_field<T: PayloadField>() {}

    /// Fails to compile, on the handler's signature, when its future is not
    /// `Send` (workers run handlers on a multi-threaded runtime).
    pub fn assert_send<F: std::future::Future + Send>(future: F) -> F {
        future
    }
}
