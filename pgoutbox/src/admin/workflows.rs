//! Workflows as operators see them: the list (state, name, age, per-state
//! step counts), one workflow's graph (each step's state, attempts, result
//! and what it waits for), and the resolve of a stalled step as succeeded
//! with the result its dependents read, checked against the output's
//! stored JSON Schema.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row as _};

use super::{Action, ActionOutcome, Admin, Resolution};
use crate::definition::OperationId;
use crate::duration::millis;
use crate::state::{Status, WorkflowState};
use crate::workflow::WorkflowId;

/// The filters of [`Admin::workflows`]; all optional, combined with AND.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use pgoutbox::WorkflowState;
/// use pgoutbox::admin::WorkflowFilter;
///
/// // Failed order workflows of the last day.
/// let filter = WorkflowFilter {
///     state: Some(WorkflowState::Failed),
///     name: Some("order.fulfil".into()),
///     newer_than: Some(Duration::from_hours(24)),
///     ..WorkflowFilter::default()
/// };
/// for wf in admin.workflows(&filter).await? {
///     println!("{} {} {} steps {:?}", wf.id, wf.name, wf.steps, wf.counts);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct WorkflowFilter {
    /// Only this state.
    pub state: Option<WorkflowState>,
    /// Only this name.
    pub name: Option<String>,
    /// Only workflows created at least this long ago.
    pub older_than: Option<Duration>,
    /// Only workflows created within this long.
    pub newer_than: Option<Duration>,
    /// Only ids below this one: the next page, after the last id of the
    /// previous one (the list is newest first).
    pub after_id: Option<WorkflowId>,
    /// At most this many (default 50).
    pub limit: Option<i64>,
}

/// One workflow, with its steps counted by state.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct WorkflowRow {
    /// Its id.
    pub id: WorkflowId,
    /// Its name.
    pub name: String,
    /// Its state, kept with its steps'.
    pub state: WorkflowState,
    /// Its first step (every step's `root_id`).
    pub root_id: OperationId,
    /// How many steps it has.
    pub steps: i32,
    /// Its steps by state (states without steps left out).
    pub counts: BTreeMap<Status, i64>,
    /// When it was published.
    pub created_at: DateTime<Utc>,
    /// When its state last changed.
    pub updated_at: DateTime<Utc>,
    /// When it reached `succeeded`, `failed` or `cancelled`.
    pub finished_at: Option<DateTime<Utc>>,
}

impl<'r> FromRow<'r, PgRow> for WorkflowRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let counts: serde_json::Value = row.try_get("counts")?;
        let counts = serde_json::from_value(counts).map_err(|e| sqlx::Error::ColumnDecode {
            index: "counts".into(),
            source: e.into(),
        })?;
        Ok(WorkflowRow {
            id: WorkflowId::from_i64(row.try_get("id")?),
            name: row.try_get("name")?,
            state: row.try_get("state")?,
            root_id: OperationId::from_i64(row.try_get("root_id")?),
            steps: row.try_get("steps")?,
            counts,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

/// One step of a workflow's graph.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct StepNode {
    /// Its operation id.
    pub id: OperationId,
    /// Its operation's name.
    pub name: String,
    /// Its state.
    pub status: Status,
    /// Attempts started so far.
    pub attempts: i32,
    /// Dependencies it still waits for (`waiting` only).
    pub waiting_for: Option<i32>,
    /// Its last error (for a cancelled step, the dependency that caused
    /// it).
    pub last_error: Option<String>,
    /// Its result: the succeeded attempt's, or an operator's.
    pub result: Option<serde_json::Value>,
    /// The steps it depends on, each with whether it needs its success
    /// (`Dep`) or only its end (`Settled`).
    pub depends_on: Vec<(OperationId, bool)>,
    /// When it was published.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

impl StepNode {
    /// The result as at most `max` characters of JSON (`…` when cut).
    ///
    /// ```
    /// # use pgoutbox::admin::StepNode;
    /// # fn example(step: &StepNode) {
    /// println!("{}", step.result_summary(60).unwrap_or_default());
    /// # }
    /// ```
    pub fn result_summary(&self, max: usize) -> Option<String> {
        let text = self.result.as_ref()?.to_string();
        Some(match text.char_indices().nth(max) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text,
        })
    }
}

impl<'r> FromRow<'r, PgRow> for StepNode {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let deps: Vec<i64> = row.try_get("depends_on")?;
        let required: Vec<bool> = row.try_get("required")?;
        Ok(StepNode {
            id: OperationId::from_i64(row.try_get("id")?),
            name: row.try_get("name")?,
            status: row.try_get("status")?,
            attempts: row.try_get("attempt")?,
            waiting_for: row
                .try_get::<Option<i32>, _>("waiting_for")?
                .filter(|_| row.try_get::<Status, _>("status").ok() == Some(Status::Waiting)),
            last_error: row.try_get("last_error")?,
            result: row.try_get("result")?,
            depends_on: deps
                .into_iter()
                .map(OperationId::from_i64)
                .zip(required)
                .collect(),
            created_at: row.try_get("created_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

/// A workflow and its steps, in the order they were added.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct WorkflowGraph {
    /// The workflow.
    pub workflow: WorkflowRow,
    /// Its steps; each names the steps it depends on.
    pub steps: Vec<StepNode>,
}

impl Admin {
    /// Workflows matching `filter`, newest first.
    pub async fn workflows(
        &self,
        filter: &WorkflowFilter,
    ) -> Result<Vec<WorkflowRow>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store
            .workflows_list(
                &mut conn,
                filter.state,
                filter.name.as_deref(),
                filter.older_than.map(millis),
                filter.newer_than.map(millis),
                filter.after_id.map(WorkflowId::as_i64),
                filter.limit.unwrap_or(50),
            )
            .await
    }

    /// Workflow `id` and its steps (`None`: no such workflow).
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::workflow::WorkflowId;
    ///
    /// if let Some(graph) = admin.workflow_graph(WorkflowId::from_i64(7)).await? {
    ///     println!("{} is {}", graph.workflow.name, graph.workflow.state);
    ///     for step in &graph.steps {
    ///         println!("  {} {} {} after {:?}", step.id, step.name, step.status, step.depends_on);
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn workflow_graph(
        &self,
        id: WorkflowId,
    ) -> Result<Option<WorkflowGraph>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let Some(workflow) = self.store.workflow_row(&mut conn, id.as_i64()).await? else {
            return Ok(None);
        };
        let steps = self.store.workflow_steps(&mut conn, id.as_i64()).await?;
        Ok(Some(WorkflowGraph { workflow, steps }))
    }

    /// Resolves stalled operation `id` as succeeded, recording `result` as
    /// its result (what a workflow step's dependents read), in the operator
    /// trail with `actor` and `reason`.
    ///
    /// The result is checked against the latest JSON Schema of the
    /// operation's output type (recorded by the workers at start-up):
    /// refused ([`ActionOutcome::BadResult`], recorded as refused) when it
    /// does not fit, and when it is missing for a workflow step with
    /// dependents whose output is not `()` (a `null` result must fit the
    /// schema). `act(id, Action::Resolve(Resolution::Succeeded), ..)` is
    /// this without a result.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::OperationId;
    /// use pgoutbox::admin::ActionOutcome;
    ///
    /// // The charge did go through: its receipt is on the provider's dashboard.
    /// let receipt = serde_json::json!({"charge_id": "ch_123"});
    /// let id = OperationId::from_i64(42);
    /// match admin.resolve_with_result(id, Some(receipt), "alice", "found at the provider").await? {
    ///     ActionOutcome::BadResult { reason } => eprintln!("refused: {reason}"),
    ///     other => println!("{other:?}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn resolve_with_result(
        &self,
        id: OperationId,
        result: Option<serde_json::Value>,
        actor: &str,
        reason: &str,
    ) -> Result<ActionOutcome, sqlx::Error> {
        let action = Action::Resolve(Resolution::Succeeded);
        let mut conn = self.pool.acquire().await?;
        let Some(facts): Option<ResolveFacts> = self.store.resolve_facts(&mut conn, id).await?
        else {
            return Ok(ActionOutcome::NotFound);
        };
        if facts.status != Status::Stalled {
            // The recorded refusal, naming the state.
            return self
                .transition(&mut conn, id, action, actor, reason, None)
                .await;
        }
        let checked = check_result(&facts, result.as_ref());
        match checked {
            Err(why) => {
                // Recorded as refused: no state allows it.
                let change = crate::store::admin::Transition {
                    action: "resolve",
                    actor,
                    reason,
                    allowed: &[],
                    to: Status::Succeeded,
                    result: None,
                };
                self.store
                    .operator_transition(&mut conn, id, &change)
                    .await?;
                Ok(ActionOutcome::BadResult { reason: why })
            }
            Ok(hash) => {
                let stored = result.as_ref().zip(hash.as_deref());
                self.transition(&mut conn, id, action, actor, reason, stored)
                    .await
            }
        }
    }
}

/// What a resolve as succeeded must know of the operation.
#[derive(Debug)]
pub(crate) struct ResolveFacts {
    pub(crate) name: String,
    pub(crate) status: Status,
    pub(crate) has_dependents: bool,
    pub(crate) output_schema: Option<serde_json::Value>,
    pub(crate) output_hash: Option<String>,
}

impl<'r> FromRow<'r, PgRow> for ResolveFacts {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(ResolveFacts {
            name: row.try_get("name")?,
            status: row.try_get("status")?,
            has_dependents: row.try_get("has_dependents")?,
            output_schema: row.try_get("output_schema")?,
            output_hash: row.try_get("output_hash")?,
        })
    }
}

/// Checks a supplied result; the output schema's hash to record with it.
fn check_result(
    facts: &ResolveFacts,
    result: Option<&serde_json::Value>,
) -> Result<Option<String>, String> {
    let name = &facts.name;
    let validator = match &facts.output_schema {
        Some(schema) => Some(jsonschema::validator_for(schema).map_err(|e| {
            format!("the recorded output schema of `{name}` is not a valid JSON Schema: {e}")
        })?),
        None => None,
    };
    match (result, validator) {
        (None, None) => Ok(None),
        (None, Some(validator)) => {
            if facts.has_dependents && !validator.is_valid(&serde_json::Value::Null) {
                Err(format!(
                    "`{name}` is a workflow step whose dependents read its result, and its \
                     output is not `()`: supply the result, JSON matching its output schema \
                     (on the dashboard's schema page)"
                ))
            } else {
                Ok(None)
            }
        }
        (Some(_), None) => Err(format!(
            "no output schema is recorded for `{name}` (no worker handling it has started \
             since migration 9): a result cannot be checked"
        )),
        (Some(value), Some(validator)) => {
            let errors: Vec<String> = validator
                .iter_errors(value)
                .take(5)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    if at.is_empty() {
                        e.to_string()
                    } else {
                        format!("at {at}: {e}")
                    }
                })
                .collect();
            if !errors.is_empty() {
                return Err(format!(
                    "the result does not match the output schema of `{name}`: {}",
                    errors.join("; ")
                ));
            }
            crate::storable::json_document(value, "a result", crate::publish::MAX_PAYLOAD_BYTES)
                .map_err(|why| format!("the result cannot be stored: {why}"))?;
            Ok(facts.output_hash.clone())
        }
    }
}
