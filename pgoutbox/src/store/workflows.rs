//! Workflows' statements: publishing one, and what a step reads of its
//! dependencies. What a step's change of state does to its workflow is the
//! migration's trigger (`workflow_step_changed`), in every transaction that
//! changes one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use sqlx::PgConnection;

use super::NewOperation;
use super::Store;
use super::admin::FromPgRow;
use crate::definition::OperationId;
use crate::definition::WorkflowId;
use crate::state::{Status, WorkflowState};

/// How a step's dependency ended, as the executor read it before the
/// handler ran.
#[derive(Debug, Clone)]
pub(crate) struct StepInput {
    pub(crate) name: String,
    /// `None`: no longer stored.
    pub(crate) status: Option<Status>,
    pub(crate) error: Option<String>,
    pub(crate) result: Option<serde_json::Value>,
}

/// A step ready to insert: its row and its dependencies, required or not.
pub(crate) struct StepRow {
    pub(crate) op: NewOperation,
    pub(crate) id: OperationId,
    /// Steps inserted with it (not yet ended).
    pub(crate) deps: Vec<(OperationId, bool)>,
    /// Steps published before (a step added at run time may name them).
    pub(crate) published: Vec<(OperationId, bool)>,
}

/// A step's compensation ready to declare.
pub(crate) struct CompensationRow {
    /// The step it answers.
    pub(crate) step: OperationId,
    pub(crate) op: NewOperation,
    /// The steps its payload names.
    pub(crate) inputs: Vec<OperationId>,
}

/// A workflow grown by a handler's steps (`Store::grow_workflow`).
pub(crate) struct Grown {
    pub(crate) workflow: WorkflowId,
    pub(crate) root: OperationId,
    /// Whether it had failed: the steps are added cancelled.
    pub(crate) failed: bool,
    pub(crate) ids: Vec<OperationId>,
}

/// The distinct payload schemas of `ops`, as the three columns (names,
/// hashes, canonical JSON) the insert statements register them from.
fn schema_columns<'a>(
    ops: impl Iterator<Item = &'a NewOperation>,
) -> (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>) {
    let schemas: BTreeMap<(&str, &str), &str> = ops
        .map(|op| ((op.name, op.schema.hash()), op.schema.canonical_json()))
        .collect();
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for ((name, hash), text) in schemas {
        columns.0.push(name);
        columns.1.push(hash);
        columns.2.push(text);
    }
    columns
}

/// A step's dependencies by operation id (empty outside workflows).
pub(crate) type StepInputs = Arc<HashMap<OperationId, StepInput>>;

/// Decodes the claim's `inputs` column: `[id, name, status, last error,
/// result]` per dependency (`claim.sql`).
pub(crate) fn decode_inputs(value: Option<serde_json::Value>) -> Result<StepInputs, sqlx::Error> {
    type Entry = (
        i64,
        Option<String>,
        Option<Status>,
        Option<String>,
        Option<serde_json::Value>,
    );
    let Some(value) = value else {
        // Every other operation's claim: one shared empty map, no
        // allocation on the hot path.
        static NONE: LazyLock<StepInputs> = LazyLock::new(StepInputs::default);
        return Ok(Arc::clone(&NONE));
    };
    let entries: Vec<Entry> =
        serde_json::from_value(value).map_err(|e| sqlx::Error::ColumnDecode {
            index: "inputs".into(),
            source: e.into(),
        })?;
    Ok(Arc::new(
        entries
            .into_iter()
            .map(|(id, name, status, error, result)| {
                let input = StepInput {
                    // No name nor status: purged since (retention).
                    name: name.unwrap_or_default(),
                    status,
                    error,
                    result,
                };
                (OperationId::from_i64(id), input)
            })
            .collect(),
    ))
}

impl Store {
    /// Opens workflow `name` of `steps` steps under idempotency key `key`:
    /// its id and its steps' ids; `None` when the key is taken (read the
    /// existing workflow with [`Store::workflow_by_key`]).
    pub(crate) async fn open_workflow(
        &self,
        conn: &mut PgConnection,
        name: &str,
        steps: usize,
        key: Option<&str>,
    ) -> Result<Option<(WorkflowId, Vec<OperationId>)>, sqlx::Error> {
        let steps =
            i32::try_from(steps).map_err(|_| sqlx::Error::Protocol("too many steps".into()))?;
        let (id, ids): (Option<i64>, Vec<i64>) = self
            .pinned(conn, async |conn| {
                query!(self, query_as, workflow_open)
                    .bind(name)
                    .bind(steps)
                    .bind(key)
                    .fetch_one(conn)
                    .await
            })
            .await?;
        Ok(id.map(|id| {
            (
                WorkflowId::from_i64(id),
                ids.into_iter().map(OperationId::from_i64).collect(),
            )
        }))
    }

    /// The workflow published under idempotency key `key`, and its steps'
    /// ids in the order they were added.
    pub(crate) async fn workflow_by_key(
        &self,
        conn: &mut PgConnection,
        key: &str,
    ) -> Result<Option<(WorkflowId, Vec<OperationId>)>, sqlx::Error> {
        let row: Option<(i64, Vec<i64>)> = self
            .pinned(conn, async |conn| {
                query!(self, query_as, workflow_by_key)
                    .bind(key)
                    .fetch_optional(conn)
                    .await
            })
            .await?;
        Ok(row.map(|(id, ids)| {
            (
                WorkflowId::from_i64(id),
                ids.into_iter().map(OperationId::from_i64).collect(),
            )
        }))
    }

    /// Inserts some of workflow `id`'s steps and their edges, in one
    /// statement (the publisher cuts a large workflow into chunks).
    pub(crate) async fn insert_steps(
        &self,
        conn: &mut PgConnection,
        id: WorkflowId,
        root: OperationId,
        rows: &[StepRow],
    ) -> Result<(), sqlx::Error> {
        let ids: Vec<i64> = rows.iter().map(|r| r.id.as_i64()).collect();
        let names: Vec<&str> = rows.iter().map(|r| r.op.name).collect();
        let payloads: Vec<&serde_json::Value> = rows.iter().map(|r| &r.op.payload).collect();
        let hashes: Vec<&str> = rows.iter().map(|r| r.op.schema.hash()).collect();
        let priorities: Vec<i16> = rows.iter().map(|r| r.op.priority).collect();
        let queues: Vec<&str> = rows.iter().map(|r| r.op.queue.as_str()).collect();
        let run_at: Vec<_> = rows.iter().map(|r| r.op.run_at).collect();
        let delays: Vec<Option<i64>> = rows.iter().map(|r| r.op.delay_micros).collect();
        let max_attempts: Vec<i32> = rows.iter().map(|r| r.op.max_attempts).collect();
        let idempotent: Vec<bool> = rows.iter().map(|r| r.op.idempotent).collect();
        let waiting: Vec<i32> = rows
            .iter()
            .map(|r| i32::try_from(r.deps.len()).unwrap_or(i32::MAX))
            .collect();
        let edges = |of: fn(&StepRow) -> &[(OperationId, bool)]| {
            let (mut waiters, mut dependencies, mut required) =
                (Vec::new(), Vec::new(), Vec::new());
            for row in rows {
                for (dep, needed) in of(row) {
                    waiters.push(row.id.as_i64());
                    dependencies.push(dep.as_i64());
                    required.push(*needed);
                }
            }
            (waiters, dependencies, required)
        };
        let (waiters, dependencies, required) = edges(|r| &r.deps);
        let (published_waiters, published_dependencies, published_required) =
            edges(|r| &r.published);
        let (schema_names, schema_hashes, schema_texts) =
            schema_columns(rows.iter().map(|r| &r.op));
        self.pinned(conn, async |conn| {
            query!(self, query, workflow_insert)
                .bind(id.as_i64())
                .bind(root.as_i64())
                .bind(&ids)
                .bind(&names)
                .bind(&payloads)
                .bind(&hashes)
                .bind(&priorities)
                .bind(&queues)
                .bind(&run_at)
                .bind(&delays)
                .bind(&max_attempts)
                .bind(&idempotent)
                .bind(&waiting)
                .bind(&waiters)
                .bind(&dependencies)
                .bind(&required)
                .bind(&schema_names)
                .bind(&schema_hashes)
                .bind(&schema_texts)
                .bind(&published_waiters)
                .bind(&published_dependencies)
                .bind(&published_required)
                .fetch_all(conn)
                .await
        })
        .await?;
        Ok(())
    }

    /// Grows the workflow of step `adder` by `steps` steps (see
    /// `workflow_grow.sql`); `None` when `adder` is not a step.
    pub(crate) async fn grow_workflow(
        &self,
        conn: &mut PgConnection,
        adder: OperationId,
        steps: usize,
    ) -> Result<Option<Grown>, sqlx::Error> {
        let steps =
            i32::try_from(steps).map_err(|_| sqlx::Error::Protocol("too many steps".into()))?;
        let row: Option<(i64, i64, bool, Vec<i64>)> = query!(self, query_as, workflow_grow)
            .bind(adder.as_i64())
            .bind(steps)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(row.map(|(workflow, root, failed, ids)| Grown {
            workflow: WorkflowId::from_i64(workflow),
            root: OperationId::from_i64(root),
            failed,
            ids: ids.into_iter().map(OperationId::from_i64).collect(),
        }))
    }

    /// Locks `ids` (see `workflow_foreign_steps.sql`); the first that is
    /// not a step of `adder`'s workflow.
    pub(crate) async fn foreign_steps(
        &self,
        conn: &mut PgConnection,
        adder: OperationId,
        ids: &[OperationId],
    ) -> Result<Option<OperationId>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(None);
        }
        let ids: Vec<i64> = ids.iter().map(|i| i.as_i64()).collect();
        let first: Option<i64> = query!(self, query_scalar, workflow_foreign_steps)
            .bind(adder.as_i64())
            .bind(&ids)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(first.map(OperationId::from_i64))
    }

    /// Cancels steps `ids` that `adder` added to workflow `id` after it
    /// failed.
    pub(crate) async fn cancel_added(
        &self,
        conn: &mut PgConnection,
        id: WorkflowId,
        adder: OperationId,
        ids: &[OperationId],
    ) -> Result<(), sqlx::Error> {
        let ids: Vec<i64> = ids.iter().map(|i| i.as_i64()).collect();
        query!(self, query, workflow_cancel_added)
            .bind(id.as_i64())
            .bind(adder.as_i64())
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Declares the compensations of workflow `id`'s steps.
    pub(crate) async fn insert_compensations(
        &self,
        conn: &mut PgConnection,
        id: WorkflowId,
        rows: &[CompensationRow],
    ) -> Result<(), sqlx::Error> {
        let steps: Vec<i64> = rows.iter().map(|r| r.step.as_i64()).collect();
        let names: Vec<&str> = rows.iter().map(|r| r.op.name).collect();
        let payloads: Vec<&serde_json::Value> = rows.iter().map(|r| &r.op.payload).collect();
        let hashes: Vec<&str> = rows.iter().map(|r| r.op.schema.hash()).collect();
        let priorities: Vec<i16> = rows.iter().map(|r| r.op.priority).collect();
        let queues: Vec<&str> = rows.iter().map(|r| r.op.queue.as_str()).collect();
        let max_attempts: Vec<i32> = rows.iter().map(|r| r.op.max_attempts).collect();
        let idempotent: Vec<bool> = rows.iter().map(|r| r.op.idempotent).collect();
        let inputs: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| r.inputs.iter().map(|i| i.as_i64()).collect())
            .collect();
        let (schema_names, schema_hashes, schema_texts) =
            schema_columns(rows.iter().map(|r| &r.op));
        self.pinned(conn, async |conn| {
            query!(self, query, workflow_compensations_insert)
                .bind(id.as_i64())
                .bind(&steps)
                .bind(&names)
                .bind(&payloads)
                .bind(&hashes)
                .bind(&priorities)
                .bind(&queues)
                .bind(&max_attempts)
                .bind(&idempotent)
                .bind(&inputs)
                .bind(&schema_names)
                .bind(&schema_hashes)
                .bind(&schema_texts)
                .execute(conn)
                .await
        })
        .await?;
        Ok(())
    }

    /// Workflows matching the filters, newest first.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per filter of the statement reads best at its caller"
    )]
    pub(crate) async fn workflows_list<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        state: Option<WorkflowState>,
        name: Option<&str>,
        older_than_ms: Option<i64>,
        newer_than_ms: Option<i64>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, workflows_list)
            .bind(state)
            .bind(name)
            .bind(older_than_ms)
            .bind(newer_than_ms)
            .bind(before_id)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await
    }

    /// Workflow `id`'s row.
    pub(crate) async fn workflow_row<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        id: i64,
    ) -> Result<Option<R>, sqlx::Error> {
        query!(self, query_as::<R>, workflow_row)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
    }

    /// Workflow `id`'s steps, in id order.
    pub(crate) async fn workflow_steps<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        id: i64,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, workflow_steps)
            .bind(id)
            .fetch_all(&mut *conn)
            .await
    }

    /// Operation `id`'s place in its workflow (`None`: not a step).
    pub(crate) async fn workflow_step<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        id: OperationId,
    ) -> Result<Option<R>, sqlx::Error> {
        query!(self, query_as::<R>, workflow_step)
            .bind(id.as_i64())
            .fetch_optional(&mut *conn)
            .await
    }

    /// What a resolve as succeeded of `id` must know.
    pub(crate) async fn resolve_facts<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        id: OperationId,
    ) -> Result<Option<R>, sqlx::Error> {
        query!(self, query_as::<R>, resolve_facts)
            .bind(id.as_i64())
            .fetch_optional(&mut *conn)
            .await
    }
}

/// An operator's action on a workflow, as the store applies it.
pub(crate) struct WorkflowChange<'a> {
    pub(crate) action: &'static str,
    pub(crate) why: &'a str,
    pub(crate) compensate: bool,
}

impl Store {
    /// Workflow `id`'s state, failure and whether it failed, its row
    /// locked (in the caller's transaction).
    pub(crate) async fn lock_workflow(
        &self,
        conn: &mut PgConnection,
        id: WorkflowId,
    ) -> Result<Option<(WorkflowState, Option<String>, bool)>, sqlx::Error> {
        query!(self, query_as, workflow_lock)
            .bind(id.as_i64())
            .fetch_optional(&mut *conn)
            .await
    }

    /// Workflow `id`'s steps as an operator's action sees them.
    pub(crate) async fn workflow_plan_steps<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        id: WorkflowId,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, workflow_plan_steps)
            .bind(id.as_i64())
            .fetch_all(&mut *conn)
            .await
    }

    /// Applies `change` to workflow `id` (locked by `lock_workflow`).
    pub(crate) async fn workflow_apply(
        &self,
        conn: &mut PgConnection,
        id: WorkflowId,
        change: &WorkflowChange<'_>,
    ) -> Result<bool, sqlx::Error> {
        query!(self, query_scalar, workflow_apply)
            .bind(id.as_i64())
            .bind(change.action)
            .bind(change.why)
            .bind(change.compensate)
            .fetch_one(&mut *conn)
            .await
    }

    /// Records an operator's action on workflow `id`, and on the `steps`
    /// it changed (with their statuses before).
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per column of the trail reads best at its caller"
    )]
    pub(crate) async fn record_workflow_action(
        &self,
        conn: &mut PgConnection,
        id: WorkflowId,
        action: &str,
        applied: bool,
        actor: &str,
        reason: &str,
        before: WorkflowState,
        steps: &[(OperationId, Status)],
    ) -> Result<(), sqlx::Error> {
        let ids: Vec<i64> = steps.iter().map(|(id, _)| id.as_i64()).collect();
        let statuses: Vec<&str> = steps.iter().map(|(_, s)| s.as_str()).collect();
        query!(self, query, workflow_actions_record)
            .bind(id.as_i64())
            .bind(action)
            .bind(if applied { "applied" } else { "refused" })
            .bind(actor)
            .bind(reason)
            .bind(before.as_str())
            .bind(&ids)
            .bind(&statuses)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// The operators' actions on workflow `id` as a whole.
    pub(crate) async fn workflow_actions<R: FromPgRow>(
        &self,
        conn: &mut PgConnection,
        id: WorkflowId,
    ) -> Result<Vec<R>, sqlx::Error> {
        query!(self, query_as::<R>, workflow_actions)
            .bind(id.as_i64())
            .fetch_all(&mut *conn)
            .await
    }
}
