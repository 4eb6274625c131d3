//! The application test kit: what a transaction published, one operation
//! run inline, a system run until idle, and crashes at chosen points.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool};

use crate::admin::{Admin, OperationDetail};
use crate::runtime::Crash;
use crate::store::Store;
use crate::{
    Identifier, Operation, OperationId, PublishError, Publisher, Settings, SettingsError,
    StartError, Status, WorkflowRouter, WorkflowSystem,
};

use super::TestDatabase;

/// Why a test-kit step failed.
///
/// ```
/// use std::time::Duration;
/// use pgoutbox::testing::KitError;
///
/// let err = KitError::StillBusy { waited: Duration::from_secs(30), running: 1, ready: 0 };
/// assert!(err.to_string().starts_with("test kit: still busy after 30s (1 running, 0 ready)"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KitError {
    /// A statement failed.
    #[error("test kit: {0}")]
    Database(#[from] sqlx::Error),
    /// A published payload does not decode into the type asked for.
    #[error(
        "test kit: the payload of `{name}` operation {id} does not decode into {type_name}: {error}"
    )]
    Decode {
        /// The operation's name.
        name: &'static str,
        /// The operation.
        id: OperationId,
        /// The type asked for.
        type_name: &'static str,
        /// serde's message.
        error: serde_json::Error,
    },
    /// The harness's settings are invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The system refused to start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Publishing failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The system still had work after the time limit.
    #[error(
        "test kit: still busy after {waited:?} ({running} running, {ready} ready); \
         a handler that never returns, or a time limit too short (`Harness::timeout`, \
         the `limit` of `wait_until_finished`)"
    )]
    StillBusy {
        /// How long the kit waited.
        waited: Duration,
        /// Operations still running.
        running: i64,
        /// Operations ready to run (for [`wait_until_finished`]: pending or
        /// retrying, later ones included).
        ready: i64,
    },
}

/// The payloads of the `O` operations published so far in the transaction
/// `conn` is in, in publishing order (schema `pgoutbox`). Call it on the
/// transaction that published, before it commits or rolls back.
///
/// ```no_run
/// use pgoutbox::prelude::*;
///
/// #[operation("billing.charge")]
/// async fn charge(ctx: &mut Context, customer_id: i64, amount_cents: i64) -> Result<()> {
///     # let _ = (ctx, customer_id, amount_cents);
///     Ok(())
/// }
///
/// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// let db = pgoutbox::testing::TestDatabase::new().await?;
/// let mut tx = db.pool().begin().await?;
/// publish(&mut tx, Charge { customer_id: 7, amount_cents: 1999 }).await?;
///
/// let charges = pgoutbox::testing::published::<Charge>(&mut tx).await?;
/// assert_eq!(charges.len(), 1);
/// assert_eq!(charges[0].amount_cents, 1999);
/// // or, by pattern:
/// pgoutbox::assert_published!(&mut tx, Charge { customer_id: 7, .. });
/// # Ok(())
/// # }
/// ```
pub async fn published<O: Operation>(conn: &mut PgConnection) -> Result<Vec<O>, KitError> {
    published_in::<O>(conn, &Identifier::default()).await
}

/// [`published`], for storage in another schema.
///
/// ```no_run
/// use pgoutbox::prelude::*;
/// use pgoutbox::{Identifier, Publisher};
///
/// #[operation("mail.send")]
/// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// let db = pgoutbox::testing::TestDatabase::empty().await?;
/// let schema = Identifier::new("outbox")?;
/// pgoutbox::migrate::run(db.pool(), &schema).await?;
/// let mut tx = db.pool().begin().await?;
/// Publisher::new(&schema, None, 5).publish(&mut tx, SendMail { to: "ada@example.com".into() }).await?;
/// let sent = pgoutbox::testing::published_in::<SendMail>(&mut tx, &schema).await?;
/// assert_eq!(sent[0].to, "ada@example.com");
/// # Ok(())
/// # }
/// ```
pub async fn published_in<O: Operation>(
    conn: &mut PgConnection,
    schema: &Identifier,
) -> Result<Vec<O>, KitError> {
    // Unnamed statements: the kit leaves nothing in the statement cache of
    // the application's connection.
    let rows = Store::new(schema, None, false)
        .published_in_transaction(conn, O::NAME)
        .await?;
    rows.into_iter()
        .map(|(id, payload)| {
            serde_json::from_value(payload).map_err(|error| KitError::Decode {
                name: O::NAME,
                id,
                type_name: std::any::type_name::<O>(),
                error,
            })
        })
        .collect()
}

/// Asserts that the transaction published an operation matching a
/// pattern of its payload type (an optional `if` guard too); on failure it
/// panics listing what the transaction did publish of that type. It awaits,
/// so it is used in async tests.
///
/// ```no_run
/// # use pgoutbox::prelude::*;
/// # #[operation("mail.welcome")]
/// # async fn welcome(ctx: &mut Context, user_id: i64, email: String) -> Result<()> { let _ = (ctx, user_id, email); Ok(()) }
/// # async fn example(mut tx: sqlx::Transaction<'_, sqlx::Postgres>) {
/// pgoutbox::assert_published!(&mut tx, Welcome { user_id: 7, .. });
/// pgoutbox::assert_published!(&mut tx, Welcome { email, .. } if email.ends_with("@example.com"));
/// # }
/// ```
#[macro_export]
macro_rules! assert_published {
    ($conn:expr, $($ty:ident)::+ { $($fields:tt)* } $(if $guard:expr)? $(,)?) => {{
        let published = $crate::testing::published::<$($ty)::+>($conn)
            .await
            .unwrap_or_else(|e| panic!("assert_published!: {e}"));
        let found = published.iter().any(|payload| {
            #[allow(unused_variables)]
            let matched = matches!(payload, $($ty)::+ { $($fields)* } $(if $guard)?);
            matched
        });
        assert!(
            found,
            "assert_published!: no {} matching `{}` was published in this transaction; it published {:#?}",
            <$($ty)::+ as $crate::Operation>::NAME,
            stringify!($($ty)::+ { $($fields)* } $(if $guard)?),
            published,
        );
    }};
}

/// Where a worker vanishes in the middle of an operation's first attempt
/// ([`Harness::crash_at`]). The handler stands for the external call.
///
/// ```no_run
/// use pgoutbox::prelude::*;
/// use pgoutbox::testing::{CrashPoint, Harness, TestDatabase};
/// use pgoutbox::{Outcome, Status};
///
/// /// Idempotent: an unknown outcome is simply retried.
/// #[operation("mail.send", idempotent)]
/// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// let db = TestDatabase::new().await?;
/// let done = Harness::new(&db)
///     .operation::<SendMail>()
///     .crash_at(CrashPoint::BeforeExternalCall)
///     .run_inline(SendMail { to: "ada@example.com".into() })
///     .await?;
/// assert_eq!(done.operation.status, Status::Succeeded); // on the second attempt
/// assert_eq!(done.attempts[0].outcome, Some(Outcome::Lost));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrashPoint {
    /// After the attempt is claimed and recorded as started, before the
    /// handler (the external call) is called.
    BeforeExternalCall,
    /// After the handler returned, before its outcome is recorded; a
    /// transactional handler's writes are rolled back.
    AfterExternalCall,
    /// For a transactional handler: after its writes and its success
    /// statement, before the commit (which never happens). For a plain
    /// handler, the same as `AfterExternalCall`.
    BeforeCommit,
}

impl From<CrashPoint> for Crash {
    fn from(point: CrashPoint) -> Crash {
        match point {
            CrashPoint::BeforeExternalCall => Crash::BeforeCall,
            CrashPoint::AfterExternalCall => Crash::AfterCall,
            CrashPoint::BeforeCommit => Crash::BeforeCommit,
        }
    }
}

/// What a test database holds after [`Harness::run_until_idle`] or
/// [`wait_until_finished`]: how many operations of the handled names are in
/// each state.
///
/// ```no_run
/// use pgoutbox::Status;
/// use pgoutbox::prelude::*;
/// use pgoutbox::testing::{Harness, TestDatabase};
///
/// #[operation("mail.send")]
/// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// let db = TestDatabase::new().await?;
/// let mut tx = db.pool().begin().await?;
/// publish_many(&mut tx, (0..3).map(|i| SendMail { to: format!("user{i}@example.com") })).await?;
/// tx.commit().await?;
/// let idle = Harness::new(&db).operation::<SendMail>().run_until_idle().await?;
/// assert_eq!(idle.by_status.get(&Status::Succeeded), Some(&3));
/// assert_eq!(idle.count(Status::Dead), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Idle {
    /// State → count (states without operations are absent).
    pub by_status: BTreeMap<Status, i64>,
}

impl Idle {
    /// How many operations are in `status`.
    ///
    /// ```
    /// use pgoutbox::Status;
    /// use pgoutbox::testing::Idle;
    ///
    /// let mut idle = Idle::default();
    /// idle.by_status.insert(Status::Succeeded, 3);
    /// assert_eq!(idle.count(Status::Succeeded), 3);
    /// assert_eq!(idle.count(Status::Stalled), 0); // absent: none
    /// ```
    pub fn count(&self, status: Status) -> i64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }
}

/// Runs real workers on a [`TestDatabase`] for a test, with settings that
/// keep tests short: polls every 50 ms, 1 s leases (a crashed attempt is
/// rescued within about 1.5 s), retries after 10–100 ms, 4 handler slots.
///
/// ```no_run
/// use pgoutbox::prelude::*;
/// use pgoutbox::testing::{CrashPoint, Harness, TestDatabase};
/// use pgoutbox::{Outcome, Status};
///
/// /// Not idempotent: an unknown outcome waits for an operator.
/// #[operation("sms.send")]
/// async fn send_sms(ctx: &mut Context, to: String) -> Result<()> {
///     # let _ = (ctx, to);
///     Ok(())
/// }
///
/// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// let db = TestDatabase::new().await?;
///
/// // Run one operation through a real worker.
/// let done = Harness::new(&db).operation::<SendSms>().run_inline(SendSms { to: "+4912".into() }).await?;
/// assert_eq!(done.operation.status, Status::Succeeded);
///
/// // The worker dies after the external call: the attempt is `lost`, and
/// // the operation, not idempotent, is `stalled` instead of sent twice.
/// let crashed = Harness::new(&db)
///     .operation::<SendSms>()
///     .crash_at(CrashPoint::AfterExternalCall)
///     .run_inline(SendSms { to: "+4913".into() })
///     .await?;
/// assert_eq!(crashed.operation.status, Status::Stalled);
/// assert_eq!(crashed.attempts[0].outcome, Some(Outcome::Lost));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use]
pub struct Harness {
    settings: Settings,
    pool: PgPool,
    router: WorkflowRouter,
    crash: Option<CrashPoint>,
    timeout: Duration,
}

impl Harness {
    /// A harness on `db`, handling nothing yet.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::testing::{Harness, TestDatabase};
    ///
    /// let db = TestDatabase::new().await?;
    /// let harness = Harness::new(&db); // add operations or routers before running it
    /// # let _ = harness;
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(db: &TestDatabase) -> Harness {
        let mut settings = Settings::default();
        settings.database.url = Some(db.url());
        let ws = &mut settings.workflow_system;
        ws.n_workers = 4;
        ws.poll_interval = Duration::from_millis(50);
        ws.lease = Duration::from_secs(1);
        ws.shutdown_wait = Duration::from_secs(1);
        ws.backoff_initial = Duration::from_millis(10);
        ws.backoff_max = Duration::from_millis(100);
        settings.database.pool_max = 8;
        Harness {
            settings,
            pool: db.pool().clone(),
            router: WorkflowRouter::new(),
            crash: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// Handles `O`.
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::testing::{Harness, TestDatabase};
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let db = TestDatabase::new().await?;
    /// let done = Harness::new(&db).operation::<SendMail>().run_inline(SendMail { to: "a@example.com".into() }).await?;
    /// assert_eq!(done.operation.name, "mail.send");
    /// # Ok(())
    /// # }
    /// ```
    pub fn operation<O: Operation>(mut self) -> Self {
        self.router = self.router.operation::<O>();
        self
    }

    /// Handles a router's operations.
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::testing::{Harness, TestDatabase};
    ///
    /// #[operation("billing.charge")]
    /// async fn charge(ctx: &mut Context, amount_cents: i64) -> Result<()> {
    ///     ctx.publish(Receipt { amount_cents })?;
    ///     Ok(())
    /// }
    ///
    /// #[operation("billing.receipt")]
    /// async fn receipt(ctx: &mut Context, amount_cents: i64) -> Result<()> {
    ///     let _ = (ctx, amount_cents);
    ///     Ok(())
    /// }
    ///
    /// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let db = TestDatabase::new().await?;
    /// let billing = WorkflowRouter::with_prefix("billing").operation::<Charge>().operation::<Receipt>();
    /// let mut tx = db.pool().begin().await?;
    /// publish(&mut tx, Charge { amount_cents: 1999 }).await?;
    /// tx.commit().await?;
    /// let idle = Harness::new(&db).router(billing).run_until_idle().await?;
    /// assert_eq!(idle.count(pgoutbox::Status::Succeeded), 2); // the charge and its follow-up
    /// # Ok(())
    /// # }
    /// ```
    pub fn router(mut self, router: WorkflowRouter) -> Self {
        self.router = self.router.include_router(router);
        self
    }

    /// Changes the settings (the database URL is the test database's).
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::testing::{Harness, TestDatabase};
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     Err(HandlerError::retryable(format!("mail server down for {to} (attempt {})", ctx.attempt())))
    /// }
    ///
    /// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let db = TestDatabase::new().await?;
    /// let done = Harness::new(&db)
    ///     .settings(|s| s.workflow_system.max_attempts = 2)
    ///     .operation::<SendMail>()
    ///     .run_inline(SendMail { to: "a@example.com".into() })
    ///     .await?;
    /// assert_eq!(done.operation.status, pgoutbox::Status::Dead);
    /// assert_eq!(done.attempts.len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn settings(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(&mut self.settings);
        self
    }

    /// Makes the worker vanish at `point` in every operation's first
    /// attempt: nothing more is recorded for it, its lease is no longer
    /// renewed, and the rescuer (this same system's, once the lease has
    /// expired) records the attempt as `lost`. The operation then takes
    /// the in-doubt path: retried if idempotent, `stalled` otherwise.
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::testing::{CrashPoint, Harness, TestDatabase};
    ///
    /// #[operation("ledger.record", transactional)]
    /// async fn record(ctx: &mut TxContext<'_>, amount_cents: i64) -> Result<()> {
    ///     ctx.execute(sqlx::query("INSERT INTO ledger (amount_cents) VALUES ($1)").bind(amount_cents)).await?;
    ///     Ok(())
    /// }
    ///
    /// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let db = TestDatabase::new().await?;
    /// sqlx::query("CREATE TABLE ledger (amount_cents bigint)").execute(db.pool()).await?;
    /// let done = Harness::new(&db)
    ///     .operation::<Record>()
    ///     .crash_at(CrashPoint::BeforeCommit)
    ///     .run_inline(Record { amount_cents: 500 })
    ///     .await?;
    /// // Not idempotent, outcome unknown: an operator decides. The write never committed.
    /// assert_eq!(done.operation.status, pgoutbox::Status::Stalled);
    /// let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger").fetch_one(db.pool()).await?;
    /// assert_eq!(rows, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn crash_at(mut self, point: CrashPoint) -> Self {
        self.crash = Some(point);
        self
    }

    /// How long to wait for the work to settle (30 s unless changed).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::testing::{Harness, KitError, TestDatabase};
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     std::future::pending::<()>().await; // never returns
    ///     Ok(())
    /// }
    ///
    /// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let db = TestDatabase::new().await?;
    /// let result = Harness::new(&db)
    ///     .operation::<SendMail>()
    ///     .timeout(Duration::from_secs(2))
    ///     .run_inline(SendMail { to: "a@example.com".into() })
    ///     .await;
    /// assert!(matches!(result, Err(KitError::StillBusy { running: 1, .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// Starts a worker, waits until no operation it handles is running or
    /// ready to run (those scheduled for later stay as they are; a retry
    /// due within the harness's `backoff_max`, 100 ms by default, is waited
    /// for), stops it and counts the operations by state.
    ///
    /// ```no_run
    /// use pgoutbox::Status;
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::testing::{Harness, TestDatabase};
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     if to.ends_with("@invalid") {
    ///         return Err(HandlerError::permanent("no such domain"));
    ///     }
    ///     let _ = ctx;
    ///     Ok(())
    /// }
    ///
    /// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let db = TestDatabase::new().await?;
    /// let mut tx = db.pool().begin().await?;
    /// publish(&mut tx, SendMail { to: "ada@example.com".into() }).await?;
    /// publish(&mut tx, SendMail { to: "bob@invalid".into() }).await?;
    /// tx.commit().await?;
    /// let idle = Harness::new(&db).operation::<SendMail>().run_until_idle().await?;
    /// assert_eq!((idle.count(Status::Succeeded), idle.count(Status::Dead)), (1, 1));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run_until_idle(self) -> Result<Idle, KitError> {
        let names = self.run(None).await?;
        self.count(&names).await
    }

    /// Publishes `payload`, runs a worker until that operation is settled
    /// (finished, or waiting for a later `run_at`; a retry due within the
    /// harness's `backoff_max` is waited for), stops it and returns
    /// everything recorded about the operation.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::testing::{Harness, TestDatabase};
    ///
    /// #[operation("reports.build")]
    /// async fn build_report(ctx: &mut Context, account: i64) -> Result<()> {
    ///     let _ = account;
    ///     if ctx.attempt() == 1 {
    ///         return Err(HandlerError::snooze(Duration::from_secs(3600)));
    ///     }
    ///     Ok(())
    /// }
    ///
    /// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let db = TestDatabase::new().await?;
    /// let done = Harness::new(&db).operation::<BuildReport>().run_inline(BuildReport { account: 7 }).await?;
    /// // Settled: waiting for a later `run_at` counts as settled.
    /// assert_eq!(done.operation.status, pgoutbox::Status::Pending);
    /// assert_eq!(done.attempts[0].outcome, Some(pgoutbox::Outcome::Snoozed));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run_inline<O: Operation>(self, payload: O) -> Result<OperationDetail, KitError> {
        let id = self.publish(payload).await?;
        self.run(Some(id)).await?;
        let admin = Admin::new(self.pool.clone(), &self.settings.schema()?);
        Ok(admin
            .show(id)
            .await?
            .expect("the operation was published and is never purged in a test"))
    }

    async fn publish<O: Operation>(&self, payload: O) -> Result<OperationId, KitError> {
        let publisher = Publisher::from_settings(&self.settings)?;
        let mut tx = self.pool.begin().await?;
        let id = publisher.publish(&mut tx, payload).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Starts a worker, waits until none of its names (or only `only`)
    /// runs or is ready, stops it (also when the wait failed) and returns
    /// the names it handled.
    async fn run(&self, only: Option<OperationId>) -> Result<Vec<String>, KitError> {
        let mut builder =
            WorkflowSystem::builder(self.settings.clone()).router(self.router.clone());
        if let Some(point) = self.crash {
            builder = builder.crash_at(point.into());
        }
        let system = builder.start().await?;
        let names = system.names().to_vec();
        let settled = self.wait(&names, only).await;
        let stopped = system.stop().await;
        settled?;
        stopped?;
        Ok(names)
    }

    /// The kit's statements for the harness's schema.
    fn store(&self) -> Result<Store, KitError> {
        Ok(Store::new(&self.settings.schema()?, None, false))
    }

    /// Polls until nothing of `names` (or only `only`) runs or is ready.
    async fn wait(&self, names: &[String], only: Option<OperationId>) -> Result<(), KitError> {
        let store = self.store()?;
        let started = Instant::now();
        loop {
            let mut conn = self.pool.acquire().await?;
            // A retry waiting out the harness's backoff is not idleness.
            let horizon = crate::duration::millis(self.settings.workflow_system.backoff_max);
            let (running, ready) = store.busy(&mut conn, names, only, horizon).await?;
            drop(conn);
            if running == 0 && ready == 0 {
                return Ok(());
            }
            if started.elapsed() > self.timeout {
                return Err(KitError::StillBusy {
                    waited: started.elapsed(),
                    running,
                    ready,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn count(&self, names: &[String]) -> Result<Idle, KitError> {
        count_by_status(&self.pool, &self.settings.schema()?, names).await
    }
}

/// Waits until every operation of `names` in `db` has finished
/// (`succeeded`, `dead`, `stalled` or `cancelled`; none `pending`, even for
/// later, `running` or `retrying`), then counts them by state; at most
/// `limit`, after which it fails with [`KitError::StillBusy`].
///
/// It is for a [`WorkflowSystem`] the program started itself: pass
/// `system.names()`, so that operations no router of it selects are not
/// waited for. [`Harness::run_until_idle`] starts and stops a worker of
/// its own instead, and does not wait for work scheduled later.
///
/// ```no_run
/// use std::time::Duration;
/// use pgoutbox::prelude::*;
/// use pgoutbox::testing::{TestDatabase, wait_until_finished};
///
/// #[operation("mail.send")]
/// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// # async fn example() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// let db = TestDatabase::new().await?;
/// let mut settings = Settings::default();
/// settings.database.url = Some(db.url());
/// let system = WorkflowSystem::builder(settings)
///     .router(WorkflowRouter::new().operation::<SendMail>())
///     .start()
///     .await?;
/// let mut tx = db.pool().begin().await?;
/// pgoutbox::Publisher::default()
///     .publish_with(&mut tx, SendMail { to: "ada@example.com".into() }, PublishOptions::new().delay(Duration::from_secs(1)))
///     .await?;
/// tx.commit().await?;
/// // Waits for the delayed operation too.
/// let finished = wait_until_finished(&db, system.names(), Duration::from_secs(30)).await?;
/// assert_eq!(finished.count(pgoutbox::Status::Succeeded), 1);
/// system.stop().await?;
/// # Ok(())
/// # }
/// ```
pub async fn wait_until_finished(
    db: &TestDatabase,
    names: &[String],
    limit: Duration,
) -> Result<Idle, KitError> {
    let started = Instant::now();
    loop {
        let idle = count_by_status(db.pool(), &Identifier::default(), names).await?;
        let running = idle.count(Status::Running);
        let waiting = idle.count(Status::Pending) + idle.count(Status::Retrying);
        if running == 0 && waiting == 0 {
            return Ok(idle);
        }
        if started.elapsed() > limit {
            return Err(KitError::StillBusy {
                waited: started.elapsed(),
                running,
                ready: waiting,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many operations of `names` are in each state.
async fn count_by_status(
    pool: &PgPool,
    schema: &Identifier,
    names: &[String],
) -> Result<Idle, KitError> {
    let mut conn = pool.acquire().await?;
    let counts = Store::new(schema, None, false)
        .count_by_status(&mut conn, names)
        .await?;
    Ok(Idle {
        by_status: counts.into_iter().collect(),
    })
}
