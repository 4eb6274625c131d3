//! Every operation the binary knows: collected by `inventory` at link time,
//! or listed explicitly.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::context::{Context, TxContext};
use crate::definition::{Operation, OperationOptions, OperationSchema};
use crate::error::HandlerError;

/// A boxed, `Send` future, as type-erased handlers return.
///
/// ```
/// use pgoutbox::__private::BoxFuture;
///
/// fn answer() -> BoxFuture<'static, u32> {
///     Box::pin(async { 42 })
/// }
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// assert_eq!(rt.block_on(answer()), 42);
/// ```
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a type-erased handler did not succeed.
///
/// ```
/// use pgoutbox::HandlerError;
/// use pgoutbox::__private::HandlerFailure;
///
/// let stale = serde_json::from_value::<i64>(serde_json::json!("seven")).unwrap_err();
/// let failures = [
///     HandlerFailure::Decode(stale),
///     HandlerFailure::Failed(HandlerError::permanent("card declined")),
/// ];
/// assert!(matches!(&failures[0], HandlerFailure::Decode(e) if e.is_data()));
/// assert!(matches!(&failures[1], HandlerFailure::Failed(e) if e.is_permanent()));
/// ```
#[derive(Debug)]
pub enum HandlerFailure {
    /// The stored payload no longer decodes into the payload type.
    Decode(serde_json::Error),
    /// The handler returned an error.
    Failed(HandlerError),
    /// The handler succeeded, but what it returned cannot be stored (it
    /// does not encode as JSON, is larger than
    /// [`MAX_PAYLOAD_BYTES`](crate::MAX_PAYLOAD_BYTES), or holds a NUL
    /// character): why.
    Unstorable(String),
}

/// A plain handler with its payload type erased: decode JSON, call.
///
/// ```
/// use pgoutbox::prelude::*;
/// use pgoutbox::__private::{ErasedHandler, PlainHandler};
///
/// #[operation("mail.send")]
/// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// let registry = Registry::from_registrations(pgoutbox::handlers![send_mail])?;
/// let handler = registry.get("mail.send").unwrap().registration().erased_handler();
/// let Some(ErasedHandler::Plain(plain)) = handler else { panic!("a plain handler") };
/// let _: PlainHandler = plain;
/// # Ok::<(), pgoutbox::RegistryError>(())
/// ```
pub type PlainHandler =
    for<'a> fn(
        &'a mut Context,
        serde_json::Value,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, HandlerFailure>>;

/// A transactional handler with its payload type erased.
///
/// ```
/// use pgoutbox::prelude::*;
/// use pgoutbox::__private::{ErasedHandler, TxHandler};
///
/// #[operation("ledger.record", transactional)]
/// async fn record(ctx: &mut TxContext<'_>, amount_cents: i64) -> Result<()> {
///     let _ = (ctx, amount_cents);
///     Ok(())
/// }
///
/// let registry = Registry::from_registrations(pgoutbox::handlers![record])?;
/// let handler = registry.get("ledger.record").unwrap().registration().erased_handler();
/// let Some(ErasedHandler::Transactional(tx)) = handler else { panic!("a transactional handler") };
/// let _: TxHandler = tx;
/// # Ok::<(), pgoutbox::RegistryError>(())
/// ```
pub type TxHandler =
    for<'a, 'c> fn(
        &'a mut TxContext<'c>,
        serde_json::Value,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, HandlerFailure>>;

/// How a registered handler is called.
///
/// ```
/// use pgoutbox::prelude::*;
/// use pgoutbox::__private::ErasedHandler;
///
/// #[operation("mail.send")]
/// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// #[operation("ledger.record", transactional)]
/// async fn record(ctx: &mut TxContext<'_>, amount_cents: i64) -> Result<()> {
///     let _ = (ctx, amount_cents);
///     Ok(())
/// }
///
/// let registry = Registry::from_registrations(pgoutbox::handlers![send_mail, record])?;
/// let kind = |name| registry.get(name).unwrap().registration().erased_handler();
/// assert!(matches!(kind("mail.send"), Some(ErasedHandler::Plain(_))));
/// assert!(matches!(kind("ledger.record"), Some(ErasedHandler::Transactional(_))));
/// # Ok::<(), pgoutbox::RegistryError>(())
/// ```
#[derive(Clone, Copy)]
pub enum ErasedHandler {
    /// Called with a [`Context`].
    Plain(PlainHandler),
    /// Called with a [`TxContext`] inside the dispatcher's transaction.
    Transactional(TxHandler),
}

impl fmt::Debug for ErasedHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErasedHandler::Plain(_) => "Plain",
            ErasedHandler::Transactional(_) => "Transactional",
        })
    }
}

/// What `#[operation]` registers: a publish-only contract, or a handler.
///
/// Built only by the macro (through `pgoutbox::__private`); read through
/// [`Registry`].
///
/// ```
/// use pgoutbox::prelude::*;
///
/// /// Send an e-mail.
/// #[operation("mail.send", idempotent, queue = "mail")]
/// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// let registry = Registry::from_registrations(pgoutbox::handlers![send_mail])?;
/// let registration = registry.get("mail.send").unwrap().registration();
/// assert_eq!(registration.name(), "mail.send");
/// assert!(registration.is_handler());
/// assert!(registration.options().idempotent);
/// assert!(registration.payload_type_name().ends_with("SendMail"));
/// # Ok::<(), pgoutbox::RegistryError>(())
/// ```
#[derive(Debug)]
pub struct Registration {
    pub(crate) name: &'static str,
    pub(crate) options: OperationOptions,
    pub(crate) schema: fn() -> &'static OperationSchema,
    pub(crate) output_schema: fn() -> &'static OperationSchema,
    pub(crate) payload_type: fn() -> TypeId,
    pub(crate) payload_type_name: fn() -> &'static str,
    pub(crate) handler: Option<(ErasedHandler, &'static str)>,
    pub(crate) file: &'static str,
    pub(crate) line: u32,
}

impl Registration {
    #[doc(hidden)]
    pub const fn contract<O: Operation>(file: &'static str, line: u32) -> Self {
        Registration {
            name: O::NAME,
            options: O::OPTIONS,
            schema: O::schema,
            output_schema: O::output_schema,
            payload_type: TypeId::of::<O>,
            payload_type_name: std::any::type_name::<O>,
            handler: None,
            file,
            line,
        }
    }

    #[doc(hidden)]
    pub const fn handler<O: Operation>(
        options: OperationOptions,
        handler: ErasedHandler,
        function: &'static str,
        file: &'static str,
        line: u32,
    ) -> Self {
        Registration {
            name: O::NAME,
            options,
            schema: O::schema,
            output_schema: O::output_schema,
            payload_type: TypeId::of::<O>,
            payload_type_name: std::any::type_name::<O>,
            handler: Some((handler, function)),
            file,
            line,
        }
    }

    /// The operation's name.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// let registration = <send_mail as pgoutbox::Handler>::REGISTRATION;
    /// assert_eq!(registration.name(), <SendMail as Operation>::NAME);
    /// ```
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The options in force for this registration (a handler's include the
    /// contract's).
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send", idempotent, max_attempts = 10, queue = "mail")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// let options = <send_mail as pgoutbox::Handler>::REGISTRATION.options();
    /// assert!(options.idempotent);
    /// assert_eq!(options.max_attempts, Some(10));
    /// assert_eq!(options.queue, Some("mail"));
    /// assert!(!options.transactional);
    /// ```
    pub fn options(&self) -> &OperationOptions {
        &self.options
    }

    /// The payload's schema and hash.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// let schema = <send_mail as pgoutbox::Handler>::REGISTRATION.schema();
    /// assert_eq!(schema.hash(), <SendMail as Operation>::schema().hash());
    /// assert!(schema.json()["properties"]["to"].is_object());
    /// ```
    pub fn schema(&self) -> &'static OperationSchema {
        (self.schema)()
    }

    /// The output type's JSON Schema and its hash (of `()` when the
    /// handler returns `Result<()>`).
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<u64> {
    ///     let _ = (ctx, to);
    ///     Ok(1)
    /// }
    ///
    /// let registration = <send_mail as pgoutbox::Handler>::REGISTRATION;
    /// assert_eq!(registration.output_schema().json()["type"], "integer");
    /// ```
    pub fn output_schema(&self) -> &'static OperationSchema {
        (self.output_schema)()
    }

    /// The payload type's name, as `std::any::type_name` gives it.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// let registration = <send_mail as pgoutbox::Handler>::REGISTRATION;
    /// assert_eq!(registration.payload_type_name(), std::any::type_name::<SendMail>());
    /// ```
    pub fn payload_type_name(&self) -> &'static str {
        (self.payload_type_name)()
    }

    /// Whether this registers a handler (not only a contract).
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// assert!(<send_mail as pgoutbox::Handler>::REGISTRATION.is_handler());
    /// ```
    pub fn is_handler(&self) -> bool {
        self.handler.is_some()
    }

    /// The handler, if this registers one. Plumbing of the dispatcher and
    /// of generated code, as its type says (`pgoutbox::__private`).
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::__private::ErasedHandler;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// let handler = <send_mail as pgoutbox::Handler>::REGISTRATION.erased_handler();
    /// assert!(matches!(handler, Some(ErasedHandler::Plain(_))));
    /// ```
    #[doc(hidden)]
    pub fn erased_handler(&self) -> Option<ErasedHandler> {
        self.handler.map(|(h, _)| h)
    }

    /// Where the `#[operation]` attribute is: `file:line`.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// // Where duplicate-name errors point.
    /// let location = <send_mail as pgoutbox::Handler>::REGISTRATION.location();
    /// let (file, line) = location.rsplit_once(':').unwrap();
    /// assert!(file.ends_with(".rs"));
    /// assert!(line.parse::<u32>().is_ok());
    /// ```
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    pub(crate) fn payload_type(&self) -> TypeId {
        (self.payload_type)()
    }

    /// The registration of an operation known by name only (the
    /// `pgoutbox relay` command's): any JSON payload, default options.
    #[cfg(feature = "nats")]
    pub(crate) fn untyped(name: &'static str) -> Registration {
        fn any_payload() -> &'static OperationSchema {
            static ANY: std::sync::OnceLock<OperationSchema> = std::sync::OnceLock::new();
            ANY.get_or_init(|| OperationSchema::from_json(serde_json::json!({})))
        }
        Registration {
            name,
            options: OperationOptions::new(),
            schema: any_payload,
            output_schema: any_payload,
            payload_type: TypeId::of::<serde_json::Value>,
            payload_type_name: std::any::type_name::<serde_json::Value>,
            handler: None,
            file: "the `pgoutbox relay` command",
            line: 0,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self.handler {
            Some((_, function)) => format!("handler `{function}` at {}", self.location()),
            None => format!(
                "contract `{}` at {}",
                self.payload_type_name(),
                self.location()
            ),
        }
    }
}

/// A link-time registration, as `inventory` collects it.
#[doc(hidden)]
#[derive(Debug)]
pub struct Registered(pub &'static Registration);

inventory::collect!(Registered);

/// A handle on a handler's registration, implemented by the item that
/// `#[operation]` generates beside a handler function (a braced struct with
/// the function's name, in the type namespace only, as Rocket does for
/// routes). [`handlers!`](crate::handlers) uses it to list handlers by name.
///
/// ```
/// use pgoutbox::prelude::*;
/// use pgoutbox::Handler;
///
/// #[operation("mail.send")]
/// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// // `send_mail` names the function and, in the type namespace, its handle.
/// assert_eq!(<send_mail as Handler>::REGISTRATION.name(), "mail.send");
/// ```
pub trait Handler {
    /// The handler's registration.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("ledger.record", transactional)]
    /// async fn record(ctx: &mut TxContext<'_>, amount_cents: i64) -> Result<()> {
    ///     let _ = (ctx, amount_cents);
    ///     Ok(())
    /// }
    ///
    /// let registration = <record as pgoutbox::Handler>::REGISTRATION;
    /// assert!(registration.options().transactional);
    /// ```
    const REGISTRATION: &'static Registration;
}

/// Lists handlers explicitly, for targets where link-time collection by
/// `inventory` is not wanted:
///
/// ```
/// use pgoutbox::prelude::*;
///
/// #[operation("mail.send")]
/// async fn send(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// let registry = Registry::from_registrations(pgoutbox::handlers![send]).unwrap();
/// assert!(registry.get("mail.send").unwrap().is_handler());
/// ```
#[macro_export]
macro_rules! handlers {
    ($($handler:path),* $(,)?) => {
        [$(<$handler as $crate::Handler>::REGISTRATION),*]
    };
}

/// One operation name and what the binary has for it.
///
/// ```
/// use pgoutbox::prelude::*;
///
/// #[operation("mail.send")]
/// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// let registry = Registry::from_registrations(pgoutbox::handlers![send_mail])?;
/// let entry = registry.get("mail.send").unwrap();
/// assert!(entry.is_handler());
/// assert_eq!(entry.registration().name(), "mail.send");
/// assert!(std::ptr::eq(entry.handler().unwrap(), entry.registration()));
/// # Ok::<(), pgoutbox::RegistryError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    contract: Option<&'static Registration>,
    handler: Option<&'static Registration>,
}

impl Entry {
    /// The registration in force: the handler if there is one, otherwise
    /// the contract.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send", idempotent)]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// let registry = Registry::from_registrations(pgoutbox::handlers![send_mail])?;
    /// assert!(registry.get("mail.send").unwrap().registration().options().idempotent);
    /// # Ok::<(), pgoutbox::RegistryError>(())
    /// ```
    pub fn registration(&self) -> &'static Registration {
        self.handler
            .or(self.contract)
            .expect("an entry holds at least one registration")
    }

    /// The handler's registration, if this binary handles the operation.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// let registry = Registry::from_registrations(pgoutbox::handlers![send_mail])?;
    /// let handler = registry.get("mail.send").and_then(pgoutbox::Entry::handler);
    /// assert_eq!(handler.map(|h| h.name()), Some("mail.send"));
    /// # Ok::<(), pgoutbox::RegistryError>(())
    /// ```
    pub fn handler(&self) -> Option<&'static Registration> {
        self.handler
    }

    /// Whether this binary handles the operation.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// let registry = Registry::from_registrations(pgoutbox::handlers![send_mail])?;
    /// assert!(registry.get("mail.send").unwrap().is_handler());
    /// # Ok::<(), pgoutbox::RegistryError>(())
    /// ```
    pub fn is_handler(&self) -> bool {
        self.handler.is_some()
    }
}

/// Every operation of the binary, by name, checked for duplicates.
///
/// ```standalone_crate
/// let registry = pgoutbox::Registry::from_inventory().expect("no duplicate names");
/// for (name, entry) in registry.iter() {
///     println!("{name}: {}", entry.registration().schema().hash());
/// }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: BTreeMap<&'static str, Entry>,
}

/// Two registrations that cannot both stand.
///
/// ```
/// use pgoutbox::prelude::*;
///
/// #[operation("mail.send")]
/// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// #[operation("mail.send")]
/// async fn send_letter(ctx: &mut Context, address: String) -> Result<()> {
///     let _ = (ctx, address);
///     Ok(())
/// }
///
/// let err = Registry::from_registrations(pgoutbox::handlers![send_mail, send_letter]).unwrap_err();
/// assert_eq!(err.name(), "mail.send");
/// assert!(err.to_string().starts_with("operation name `mail.send` is registered twice: handler `"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operation name `{name}` is registered twice: {first} and {second}")]
pub struct RegistryError {
    name: &'static str,
    first: String,
    second: String,
}

impl RegistryError {
    /// The duplicated name.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("billing.charge")]
    /// async fn charge(ctx: &mut Context, amount_cents: i64) -> Result<()> {
    ///     let _ = (ctx, amount_cents);
    ///     Ok(())
    /// }
    ///
    /// #[operation("billing.charge")]
    /// async fn charge_again(ctx: &mut Context, cents: u32) -> Result<()> {
    ///     let _ = (ctx, cents);
    ///     Ok(())
    /// }
    ///
    /// let err = Registry::from_registrations(pgoutbox::handlers![charge, charge_again]).unwrap_err();
    /// assert_eq!(err.name(), "billing.charge");
    /// ```
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl Registry {
    /// Every registration linked into the binary.
    ///
    /// ```standalone_crate
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// // Every `#[operation]` linked into this binary, without listing any.
    /// let registry = Registry::from_inventory()?;
    /// assert!(registry.get("mail.send").is_some_and(pgoutbox::Entry::is_handler));
    /// # Ok::<(), pgoutbox::RegistryError>(())
    /// ```
    pub fn from_inventory() -> Result<Registry, RegistryError> {
        Self::from_registrations(inventory::iter::<Registered>.into_iter().map(|r| r.0))
    }

    /// Exactly the given registrations (see [`handlers!`](crate::handlers)).
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// #[operation("mail.digest")]
    /// async fn send_digest(ctx: &mut Context, user_id: i64) -> Result<()> {
    ///     let _ = (ctx, user_id);
    ///     Ok(())
    /// }
    ///
    /// let registry = Registry::from_registrations(pgoutbox::handlers![send_mail, send_digest])?;
    /// assert_eq!(registry.iter().map(|(name, _)| name).collect::<Vec<_>>(), ["mail.digest", "mail.send"]);
    /// # Ok::<(), pgoutbox::RegistryError>(())
    /// ```
    pub fn from_registrations(
        registrations: impl IntoIterator<Item = &'static Registration>,
    ) -> Result<Registry, RegistryError> {
        let mut all: Vec<&'static Registration> = registrations.into_iter().collect();
        // Deterministic error messages whatever the link order.
        all.sort_by(|a, b| (a.file, a.line).cmp(&(b.file, b.line)));
        let mut registry = Registry::default();
        for registration in all {
            registry.insert(registration)?;
        }
        Ok(registry)
    }

    fn insert(&mut self, new: &'static Registration) -> Result<(), RegistryError> {
        let entry = self.entries.entry(new.name).or_insert(Entry {
            contract: None,
            handler: None,
        });
        let duplicate = |old: &Registration| RegistryError {
            name: new.name,
            first: old.describe(),
            second: new.describe(),
        };
        // A contract and a handler of the same payload type pair up; any
        // other combination under one name is a duplicate.
        for old in [entry.contract, entry.handler].into_iter().flatten() {
            if std::ptr::eq(old, new) {
                return Ok(());
            }
            if old.payload_type() != new.payload_type() {
                return Err(duplicate(old));
            }
        }
        let slot = if new.is_handler() {
            &mut entry.handler
        } else {
            &mut entry.contract
        };
        if let Some(old) = slot {
            return Err(duplicate(old));
        }
        *slot = Some(new);
        Ok(())
    }

    /// The entry for `name`.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// let registry = Registry::from_registrations(pgoutbox::handlers![send_mail])?;
    /// assert!(registry.get("mail.send").is_some());
    /// assert!(registry.get("mail.unknown").is_none());
    /// # Ok::<(), pgoutbox::RegistryError>(())
    /// ```
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// Every entry, by name.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// let registry = Registry::from_registrations(pgoutbox::handlers![send_mail])?;
    /// for (name, entry) in registry.iter() {
    ///     assert_eq!(name, entry.registration().name());
    /// }
    /// # Ok::<(), pgoutbox::RegistryError>(())
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Entry)> {
        self.entries.iter().map(|(name, entry)| (*name, entry))
    }

    /// The number of operation names.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// assert_eq!(Registry::from_registrations(pgoutbox::handlers![send_mail])?.len(), 1);
    /// # Ok::<(), pgoutbox::RegistryError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no operation is registered.
    ///
    /// ```
    /// assert!(pgoutbox::Registry::default().is_empty());
    /// assert!(pgoutbox::Registry::from_registrations([])?.is_empty());
    /// # Ok::<(), pgoutbox::RegistryError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
