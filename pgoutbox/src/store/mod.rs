//! Every SQL statement of the runtime, of operators' tools and of the test
//! kit, one function per named statement, the text in `sql/*.sql`.
//!
//! Statements name the schema as `{schema}`; a [`Store`] renders them once
//! for its validated, quoted schema (and channel), so no other module builds
//! SQL text. The other placeholders: `{notify}` and `{on_conflict}` (see
//! `insert_operation.sql`), `{operation_columns}` (the columns of an
//! operation as operators see it, [`admin::OPERATION_COLUMNS`]),
//! `{attempt_id}` (`begin_attempt.sql`, put in when it is sent), and the
//! parts two statements share, each in `sql/parts/`: `{purgeable_step}`
//! and `{purged_step_edges}` (the purges), `{replay_in_workflow}` (the
//! replays).

use std::sync::Arc;

use pgoutbox_migrate::Identifier;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, Row as _};
use uuid::Uuid;

use crate::definition::{OperationId, OperationSchema};
use crate::state::{Outcome, Status};

macro_rules! statements {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        /// The rendered statements for one schema and channel.
        #[derive(Debug)]
        pub(crate) struct Statements {
            $($(#[$attr])* $name: Arc<str>,)*
        }

        impl Statements {
            fn render(render: impl Fn(&str) -> Arc<str>) -> Self {
                Statements {
                    $($(#[$attr])* $name: render(include_str!(concat!("sql/", stringify!($name), ".sql"))),)*
                }
            }
        }
    };
}

statements!(
    insert_operation,
    insert_many,
    find_by_idempotency_key,
    claim,
    complete_success,
    complete_successes,
    complete_failure,
    snooze,
    transaction_marker,
    heartbeat,
    local_timeouts,
    rescue,
    register_worker,
    deregister_worker,
    record_schema,
    record_output,
    unhandled_names,
    unserved_queues,
    #[cfg(feature = "nats")]
    known_names,
    #[cfg(feature = "nats")]
    relay_first_send,
    purge_workers,
    // Workflows (`store::workflows`).
    workflow_open,
    workflow_by_key,
    workflow_insert,
    workflow_grow,
    workflow_foreign_steps,
    workflow_cancel_added,
    workflow_compensations_insert,
    workflow_lock,
    workflow_plan_steps,
    workflow_apply,
    workflow_actions_record,
    workflow_actions,
    workflows_list,
    workflow_row,
    workflow_steps,
    workflow_step,
    resolve_facts,
    // Operators' (`admin`).
    list_operations,
    operation,
    workflow,
    children,
    attempts,
    operator_actions,
    operator_transition,
    operator_replay,
    purge,
    purge_history,
    counts,
    oldest_ready,
    succeeded_per_minute,
    workers,
    schema_history,
    output_history,
    latest_schemas,
    ready_payloads,
    // The dashboard's reads (`admin::overview`).
    throughput,
    active_counts,
    estimated_counts,
    finished_counts,
    in_flight,
    stalled,
    stalled_count,
    workflow_page,
    // Operators' bulk actions (`admin::bulk`).
    bulk_count,
    bulk_targets,
    bulk_transition,
    bulk_replay,
    purge_recorded,
    // Schedules: the scheduler's and the operators' (`store::schedules`).
    schedule_now,
    schedule_insert,
    schedule_lock,
    schedule_rivals,
    schedule_adopt,
    schedule_declare,
    schedule_advance,
    schedule_conflicts,
    schedules,
    schedule_pause,
    schedule_actions,
    schedule_target,
    schedule_remove,
    schedules_undeclared,
    // The test kit's (`testing`).
    #[cfg(feature = "testing")]
    published_in_transaction,
    #[cfg(feature = "testing")]
    busy,
    #[cfg(feature = "testing")]
    count_by_status,
);

/// The statements of one schema, cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    sql: Arc<Statements>,
    /// `insert_operation` with its `ON CONFLICT` clause, for a publish with
    /// an idempotency key.
    insert_keyed: Arc<str>,
    persistent: bool,
}

/// A row to insert into `operations`.
#[derive(Debug, Clone)]
pub(crate) struct NewOperation {
    pub(crate) name: &'static str,
    pub(crate) payload: serde_json::Value,
    pub(crate) schema: &'static OperationSchema,
    pub(crate) priority: i16,
    pub(crate) queue: String,
    pub(crate) run_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(crate) delay_micros: Option<i64>,
    pub(crate) max_attempts: i32,
    pub(crate) idempotent: bool,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) parent_id: Option<OperationId>,
}

/// A claimed operation, its attempt started.
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    pub(crate) id: OperationId,
    pub(crate) name: String,
    pub(crate) payload: serde_json::Value,
    pub(crate) schema_hash: String,
    pub(crate) attempt: i32,
    /// How many of its attempts were snoozed (they do not count against
    /// `max_attempts`).
    pub(crate) snoozes: i32,
    pub(crate) max_attempts: i32,
    pub(crate) idempotent: bool,
    pub(crate) external_key: Uuid,
    pub(crate) root_id: OperationId,
    pub(crate) waited_seconds: f64,
    pub(crate) attempt_id: i64,
    /// A workflow step's dependencies: how each ended, and its result.
    pub(crate) inputs: workflows::StepInputs,
    /// Its workflow, for a step.
    pub(crate) workflow_id: Option<crate::definition::WorkflowId>,
}

impl Claimed {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Claimed {
            id: OperationId::from_i64(row.try_get("id")?),
            name: row.try_get("name")?,
            payload: row.try_get("payload")?,
            schema_hash: row.try_get("schema_hash")?,
            attempt: row.try_get("attempt")?,
            snoozes: row.try_get("snoozes")?,
            max_attempts: row.try_get("max_attempts")?,
            idempotent: row.try_get("idempotent")?,
            external_key: row.try_get("external_key")?,
            root_id: OperationId::from_i64(row.try_get("root_id")?),
            waited_seconds: row
                .try_get::<Option<f64>, _>("waited_seconds")?
                .unwrap_or(0.0),
            attempt_id: row.try_get("attempt_id")?,
            inputs: workflows::decode_inputs(row.try_get("inputs")?)?,
            workflow_id: row
                .try_get::<Option<i64>, _>("workflow_id")?
                .map(crate::definition::WorkflowId::from_i64),
        })
    }
}

/// Which attempt a completion is fenced by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fence {
    pub(crate) id: OperationId,
    pub(crate) worker: Uuid,
    pub(crate) attempt: i32,
    pub(crate) attempt_id: i64,
}

/// How an attempt that did not succeed ends.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The attempt's outcome: `failed`, `lost`, `timed_out` or `aborted`.
    pub(crate) outcome: Outcome,
    /// The operation's next status: `retrying`, `dead` or `stalled`.
    pub(crate) next_status: Status,
    pub(crate) retry_delay_ms: i64,
    pub(crate) error: String,
    pub(crate) chain: Vec<String>,
}

/// A statement of `$store` by name, as `sqlx::$kind` (`query`, `query_as`,
/// `query_scalar`; `query_as::<Row>` names the row type).
macro_rules! query {
    ($store:expr, $kind:ident, $name:ident) => {
        sqlx::$kind(sqlx::AssertSqlSafe(std::sync::Arc::clone(
            &$store.sql.$name,
        )))
        .persistent($store.persistent)
    };
    ($store:expr, $kind:ident::<$row:ty>, $name:ident) => {
        sqlx::$kind::<_, $row>(sqlx::AssertSqlSafe(std::sync::Arc::clone(
            &$store.sql.$name,
        )))
        .persistent($store.persistent)
    };
}

// After `query!`, which they use.
pub(crate) mod admin;
pub(crate) mod bulk;
pub(crate) mod overview;
pub(crate) mod schedules;
#[cfg(feature = "testing")]
mod testing;
pub(crate) mod workflows;

impl Store {
    /// Renders every statement for `schema`, notifying on `channel` when
    /// given. `persistent: false` uses unnamed statements only (for
    /// pgbouncer in transaction mode).
    pub(crate) fn new(schema: &Identifier, channel: Option<&Identifier>, persistent: bool) -> Self {
        // The coalesced wake-up, decided at commit (migration 13): a
        // notifying publish marks its transaction with the channel to wake
        // (a transaction-local setting); migration 13's deferred constraint
        // trigger on `operations` runs at COMMIT, only if the transaction
        // commits, and notifies each published name if it takes the name's
        // wake-up lock for the 10 ms slot of the commit (an advisory lock
        // per database, held until the commit ends, never waited for): so
        // at most one notifying commit per name and slot is in flight, and
        // notifying commits do not queue behind each other on PostgreSQL's
        // database-wide NOTIFY lock. The others rely on that one's
        // notification and the workers' trailing claims (`notifier.rs`). A
        // rolled-back publish never reaches the trigger, and a long
        // transaction competes for the slot of its commit, not of its
        // publish. Identifier's grammar admits no quote, so the literal is
        // safe.
        let notify = channel.map_or_else(
            || "NULL".to_owned(),
            |c| {
                format!(
                    "set_config('pgoutbox.wake_channel', '{}', true)",
                    c.as_str()
                )
            },
        );
        // The channel a worker listens on, recorded with it: a workflow
        // step released by another process's transaction is announced there
        // (migration 10's trigger).
        let channel_literal =
            channel.map_or_else(|| "NULL".to_owned(), |c| format!("'{}'", c.as_str()));
        let render = |template: &str, on_conflict: &str| -> Arc<str> {
            template
                // Parts shared by two statements each, first: they hold
                // placeholders of their own.
                .replace(
                    "{purgeable_step}",
                    include_str!("sql/parts/purgeable_step.sql"),
                )
                .replace(
                    "{purged_step_edges}",
                    include_str!("sql/parts/purged_step_edges.sql"),
                )
                .replace(
                    "{step_workflow_lock}",
                    include_str!("sql/parts/step_workflow_lock.sql"),
                )
                .replace(
                    "{replay_in_workflow}",
                    include_str!("sql/parts/replay_in_workflow.sql"),
                )
                .replace("{operation_columns}", admin::OPERATION_COLUMNS)
                .replace("{schema}", &schema.quoted())
                .replace("{notify}", &notify)
                .replace("{notify_each}", &notify.replace("$1", "n.name"))
                .replace("{channel}", &channel_literal)
                .replace("{on_conflict}", on_conflict)
                .into()
        };
        let sql = Statements::render(|template| render(template, ""));
        let insert_keyed = render(
            include_str!("sql/insert_operation.sql"),
            "ON CONFLICT (name, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
        );
        Store {
            sql: Arc::new(sql),
            insert_keyed,
            persistent,
        }
    }

    /// Runs `run`, one statement, on `conn`. Behind pgbouncer in
    /// transaction mode (`persistent == false`) a statement outside a
    /// transaction is unsafe: sqlx parses it and binds it in two round
    /// trips, and in between pgbouncer may give the client another server
    /// connection, where the unnamed statement is missing or is another
    /// client's. A transaction keeps its server connection to the end, so
    /// there the statement gets one of its own.
    async fn pinned<T>(
        &self,
        conn: &mut PgConnection,
        run: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        if self.persistent || conn.is_in_transaction() {
            return run(conn).await;
        }
        let mut tx = conn.begin().await?;
        let out = run(&mut tx).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Inserts `op`; `None` when its idempotency key is taken.
    pub(crate) async fn insert_operation(
        &self,
        conn: &mut PgConnection,
        op: &NewOperation,
    ) -> Result<Option<OperationId>, sqlx::Error> {
        let row: Option<(i64, Option<String>)> = self
            .pinned(conn, async |conn| {
                let query = if op.idempotency_key.is_some() {
                    sqlx::query_as(AssertSqlSafe(Arc::clone(&self.insert_keyed)))
                        .persistent(self.persistent)
                } else {
                    query!(self, query_as, insert_operation)
                };
                query
                    .bind(op.name)
                    .bind(&op.payload)
                    .bind(op.schema.hash())
                    .bind(op.priority)
                    .bind(&op.queue)
                    .bind(op.run_at)
                    .bind(op.max_attempts)
                    .bind(op.idempotent)
                    .bind(op.idempotency_key.as_deref())
                    .bind(op.parent_id.map(OperationId::as_i64))
                    .bind(op.schema.canonical_json())
                    .bind(op.delay_micros)
                    .fetch_optional(conn)
                    .await
            })
            .await?;
        Ok(row.map(|(id, _)| OperationId::from_i64(id)))
    }

    /// Inserts many rows sharing everything but their payloads (`op.payload`
    /// is ignored); returns their ids in order.
    pub(crate) async fn insert_many(
        &self,
        conn: &mut PgConnection,
        op: &NewOperation,
        payloads: &[serde_json::Value],
    ) -> Result<Vec<OperationId>, sqlx::Error> {
        let rows: Vec<(i64, Option<String>)> = self
            .pinned(conn, async |conn| {
                query!(self, query_as, insert_many)
                    .bind(op.name)
                    .bind(payloads)
                    .bind(op.schema.hash())
                    .bind(op.schema.canonical_json())
                    .bind(op.priority)
                    .bind(&op.queue)
                    .bind(op.run_at)
                    .bind(op.delay_micros)
                    .bind(op.max_attempts)
                    .bind(op.idempotent)
                    .bind(op.parent_id.map(OperationId::as_i64))
                    .fetch_all(conn)
                    .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, _)| OperationId::from_i64(id))
            .collect())
    }

    /// The operation published under `name` with `key`.
    pub(crate) async fn find_by_idempotency_key(
        &self,
        conn: &mut PgConnection,
        name: &str,
        key: &str,
    ) -> Result<Option<OperationId>, sqlx::Error> {
        let id: Option<i64> = self
            .pinned(conn, async |conn| {
                query!(self, query_scalar, find_by_idempotency_key)
                    .bind(name)
                    .bind(key)
                    .fetch_optional(conn)
                    .await
            })
            .await?;
        Ok(id.map(OperationId::from_i64))
    }

    /// Claims up to `limit` ready operations and starts their attempts;
    /// asynchronously committed when `idempotent_async_commit` is on and
    /// all of them are idempotent (`claim.sql`).
    ///
    /// `conn` may be inside a transaction: a transactional handler's, whose
    /// commit then also starts the next operation's attempt (the
    /// executor's chained claim).
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per parameter of the statement reads best at its callers"
    )]
    pub(crate) async fn claim(
        &self,
        conn: &mut PgConnection,
        names: &[String],
        limit: i32,
        worker: Uuid,
        lease_ms: i64,
        queues: &[String],
        idempotent_async_commit: bool,
    ) -> Result<Vec<Claimed>, sqlx::Error> {
        let rows = self
            .pinned(conn, async |conn| {
                query!(self, query, claim)
                    .bind(names)
                    .bind(limit)
                    .bind(worker)
                    .bind(lease_ms)
                    .bind(queues)
                    .bind(idempotent_async_commit)
                    .fetch_all(conn)
                    .await
            })
            .await?;
        rows.iter().map(Claimed::from_row).collect()
    }

    /// Records a success; `false` when the fence no longer holds.
    pub(crate) async fn complete_success(
        &self,
        conn: &mut PgConnection,
        fence: Fence,
        transactional: bool,
        result: Option<&serde_json::Value>,
        result_schema: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let n: i64 = self
            .pinned(conn, async |conn| {
                query!(self, query_scalar, complete_success)
                    .bind(fence.id.as_i64())
                    .bind(fence.worker)
                    .bind(fence.attempt)
                    .bind(fence.attempt_id)
                    .bind(transactional)
                    .bind(result)
                    .bind(result_schema)
                    .fetch_one(conn)
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    /// Records many plain successes of one worker, each with what its
    /// attempt produced (a handler's result, a relay's receipt, or
    /// nothing); returns the
    /// attempt ids recorded (not operation ids: two attempts of one
    /// operation can share a batch, and only the current one is recorded).
    pub(crate) async fn complete_successes(
        &self,
        conn: &mut PgConnection,
        worker: Uuid,
        successes: &[(Fence, Option<serde_json::Value>, Option<&'static str>)],
        idempotent_async_commit: bool,
    ) -> Result<Vec<i64>, sqlx::Error> {
        let ids: Vec<i64> = successes.iter().map(|(f, ..)| f.id.as_i64()).collect();
        let attempts: Vec<i32> = successes.iter().map(|(f, ..)| f.attempt).collect();
        let attempt_ids: Vec<i64> = successes.iter().map(|(f, ..)| f.attempt_id).collect();
        let results: Vec<Option<serde_json::Value>> =
            successes.iter().map(|(_, r, _)| r.clone()).collect();
        let schemas: Vec<Option<&str>> = successes.iter().map(|(.., h)| *h).collect();
        self.pinned(conn, async |conn| {
            query!(self, query_scalar, complete_successes)
                .bind(ids)
                .bind(attempts)
                .bind(attempt_ids)
                .bind(worker)
                .bind(idempotent_async_commit)
                .bind(results)
                .bind(schemas)
                .fetch_all(conn)
                .await
        })
        .await
    }

    /// Records an attempt that did not succeed; `false` when the fence no
    /// longer holds.
    pub(crate) async fn complete_failure(
        &self,
        conn: &mut PgConnection,
        fence: Fence,
        failure: &Failure,
    ) -> Result<bool, sqlx::Error> {
        let n: i64 = self
            .pinned(conn, async |conn| {
                query!(self, query_scalar, complete_failure)
                    .bind(fence.id.as_i64())
                    .bind(fence.worker)
                    .bind(fence.attempt)
                    .bind(fence.attempt_id)
                    .bind(failure.outcome)
                    .bind(failure.next_status)
                    .bind(failure.retry_delay_ms)
                    .bind(&failure.error)
                    .bind(serde_json::json!(failure.chain))
                    .fetch_one(conn)
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    /// Reschedules without using up an attempt.
    pub(crate) async fn snooze(
        &self,
        conn: &mut PgConnection,
        fence: Fence,
        delay_ms: i64,
        note: &str,
    ) -> Result<bool, sqlx::Error> {
        let n: i64 = self
            .pinned(conn, async |conn| {
                query!(self, query_scalar, snooze)
                    .bind(fence.id.as_i64())
                    .bind(fence.worker)
                    .bind(fence.attempt)
                    .bind(fence.attempt_id)
                    .bind(delay_ms)
                    .bind(note)
                    .fetch_one(conn)
                    .await
            })
            .await?;
        Ok(n == 1)
    }

    /// Opens a transactional handler's transaction, marked (transaction-
    /// locally) with its attempt so that `complete_success` can tell it is
    /// still the same transaction: one round trip, `BEGIN` and the mark
    /// sent together. It names no schema, so it needs no rendered `Store`.
    pub(crate) async fn begin_attempt(
        pool: &sqlx::PgPool,
        attempt_id: i64,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        // An integer put into the statement: nothing to escape.
        let sql =
            include_str!("sql/begin_attempt.sql").replace("{attempt_id}", &attempt_id.to_string());
        pool.begin_with(AssertSqlSafe(sql)).await
    }

    /// The attempt the transaction in progress was opened for, or '' if
    /// it is not that transaction any more.
    pub(crate) async fn transaction_marker(
        &self,
        conn: &mut PgConnection,
    ) -> Result<String, sqlx::Error> {
        query!(self, query_scalar, transaction_marker)
            .fetch_one(&mut *conn)
            .await
    }

    /// Renews the worker's heartbeat and the leases of its attempts
    /// (operation id, attempt number, attempt id) whose rows are not
    /// locked elsewhere; returns, for each attempt still this worker's, its
    /// id and whether its lease was renewed.
    pub(crate) async fn heartbeat(
        &self,
        conn: &mut PgConnection,
        worker: Uuid,
        lease_ms: i64,
        running: &[(i64, i32, i64)],
    ) -> Result<Vec<(i64, bool)>, sqlx::Error> {
        let ids: Vec<i64> = running.iter().map(|r| r.0).collect();
        let numbers: Vec<i32> = running.iter().map(|r| r.1).collect();
        let attempt_ids: Vec<i64> = running.iter().map(|r| r.2).collect();
        query!(self, query_as, heartbeat)
            .bind(worker)
            .bind(lease_ms)
            .bind(ids)
            .bind(numbers)
            .bind(attempt_ids)
            .fetch_all(&mut *conn)
            .await
    }

    /// Bounds the server-side run time of the transaction's statements.
    pub(crate) async fn local_timeouts(
        &self,
        conn: &mut PgConnection,
        limit: std::time::Duration,
    ) -> Result<(), sqlx::Error> {
        query!(self, query, local_timeouts)
            .bind(format!("{}ms", limit.as_millis().max(1)))
            .execute(&mut *conn)
            .await
            .map(drop)
    }

    /// Rescues up to `limit` expired leases; returns (id, new status).
    pub(crate) async fn rescue(
        &self,
        conn: &mut PgConnection,
        limit: i32,
    ) -> Result<Vec<(i64, Status)>, sqlx::Error> {
        query!(self, query_as, rescue)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await
    }

    /// Registers a worker process.
    #[allow(clippy::too_many_arguments)] // One bind per column.
    pub(crate) async fn register_worker(
        &self,
        conn: &mut PgConnection,
        worker: Uuid,
        host: &str,
        pid: i32,
        version: &str,
        names: &[String],
        queues: &[String],
        n_workers: i32,
        lease_ms: i64,
    ) -> Result<(), sqlx::Error> {
        self.pinned(conn, async |conn| {
            query!(self, query, register_worker)
                .bind(worker)
                .bind(host)
                .bind(pid)
                .bind(version)
                .bind(names)
                .bind(queues)
                .bind(n_workers)
                .bind(lease_ms)
                .execute(conn)
                .await
        })
        .await
        .map(drop)
    }

    /// Marks a worker process stopped.
    pub(crate) async fn deregister_worker(
        &self,
        conn: &mut PgConnection,
        worker: Uuid,
    ) -> Result<(), sqlx::Error> {
        self.pinned(conn, async |conn| {
            query!(self, query, deregister_worker)
                .bind(worker)
                .execute(conn)
                .await
        })
        .await
        .map(drop)
    }

    /// Records a payload schema in the history.
    pub(crate) async fn record_schema(
        &self,
        conn: &mut PgConnection,
        name: &str,
        schema: &OperationSchema,
    ) -> Result<(), sqlx::Error> {
        self.pinned(conn, async |conn| {
            query!(self, query, record_schema)
                .bind(name)
                .bind(schema.hash())
                .bind(schema.json())
                .execute(conn)
                .await
        })
        .await
        .map(drop)
    }

    /// Records an output type's schema met by a worker at start-up.
    pub(crate) async fn record_output(
        &self,
        conn: &mut PgConnection,
        name: &str,
        schema: &OperationSchema,
    ) -> Result<(), sqlx::Error> {
        self.pinned(conn, async |conn| {
            query!(self, query, record_output)
                .bind(name)
                .bind(schema.hash())
                .bind(schema.json())
                .execute(conn)
                .await
        })
        .await
        .map(drop)
    }

    /// Every operation name ever published or registered.
    #[cfg(feature = "nats")]
    pub(crate) async fn known_names(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Vec<String>, sqlx::Error> {
        self.pinned(conn, async |conn| {
            query!(self, query_scalar, known_names)
                .fetch_all(conn)
                .await
        })
        .await
    }

    /// How long ago (ms, by the database's clock) the first attempt of
    /// operation `id` whose outcome is unknown started, since the
    /// operator's latest retry; `None` when none did.
    #[cfg(feature = "nats")]
    pub(crate) async fn relay_first_send(
        &self,
        conn: &mut PgConnection,
        id: OperationId,
    ) -> Result<Option<i64>, sqlx::Error> {
        self.pinned(conn, async |conn| {
            query!(self, query_scalar, relay_first_send)
                .bind(id.as_i64())
                .fetch_one(conn)
                .await
        })
        .await
    }

    /// Ready operations whose name no live worker handles, with counts.
    pub(crate) async fn unhandled_names(
        &self,
        conn: &mut PgConnection,
        live_within_ms: i64,
    ) -> Result<Vec<(String, i64)>, sqlx::Error> {
        self.pinned(conn, async |conn| {
            query!(self, query_as, unhandled_names)
                .bind(live_within_ms)
                .fetch_all(conn)
                .await
        })
        .await
    }

    /// Ready operations whose name some live worker handles but in a
    /// queue that none of those serves, with counts by queue and name.
    pub(crate) async fn unserved_queues(
        &self,
        conn: &mut PgConnection,
        live_within_ms: i64,
    ) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
        self.pinned(conn, async |conn| {
            query!(self, query_as, unserved_queues)
                .bind(live_within_ms)
                .fetch_all(conn)
                .await
        })
        .await
    }

    /// Deletes one batch of `workers` rows gone longer than `older_than_ms`.
    pub(crate) async fn purge_workers(
        &self,
        conn: &mut PgConnection,
        older_than_ms: i64,
        batch: i64,
    ) -> Result<u64, sqlx::Error> {
        self.pinned(conn, async |conn| {
            query!(self, query, purge_workers)
                .bind(older_than_ms)
                .bind(batch)
                .execute(conn)
                .await
        })
        .await
        .map(|r| r.rows_affected())
    }
}
