//! The workflow system: one process's producer, executors, notifier and
//! maintenance, started and stopped together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::{ConnectOptions as _, Connection as _, PgPool};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::limits::Limits;
use crate::publish::Publisher;
use crate::registry::{Registry, RegistryError};
use crate::router::{RouterError, Routes, WorkflowRouter};
#[cfg(feature = "testing")]
use crate::runtime::Crash;
use crate::runtime::Runtime;
use crate::settings::{Settings, SettingsError};
use crate::store::Store;

/// Claimed operations per handler slot whose outcomes may wait to be
/// recorded: enough for a full claim while the previous ones are in the
/// completer's batches.
const IN_FLIGHT_PER_SLOT: usize = 4;

/// Why a system did not start.
///
/// ```
/// use pgoutbox::{Settings, StartError, WorkflowSystem};
///
/// let mut settings = Settings::default();
/// settings.workflow_system.n_workers = 0;
/// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// // Checked before anything connects.
/// let err = rt.block_on(WorkflowSystem::builder(settings).start()).unwrap_err();
/// assert!(matches!(&err, StartError::Settings(e) if e.key() == "workflow_system.n_workers"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting is invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The pool cannot serve `n_workers` handlers plus the runtime.
    #[error(
        "the connection pool is too small: it allows {pool_max} connections, but `n_workers` = \
         {n_workers} needs {required} ({n_workers} for handlers, {runtime} for the runtime); \
         raise `database.pool_max` or lower `workflow_system.n_workers`"
    )]
    PoolTooSmall {
        /// The pool's size.
        pool_max: u64,
        /// Handler concurrency.
        n_workers: usize,
        /// The runtime's own connections.
        runtime: u32,
        /// What is needed.
        required: u64,
    },
    /// The database is not at this binary's migration version.
    #[error(transparent)]
    Migration(#[from] pgoutbox_migrate::Error),
    /// Two operations share a name.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The routers are inconsistent.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// The metrics endpoint (`workflow_system.metrics_listen`) cannot be
    /// served.
    #[error("cannot serve metrics: {0}")]
    Metrics(String),
    /// `workflow_system.idempotent_claim_ahead` is set, but the router
    /// selects an operation that cannot be claimed ahead.
    #[error(
        "`workflow_system.idempotent_claim_ahead` is set, but `{name}` ({location}) {reason}: \
         only idempotent operations without a concurrency limit may be claimed ahead of the \
         free handler slots; run them in a process (a router) of their own, or set it to 0"
    )]
    ClaimAhead {
        /// The operation's name.
        name: String,
        /// Its handler (or contract) and where it is declared.
        location: String,
        /// Why it cannot be claimed ahead.
        reason: &'static str,
    },
    /// The routers select nothing to run.
    #[error(
        "the router selects no operation: add operations with `WorkflowRouter::operation::<T>()`"
    )]
    NoOperations,
    /// A live worker declares one of this worker's schedules otherwise
    /// (another expression, zone, missed-ticks policy or operation), and
    /// this schedule does not take over (`Schedule::take_over`).
    #[error(
        "schedule `{name}` is declared otherwise by a live worker: this worker declares {ours}; \
         worker {worker} ({host}, pid {pid}) declares {theirs}. Stop that worker, give one \
         schedule another name with `Schedule::named`, or let this one take over with \
         `Schedule::take_over`"
    )]
    ScheduleConflict {
        /// The schedule's name.
        name: String,
        /// This worker's declaration.
        ours: String,
        /// The other worker's declaration.
        theirs: String,
        /// The other worker's id.
        worker: Uuid,
        /// Its host.
        host: String,
        /// Its process id.
        pid: i32,
    },
    /// A schedule has no tick left by the database's clock.
    #[error("schedule `{0}` never fires again by the database's clock")]
    ScheduleEnded(String),
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Unreachable(String),
    /// The database refused a statement.
    #[error("database error while starting: {0}")]
    Database(#[from] sqlx::Error),
    /// A relay's broker failed its start-up check (unreachable, no such
    /// stream, a subject no stream captures), or an untyped relay's names
    /// match nothing; nothing was claimed.
    #[cfg(feature = "nats")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
    #[error(transparent)]
    Relay(#[from] crate::relay::RelayError),
}

/// Builds and starts a [`WorkflowSystem`]; made by
/// [`WorkflowSystem::builder`].
///
/// By default the system builds its pool from `settings.database` and finds
/// its handlers by link-time collection. Both can be given instead:
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::prelude::*;
///
/// #[operation("mail.send", idempotent)]
/// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// let settings = Settings::load()?;
/// let pool = settings.pool()?; // shared with the application: size it for both
/// let system = WorkflowSystem::builder(settings)
///     .pool(pool)
///     .registry(Registry::from_registrations(pgoutbox::handlers![send_mail])?)
///     .router(WorkflowRouter::with_prefix("mail").operation::<SendMail>())
///     .start()
///     .await?;
/// system.stop().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct WorkflowSystemBuilder {
    settings: Settings,
    router: WorkflowRouter,
    pool: Option<PgPool>,
    registry: Option<Registry>,
    /// Names matched by patterns, relayed without types (`relay_by_name`).
    #[cfg(feature = "nats")]
    by_name: Option<(Vec<String>, crate::relay::Relay)>,
    #[cfg(feature = "testing")]
    crash: Option<Crash>,
    #[cfg(feature = "testing")]
    linger: Option<std::time::Duration>,
}

impl WorkflowSystemBuilder {
    /// The routers whose operations this process handles.
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let system = WorkflowSystem::builder(Settings::load()?)
    ///     .router(WorkflowRouter::with_prefix("mail").operation::<SendMail>())
    ///     .start()
    ///     .await?;
    /// assert_eq!(system.names(), ["mail.send"]);
    /// system.stop().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn router(mut self, router: WorkflowRouter) -> Self {
        self.router = router;
        self
    }

    /// A pool to use instead of one built from `settings.database` (it must
    /// allow `n_workers` + 2 connections).
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let mut settings = Settings::load()?;
    /// settings.database.pool_max = settings.workflow_system.n_workers as u32 + 2 + 8; // + the application's peak
    /// let pool = settings.pool()?;
    /// let system = WorkflowSystem::builder(settings)
    ///     .pool(pool.clone()) // the application keeps using `pool`
    ///     .router(WorkflowRouter::new().operation::<SendMail>())
    ///     .start()
    ///     .await?;
    /// let mut tx = pool.begin().await?;
    /// publish(&mut tx, SendMail { to: "ada@example.com".into() }).await?;
    /// tx.commit().await?;
    /// system.stop().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn pool(mut self, pool: PgPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// An explicit registry instead of link-time collection (see
    /// [`handlers!`](crate::handlers)).
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// // Only the handlers listed here exist for this system, whatever else is linked in.
    /// let registry = Registry::from_registrations(pgoutbox::handlers![send_mail])?;
    /// let system = WorkflowSystem::builder(Settings::load()?)
    ///     .registry(registry)
    ///     .router(WorkflowRouter::new().operation::<SendMail>())
    ///     .start()
    ///     .await?;
    /// system.stop().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Makes every operation's first attempt crash at `point` (see
    /// `pgoutbox::testing::Harness::crash_at`).
    /// Relays, without types, every operation whose name matches one of
    /// `patterns` (`*` stands for any run of characters: `orders.*`), as
    /// the `pgoutbox relay` command does. The names are those published
    /// (or registered by a worker) before the system starts; a name first
    /// published later is relayed after a restart. A pattern that matches
    /// no name is an error at start-up. Payloads are forwarded as stored.
    ///
    /// ```no_run
    /// use pgoutbox::relay::Relay;
    ///
    /// # async fn example(settings: pgoutbox::Settings) -> Result<(), Box<dyn std::error::Error>> {
    /// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    /// let relay = Relay::jetstream_by_name(&client, Some("events"), Default::default());
    /// let system = pgoutbox::WorkflowSystem::builder(settings)
    ///     .relay_by_name(vec!["orders.*".into()], relay)
    ///     .start()
    ///     .await?;
    /// # let _ = system;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "nats")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
    #[must_use]
    pub fn relay_by_name(mut self, patterns: Vec<String>, relay: crate::relay::Relay) -> Self {
        self.by_name = Some((patterns, relay));
        self
    }

    #[cfg(feature = "testing")]
    pub(crate) fn crash_at(mut self, point: Crash) -> Self {
        self.crash = Some(point);
        self
    }

    /// Makes every executor linger for `delay` after its attempt's
    /// outcome is recorded, before it leaves the in-flight bookkeeping: a
    /// descheduled task on a loaded machine, made long enough for a test
    /// to re-claim the operation meanwhile. Only the `testing` feature
    /// compiles it.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    #[must_use]
    pub fn linger_after_record(mut self, delay: std::time::Duration) -> Self {
        self.linger = Some(delay);
        self
    }

    /// Checks everything, registers the worker and starts claiming.
    ///
    /// It refuses to start, with one [`StartError`], on an invalid setting,
    /// an unreachable database, a pool smaller than `n_workers` + 2, a
    /// database at another migration version, a name registered twice, an
    /// inconsistent router, or routers that select nothing. Then it records
    /// the worker in `workers` and the payload schemas it handles in
    /// `operation_types`, warns about ready operations that no live worker
    /// handles, and starts the producer, the listener (unless
    /// `workflow_system.notify` is off) and the maintenance task (heartbeat,
    /// rescuer, janitor). See the example on [`WorkflowSystem`].
    ///
    /// ```
    /// use pgoutbox::{Settings, StartError, WorkflowSystem};
    /// use sqlx::postgres::PgPoolOptions;
    ///
    /// let settings = Settings::default(); // n_workers = 10
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// let err = rt.block_on(async {
    ///     // Lazy: nothing connects before the size is checked.
    ///     let pool = PgPoolOptions::new().max_connections(5).connect_lazy_with(settings.connect_options()?);
    ///     Ok::<_, Box<dyn std::error::Error>>(WorkflowSystem::builder(settings).pool(pool).start().await)
    /// })?
    /// .unwrap_err();
    /// assert!(matches!(err, StartError::PoolTooSmall { pool_max: 5, required: 12, .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::too_many_lines)] // The checks in order, then the wiring; the testing seams add two fields.
    pub async fn start(self) -> Result<WorkflowSystem, StartError> {
        let settings = self.settings;
        settings.validate()?;
        let pool = match self.pool {
            Some(pool) => pool,
            None => connect(&settings).await?,
        };
        let pool_max = u64::from(pool.options().get_max_connections());
        let required = settings.required_connections();
        if pool_max < required {
            return Err(StartError::PoolTooSmall {
                pool_max,
                n_workers: settings.workflow_system.n_workers,
                runtime: crate::settings::RUNTIME_CONNECTIONS,
                required,
            });
        }
        let schema = settings.schema()?;
        pgoutbox_migrate::check(&pool, &schema).await?;
        let registry = match self.registry {
            Some(registry) => registry,
            None => Registry::from_inventory()?,
        };
        #[allow(unused_mut)] // Only relays by name add routes here.
        let mut routes = self.router.resolve(&registry)?;
        #[cfg(feature = "nats")]
        if let Some((patterns, relay)) = self.by_name {
            relay_by_name(&pool, &schema, &settings, &mut routes, &patterns, relay).await?;
        }
        #[cfg(feature = "nats")]
        check_relays(&routes).await?;
        // A worker may only publish schedules, their operations run elsewhere.
        if routes.is_empty() && routes.schedules().is_empty() {
            return Err(StartError::NoOperations);
        }
        if settings.workflow_system.idempotent_claim_ahead > 0 {
            check_claim_ahead(&routes)?;
        }
        if let Some(addr) = settings.workflow_system.metrics_listen {
            crate::exporter::serve(addr).map_err(StartError::Metrics)?;
        }
        let publisher = Publisher::from_settings(&settings)?;
        let store = Store::new(
            &schema,
            Some(&settings.channel()?),
            settings.database.prepared_statements,
        );
        let names: Vec<String> = routes.names().map(str::to_owned).collect();
        let limits = Limits::new(&routes, settings.workflow_system.idempotent_claim_ahead > 0);
        let worker_id = Uuid::new_v4();
        let n_workers = settings.workflow_system.n_workers;
        let claim_ahead = settings.workflow_system.idempotent_claim_ahead;
        {
            let mut conn = pool.acquire().await?;
            store
                .register_worker(
                    &mut conn,
                    worker_id,
                    &hostname(),
                    i32::try_from(std::process::id()).unwrap_or(i32::MAX),
                    env!("CARGO_PKG_VERSION"),
                    &names,
                    &settings.workflow_system.queues,
                    i32::try_from(n_workers).unwrap_or(i32::MAX),
                    crate::duration::millis(settings.workflow_system.lease),
                )
                .await?;
            for (name, route) in routes.iter() {
                // An operation relayed by name has no schema of its own.
                #[cfg(feature = "nats")]
                if route.relay().is_some_and(|r| !r.typed) {
                    continue;
                }
                store
                    .record_schema(&mut conn, name, route.registration().schema())
                    .await?;
                // A relay's result is the broker's receipt, not an output
                // of the operation's type.
                if !route.is_relayed() {
                    store
                        .record_output(&mut conn, name, route.registration().output_schema())
                        .await?;
                }
            }
            let live_ms = crate::duration::millis(settings.workflow_system.lease);
            if let Err(e) =
                crate::scheduler::declare(&mut conn, &store, worker_id, routes.schedules(), live_ms)
                    .await
            {
                // Not started: the worker's row must not look live.
                let _ = store.deregister_worker(&mut conn, worker_id).await;
                return Err(match e {
                    crate::scheduler::DeclareError::Conflict(c) => StartError::ScheduleConflict {
                        name: c.name,
                        ours: c.ours,
                        theirs: c.theirs,
                        worker: c.worker,
                        host: c.host,
                        pid: c.pid,
                    },
                    crate::scheduler::DeclareError::Ended(name) => StartError::ScheduleEnded(name),
                    crate::scheduler::DeclareError::Database(e) => StartError::Database(e),
                });
            }
        }
        let (stopping, _) = watch::channel(false);
        let (completions, completion_requests) =
            tokio::sync::mpsc::channel(IN_FLIGHT_PER_SLOT * n_workers.max(1) + claim_ahead);
        let rt = Arc::new(Runtime {
            pool,
            store,
            publisher,
            settings,
            routes,
            names,
            worker_id,
            running: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(n_workers)),
            limits,
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT_PER_SLOT * n_workers + claim_ahead)),
            ahead: Arc::new(Semaphore::new(claim_ahead)),
            wake: Notify::new(),
            stopping,
            completions,
            #[cfg(feature = "testing")]
            crash: self.crash,
            #[cfg(feature = "testing")]
            linger: self.linger,
        });
        let completer = tokio::spawn(crate::completer::run(Arc::clone(&rt), completion_requests));
        crate::maintenance::report_unhandled(&rt).await;
        let mut tasks = JoinSet::new();
        let executors = Arc::new(Mutex::new(JoinSet::new()));
        tasks.spawn(crate::producer::run(
            Arc::clone(&rt),
            Arc::clone(&executors),
        ));
        if rt.settings.workflow_system.notify {
            tasks.spawn(crate::notifier::run(Arc::clone(&rt)));
        }
        tasks.spawn(crate::scheduler::run(Arc::clone(&rt)));
        let (maintenance_stop, maintenance_rx) = watch::channel(false);
        let maintenance = tokio::spawn(crate::maintenance::run(Arc::clone(&rt), maintenance_rx));
        let schedules: Vec<&str> = rt.routes.schedule_names().collect();
        tracing::info!(worker_id = %worker_id, names = ?rt.names, schedules = ?schedules, n_workers, "pgoutbox worker started");
        Ok(WorkflowSystem {
            rt,
            tasks,
            executors,
            maintenance: Some((maintenance, maintenance_stop)),
            completer,
        })
    }
}

/// The pool of `settings.database`, after one direct connection: a pool
/// would retry until `acquire_timeout` and then say only "pool timed out",
/// hiding why the database cannot be reached.
/// Adds a route for every known name that matches one of `patterns`.
#[cfg(feature = "nats")]
async fn relay_by_name(
    pool: &PgPool,
    schema: &pgoutbox_migrate::Identifier,
    settings: &Settings,
    routes: &mut crate::router::Routes,
    patterns: &[String],
    relay: crate::relay::Relay,
) -> Result<(), StartError> {
    let store = Store::new(schema, None, settings.database.prepared_statements);
    let mut conn = pool.acquire().await?;
    let known = store.known_names(&mut conn).await?;
    for pattern in patterns {
        let matched: Vec<&String> = known
            .iter()
            .filter(|name| crate::relay::name_matches(pattern, name))
            .collect();
        if matched.is_empty() {
            return Err(crate::relay::RelayError::NoNames(pattern.clone()).into());
        }
        for name in matched {
            if routes.get(name).is_some() {
                continue;
            }
            // The names of a start-up, kept for the process's life.
            let name: &'static str = Box::leak(name.clone().into_boxed_str());
            let relay = crate::relay::RouteRelay {
                relay: relay.clone(),
                location: format!("pattern `{pattern}`"),
                typed: false,
            };
            relay
                .check_subject(name, None)
                .map_err(|e| RouterError::RelaySubject {
                    name,
                    message: e.to_string(),
                    relay: relay.location.clone(),
                })?;
            routes.insert_untyped_relay(name, relay);
        }
    }
    Ok(())
}

/// Checks each relay's broker once, with a sample of every subject it
/// publishes to, before anything is claimed.
#[cfg(feature = "nats")]
async fn check_relays(routes: &crate::router::Routes) -> Result<(), StartError> {
    let mut backends: Vec<(&crate::relay::RouteRelay, Vec<String>)> = Vec::new();
    for (name, route) in routes.iter() {
        let Some(relay) = route.relay() else { continue };
        let schema = relay.typed.then(|| route.registration().schema());
        let sample = relay
            .check_subject(name, schema)
            .map_err(|e| RouterError::RelaySubject {
                name,
                message: e.to_string(),
                relay: relay.location.clone(),
            })?;
        let same = |(r, _): &&mut (&crate::relay::RouteRelay, Vec<String>)| {
            std::sync::Arc::ptr_eq(&r.relay.backend, &relay.relay.backend)
        };
        match backends.iter_mut().find(|entry| same(entry)) {
            Some((_, subjects)) => {
                if !subjects.contains(&sample) {
                    subjects.push(sample);
                }
            }
            None => backends.push((relay, vec![sample])),
        }
    }
    for (relay, subjects) in backends {
        relay.relay.backend.check(&subjects).await?;
    }
    Ok(())
}

async fn connect(settings: &Settings) -> Result<PgPool, StartError> {
    let options = settings.connect_options()?;
    let timeout = settings.database.acquire_timeout;
    let conn = tokio::time::timeout(timeout, options.connect())
        .await
        .map_err(|_| StartError::Unreachable(format!("no answer within {timeout:?}")))?
        .map_err(|e| StartError::Unreachable(e.to_string()))?;
    let _ = conn.close().await;
    Ok(settings.pool()?)
}

/// What [`WorkflowSystem::stop`] had to do.
///
/// ```no_run
/// # async fn example(system: pgoutbox::WorkflowSystem) -> Result<(), Box<dyn std::error::Error>> {
/// let report = system.stop().await?;
/// if report.aborted > 0 {
///     // Recorded as in-doubt attempts: retried if idempotent, `stalled` otherwise.
///     eprintln!("{} handler(s) outlived `shutdown_wait`", report.aborted);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StopReport {
    /// Handlers still running after `shutdown_wait`, aborted and recorded
    /// as in-doubt attempts.
    pub aborted: usize,
}

/// A running worker process: claims the operations its routers select and
/// runs them, `n_workers` at a time.
///
/// What it guarantees when handlers fail, time out or the process dies is
/// in `docs/consistency.md`; running and watching it in
/// `docs/operating.md`.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::prelude::*;
/// use pgoutbox::{Settings, WorkflowSystem};
///
/// #[operation("mail.send")]
/// async fn send(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// let settings = Settings::load()?;
/// let system = WorkflowSystem::builder(settings)
///     .router(WorkflowRouter::new().operation::<Send>())
///     .start()
///     .await?;
/// // … until it is time to stop:
/// system.stop().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct WorkflowSystem {
    rt: Arc<Runtime>,
    tasks: JoinSet<()>,
    executors: Arc<Mutex<JoinSet<()>>>,
    maintenance: Option<(tokio::task::JoinHandle<()>, watch::Sender<bool>)>,
    completer: tokio::task::JoinHandle<()>,
}

impl WorkflowSystem {
    /// A builder from settings; without a router it handles nothing (and
    /// [`WorkflowSystemBuilder::start`] refuses to start). See the example
    /// on [`WorkflowSystem`].
    pub fn builder(settings: Settings) -> WorkflowSystemBuilder {
        WorkflowSystemBuilder {
            settings,
            router: WorkflowRouter::new(),
            pool: None,
            registry: None,
            #[cfg(feature = "nats")]
            by_name: None,
            #[cfg(feature = "testing")]
            crash: None,
            #[cfg(feature = "testing")]
            linger: None,
        }
    }

    /// This process's id in the `workers` table and in leases.
    ///
    /// ```no_run
    /// # async fn example(system: pgoutbox::WorkflowSystem, pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let running: i64 = sqlx::query_scalar(
    ///     "SELECT count(*) FROM pgoutbox.operations WHERE status = 'running' AND lease_owner = $1",
    /// )
    /// .bind(system.worker_id())
    /// .fetch_one(&pool)
    /// .await?;
    /// println!("worker {} runs {running} operation(s)", system.worker_id());
    /// # Ok(())
    /// # }
    /// ```
    pub fn worker_id(&self) -> Uuid {
        self.rt.worker_id
    }

    /// The names this process handles.
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let system = WorkflowSystem::builder(Settings::load()?)
    ///     .router(WorkflowRouter::new().operation::<SendMail>())
    ///     .start()
    ///     .await?;
    /// assert_eq!(system.names(), ["mail.send"]);
    /// system.stop().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn names(&self) -> &[String] {
        &self.rt.names
    }

    /// Stops claiming, waits up to `shutdown_wait` for running handlers,
    /// aborts the rest and records their attempts as in-doubt, then marks
    /// the worker stopped. Returns when every attempt it started has an
    /// outcome in the database, and in any case within `shutdown_wait` plus
    /// [`STOP_MARGIN`]: an outcome still unrecorded then (the database does
    /// not answer) is left to expire into a `lost` attempt.
    ///
    /// pgoutbox installs no signal handler: call it when your process is
    /// told to stop.
    ///
    /// ```no_run
    /// # async fn shutdown_requested() {}
    /// # async fn example(system: pgoutbox::WorkflowSystem) -> Result<(), Box<dyn std::error::Error>> {
    /// shutdown_requested().await; // e.g. `tokio::signal::ctrl_c()` or a SIGTERM stream
    /// let report = system.stop().await?;
    /// if report.aborted > 0 {
    ///     eprintln!("{} handler(s) aborted; their attempts are recorded as in doubt", report.aborted);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stop(mut self) -> Result<StopReport, sqlx::Error> {
        // Every step has a deadline, so that `stop()` returns within
        // `shutdown_wait + STOP_MARGIN` whatever the handlers and the
        // database do (issue 13): anything still unrecorded then is left
        // to the rescuer, as a vanished worker leaves it.
        let started = tokio::time::Instant::now();
        let wait = self.rt.settings.workflow_system.shutdown_wait;
        let handlers_done = started + wait;
        let records_done = handlers_done + STOP_MARGIN / 2;
        let maintenance_done = handlers_done + STOP_MARGIN * 7 / 10;
        let deadline = handlers_done + STOP_MARGIN;
        self.rt.stopping.send_replace(true);
        self.rt.wake.notify_one();
        // A claim stuck on a silent connection is abandoned: what it
        // claimed is rescued once its leases expire.
        if tokio::time::timeout_at(handlers_done, drain(&mut self.tasks))
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
        let mut executors =
            std::mem::take(&mut *self.executors.lock().expect("executors poisoned"));
        let mut aborted = 0;
        if tokio::time::timeout_at(handlers_done, drain(&mut executors))
            .await
            .is_err()
        {
            aborted = self.rt.abort_all("the worker is shutting down");
            tracing::warn!(aborted, "shutdown wait elapsed; aborting running handlers");
            if tokio::time::timeout_at(records_done, drain(&mut executors))
                .await
                .is_err()
            {
                tracing::error!(
                    left = executors.len(),
                    "outcomes still unrecorded at the shutdown deadline; their leases will \
                     expire into `lost` attempts"
                );
                // Dropping the set aborts the rest without waiting for a
                // handler that blocks its thread.
                drop(executors);
            }
        }
        self.completer.abort();
        if let Some((mut maintenance, stop)) = self.maintenance.take() {
            stop.send_replace(true);
            // A step under way (a long janitor batch, a statement on a
            // silent connection) is abandoned: each step is a transaction
            // of its own, and the next worker redoes it.
            if tokio::time::timeout_at(maintenance_done, &mut maintenance)
                .await
                .is_err()
            {
                maintenance.abort();
            }
        }
        // Bounded like every other statement of the runtime: when the
        // database does not answer, the worker's row just goes stale.
        let deregister = async {
            let mut conn = self.rt.pool.acquire().await?;
            self.rt
                .store
                .deregister_worker(&mut conn, self.rt.worker_id)
                .await
        };
        tokio::time::timeout_at(deadline, deregister)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))?;
        tracing::info!(worker_id = %self.rt.worker_id, aborted, "pgoutbox worker stopped");
        Ok(StopReport { aborted })
    }
}

/// How long [`WorkflowSystem::stop`] may take beyond
/// `workflow_system.shutdown_wait`, whatever the handlers and the database
/// do: half of it for aborted handlers' outcomes to be recorded, the rest
/// for the maintenance tasks to stop and the worker's row to be marked
/// stopped.
///
/// ```
/// assert_eq!(pgoutbox::STOP_MARGIN, std::time::Duration::from_secs(10));
/// ```
pub const STOP_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

async fn drain(set: &mut JoinSet<()>) {
    while set.join_next().await.is_some() {}
}

impl Drop for WorkflowSystem {
    fn drop(&mut self) {
        // Dropped without `stop()`: stop claiming; running attempts keep
        // their leases until they expire and are rescued as `lost`.
        self.rt.stopping.send_replace(true);
        self.rt.wake.notify_one();
        if let Some((_, stop)) = &self.maintenance {
            stop.send_replace(true);
        }
        self.completer.abort();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// With `idempotent_claim_ahead` on, every operation the process runs
/// must be idempotent and outside every concurrency limit: an operation
/// claimed ahead waits for a slot with its attempt already recorded, which
/// only an idempotent operation may afford (a crash makes it `lost` and it
/// runs again), and mixing it with others would let the waiting ones take
/// every freed slot before a claim of the others could.
fn check_claim_ahead(routes: &Routes) -> Result<(), StartError> {
    for (name, route) in routes.iter() {
        let registration = route.registration();
        let reason = if !registration.options().idempotent {
            "is not idempotent"
        } else if route.group().is_some() {
            "is under a concurrency limit"
        } else {
            continue;
        };
        return Err(StartError::ClaimAhead {
            name: name.to_owned(),
            location: registration.describe(),
            reason,
        });
    }
    Ok(())
}
