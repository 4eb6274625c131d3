//! What a handler receives besides its payload.

use sqlx::postgres::{PgQueryResult, PgRow};
use sqlx::{Execute, Executor as _, PgConnection, Postgres};
use uuid::Uuid;

use crate::definition::{Operation, OperationId};
use crate::publish::{PublishError, PublishOptions, Publisher};
use crate::store::NewOperation;
use crate::workflow::Workflow;

/// Facts about the running attempt, shared by both contexts.
#[derive(Debug, Clone)]
pub(crate) struct AttemptInfo {
    pub(crate) id: OperationId,
    pub(crate) name: &'static str,
    pub(crate) attempt: u32,
    pub(crate) external_key: Uuid,
    pub(crate) root_id: OperationId,
    /// How the step's dependencies ended (empty outside workflows).
    pub(crate) inputs: crate::workflow::StepInputs,
    /// The step's workflow (`None` outside workflows).
    pub(crate) workflow_id: Option<crate::definition::WorkflowId>,
}

/// The context of a plain (non-transactional) handler.
///
/// It tells the handler which operation and attempt it runs and gives the
/// stable idempotency key to hand to external APIs that deduplicate.
/// Follow-up operations published through it are recorded together with
/// this attempt's success, or not at all.
///
/// ```
/// use pgoutbox::prelude::*;
///
/// /// Log a delivery.
/// #[operation("mail.delivered", idempotent)]
/// async fn delivered(ctx: &mut Context, to: String) -> Result<()> {
///     let _ = (ctx, to);
///     Ok(())
/// }
///
/// /// Send an e-mail through a mail API that deduplicates on a key.
/// #[operation("mail.send", idempotent)]
/// async fn send(ctx: &mut Context, to: String) -> Result<()> {
///     let key = ctx.idempotency_key(); // the same on every attempt
///     tracing::info!(operation = %ctx.operation_id(), attempt = ctx.attempt(), %key, "sending");
///     // … mail_api.send(&to, key).await? …
///     ctx.publish(Delivered { to })?; // runs once this attempt's success is recorded
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Context {
    pub(crate) info: AttemptInfo,
    pub(crate) publisher: Publisher,
    pub(crate) follow_ups: Vec<NewOperation>,
    /// Steps the handler added to its workflow.
    pub(crate) additions: Option<Workflow>,
}

/// The context of a `transactional` handler: everything [`Context`] gives,
/// plus the dispatcher-owned transaction in which the handler's writes
/// commit together with the success record, or not at all.
///
/// ```
/// use pgoutbox::prelude::*;
/// use sqlx::Row as _;
///
/// /// Send the receipt of an invoice.
/// #[operation("mail.receipt", idempotent)]
/// async fn receipt(ctx: &mut Context, invoice_id: i64) -> Result<()> {
///     let _ = (ctx, invoice_id);
///     Ok(())
/// }
///
/// /// Record an invoice, then send its receipt.
/// #[operation("billing.invoice", transactional, idempotent)]
/// async fn invoice(ctx: &mut TxContext<'_>, customer_id: i64, amount_cents: i64) -> Result<()> {
///     let row = ctx
///         .fetch_one(
///             sqlx::query("INSERT INTO invoices (customer_id, amount_cents) VALUES ($1, $2) RETURNING id")
///                 .bind(customer_id)
///                 .bind(amount_cents),
///         )
///         .await?;
///     let invoice_id: i64 = row.try_get("id")?;
///     // Commits with the invoice row and the success, or not at all.
///     ctx.publish(Receipt { invoice_id }).await?;
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct TxContext<'c> {
    pub(crate) info: AttemptInfo,
    pub(crate) conn: &'c mut PgConnection,
    pub(crate) publisher: Publisher,
    /// Steps the handler added to its workflow.
    pub(crate) additions: Option<Workflow>,
}

macro_rules! attempt_accessors {
    () => {
        /// The result of one of this step's dependencies: a [`Dep`] field
        /// of the payload (the dependency succeeded: this step would not
        /// run otherwise), or a [`Settled`] one (it may have ended `dead`
        /// or `cancelled`: then [`StepError::Failed`] says how). Typed: a
        /// `Dep<Charge>` reads a `Charge::Output`.
        ///
        /// [`Dep`]: crate::workflow::Dep
        /// [`Settled`]: crate::workflow::Settled
        /// [`StepError::Failed`]: crate::workflow::StepError::Failed
        ///
        /// ```
        /// use pgoutbox::prelude::*;
        /// use pgoutbox::workflow::Dep;
        ///
        /// #[operation("shop.price")]
        /// async fn price(ctx: &mut Context, sku: String) -> Result<i64> {
        ///     let _ = (ctx, sku);
        ///     Ok(1999)
        /// }
        ///
        /// #[operation("shop.invoice")]
        /// async fn invoice(ctx: &mut Context, price: Dep<Price>) -> Result<()> {
        ///     let cents: i64 = ctx.result(&price)?;
        ///     assert!(cents > 0);
        ///     Ok(())
        /// }
        /// ```
        pub fn result<R: crate::workflow::StepRef>(
            &self,
            step: &R,
        ) -> Result<<R::Operation as Operation>::Output, crate::workflow::StepError> {
            crate::workflow::read_result(&self.info.inputs, step)
        }

        /// The results of several dependencies (a fan-in's
        /// `Vec<Dep<O>>`), in their order; the first that cannot be read
        /// is the error.
        pub fn results<'d, R: crate::workflow::StepRef + 'd>(
            &self,
            steps: impl IntoIterator<Item = &'d R>,
        ) -> Result<Vec<<R::Operation as Operation>::Output>, crate::workflow::StepError> {
            steps
                .into_iter()
                .map(|step| crate::workflow::read_result(&self.info.inputs, step))
                .collect()
        }

        /// Adds a step to this step's workflow, decided at run time (one
        /// per line item, say): recorded with this attempt's success (a
        /// transactional handler's: in its transaction), or not at all.
        /// Returns its `Dep`, for the steps added after it, such as one
        /// that waits for all of them (a fan-in). A step added here may
        /// also name the steps this one's payload names. They are released
        /// by the workflow's rules; in a workflow that has failed meanwhile
        /// they are added cancelled.
        ///
        /// A step that cannot be published (its payload, a `Dep` of
        /// another workflow), or a handler whose operation is not a
        /// workflow step, makes the attempt fail permanently with a message
        /// saying why; nothing it added is recorded.
        ///
        /// ```
        /// use pgoutbox::prelude::*;
        /// use pgoutbox::workflow::Dep;
        ///
        /// #[operation("shop.pack")]
        /// async fn pack(ctx: &mut Context, sku: String) -> Result<()> {
        ///     let _ = (ctx, sku);
        ///     Ok(())
        /// }
        ///
        /// #[operation("shop.ship_all")]
        /// async fn ship_all(ctx: &mut Context, packed: Vec<Dep<Pack>>) -> Result<()> {
        ///     ctx.results(&packed)?;
        ///     Ok(())
        /// }
        ///
        /// #[operation("shop.split")]
        /// async fn split(ctx: &mut Context, skus: Vec<String>) -> Result<()> {
        ///     let packed = skus.into_iter().map(|sku| ctx.add_step(Pack { sku })).collect();
        ///     ctx.add_step(ShipAll { packed });
        ///     Ok(())
        /// }
        /// ```
        pub fn add_step<O: Operation>(&mut self, payload: O) -> crate::workflow::Dep<O> {
            self.add_step_with(payload, PublishOptions::new())
        }

        /// [`add_step`](Self::add_step) with options (`run_at`, `delay`,
        /// `priority`, `queue`).
        pub fn add_step_with<O: Operation>(
            &mut self,
            payload: O,
            options: PublishOptions,
        ) -> crate::workflow::Dep<O> {
            let id = self.info.id;
            self.additions
                .get_or_insert_with(|| Workflow::additions(id))
                .add_with(payload, options)
        }

        /// Declares the compensation of a step added by
        /// [`add_step`](Self::add_step), as
        /// [`Workflow::compensate_with`] does at publish.
        pub fn compensate_with<O: Operation, C: Operation>(
            &mut self,
            step: crate::workflow::Dep<O>,
            compensation: impl FnOnce(crate::workflow::Dep<O>) -> C,
        ) {
            let id = self.info.id;
            self.additions
                .get_or_insert_with(|| Workflow::additions(id))
                .compensate_with(step, compensation);
        }

        /// The workflow this operation is a step of, if it is one.
        pub fn workflow_id(&self) -> Option<crate::definition::WorkflowId> {
            self.info.workflow_id
        }

        /// The operation's id.
        ///
        /// ```
        /// use pgoutbox::prelude::*;
        ///
        /// #[operation("mail.send")]
        /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
        ///     // The id `publish` returned, and that `pgoutbox ops show` takes.
        ///     tracing::info!(operation_id = %ctx.operation_id(), %to, "sending");
        ///     assert!(ctx.operation_id().as_i64() > 0);
        ///     Ok(())
        /// }
        /// ```
        pub fn operation_id(&self) -> OperationId {
            self.info.id
        }

        /// The operation's name.
        ///
        /// ```
        /// use pgoutbox::prelude::*;
        ///
        /// #[operation("mail.send")]
        /// async fn send_mail(ctx: &mut Context, to: String) -> Result<()> {
        ///     assert_eq!(ctx.name(), <SendMail as Operation>::NAME);
        ///     let _ = to;
        ///     Ok(())
        /// }
        /// ```
        pub fn name(&self) -> &'static str {
            self.info.name
        }

        /// This attempt's number, from 1.
        ///
        /// ```
        /// use pgoutbox::prelude::*;
        ///
        /// #[operation("reports.build", max_attempts = 3)]
        /// async fn build_report(ctx: &mut Context, account: i64) -> Result<()> {
        ///     assert!((1..=3).contains(&ctx.attempt()));
        ///     if ctx.attempt() == 3 {
        ///         tracing::warn!(account, "last attempt");
        ///     }
        ///     Ok(())
        /// }
        /// ```
        pub fn attempt(&self) -> u32 {
            self.info.attempt
        }

        /// A key that stays the same for every attempt of this operation and
        /// differs between operations: pass it to external APIs that
        /// deduplicate (a payment provider's idempotency key), so that an
        /// `idempotent` operation can be retried after an unknown outcome.
        ///
        /// ```
        /// use pgoutbox::prelude::*;
        ///
        /// #[operation("billing.charge", idempotent)]
        /// async fn charge(ctx: &mut Context, amount_cents: i64) -> Result<()> {
        ///     // The same key on a retry after an unknown outcome: the provider
        ///     // returns the first charge instead of charging twice.
        ///     let key = ctx.idempotency_key().to_string();
        ///     assert_eq!(key.len(), 36);
        ///     let _ = amount_cents; // provider.charge(amount_cents, &key).await?
        ///     Ok(())
        /// }
        /// ```
        pub fn idempotency_key(&self) -> Uuid {
            self.info.external_key
        }

        /// The id of the first operation of the workflow this one belongs to
        /// (its own id when it was published by application code).
        ///
        /// ```
        /// use pgoutbox::prelude::*;
        ///
        /// #[operation("billing.receipt")]
        /// async fn receipt(ctx: &mut Context, amount_cents: i64) -> Result<()> {
        ///     // Published by a charge's handler: the root is the workflow's first operation.
        ///     if ctx.root_id() != ctx.operation_id() {
        ///         tracing::info!(workflow = %ctx.root_id(), amount_cents, "a follow-up");
        ///     }
        ///     Ok(())
        /// }
        /// ```
        pub fn root_id(&self) -> OperationId {
            self.info.root_id
        }
    };
}

impl Context {
    attempt_accessors!();

    /// Publishes a follow-up operation, recorded atomically with this
    /// attempt's success (and not at all if it fails). It carries this
    /// operation as its parent and shares its root.
    ///
    /// Nothing is written yet: the payload is serialized now (so a
    /// serialization error is returned here) and inserted when the success
    /// is recorded. See the example on [`Context`].
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.receipt")]
    /// async fn receipt(ctx: &mut Context, amount_cents: i64) -> Result<()> {
    ///     let _ = (ctx, amount_cents);
    ///     Ok(())
    /// }
    ///
    /// #[operation("billing.charge", idempotent)]
    /// async fn charge(ctx: &mut Context, amount_cents: i64) -> Result<()> {
    ///     // … provider.charge(amount_cents, ctx.idempotency_key()).await? …
    ///     ctx.publish(Receipt { amount_cents })?; // inserted with this attempt's success
    ///     Ok(())
    /// }
    /// ```
    #[allow(clippy::needless_pass_by_value)] // The same shape as `publish`: the payload is given away.
    pub fn publish<O: Operation>(&mut self, payload: O) -> Result<(), PublishError> {
        self.publish_with(payload, PublishOptions::new())
    }

    /// [`Context::publish`] with options; the parent is always this
    /// operation.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.reminder")]
    /// async fn reminder(ctx: &mut Context, to: String) -> Result<()> {
    ///     let _ = (ctx, to);
    ///     Ok(())
    /// }
    ///
    /// #[operation("mail.welcome")]
    /// async fn welcome(ctx: &mut Context, to: String) -> Result<()> {
    ///     // … send the welcome mail …
    ///     let in_a_week = PublishOptions::new().delay(Duration::from_secs(7 * 24 * 3600));
    ///     ctx.publish_with(Reminder { to }, in_a_week)?;
    ///     Ok(())
    /// }
    /// ```
    #[allow(clippy::needless_pass_by_value)] // As above.
    pub fn publish_with<O: Operation>(
        &mut self,
        payload: O,
        options: PublishOptions,
    ) -> Result<(), PublishError> {
        let op = self
            .publisher
            .prepare(&payload, options.parent(self.info.id))?;
        self.follow_ups.push(op);
        Ok(())
    }
}

impl TxContext<'_> {
    attempt_accessors!();

    /// Publishes a follow-up operation inside the dispatcher's transaction:
    /// it commits with the handler's writes and success, or not at all. It
    /// carries this operation as its parent and shares its root. See the
    /// example on [`TxContext`].
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("mail.receipt")]
    /// async fn receipt(ctx: &mut Context, invoice_id: i64) -> Result<()> {
    ///     let _ = (ctx, invoice_id);
    ///     Ok(())
    /// }
    ///
    /// #[operation("billing.close", transactional)]
    /// async fn close(ctx: &mut TxContext<'_>, invoice_id: i64) -> Result<()> {
    ///     ctx.execute(sqlx::query("UPDATE invoices SET closed = true WHERE id = $1").bind(invoice_id)).await?;
    ///     let id = ctx.publish(Receipt { invoice_id }).await?; // already in the transaction
    ///     assert_ne!(id, ctx.operation_id());
    ///     Ok(())
    /// }
    /// ```
    pub async fn publish<O: Operation>(&mut self, payload: O) -> Result<OperationId, PublishError> {
        self.publish_with(payload, PublishOptions::new()).await
    }

    /// [`TxContext::publish`] with options; the parent is always this
    /// operation.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("ledger.post")]
    /// async fn post(ctx: &mut Context, entry: i64) -> Result<()> {
    ///     let _ = (ctx, entry);
    ///     Ok(())
    /// }
    ///
    /// #[operation("ledger.close", transactional)]
    /// async fn close(ctx: &mut TxContext<'_>, entry: i64) -> Result<()> {
    ///     ctx.publish_with(Post { entry }, PublishOptions::new().priority(10).queue("ledger"))
    ///         .await?;
    ///     Ok(())
    /// }
    /// ```
    pub async fn publish_with<O: Operation>(
        &mut self,
        payload: O,
        options: PublishOptions,
    ) -> Result<OperationId, PublishError> {
        let op = self
            .publisher
            .prepare(&payload, options.parent(self.info.id))?;
        self.publisher.insert(self.conn, &op).await
    }

    /// Runs a statement inside the dispatcher-owned transaction.
    ///
    /// Any of sqlx's `query`, `query_as` or `query_scalar` (with their
    /// binds) is accepted; rows come back as `PgRow`, to read with
    /// `Row::try_get` or `FromRow::from_row`.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("stock.reserve", transactional, idempotent)]
    /// async fn reserve(ctx: &mut TxContext<'_>, sku: String, quantity: i32) -> Result<()> {
    ///     let done = ctx
    ///         .execute(
    ///             sqlx::query("UPDATE stock SET reserved = reserved + $2 WHERE sku = $1")
    ///                 .bind(&sku)
    ///                 .bind(quantity),
    ///         )
    ///         .await?;
    ///     if done.rows_affected() == 0 {
    ///         return Err(HandlerError::permanent(format!("unknown SKU {sku}")));
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub async fn execute<'q, E>(&mut self, query: E) -> Result<PgQueryResult, sqlx::Error>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        self.conn.execute(query).await
    }

    /// Fetches exactly one row inside the transaction (an error if there
    /// is none). See the example on [`TxContext`].
    pub async fn fetch_one<'q, E>(&mut self, query: E) -> Result<PgRow, sqlx::Error>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        self.conn.fetch_one(query).await
    }

    /// Fetches at most one row inside the transaction.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("accounts.close", transactional, idempotent)]
    /// async fn close(ctx: &mut TxContext<'_>, account_id: i64) -> Result<()> {
    ///     let found = ctx
    ///         .fetch_optional(sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE").bind(account_id))
    ///         .await?;
    ///     if found.is_none() {
    ///         return Err(HandlerError::permanent(format!("no account {account_id}")));
    ///     }
    ///     ctx.execute(sqlx::query("UPDATE accounts SET closed = true WHERE id = $1").bind(account_id))
    ///         .await?;
    ///     Ok(())
    /// }
    /// ```
    pub async fn fetch_optional<'q, E>(&mut self, query: E) -> Result<Option<PgRow>, sqlx::Error>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        self.conn.fetch_optional(query).await
    }

    /// Fetches every row inside the transaction.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    /// use sqlx::Row as _;
    ///
    /// #[operation("billing.close_month", transactional, idempotent)]
    /// async fn close_month(ctx: &mut TxContext<'_>, month: String) -> Result<()> {
    ///     let rows = ctx
    ///         .fetch_all(sqlx::query("SELECT amount_cents FROM invoices WHERE month = $1").bind(&month))
    ///         .await?;
    ///     let mut total = 0i64;
    ///     for row in &rows {
    ///         total += row.try_get::<i64, _>("amount_cents")?;
    ///     }
    ///     ctx.execute(sqlx::query("INSERT INTO totals (month, cents) VALUES ($1, $2)").bind(&month).bind(total))
    ///         .await?;
    ///     Ok(())
    /// }
    /// ```
    pub async fn fetch_all<'q, E>(&mut self, query: E) -> Result<Vec<PgRow>, sqlx::Error>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        self.conn.fetch_all(query).await
    }

    /// The escape hatch: the raw connection of the dispatcher-owned
    /// transaction, for what the methods above cannot do (typed
    /// `query_as(…).fetch_one(ctx.raw_connection())`, `COPY`, …).
    ///
    /// The transaction belongs to the dispatcher. Do not `COMMIT`,
    /// `ROLLBACK`, `BEGIN` or open savepoints on it: the dispatcher checks,
    /// before it records success, that the transaction it opened is still
    /// the one in progress, and fails the attempt (recording no success and
    /// keeping none of the handler's writes it can still roll back) if it is
    /// not.
    ///
    /// ```
    /// use pgoutbox::prelude::*;
    ///
    /// #[operation("crm.touch", transactional, idempotent)]
    /// async fn touch(ctx: &mut TxContext<'_>, customer_id: i64) -> Result<()> {
    ///     // A typed scalar, which `fetch_one` (rows as `PgRow`) does not give.
    ///     let email: String = sqlx::query_scalar("SELECT email FROM customers WHERE id = $1")
    ///         .bind(customer_id)
    ///         .fetch_one(ctx.raw_connection())
    ///         .await?;
    ///     let _ = email;
    ///     Ok(())
    /// }
    /// ```
    pub fn raw_connection(&mut self) -> &mut PgConnection {
        self.conn
    }
}
