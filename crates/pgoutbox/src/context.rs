//! What a handler receives besides its payload.

use sqlx::postgres::{PgQueryResult, PgRow};
use sqlx::{Execute, Executor as _, PgConnection, Postgres};
use uuid::Uuid;

use crate::definition::{Operation, OperationId};
use crate::publish::{PublishError, PublishOptions, Publisher};
use crate::store::NewOperation;

/// Facts about the running attempt, shared by both contexts.
#[derive(Debug, Clone)]
pub(crate) struct AttemptInfo {
    pub(crate) id: OperationId,
    pub(crate) name: &'static str,
    pub(crate) attempt: u32,
    pub(crate) external_key: Uuid,
    pub(crate) root_id: OperationId,
}

/// The context of a plain (non-transactional) handler.
///
/// It tells the handler which operation and attempt it runs and gives the
/// stable idempotency key to hand to external APIs that deduplicate.
#[derive(Debug)]
pub struct Context {
    pub(crate) info: AttemptInfo,
    pub(crate) publisher: Publisher,
    pub(crate) follow_ups: Vec<NewOperation>,
}

/// The context of a `transactional` handler: everything [`Context`] gives,
/// plus the dispatcher-owned transaction in which the handler's writes
/// commit together with the success record, or not at all.
#[derive(Debug)]
pub struct TxContext<'c> {
    pub(crate) info: AttemptInfo,
    pub(crate) conn: &'c mut PgConnection,
    pub(crate) publisher: Publisher,
}

macro_rules! attempt_accessors {
    () => {
        /// The operation's id.
        pub fn operation_id(&self) -> OperationId {
            self.info.id
        }

        /// The operation's name.
        pub fn name(&self) -> &'static str {
            self.info.name
        }

        /// This attempt's number, from 1.
        pub fn attempt(&self) -> u32 {
            self.info.attempt
        }

        /// A key that stays the same for every attempt of this operation and
        /// differs between operations: pass it to external APIs that
        /// deduplicate (a payment provider's idempotency key), so that an
        /// `idempotent` operation can be retried after an unknown outcome.
        pub fn idempotency_key(&self) -> Uuid {
            self.info.external_key
        }

        /// The id of the first operation of the workflow this one belongs to
        /// (its own id when it was published by application code).
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
    #[allow(clippy::needless_pass_by_value)] // The same shape as `publish`: the payload is given away.
    pub fn publish<O: Operation>(&mut self, payload: O) -> Result<(), PublishError> {
        self.publish_with(payload, PublishOptions::new())
    }

    /// [`Context::publish`] with options; the parent is always this
    /// operation.
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
    /// carries this operation as its parent and shares its root.
    pub async fn publish<O: Operation>(&mut self, payload: O) -> Result<OperationId, PublishError> {
        self.publish_with(payload, PublishOptions::new()).await
    }

    /// [`TxContext::publish`] with options; the parent is always this
    /// operation.
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
    pub async fn execute<'q, E>(&mut self, query: E) -> Result<PgQueryResult, sqlx::Error>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        self.conn.execute(query).await
    }

    /// Fetches exactly one row inside the transaction.
    pub async fn fetch_one<'q, E>(&mut self, query: E) -> Result<PgRow, sqlx::Error>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        self.conn.fetch_one(query).await
    }

    /// Fetches at most one row inside the transaction.
    pub async fn fetch_optional<'q, E>(&mut self, query: E) -> Result<Option<PgRow>, sqlx::Error>
    where
        E: 'q + Execute<'q, Postgres>,
    {
        self.conn.fetch_optional(query).await
    }

    /// Fetches every row inside the transaction.
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
    pub fn raw_connection(&mut self) -> &mut PgConnection {
        self.conn
    }
}
