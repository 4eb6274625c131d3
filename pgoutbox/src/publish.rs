//! Recording intent: typed publishing inside the caller's transaction.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgoutbox_migrate::Identifier;
use sqlx::PgConnection;

use crate::definition::{Operation, OperationId};
use crate::settings::{DEFAULT_CHANNEL, DEFAULT_MAX_ATTEMPTS, Settings, SettingsError};
use crate::storable;
use crate::store::{NewOperation, Store};

/// Why an operation could not be published.
///
/// ```no_run
/// use pgoutbox::prelude::*;
/// use pgoutbox::{PublishError, Publisher};
///
/// #[operation("mail.send")]
/// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// # async fn example(pool: sqlx::PgPool) -> std::result::Result<(), Box<dyn std::error::Error>> {
/// let mut tx = pool.begin().await?;
/// // An idempotency key names one operation: refused before any SQL is sent.
/// let shared_key = PublishOptions::new().idempotency_key("welcome");
/// let mails = [SendMail { to: "a@example.com".into() }, SendMail { to: "b@example.com".into() }];
/// let refused = Publisher::default().publish_many(&mut tx, mails, shared_key).await;
/// assert!(matches!(refused, Err(PublishError::InvalidOption { name: "mail.send", .. })));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The payload could not be serialized to JSON.
    #[error("cannot serialize the payload of `{name}`: {source}")]
    Serialize {
        /// The operation's name.
        name: &'static str,
        /// serde's error.
        source: serde_json::Error,
    },
    /// A publish option is out of range.
    #[error("invalid publish option for `{name}`: {reason}")]
    InvalidOption {
        /// The operation's name.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The payload holds what PostgreSQL cannot store (a NUL character,
    /// `\u0000`, which `jsonb` rejects); nothing was sent to the database.
    #[error("cannot store the payload of `{name}`: {reason}")]
    Unstorable {
        /// The operation's name.
        name: &'static str,
        /// What cannot be stored, and where.
        reason: String,
    },
    /// The database refused the insert.
    #[error("cannot publish `{name}`: {source}")]
    Database {
        /// The operation's name.
        name: &'static str,
        /// sqlx's error.
        source: sqlx::Error,
    },
}

/// Options of one publish; every field left unset takes the operation's
/// attribute, then the settings.
///
/// ```
/// use std::time::Duration;
/// use pgoutbox::PublishOptions;
///
/// let options = PublishOptions::new()
///     .delay(Duration::from_secs(60))
///     .idempotency_key("order-1234")
///     .priority(10);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    run_at: Option<DateTime<Utc>>,
    delay: Option<Duration>,
    idempotency_key: Option<String>,
    priority: Option<i16>,
    queue: Option<String>,
    parent: Option<OperationId>,
}

impl PublishOptions {
    /// No options.
    ///
    /// ```
    /// use pgoutbox::PublishOptions;
    ///
    /// // Everything from the operation's attribute, then the settings.
    /// let options = PublishOptions::new();
    /// # let _ = options;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an idempotency key or a parent is set (a workflow step
    /// takes neither).
    pub(crate) fn has_key_or_parent(&self) -> bool {
        self.idempotency_key.is_some() || self.parent.is_some()
    }

    /// Run no earlier than `at`.
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("billing.invoice")]
    /// async fn invoice(ctx: &mut Context, customer_id: i64) -> Result<()> {
    ///     let _ = (ctx, customer_id);
    ///     Ok(())
    /// }
    ///
    /// # async fn example(pool: sqlx::PgPool) -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let first_of_month = chrono::DateTime::parse_from_rfc3339("2030-01-01T06:00:00Z")?.to_utc();
    /// let mut tx = pool.begin().await?;
    /// let id = pgoutbox::Publisher::default()
    ///     .publish_with(&mut tx, Invoice { customer_id: 7 }, PublishOptions::new().run_at(first_of_month))
    ///     .await?;
    /// let run_at: chrono::DateTime<chrono::Utc> =
    ///     sqlx::query_scalar("SELECT run_at FROM pgoutbox.operations WHERE id = $1")
    ///         .bind(id.as_i64())
    ///         .fetch_one(&mut *tx)
    ///         .await?;
    /// assert_eq!(run_at, first_of_month);
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self.delay = None;
        self
    }

    /// Run no earlier than `delay` after the database's `now()` at publish
    /// (the transaction's start time). A delay longer than 100 × 365 days
    /// is refused with [`PublishError::InvalidOption`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.reminder")]
    /// async fn remind(ctx: &mut Context, user_id: i64) -> Result<()> {
    ///     let _ = (ctx, user_id);
    ///     Ok(())
    /// }
    ///
    /// # async fn example(pool: sqlx::PgPool) -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// let in_a_day = PublishOptions::new().delay(Duration::from_secs(24 * 3600));
    /// let id = pgoutbox::Publisher::default().publish_with(&mut tx, Remind { user_id: 7 }, in_a_day).await?;
    /// let later: bool = sqlx::query_scalar(
    ///     "SELECT run_at = now() + interval '1 day' FROM pgoutbox.operations WHERE id = $1",
    /// )
    /// .bind(id.as_i64())
    /// .fetch_one(&mut *tx)
    /// .await?;
    /// assert!(later); // `now()` is the transaction's start time
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self.run_at = None;
        self
    }

    /// A key unique per operation name: publishing again with the same key
    /// creates nothing and returns the existing operation's id, for as long
    /// as that operation is in the table (until retention purges it).
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.welcome")]
    /// async fn welcome(ctx: &mut Context, user_id: i64) -> Result<()> {
    ///     let _ = (ctx, user_id);
    ///     Ok(())
    /// }
    ///
    /// # async fn example(pool: sqlx::PgPool) -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let publisher = pgoutbox::Publisher::default();
    /// let key = || PublishOptions::new().idempotency_key("welcome-7");
    /// let mut tx = pool.begin().await?;
    /// let first = publisher.publish_with(&mut tx, Welcome { user_id: 7 }, key()).await?;
    /// let again = publisher.publish_with(&mut tx, Welcome { user_id: 7 }, key()).await?;
    /// assert_eq!(first, again); // nothing new was created
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Claim order among ready operations; higher runs first.
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
    /// # async fn example(pool: sqlx::PgPool) -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// let urgent = PublishOptions::new().priority(10); // claimed before priority 0
    /// let id = pgoutbox::Publisher::default()
    ///     .publish_with(&mut tx, SendMail { to: "oncall@example.com".into() }, urgent)
    ///     .await?;
    /// let priority: i16 = sqlx::query_scalar("SELECT priority FROM pgoutbox.operations WHERE id = $1")
    ///     .bind(id.as_i64())
    ///     .fetch_one(&mut *tx)
    ///     .await?;
    /// assert_eq!(priority, 10);
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = Some(priority);
        self
    }

    /// The queue to publish into.
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("reports.build")]
    /// async fn build_report(ctx: &mut Context, account: i64) -> Result<()> {
    ///     let _ = (ctx, account);
    ///     Ok(())
    /// }
    ///
    /// # async fn example(pool: sqlx::PgPool) -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// // Only workers with `workflow_system.queues` including "bulk" claim it.
    /// let bulk = PublishOptions::new().queue("bulk");
    /// let id = pgoutbox::Publisher::default().publish_with(&mut tx, BuildReport { account: 7 }, bulk).await?;
    /// let queue: String = sqlx::query_scalar("SELECT queue FROM pgoutbox.operations WHERE id = $1")
    ///     .bind(id.as_i64())
    ///     .fetch_one(&mut *tx)
    ///     .await?;
    /// assert_eq!(queue, "bulk");
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// The operation this one follows from, for the workflow tree.
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("billing.charge")]
    /// async fn charge(ctx: &mut Context, amount_cents: i64) -> Result<()> {
    ///     let _ = (ctx, amount_cents);
    ///     Ok(())
    /// }
    ///
    /// #[operation("mail.receipt")]
    /// async fn receipt(ctx: &mut Context, amount_cents: i64) -> Result<()> {
    ///     let _ = (ctx, amount_cents);
    ///     Ok(())
    /// }
    ///
    /// # async fn example(pool: sqlx::PgPool) -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let publisher = pgoutbox::Publisher::default();
    /// let mut tx = pool.begin().await?;
    /// let charge = publisher.publish(&mut tx, Charge { amount_cents: 1999 }).await?;
    /// let options = PublishOptions::new().parent(charge);
    /// let receipt = publisher.publish_with(&mut tx, Receipt { amount_cents: 1999 }, options).await?;
    /// tx.commit().await?;
    /// let tree = pgoutbox::admin::Admin::new(pool, &pgoutbox::Identifier::default()).workflow(charge).await?;
    /// assert_eq!(tree.iter().map(|op| op.id).collect::<Vec<_>>(), [charge, receipt]);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn parent(mut self, parent: OperationId) -> Self {
        self.parent = Some(parent);
        self
    }
}

/// Publishes operations into one schema, notifying one channel (or none).
///
/// [`publish`] uses the default publisher: schema `pgoutbox`, channel
/// `pgoutbox`, NOTIFY on, prepared statements. Build one with
/// [`Publisher::from_settings`] when the settings say otherwise — another
/// schema or channel, NOTIFY off, or `database.prepared_statements = false`
/// behind pgbouncer in transaction mode (see `docs/operating.md`). A
/// publisher is cheap to clone; build it once.
///
/// ```
/// let mut settings = pgoutbox::Settings::default();
/// settings.database.schema = "billing_outbox".into();
/// settings.workflow_system.notify = false; // workers find work by polling
/// let publisher = pgoutbox::Publisher::from_settings(&settings)?;
/// # let _ = publisher;
/// # Ok::<(), pgoutbox::SettingsError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Publisher {
    store: Store,
    max_attempts: u32,
}

impl Default for Publisher {
    fn default() -> Self {
        static DEFAULT: LazyLock<Publisher> = LazyLock::new(|| {
            Publisher::new(
                &Identifier::default(),
                Some(&Identifier::new(DEFAULT_CHANNEL).expect("the default channel is valid")),
                DEFAULT_MAX_ATTEMPTS,
            )
        });
        DEFAULT.clone()
    }
}

impl Publisher {
    /// A publisher for `schema`, waking workers on `channel` (`None`: no
    /// NOTIFY; workers find the operations by polling), giving operations
    /// whose attribute does not say otherwise `max_attempts` attempts. It
    /// uses prepared statements.
    ///
    /// ```
    /// use pgoutbox::{Identifier, Publisher};
    ///
    /// let schema = Identifier::new("billing_outbox")?;
    /// let publisher = Publisher::new(&schema, None, 5); // no NOTIFY
    /// # let _ = publisher;
    /// # Ok::<(), pgoutbox::InvalidIdentifier>(())
    /// ```
    pub fn new(schema: &Identifier, channel: Option<&Identifier>, max_attempts: u32) -> Self {
        Publisher {
            store: Store::new(schema, channel, true),
            max_attempts,
        }
    }

    /// A publisher for the schema, channel, NOTIFY choice, default
    /// attempts and statement mode of `settings`.
    ///
    /// ```
    /// let mut settings = pgoutbox::Settings::default();
    /// settings.database.schema = "Not Valid".into();
    /// let err = pgoutbox::Publisher::from_settings(&settings).unwrap_err();
    /// assert_eq!(err.key(), "database.schema");
    /// ```
    pub fn from_settings(settings: &Settings) -> Result<Self, SettingsError> {
        settings.validate()?;
        let channel = settings.channel()?;
        Ok(Publisher {
            store: Store::new(
                &settings.schema()?,
                settings.workflow_system.notify.then_some(&channel),
                settings.database.prepared_statements,
            ),
            max_attempts: settings.workflow_system.max_attempts,
        })
    }

    /// Publishes `payload` with default options. See [`publish`].
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::Publisher;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// # async fn example(pool: sqlx::PgPool) -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let publisher = Publisher::from_settings(&Settings::load()?)?; // build once, clone freely
    /// let mut tx = pool.begin().await?;
    /// let id = publisher.publish(&mut tx, SendMail { to: "ada@example.com".into() }).await?;
    /// tx.commit().await?;
    /// assert!(id.as_i64() > 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish<O: Operation>(
        &self,
        conn: &mut PgConnection,
        payload: O,
    ) -> Result<OperationId, PublishError> {
        self.publish_with(conn, payload, PublishOptions::new())
            .await
    }

    /// Publishes `payload` with `options`. Like [`publish`], it never
    /// commits.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::Publisher;
    ///
    /// #[operation("mail.send", idempotent)]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// # async fn example(pool: sqlx::PgPool) -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let publisher = Publisher::from_settings(&Settings::load()?)?;
    /// let mut tx = pool.begin().await?;
    /// let options = PublishOptions::new()
    ///     .idempotency_key("welcome-7") // a second publish with this key returns the same id
    ///     .delay(Duration::from_secs(600));
    /// let id = publisher
    ///     .publish_with(&mut tx, SendMail { to: "ada@example.com".into() }, options)
    ///     .await?;
    /// tx.commit().await?;
    /// println!("published operation {id}");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish_with<O: Operation>(
        &self,
        conn: &mut PgConnection,
        payload: O,
        options: PublishOptions,
    ) -> Result<OperationId, PublishError> {
        let op = self.prepare(&payload, options)?;
        self.insert(conn, &op).await
    }

    /// Publishes many operations of one type, sharing `options` (an
    /// idempotency key, being unique, is refused here); returns their ids in
    /// order. One statement per [`PUBLISH_MANY_CHUNK`] payloads (or
    /// [`PUBLISH_MANY_CHUNK_BYTES`] of JSON), so a large input is never one
    /// statement of unbounded size. Like [`publish`], it never commits; with
    /// NOTIFY on, the transaction sends one notification however many rows
    /// it publishes. On an error, chunks sent before it may be written in
    /// the caller's transaction: roll it back. A payload over
    /// [`MAX_PAYLOAD_BYTES`] is refused with [`PublishError::Unstorable`].
    ///
    /// ```no_run
    /// use pgoutbox::prelude::*;
    /// use pgoutbox::Publisher;
    ///
    /// #[operation("mail.send")]
    /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// # async fn example(pool: sqlx::PgPool, publisher: Publisher) -> std::result::Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// let mails = ["ada@example.com", "alan@example.com"].map(|to| SendMail { to: to.into() });
    /// let ids = publisher
    ///     .publish_many(&mut tx, mails, PublishOptions::new().queue("newsletter"))
    ///     .await?;
    /// assert_eq!(ids.len(), 2);
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish_many<O: Operation>(
        &self,
        conn: &mut PgConnection,
        payloads: impl IntoIterator<Item = O>,
        options: PublishOptions,
    ) -> Result<Vec<OperationId>, PublishError> {
        let name = O::NAME;
        if options.idempotency_key.is_some() {
            return Err(PublishError::InvalidOption {
                name,
                reason: "an idempotency key names one operation; publish_many cannot share it"
                    .to_owned(),
            });
        }
        let mut template: Option<NewOperation> = None;
        let mut ids = Vec::new();
        let (mut chunk, mut chunk_bytes) = (Vec::new(), 0);
        for payload in payloads {
            if template.is_none() {
                template = Some(self.prepare(&payload, options.clone())?);
            }
            let value = serde_json::to_value(&payload)
                .map_err(|source| PublishError::Serialize { name, source })?;
            chunk_bytes += check_storable(name, &value)?;
            chunk.push(value);
            if chunk.len() >= PUBLISH_MANY_CHUNK || chunk_bytes >= PUBLISH_MANY_CHUNK_BYTES {
                let template = template.as_ref().expect("prepared with the first payload");
                ids.extend(self.insert_chunk(conn, template, &chunk).await?);
                chunk.clear();
                chunk_bytes = 0;
            }
        }
        if let (Some(template), false) = (&template, chunk.is_empty()) {
            ids.extend(self.insert_chunk(conn, template, &chunk).await?);
        }
        Ok(ids)
    }

    async fn insert_chunk(
        &self,
        conn: &mut PgConnection,
        template: &NewOperation,
        chunk: &[serde_json::Value],
    ) -> Result<Vec<OperationId>, PublishError> {
        self.store
            .insert_many(conn, template, chunk)
            .await
            .map_err(|source| PublishError::Database {
                name: template.name,
                source,
            })
    }

    /// The publisher's statements.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Builds the row for `payload`: options, then the attribute, then the
    /// settings.
    pub(crate) fn prepare<O: Operation>(
        &self,
        payload: &O,
        options: PublishOptions,
    ) -> Result<NewOperation, PublishError> {
        let json = serde_json::to_value(payload).map_err(|source| PublishError::Serialize {
            name: O::NAME,
            source,
        })?;
        check_storable(O::NAME, &json)?;
        self.prepare_json::<O>(json, options)
    }

    /// [`Publisher::prepare`] for a payload already serialized (and checked).
    pub(crate) fn prepare_json<O: Operation>(
        &self,
        json: serde_json::Value,
        options: PublishOptions,
    ) -> Result<NewOperation, PublishError> {
        let name = O::NAME;
        let max_attempts = O::OPTIONS.max_attempts.unwrap_or(self.max_attempts);
        let max_attempts = i32::try_from(max_attempts)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| PublishError::InvalidOption {
                name,
                reason: format!("max_attempts must be between 1 and {}", i32::MAX),
            })?;
        // A delay is added to the database's clock, never the client's.
        let delay_micros = options
            .delay
            .map(|delay| {
                if delay > storable::MAX_DELAY {
                    return Err(PublishError::InvalidOption {
                        name,
                        reason: format!(
                            "delay {delay:?} is longer than the longest pgoutbox stores, \
                             {:?} (100 × 365 days)",
                            storable::MAX_DELAY
                        ),
                    });
                }
                i64::try_from(delay.as_micros()).map_err(|_| PublishError::InvalidOption {
                    name,
                    reason: format!("delay {delay:?} is too long"),
                })
            })
            .transpose()?;
        if options
            .idempotency_key
            .as_deref()
            .is_some_and(|k| k.contains('\0'))
        {
            return Err(PublishError::InvalidOption {
                name,
                reason: "the idempotency key holds a NUL character, which PostgreSQL cannot \
                         store"
                    .to_owned(),
            });
        }
        let queue = options
            .queue
            .or_else(|| O::OPTIONS.queue.map(str::to_owned))
            .unwrap_or_else(|| "default".to_owned());
        if !crate::name::is_valid(&queue) {
            return Err(PublishError::InvalidOption {
                name,
                reason: format!("invalid queue name `{queue}`"),
            });
        }
        Ok(NewOperation {
            name,
            payload: json,
            schema: O::schema(),
            priority: options.priority.or(O::OPTIONS.priority).unwrap_or(0),
            queue,
            run_at: options.run_at,
            delay_micros,
            max_attempts,
            idempotent: O::OPTIONS.idempotent,
            idempotency_key: options.idempotency_key,
            parent_id: options.parent,
        })
    }

    /// Inserts a prepared row.
    pub(crate) async fn insert(
        &self,
        conn: &mut PgConnection,
        op: &NewOperation,
    ) -> Result<OperationId, PublishError> {
        let name = op.name;
        let db = |source| PublishError::Database { name, source };
        let inserted = self.store.insert_operation(conn, op).await.map_err(db)?;
        match (inserted, op.idempotency_key.as_deref()) {
            (Some(id), _) => Ok(id),
            (None, Some(key)) => self
                .store
                .find_by_idempotency_key(conn, name, key)
                .await
                .map_err(db)?
                .ok_or_else(|| PublishError::Database {
                    name,
                    source: sqlx::Error::Protocol(format!(
                        "idempotency key `{key}` is taken by an operation this transaction cannot see yet"
                    )),
                }),
            (None, None) => Err(db(sqlx::Error::RowNotFound)),
        }
    }
}

/// Publishes many operations of one type (in chunks of
/// [`PUBLISH_MANY_CHUNK`]) with the default publisher, inside the caller's transaction; returns their ids in order.
/// See [`Publisher::publish_many`] for options.
///
/// ```no_run
/// use pgoutbox::prelude::*;
///
/// #[operation("billing.charge", transactional, idempotent)]
/// async fn charge(ctx: &mut TxContext<'_>, customer_id: i64, amount_cents: i64) -> Result<()> {
///     # let _ = (ctx, customer_id, amount_cents);
///     Ok(())
/// }
///
/// # async fn example(pool: sqlx::PgPool) -> std::result::Result<(), Box<dyn std::error::Error>> {
/// let mut tx = pool.begin().await?;
/// let charges = (1..=100).map(|customer_id| Charge { customer_id, amount_cents: 500 });
/// let ids = publish_many(&mut tx, charges).await?; // never commits
/// tx.commit().await?;
/// assert_eq!(ids.len(), 100);
/// # Ok(())
/// # }
/// ```
pub async fn publish_many<O: Operation>(
    conn: &mut PgConnection,
    payloads: impl IntoIterator<Item = O>,
) -> Result<Vec<OperationId>, PublishError> {
    Publisher::default()
        .publish_many(conn, payloads, PublishOptions::new())
        .await
}

/// Publishes `payload` inside the caller's transaction (or on a plain
/// connection) and returns the new operation's id.
///
/// The connection is a `&mut PgConnection`, so `&mut tx` (a sqlx
/// `Transaction`) and `&mut conn` (a `PoolConnection`) both coerce to it.
/// (A generic `impl Acquire` parameter would make the returned future fail
/// `Send` checks, and so `tokio::spawn`, for lack of higher-ranked
/// lifetimes.) It never commits: if the caller rolls back, nothing was
/// published and nobody is woken; when the caller commits, the operation is
/// durable and the workers are woken (by this transaction's notification, or
/// by a concurrent publisher's one it was coalesced with: see
/// `docs/tuning.md`).
///
/// It uses the default [`Publisher`] (schema and channel `pgoutbox`, NOTIFY
/// on); use [`Publisher::from_settings`] for anything else. What happens to
/// the operation afterwards is described in `docs/consistency.md`.
///
/// ```no_run
/// use pgoutbox::prelude::*;
///
/// #[operation("billing.charge", transactional, idempotent)]
/// async fn charge(ctx: &mut TxContext<'_>, customer_id: i64, amount_cents: i64) -> Result<()> {
///     # let _ = (ctx, customer_id, amount_cents);
///     Ok(())
/// }
///
/// # async fn example(pool: sqlx::PgPool) -> std::result::Result<(), Box<dyn std::error::Error>> {
/// let mut tx = pool.begin().await?;
/// // … the application's own writes …
/// publish::<Charge>(&mut tx, Charge { customer_id: 7, amount_cents: 1999 }).await?;
/// tx.commit().await?; // the intent is now durable
/// # Ok(())
/// # }
/// ```
pub async fn publish<O: Operation>(
    conn: &mut PgConnection,
    payload: O,
) -> Result<OperationId, PublishError> {
    Publisher::default().publish(conn, payload).await
}

/// The largest payload a publish accepts, as JSON text: 1 MiB. A larger one
/// is refused with [`PublishError::Unstorable`] before anything is sent.
/// Operations carry intent, not documents: store a large document in the
/// application's own tables and publish its key.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// [`publish_many`] sends its payloads in statements of at most this many
/// operations (and at most [`PUBLISH_MANY_CHUNK_BYTES`] of JSON), all in the
/// caller's transaction: one statement for a small batch, several for a
/// large one, never one statement of unbounded size.
pub const PUBLISH_MANY_CHUNK: usize = 1_000;

/// The most JSON one [`publish_many`] statement carries: 16 MiB.
pub const PUBLISH_MANY_CHUNK_BYTES: usize = 16 << 20;

/// Refuses a payload that `jsonb` cannot store, naming where it is wrong,
/// or that is larger than [`MAX_PAYLOAD_BYTES`]; returns its size as JSON
/// text.
pub(crate) fn check_storable(
    name: &'static str,
    payload: &serde_json::Value,
) -> Result<usize, PublishError> {
    storable::json_document(payload, "a payload", MAX_PAYLOAD_BYTES)
        .map_err(|reason| PublishError::Unstorable { name, reason })
}
