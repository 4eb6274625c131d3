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
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a type-erased handler did not succeed.
#[derive(Debug)]
pub enum HandlerFailure {
    /// The stored payload no longer decodes into the payload type.
    Decode(serde_json::Error),
    /// The handler returned an error.
    Failed(HandlerError),
}

/// A plain handler with its payload type erased: decode JSON, call.
pub type PlainHandler =
    for<'a> fn(&'a mut Context, serde_json::Value) -> BoxFuture<'a, Result<(), HandlerFailure>>;

/// A transactional handler with its payload type erased.
pub type TxHandler = for<'a, 'c> fn(
    &'a mut TxContext<'c>,
    serde_json::Value,
) -> BoxFuture<'a, Result<(), HandlerFailure>>;

/// How a registered handler is called.
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
#[derive(Debug)]
pub struct Registration {
    pub(crate) name: &'static str,
    pub(crate) options: OperationOptions,
    pub(crate) schema: fn() -> &'static OperationSchema,
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
            payload_type: TypeId::of::<O>,
            payload_type_name: std::any::type_name::<O>,
            handler: Some((handler, function)),
            file,
            line,
        }
    }

    /// The operation's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The options in force for this registration (a handler's include the
    /// contract's).
    pub fn options(&self) -> &OperationOptions {
        &self.options
    }

    /// The payload's schema and hash.
    pub fn schema(&self) -> &'static OperationSchema {
        (self.schema)()
    }

    /// The payload type's name, as `std::any::type_name` gives it.
    pub fn payload_type_name(&self) -> &'static str {
        (self.payload_type_name)()
    }

    /// Whether this registers a handler (not only a contract).
    pub fn is_handler(&self) -> bool {
        self.handler.is_some()
    }

    /// The handler, if this registers one.
    pub fn erased_handler(&self) -> Option<ErasedHandler> {
        self.handler.map(|(h, _)| h)
    }

    /// Where the `#[operation]` attribute is: `file:line`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    pub(crate) fn payload_type(&self) -> TypeId {
        (self.payload_type)()
    }

    fn describe(&self) -> String {
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
pub trait Handler {
    /// The handler's registration.
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
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    contract: Option<&'static Registration>,
    handler: Option<&'static Registration>,
}

impl Entry {
    /// The registration in force: the handler if there is one, otherwise
    /// the contract.
    pub fn registration(&self) -> &'static Registration {
        self.handler
            .or(self.contract)
            .expect("an entry holds at least one registration")
    }

    /// The handler's registration, if this binary handles the operation.
    pub fn handler(&self) -> Option<&'static Registration> {
        self.handler
    }

    /// Whether this binary handles the operation.
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operation name `{name}` is registered twice: {first} and {second}")]
pub struct RegistryError {
    name: &'static str,
    first: String,
    second: String,
}

impl RegistryError {
    /// The duplicated name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl Registry {
    /// Every registration linked into the binary.
    pub fn from_inventory() -> Result<Registry, RegistryError> {
        Self::from_registrations(inventory::iter::<Registered>.into_iter().map(|r| r.0))
    }

    /// Exactly the given registrations (see [`handlers!`](crate::handlers)).
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
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// Every entry, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Entry)> {
        self.entries.iter().map(|(name, entry)| (*name, entry))
    }

    /// The number of operation names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no operation is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
