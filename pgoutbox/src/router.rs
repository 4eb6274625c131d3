//! Routers: which operations a worker process handles, grouped the way
//! `FastAPI` groups routes.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::definition::Operation;
use crate::publish::{PublishError, PublishOptions, Publisher};
use crate::registry::{Registration, Registry};
#[cfg(feature = "nats")]
use crate::relay::{Relay, RouteRelay};
use crate::schedule::{Compiled, Schedule, ScheduleError, Tick};
use crate::store::NewOperation;
use crate::workflow::Workflow;

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
    schedules: Vec<Declared>,
    /// Operations relayed rather than handled (`relay::<T>()`).
    #[cfg(feature = "nats")]
    relays: Vec<SelectedRelay>,
}

/// Builds a tick's row: the payload closure, its type erased.
type MakeRow = Arc<
    dyn Fn(&Publisher, &Tick, PublishOptions) -> Result<NewOperation, PublishError> + Send + Sync,
>;

/// Builds a tick's workflow (`WorkflowRouter::schedule_workflow`).
type MakeWorkflow = Arc<dyn Fn(Tick) -> Workflow + Send + Sync>;

/// What a schedule publishes at each tick.
#[derive(Clone)]
pub(crate) enum Make {
    /// One operation, named `name`, whose row `row` builds.
    Operation {
        name: &'static str,
        type_name: &'static str,
        row: MakeRow,
    },
    /// A workflow, which `build` builds; published under the key
    /// `schedule:<name>:<tick>` like an operation.
    Workflow(MakeWorkflow),
}

/// A schedule as declared on a router.
#[derive(Clone)]
struct Declared {
    schedule: Schedule,
    make: Make,
}

impl Declared {
    /// What the schedule publishes, as listed and hashed into its
    /// declaration: the operation's name, or `workflow <schedule name>`
    /// (not an operation name, so never mistaken for one).
    fn publishes(&self) -> String {
        match &self.make {
            Make::Operation { name, .. } => (*name).to_owned(),
            Make::Workflow(_) => format!("workflow {}", self.schedule.name().unwrap_or_default()),
        }
    }
}

impl fmt::Debug for Declared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Declared")
            .field("schedule", &self.schedule)
            .field("publishes", &self.publishes())
            .finish_non_exhaustive()
    }
}

/// A schedule of resolved routes, checked and ready to tick.
#[derive(Clone)]
pub(crate) struct ScheduledRoute {
    /// The schedule's name.
    pub(crate) name: String,
    /// What it publishes: the operation's name, or `workflow <name>`.
    pub(crate) operation: String,
    /// The declaration as given.
    pub(crate) schedule: Schedule,
    /// The parsed expression and zone.
    pub(crate) compiled: Compiled,
    /// The hash identifying the declaration among workers.
    pub(crate) declaration: String,
    /// What a tick publishes.
    pub(crate) make: Make,
}

impl fmt::Debug for ScheduledRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScheduledRoute")
            .field("name", &self.name)
            .field("operation", &self.operation)
            .field("schedule", &self.schedule)
            .field("declaration", &self.declaration)
            .finish_non_exhaustive()
    }
}

/// An operation selected for a relay, by type.
#[cfg(feature = "nats")]
#[derive(Debug, Clone)]
struct SelectedRelay {
    selected: Selected,
    relay: Relay,
    location: &'static std::panic::Location<'static>,
    /// The type's contract, for a registry that does not list it.
    contract: fn(&'static str, u32) -> Registration,
}

#[derive(Debug, Clone)]
struct Selected {
    name: &'static str,
    type_id: TypeId,
    type_name: &'static str,
}

/// Why routers cannot be used as given.
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
/// let err = WorkflowRouter::with_prefix("Mail").operation::<SendMail>().resolve(&registry).unwrap_err();
/// assert_eq!(err, RouterError::InvalidPrefix("Mail".into()));
/// let err = WorkflowRouter::new().operation::<SendMail>().concurrency(0).resolve(&registry).unwrap_err();
/// assert!(matches!(err, RouterError::ZeroConcurrency { .. }));
/// assert!(err.to_string().contains("concurrency limit of 0"));
/// # Ok::<(), pgoutbox::RegistryError>(())
/// ```
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
    /// A concurrency limit of zero, under which nothing would ever run.
    #[error(
        "router {router} has a concurrency limit of 0: its operations would never run; \
         remove the limit or set one of at least 1"
    )]
    ZeroConcurrency {
        /// The router's prefix, or `(no prefix)`.
        router: String,
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
    /// A schedule that cannot be used (its expression, zone or name).
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// A workflow schedule whose name is not under its router's prefix
    /// ([`WorkflowRouter::schedule_workflow`]).
    #[error("schedule `{name}` (a workflow) is not under its router's prefix `{prefix}`")]
    ScheduleOutsidePrefix {
        /// The schedule's name.
        name: String,
        /// The router's prefix.
        prefix: String,
    },
    /// Two schedules with one name.
    #[error(
        "schedule `{name}` is declared twice: give one of them another name with \
         `Schedule::named` (for a workflow: the name given to `schedule_workflow`)"
    )]
    DuplicateSchedule {
        /// The schedule's name.
        name: String,
    },
    /// A relayed operation also has a handler: it would be handled two
    /// ways.
    #[error(
        "operation `{name}` has both a handler ({handler}) and a relay (at {relay}): a relayed \
         operation needs no handler; remove one of them"
    )]
    RelayAndHandler {
        /// The operation's name.
        name: &'static str,
        /// The handler and where it is.
        handler: String,
        /// Where the relay is declared.
        relay: String,
    },
    /// A relayed operation is not declared `idempotent`.
    #[error(
        "operation `{name}` (type `{type_name}`) is relayed but not declared `idempotent`: a \
         relay re-sends a message whose acknowledgement it did not see (the broker drops the \
         copy), so add `idempotent` to its `#[operation(…)]`"
    )]
    RelayNotIdempotent {
        /// The operation's name.
        name: &'static str,
        /// Its payload type.
        type_name: &'static str,
    },
    /// A relay's subject is not valid for the operation.
    #[error("{message} (relay declared at {relay})")]
    RelaySubject {
        /// The operation's name.
        name: &'static str,
        /// What is wrong.
        message: String,
        /// Where the relay is declared.
        relay: String,
    },
}

/// The handlers a worker runs, resolved from routers against a registry.
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
/// let routes = WorkflowRouter::with_prefix("mail").operation::<SendMail>().resolve(&registry)?;
/// assert_eq!(routes.len(), 1);
/// assert_eq!(routes.get("mail.send").unwrap().registration().name(), "mail.send");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
#[allow(clippy::struct_field_names)] // `routes` is the map of routes proper, beside groups and schedules.
pub struct Routes {
    routes: BTreeMap<&'static str, Route>,
    groups: Vec<Group>,
    schedules: Vec<ScheduledRoute>,
}

/// A router that sets a concurrency limit, as the runtime enforces it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Group {
    /// How many of the group's handlers may run at once.
    pub(crate) limit: usize,
    /// The innermost enclosing group, whose limit counts this group's
    /// handlers too.
    pub(crate) parent: Option<usize>,
}

/// One operation a worker handles.
///
/// ```
/// use pgoutbox::prelude::*;
///
/// #[operation("partner.sync")]
/// async fn sync_account(ctx: &mut Context, account: i64) -> Result<()> {
///     let _ = (ctx, account);
///     Ok(())
/// }
///
/// let registry = Registry::from_registrations(pgoutbox::handlers![sync_account])?;
/// let routes = WorkflowRouter::with_prefix("partner").operation::<SyncAccount>().concurrency(2).resolve(&registry)?;
/// let route = routes.get("partner.sync").unwrap();
/// assert_eq!(route.concurrency(), Some(2));
/// assert!(route.registration().is_handler());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Route {
    registration: &'static Registration,
    concurrency: Option<usize>,
    group: Option<usize>,
    /// The relay that is this operation's handler, if it is relayed.
    #[cfg(feature = "nats")]
    relay: Option<RouteRelay>,
}

impl Route {
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
    /// let registry = Registry::from_registrations(pgoutbox::handlers![record])?;
    /// let routes = WorkflowRouter::new().operation::<Record>().resolve(&registry)?;
    /// assert!(routes.get("ledger.record").unwrap().registration().options().transactional);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn registration(&self) -> &'static Registration {
        self.registration
    }

    /// Whether the operation is relayed (`WorkflowRouter::relay`) rather
    /// than handled.
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
    /// let routes = WorkflowRouter::new().operation::<SendMail>().resolve(&registry)?;
    /// assert!(!routes.get("mail.send").unwrap().is_relayed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_relayed(&self) -> bool {
        #[cfg(feature = "nats")]
        return self.relay.is_some();
        #[cfg(not(feature = "nats"))]
        false
    }

    /// The relay that is this operation's handler.
    #[cfg(feature = "nats")]
    pub(crate) fn relay(&self) -> Option<&RouteRelay> {
        self.relay.as_ref()
    }

    /// The concurrency limit of the innermost router that sets one (the
    /// limits of the routers around it apply too: see
    /// [`WorkflowRouter::concurrency`]).
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
    /// let unlimited = WorkflowRouter::new().operation::<SendMail>().resolve(&registry)?;
    /// assert_eq!(unlimited.get("mail.send").unwrap().concurrency(), None); // only `n_workers`
    /// // A limit set on an enclosing router applies to what it includes.
    /// let inner = WorkflowRouter::with_prefix("mail").operation::<SendMail>();
    /// let limited = WorkflowRouter::new().include_router(inner).concurrency(3).resolve(&registry)?;
    /// assert_eq!(limited.get("mail.send").unwrap().concurrency(), Some(3));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn concurrency(&self) -> Option<usize> {
        self.concurrency
    }

    /// The innermost limited group holding this operation, an index into
    /// [`Routes::groups`].
    pub(crate) fn group(&self) -> Option<usize> {
        self.group
    }
}

impl Routes {
    /// The names handled, in order.
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
    /// let router = WorkflowRouter::with_prefix("mail").operation::<SendMail>().operation::<SendDigest>();
    /// assert_eq!(router.resolve(&registry)?.names().collect::<Vec<_>>(), ["mail.digest", "mail.send"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.keys().copied()
    }

    /// The route for `name`.
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
    /// let routes = WorkflowRouter::new().operation::<SendMail>().resolve(&registry)?;
    /// assert!(routes.get("mail.send").is_some());
    /// assert!(routes.get("billing.charge").is_none()); // never claimed by this process
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, name: &str) -> Option<&Route> {
        self.routes.get(name)
    }

    /// Every route, by name.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send", queue = "mail")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// let registry = Registry::from_registrations(pgoutbox::handlers![send_mail])?;
    /// let routes = WorkflowRouter::new().operation::<SendMail>().resolve(&registry)?;
    /// for (name, route) in routes.iter() {
    ///     assert_eq!(route.registration().name(), name);
    ///     assert_eq!(route.registration().options().queue, Some("mail"));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Route)> {
        self.routes.iter().map(|(name, route)| (*name, route))
    }

    /// The number of operations handled.
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
    /// assert_eq!(WorkflowRouter::new().operation::<SendMail>().resolve(&registry)?.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no operation is handled.
    ///
    /// ```
    /// use pgoutbox::{Registry, WorkflowRouter};
    ///
    /// // A system refuses to start on routes like these (`StartError::NoOperations`).
    /// let routes = WorkflowRouter::new().resolve(&Registry::default())?;
    /// assert!(routes.is_empty());
    /// # Ok::<(), pgoutbox::RouterError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The routers that set a concurrency limit; an enclosing group comes
    /// before the groups it includes.
    pub(crate) fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The names of the schedules this process publishes, in order.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::Schedule;
    ///
    /// #[operation("reports.daily")]
    /// async fn daily_report(ctx: &mut Context) -> Result<()> {
    ///     let _ = ctx;
    ///     Ok(())
    /// }
    ///
    /// let router = WorkflowRouter::new()
    ///     .schedule::<DailyReport>(Schedule::cron("0 6 * * *"), |_| DailyReport {})
    ///     .schedule::<DailyReport>(Schedule::cron("0 18 * * *").named("reports.daily.evening"), |_| DailyReport {});
    /// let routes = router.resolve(&Registry::default())?;
    /// assert_eq!(routes.schedule_names().collect::<Vec<_>>(), ["reports.daily", "reports.daily.evening"]);
    /// # Ok::<(), pgoutbox::RouterError>(())
    /// ```
    pub fn schedule_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.schedules.iter().map(|s| s.name.as_str())
    }

    /// The schedules, checked, in name order.
    pub(crate) fn schedules(&self) -> &[ScheduledRoute] {
        &self.schedules
    }
}

impl WorkflowRouter {
    /// A router without a prefix (the root of an application).
    ///
    /// ```
    /// use pgoutbox::WorkflowRouter;
    ///
    /// let root = WorkflowRouter::new();
    /// assert_eq!(root.prefix(), None); // any operation name may be added
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// A router whose operations must all be named `prefix.…`.
    ///
    /// ```
    /// use pgoutbox::WorkflowRouter;
    ///
    /// let billing = WorkflowRouter::with_prefix("billing");
    /// assert_eq!(billing.prefix(), Some("billing"));
    /// ```
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        WorkflowRouter {
            prefix: Some(prefix.into()),
            ..Self::default()
        }
    }

    /// Selects the operation whose payload type is `O`.
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
    /// // Selected by type: a typo in a name cannot compile.
    /// let router = WorkflowRouter::with_prefix("billing").operation::<Charge>();
    /// let registry = Registry::from_registrations(pgoutbox::handlers![charge])?;
    /// assert_eq!(router.resolve(&registry)?.names().collect::<Vec<_>>(), ["billing.charge"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn operation<O: Operation>(mut self) -> Self {
        self.operations.push(Selected {
            name: O::NAME,
            type_id: TypeId::of::<O>(),
            type_name: std::any::type_name::<O>(),
        });
        self
    }

    /// Selects the operation whose payload type is `O` and hands it to
    /// `relay` (a broker) instead of a handler: the relay is its handler.
    /// The operation needs no handler (one registered for it is refused
    /// when the routers are resolved, naming both) and must be declared
    /// `idempotent`; a subject template is checked against its schema.
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::relay::Relay;
    ///
    /// #[operation("orders.placed", idempotent)]
    /// pub struct OrderPlaced {
    ///     order_id: i64,
    ///     region: String,
    /// }
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    /// let router = WorkflowRouter::with_prefix("orders")
    ///     .relay::<OrderPlaced>(Relay::jetstream(&client, "events.orders.{region}"));
    /// let routes = router.resolve(&Registry::from_inventory()?)?;
    /// assert!(routes.get("orders.placed").unwrap().is_relayed());
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "nats")]
    #[must_use]
    #[track_caller]
    pub fn relay<O: Operation>(mut self, relay: Relay) -> Self {
        self.relays.push(SelectedRelay {
            selected: Selected {
                name: O::NAME,
                type_id: TypeId::of::<O>(),
                type_name: std::any::type_name::<O>(),
            },
            relay,
            location: std::panic::Location::caller(),
            contract: Registration::contract::<O>,
        });
        self
    }

    /// Includes another router's operations.
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
    /// let mail = || WorkflowRouter::with_prefix("mail").operation::<SendMail>();
    /// let app = WorkflowRouter::new().include_router(mail());
    /// assert_eq!(app.resolve(&registry)?.len(), 1);
    /// // An included router must extend its parent's prefix.
    /// let misplaced = WorkflowRouter::with_prefix("billing").include_router(mail());
    /// assert!(matches!(misplaced.resolve(&registry), Err(RouterError::NestedPrefix { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn include_router(mut self, router: WorkflowRouter) -> Self {
        self.routers.push(router);
        self
    }

    /// Sets a limit on how many of this router's handlers run at once in a
    /// process, on top of the process-wide `n_workers`.
    ///
    /// The limit counts the handlers of this router's operations and of
    /// every router it includes, at any depth. An included router without
    /// a limit of its own shares this one; an included router with its own
    /// limit is bounded by both: its own limit for its operations, and this
    /// one for the whole group. [`Route::concurrency`] reports the
    /// innermost limit. A handler holds its place from the claim until it
    /// returns (for a transactional handler, until its transaction has
    /// committed or rolled back), like its `n_workers` slot. A group at its
    /// limit does not hold back the other operations of the process: they
    /// are claimed as usual.
    ///
    /// The limit is per process: `k` processes running the same router run
    /// up to `k × limit` of its handlers. A limit of `0` is refused when the
    /// routers are resolved.
    ///
    /// ```standalone_crate
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("partner.sync")]
    /// async fn sync_account(ctx: &mut Context, account: i64) -> Result<()> {
    ///     let _ = (ctx, account);
    ///     Ok(())
    /// }
    ///
    /// #[operation("partner.reports.build")]
    /// async fn build_report(ctx: &mut Context, account: i64) -> Result<()> {
    ///     let _ = (ctx, account);
    ///     Ok(())
    /// }
    ///
    /// // At most 4 calls to the partner at once, of which at most 1 report.
    /// let reports = WorkflowRouter::with_prefix("partner.reports")
    ///     .operation::<BuildReport>()
    ///     .concurrency(1);
    /// let partner = WorkflowRouter::with_prefix("partner")
    ///     .operation::<SyncAccount>()
    ///     .include_router(reports)
    ///     .concurrency(4);
    ///
    /// let routes = partner.resolve(&Registry::from_inventory()?)?;
    /// assert_eq!(routes.get("partner.sync").unwrap().concurrency(), Some(4));
    /// assert_eq!(routes.get("partner.reports.build").unwrap().concurrency(), Some(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = Some(limit);
        self
    }

    /// Publishes an operation of type `O` at every tick of `schedule`,
    /// with the payload `make` builds from the [`Tick`] (`|_| …` when the
    /// payload does not depend on it).
    ///
    /// Every worker process whose routers hold the schedule publishes its
    /// due ticks, each under the idempotency key `schedule:<name>:<tick in
    /// UTC>`, in one transaction with the update of the schedule's row in
    /// the `schedules` table: one operation per tick, however many
    /// processes run, and no leader to elect. The schedule's name is the
    /// operation's name unless [`Schedule::named`] gives another; ticks
    /// missed while no worker ran follow [`Schedule::missed`]. The operation
    /// needs no handler in this process (another worker may run it), but
    /// its name must lie under the router's prefix. The expression, the
    /// zone and the name are checked when the routers are resolved.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::{MissedTicks, RouterError, Schedule, ScheduleError};
    ///
    /// #[operation("billing.reconcile")]
    /// async fn reconcile(ctx: &mut Context, day: chrono::NaiveDate) -> Result<()> {
    ///     let _ = (ctx, day);
    ///     Ok(())
    /// }
    ///
    /// let registry = Registry::from_registrations(pgoutbox::handlers![reconcile])?;
    /// let nightly = Schedule::cron("0 3 * * *").time_zone("Europe/Berlin").missed(MissedTicks::All);
    /// let router = WorkflowRouter::with_prefix("billing")
    ///     .operation::<Reconcile>()
    ///     .schedule::<Reconcile>(nightly, |tick| Reconcile { day: tick.date().pred_opt().unwrap() });
    /// assert_eq!(router.resolve(&registry)?.schedule_names().collect::<Vec<_>>(), ["billing.reconcile"]);
    ///
    /// // Refused when the routers are resolved, naming the schedule.
    /// let bad = WorkflowRouter::new().schedule::<Reconcile>(Schedule::cron("0 0 30 2 *"), |t| Reconcile { day: t.date() });
    /// let err = bad.resolve(&registry).unwrap_err();
    /// assert!(matches!(err, RouterError::Schedule(ScheduleError::NeverFires { .. })));
    /// assert_eq!(err.to_string(), "schedule `billing.reconcile`: cron expression `0 0 30 2 *` never fires (in UTC)");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn schedule<O: Operation>(
        mut self,
        schedule: Schedule,
        make: impl Fn(Tick) -> O + Send + Sync + 'static,
    ) -> Self {
        let row: MakeRow = Arc::new(move |publisher: &Publisher, tick: &Tick, options| {
            publisher.prepare(&make(tick.clone()), options)
        });
        self.schedules.push(Declared {
            schedule,
            make: Make::Operation {
                name: O::NAME,
                type_name: std::any::type_name::<O>(),
                row,
            },
        });
        self
    }

    /// Publishes a workflow at every tick of `schedule`: the one `make`
    /// builds from the [`Tick`], under the idempotency key
    /// `schedule:<name>:<tick in UTC>` (see [`Workflow::idempotency_key`];
    /// a key the closure set is replaced).
    ///
    /// The rules are those of [`WorkflowRouter::schedule`]: every worker
    /// process whose routers hold the schedule publishes its due ticks in
    /// one transaction with the update of the schedule's row, so one
    /// workflow exists per tick however many processes run, and ticks
    /// missed while no worker ran follow [`Schedule::missed`]. `name` is
    /// the schedule's name (required: a workflow is not one operation; it
    /// replaces a [`Schedule::named`]); it must lie under the router's
    /// prefix, and the schedules list it as publishing `workflow <name>`.
    /// The workflow's own name may differ from tick to tick, and its steps
    /// need no handler in this process. A workflow that cannot be published
    /// (no steps, an invalid name, a payload that does not serialize…), or
    /// a closure that panics, is logged with its error and counted as the
    /// tick's failure
    /// (`pgoutbox_schedule_ticks_total{outcome="failed"}`), as an operation
    /// schedule's payload that cannot be published: the tick is decided,
    /// nothing of it is written, and later ticks run as usual.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::workflow::Workflow;
    /// use pgoutbox::{RouterError, Schedule};
    ///
    /// #[operation("reports.extract")]
    /// async fn extract(ctx: &mut Context, day: chrono::NaiveDate) -> Result<u64> {
    ///     let _ = (ctx, day);
    ///     Ok(42)
    /// }
    ///
    /// #[operation("reports.mail")]
    /// async fn mail(ctx: &mut Context, rows: pgoutbox::workflow::Dep<Extract>) -> Result<()> {
    ///     let rows: u64 = ctx.result(&rows)?;
    ///     tracing::info!(rows, "mailing the report");
    ///     Ok(())
    /// }
    ///
    /// let registry = Registry::from_registrations(pgoutbox::handlers![extract, mail])?;
    /// let router = WorkflowRouter::with_prefix("reports")
    ///     .operation::<Extract>()
    ///     .operation::<Mail>()
    ///     .schedule_workflow("reports.nightly", Schedule::cron("0 2 * * *"), |tick| {
    ///         let mut wf = Workflow::new("reports.nightly");
    ///         let rows = wf.add(Extract { day: tick.date() });
    ///         wf.add(Mail { rows });
    ///         wf
    ///     });
    /// assert_eq!(router.resolve(&registry)?.schedule_names().collect::<Vec<_>>(), ["reports.nightly"]);
    ///
    /// // Checked when the routers are resolved, as every schedule.
    /// let bad = WorkflowRouter::with_prefix("reports")
    ///     .schedule_workflow("billing.nightly", Schedule::cron("0 2 * * *"), |_| Workflow::new("billing.nightly"));
    /// let err = bad.resolve(&registry).unwrap_err();
    /// assert!(matches!(err, RouterError::ScheduleOutsidePrefix { .. }));
    /// assert_eq!(err.to_string(), "schedule `billing.nightly` (a workflow) is not under its router's prefix `reports`");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn schedule_workflow(
        mut self,
        name: impl Into<String>,
        schedule: Schedule,
        make: impl Fn(Tick) -> Workflow + Send + Sync + 'static,
    ) -> Self {
        self.schedules.push(Declared {
            schedule: schedule.named(name),
            make: Make::Workflow(Arc::new(make)),
        });
        self
    }

    /// The prefix, if any.
    ///
    /// ```
    /// use pgoutbox::WorkflowRouter;
    ///
    /// assert_eq!(WorkflowRouter::with_prefix("billing.refunds").prefix(), Some("billing.refunds"));
    /// assert_eq!(WorkflowRouter::new().prefix(), None);
    /// ```
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
        routes.schedules.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(pair) = routes.schedules.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(RouterError::DuplicateSchedule {
                name: pair[0].name.clone(),
            });
        }
        Ok(routes)
    }

    fn label(&self) -> String {
        match &self.prefix {
            Some(prefix) => format!("`{prefix}`"),
            None => "(no prefix)".to_owned(),
        }
    }

    /// Checks this router's own schedules and adds them to `routes`.
    fn resolve_schedules(
        &self,
        prefix: Option<&str>,
        routes: &mut Routes,
    ) -> Result<(), RouterError> {
        let now = chrono::Utc::now();
        for declared in &self.schedules {
            let name = match (&declared.make, prefix) {
                (
                    Make::Operation {
                        name, type_name, ..
                    },
                    Some(prefix),
                ) if !crate::name::is_under(name, prefix) => {
                    return Err(RouterError::OutsidePrefix {
                        name,
                        type_name,
                        prefix: prefix.to_owned(),
                    });
                }
                (Make::Operation { name, .. }, _) => declared.schedule.name().unwrap_or(name),
                (Make::Workflow(_), _) => declared.schedule.name().unwrap_or_default(),
            }
            .to_owned();
            if let (Make::Workflow(_), Some(prefix)) = (&declared.make, prefix)
                && crate::name::is_valid(&name)
                && !crate::name::is_under(&name, prefix)
            {
                return Err(RouterError::ScheduleOutsidePrefix {
                    name,
                    prefix: prefix.to_owned(),
                });
            }
            let compiled = declared.schedule.compile(&name, now)?;
            let operation = declared.publishes();
            routes.schedules.push(ScheduledRoute {
                declaration: declared.schedule.declaration(&operation),
                name,
                operation,
                schedule: declared.schedule.clone(),
                compiled,
                make: declared.make.clone(),
            });
        }
        Ok(())
    }

    fn resolve_into(
        &self,
        registry: &Registry,
        parent: Option<&str>,
        enclosing_group: Option<usize>,
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
        let group = match self.concurrency {
            Some(0) => {
                return Err(RouterError::ZeroConcurrency {
                    router: self.label(),
                });
            }
            Some(limit) => {
                routes.groups.push(Group {
                    limit,
                    parent: enclosing_group,
                });
                Some(routes.groups.len() - 1)
            }
            None => enclosing_group,
        };
        let concurrency = group.map(|g| routes.groups[g].limit);
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
                    group,
                    #[cfg(feature = "nats")]
                    relay: None,
                },
            );
        }
        self.resolve_schedules(prefix, routes)?;
        #[cfg(feature = "nats")]
        for selected in &self.relays {
            self.resolve_relay(
                registry,
                prefix,
                selected,
                concurrency,
                group,
                routes,
                owners,
            )?;
        }
        for router in &self.routers {
            router.resolve_into(registry, prefix, group, routes, owners)?;
        }
        Ok(())
    }

    /// Checks and adds a relayed operation: under the prefix, not selected
    /// twice, without a handler, idempotent, its subject valid for its
    /// schema.
    #[cfg(feature = "nats")]
    #[allow(clippy::too_many_arguments)] // `resolve_into`'s state, passed on.
    fn resolve_relay(
        &self,
        registry: &Registry,
        prefix: Option<&str>,
        selected: &SelectedRelay,
        concurrency: Option<usize>,
        group: Option<usize>,
        routes: &mut Routes,
        owners: &mut BTreeMap<&'static str, String>,
    ) -> Result<(), RouterError> {
        let SelectedRelay {
            selected,
            relay,
            location,
            contract,
        } = selected;
        let name = selected.name;
        let (file, line) = (location.file(), location.line());
        let location = format!("{file}:{line}");
        if let Some(prefix) = prefix
            && !crate::name::is_under(name, prefix)
        {
            return Err(RouterError::OutsidePrefix {
                name,
                type_name: selected.type_name,
                prefix: prefix.to_owned(),
            });
        }
        if let Some(first) = owners.get(name) {
            return Err(RouterError::Duplicate {
                name,
                first: first.clone(),
                second: self.label(),
            });
        }
        let entry = registry.get(name);
        if let Some(handler) = entry.and_then(crate::registry::Entry::handler) {
            return Err(RouterError::RelayAndHandler {
                name,
                handler: handler.describe(),
                relay: location,
            });
        }
        // The contract the registry holds, or the type's own (a registry
        // listed explicitly need not name publish-only contracts).
        let registration: &'static Registration = match entry {
            Some(entry) => entry.registration(),
            None => Box::leak(Box::new(contract(file, line))),
        };
        if registration.payload_type() != selected.type_id {
            return Err(RouterError::TypeMismatch {
                name,
                selected: selected.type_name,
                registered: registration.payload_type_name(),
            });
        }
        if !registration.options().idempotent {
            return Err(RouterError::RelayNotIdempotent {
                name,
                type_name: selected.type_name,
            });
        }
        let relay = RouteRelay {
            relay: relay.clone(),
            location,
            typed: true,
        };
        relay
            .check_subject(name, Some(registration.schema()))
            .map_err(|e| RouterError::RelaySubject {
                name,
                message: e.to_string(),
                relay: relay.location.clone(),
            })?;
        owners.insert(name, self.label());
        routes.routes.insert(
            name,
            Route {
                registration,
                concurrency,
                group,
                relay: Some(relay),
            },
        );
        Ok(())
    }
}

#[cfg(feature = "nats")]
impl Routes {
    /// Adds an operation known by name only, relayed by `relay` (the
    /// `pgoutbox relay` command's names).
    pub(crate) fn insert_untyped_relay(&mut self, name: &'static str, relay: RouteRelay) {
        self.routes.insert(
            name,
            Route {
                registration: Box::leak(Box::new(Registration::untyped(name))),
                concurrency: None,
                group: None,
                relay: Some(relay),
            },
        );
    }
}
