//! Routers: which operations a worker process handles, grouped the way
//! `FastAPI` groups routes.

use std::any::TypeId;
use std::collections::BTreeMap;

use crate::definition::Operation;
use crate::registry::{Registration, Registry};

/// A group of operations, selected by type, under a name prefix.
///
/// Operation names are fixed at compile time by `#[operation("…")]`, so a
/// router does not add its prefix to them: it *checks* that every operation
/// it holds is named under its prefix, and that included routers extend it.
/// The routers given to a worker decide which operations it claims; it never
/// runs anything else.
///
/// ```standalone_crate
/// use pgoutbox::prelude::*;
///
/// #[operation("billing.charge", transactional)]
/// async fn charge(ctx: &mut TxContext<'_>, amount_cents: i64) -> Result<()> {
///     let _ = (ctx, amount_cents);
///     Ok(())
/// }
///
/// #[operation("billing.refunds.issue")]
/// async fn issue_refund(ctx: &mut Context, amount_cents: i64) -> Result<()> {
///     let _ = (ctx, amount_cents);
///     Ok(())
/// }
///
/// let refunds = WorkflowRouter::with_prefix("billing.refunds").operation::<IssueRefund>();
/// let billing = WorkflowRouter::with_prefix("billing")
///     .operation::<Charge>()
///     .include_router(refunds);
/// let app = WorkflowRouter::new().include_router(billing);
///
/// let routes = app.resolve(&Registry::from_inventory()?)?;
/// assert_eq!(routes.names().collect::<Vec<_>>(), ["billing.charge", "billing.refunds.issue"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct WorkflowRouter {
    prefix: Option<String>,
    operations: Vec<Selected>,
    routers: Vec<WorkflowRouter>,
    concurrency: Option<usize>,
}

#[derive(Debug, Clone)]
struct Selected {
    name: &'static str,
    type_id: TypeId,
    type_name: &'static str,
}

/// Why routers cannot be used as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouterError {
    /// A prefix that is not a valid name prefix.
    #[error(
        "invalid router prefix `{0}`: expected lower-case segments of `[a-z0-9_]` joined by dots"
    )]
    InvalidPrefix(String),
    /// An operation whose name is not under its router's prefix.
    #[error("operation `{name}` (type `{type_name}`) is not under its router's prefix `{prefix}`")]
    OutsidePrefix {
        /// The operation's name.
        name: &'static str,
        /// Its payload type.
        type_name: &'static str,
        /// The router's prefix.
        prefix: String,
    },
    /// An included router whose prefix does not extend its parent's.
    #[error("router prefix `{child}` is included under `{parent}`, which it does not extend")]
    NestedPrefix {
        /// The parent's prefix.
        parent: String,
        /// The included router's prefix.
        child: String,
    },
    /// The same operation held by two routers.
    #[error("operation `{name}` is included twice: by router {first} and by router {second}")]
    Duplicate {
        /// The operation's name.
        name: &'static str,
        /// The first router's prefix.
        first: String,
        /// The second router's prefix.
        second: String,
    },
    /// An operation with no handler in this binary.
    #[error(
        "operation `{name}` (type `{type_name}`) has no handler in this binary: \
         annotate an `async fn` with `#[operation(contract = {type_name})]`"
    )]
    NoHandler {
        /// The operation's name.
        name: &'static str,
        /// Its payload type.
        type_name: &'static str,
    },
    /// The handler registered under the name takes another payload type.
    #[error(
        "operation `{name}` is selected as type `{selected}`, but its handler takes `{registered}`"
    )]
    TypeMismatch {
        /// The operation's name.
        name: &'static str,
        /// The type the router selected.
        selected: &'static str,
        /// The type the registered handler takes.
        registered: &'static str,
    },
}

/// The handlers a worker runs, resolved from routers against a registry.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: BTreeMap<&'static str, Route>,
}

/// One operation a worker handles.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    registration: &'static Registration,
    concurrency: Option<usize>,
}

impl Route {
    /// The handler's registration.
    pub fn registration(&self) -> &'static Registration {
        self.registration
    }

    /// The concurrency limit of the innermost router that sets one.
    pub fn concurrency(&self) -> Option<usize> {
        self.concurrency
    }
}

impl Routes {
    /// The names handled, in order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.keys().copied()
    }

    /// The route for `name`.
    pub fn get(&self, name: &str) -> Option<&Route> {
        self.routes.get(name)
    }

    /// Every route, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Route)> {
        self.routes.iter().map(|(name, route)| (*name, route))
    }

    /// The number of operations handled.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no operation is handled.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl WorkflowRouter {
    /// A router without a prefix (the root of an application).
    pub fn new() -> Self {
        Self::default()
    }

    /// A router whose operations must all be named `prefix.…`.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        WorkflowRouter {
            prefix: Some(prefix.into()),
            ..Self::default()
        }
    }

    /// Selects the operation whose payload type is `O`.
    #[must_use]
    pub fn operation<O: Operation>(mut self) -> Self {
        self.operations.push(Selected {
            name: O::NAME,
            type_id: TypeId::of::<O>(),
            type_name: std::any::type_name::<O>(),
        });
        self
    }

    /// Includes another router's operations.
    #[must_use]
    pub fn include_router(mut self, router: WorkflowRouter) -> Self {
        self.routers.push(router);
        self
    }

    /// Sets a limit on how many of this group's handlers run at once in a
    /// process (within its `n_workers`); included routers inherit it unless
    /// they set their own, and [`Route::concurrency`] reports it.
    ///
    /// The runtime does not enforce it yet: a process runs up to
    /// `n_workers` handlers of any of its routes. To bound a group today,
    /// run it in processes of its own (its own router or
    /// `workflow_system.queues`).
    #[must_use]
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = Some(limit);
        self
    }

    /// The prefix, if any.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// Checks the routers and finds each selected operation's handler.
    ///
    /// [`WorkflowSystemBuilder::start`](crate::WorkflowSystemBuilder::start)
    /// calls it; calling it in a test finds a misplaced operation without a
    /// database:
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::RouterError;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// let registry = Registry::from_registrations(pgoutbox::handlers![send_mail])?;
    ///
    /// let ok = WorkflowRouter::with_prefix("mail").operation::<SendMail>();
    /// assert_eq!(ok.resolve(&registry)?.names().collect::<Vec<_>>(), ["mail.send"]);
    ///
    /// let misplaced = WorkflowRouter::with_prefix("billing").operation::<SendMail>();
    /// assert!(matches!(misplaced.resolve(&registry), Err(RouterError::OutsidePrefix { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resolve(&self, registry: &Registry) -> Result<Routes, RouterError> {
        let mut routes = Routes::default();
        let mut owners: BTreeMap<&'static str, String> = BTreeMap::new();
        self.resolve_into(registry, None, None, &mut routes, &mut owners)?;
        Ok(routes)
    }

    fn label(&self) -> String {
        match &self.prefix {
            Some(prefix) => format!("`{prefix}`"),
            None => "(no prefix)".to_owned(),
        }
    }

    fn resolve_into(
        &self,
        registry: &Registry,
        parent: Option<&str>,
        inherited_concurrency: Option<usize>,
        routes: &mut Routes,
        owners: &mut BTreeMap<&'static str, String>,
    ) -> Result<(), RouterError> {
        if let Some(prefix) = &self.prefix {
            if !crate::name::is_valid(prefix) {
                return Err(RouterError::InvalidPrefix(prefix.clone()));
            }
            if let Some(parent) = parent
                && !crate::name::is_under(prefix, parent)
            {
                return Err(RouterError::NestedPrefix {
                    parent: parent.to_owned(),
                    child: prefix.clone(),
                });
            }
        }
        let prefix = self.prefix.as_deref().or(parent);
        let concurrency = self.concurrency.or(inherited_concurrency);
        for selected in &self.operations {
            if let Some(prefix) = prefix
                && !crate::name::is_under(selected.name, prefix)
            {
                return Err(RouterError::OutsidePrefix {
                    name: selected.name,
                    type_name: selected.type_name,
                    prefix: prefix.to_owned(),
                });
            }
            if let Some(first) = owners.get(selected.name) {
                return Err(RouterError::Duplicate {
                    name: selected.name,
                    first: first.clone(),
                    second: self.label(),
                });
            }
            let handler = registry
                .get(selected.name)
                .and_then(crate::registry::Entry::handler)
                .ok_or(RouterError::NoHandler {
                    name: selected.name,
                    type_name: selected.type_name,
                })?;
            if handler.payload_type() != selected.type_id {
                return Err(RouterError::TypeMismatch {
                    name: selected.name,
                    selected: selected.type_name,
                    registered: handler.payload_type_name(),
                });
            }
            owners.insert(selected.name, self.label());
            routes.routes.insert(
                selected.name,
                Route {
                    registration: handler,
                    concurrency,
                },
            );
        }
        for router in &self.routers {
            router.resolve_into(registry, prefix, concurrency, routes, owners)?;
        }
        Ok(())
    }
}
