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
    /// When it failed (or was cancelled), if it did.
    pub failed_at: Option<DateTime<Utc>>,
    /// Why: `step 7 (shop.ship) is dead`, or an operator's cancel.
    pub failure: Option<String>,
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
            failed_at: row.try_get("failed_at")?,
            failure: row.try_get("failure")?,
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
    /// For a compensation: the step it answers.
    pub compensates: Option<OperationId>,
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
            compensates: row
                .try_get::<Option<i64>, _>("compensates")?
                .map(OperationId::from_i64),
        })
    }
}

/// A workflow step's place in its workflow, as its operation's page shows
/// it: which workflow, and what the step waits for.
///
/// ```no_run
/// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
/// use pgoutbox::{OperationId, Status};
///
/// if let Some(step) = admin.workflow_step(OperationId::from_i64(42)).await? {
///     println!("step of workflow {} ({}), {}", step.workflow_id, step.workflow_name, step.workflow_state);
///     for dep in step.dependencies.iter().filter(|d| d.status != Some(Status::Succeeded)) {
///         println!("  waits for {} {} ({:?})", dep.id, dep.name.as_deref().unwrap_or("?"), dep.status);
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct WorkflowStep {
    /// Its workflow.
    pub workflow_id: WorkflowId,
    /// Its workflow's name.
    pub workflow_name: String,
    /// Its workflow's state.
    pub workflow_state: WorkflowState,
    /// Dependencies it still waits for (`waiting` only).
    pub waiting_for: Option<i32>,
    /// The steps it depends on, ids ascending.
    pub dependencies: Vec<StepDependency>,
}

/// One dependency of a workflow step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct StepDependency {
    /// The step depended on.
    pub id: OperationId,
    /// Its operation's name (`None`: purged by retention).
    pub name: Option<String>,
    /// Its state (`None`: purged by retention).
    pub status: Option<Status>,
    /// Whether the dependent needs its success (`Dep`), or only its end
    /// (`Settled`).
    pub required: bool,
}

impl<'r> FromRow<'r, PgRow> for WorkflowStep {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let ids: Vec<i64> = row.try_get("dependency_ids")?;
        let names: Vec<Option<String>> = row.try_get("dependency_names")?;
        let statuses: Vec<Option<Status>> = row.try_get("dependency_statuses")?;
        let required: Vec<bool> = row.try_get("dependency_required")?;
        let dependencies = ids
            .into_iter()
            .zip(names)
            .zip(statuses)
            .zip(required)
            .map(|(((id, name), status), required)| StepDependency {
                id: OperationId::from_i64(id),
                name,
                status,
                required,
            })
            .collect();
        Ok(WorkflowStep {
            workflow_id: WorkflowId::from_i64(row.try_get("id")?),
            workflow_name: row.try_get("name")?,
            workflow_state: row.try_get("state")?,
            waiting_for: row
                .try_get::<Option<i32>, _>("waiting_for")?
                .filter(|_| row.try_get::<Status, _>("status").ok() == Some(Status::Waiting)),
            dependencies,
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

    /// Operation `id`'s place in its workflow: `None` when it is not a
    /// workflow step (or does not exist). See [`WorkflowStep`].
    pub async fn workflow_step(
        &self,
        id: OperationId,
    ) -> Result<Option<WorkflowStep>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store.workflow_step(&mut conn, id).await
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

/// An operator's action on a whole workflow.
///
/// ```
/// use pgoutbox::admin::WorkflowAction;
///
/// assert_eq!(WorkflowAction::Retry.name(), "retry");
/// assert_eq!(WorkflowAction::Cancel { compensate: true }.name(), "cancel");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowAction {
    /// Cancel every step that has not started; publish the compensations
    /// of the steps that succeeded when `compensate`. Refused for a
    /// workflow that succeeded or failed already, or while a step runs.
    Cancel {
        /// Whether what succeeded is compensated.
        compensate: bool,
    },
    /// Run its dead and cancelled steps again, re-waiting their
    /// dependents, so that it resumes where it stopped; its compensations
    /// that have not started are cancelled. Refused for a workflow that
    /// succeeded, has nothing to retry, or whose compensations started.
    Retry,
}

impl WorkflowAction {
    /// Its name in the operator trail: `cancel` or `retry`.
    pub fn name(self) -> &'static str {
        match self {
            WorkflowAction::Cancel { .. } => "cancel",
            WorkflowAction::Retry => "retry",
        }
    }
}

/// A step an action on a workflow changes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct PlannedStep {
    /// Its operation id.
    pub id: OperationId,
    /// Its operation's name.
    pub name: String,
    /// Its state now.
    pub status: Status,
}

/// What an action on a workflow changes, as shown for confirmation and
/// returned once applied; or why it does not apply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct WorkflowPlan {
    /// The workflow.
    pub workflow: WorkflowId,
    /// Its state now.
    pub state: WorkflowState,
    /// The action.
    pub action: WorkflowAction,
    /// Why it does not apply (`None`: it does).
    pub refused: Option<String>,
    /// Steps cancelled: every step that has not started (cancel).
    pub cancel: Vec<PlannedStep>,
    /// Succeeded steps whose compensation is published (cancel with
    /// compensation).
    pub compensate: Vec<PlannedStep>,
    /// Dead or cancelled steps that run again, at once or once their
    /// dependencies are met (retry).
    pub retry: Vec<PlannedStep>,
    /// Compensations not started, cancelled (retry).
    pub drop_compensations: Vec<PlannedStep>,
}

impl WorkflowPlan {
    /// What it changes, in a few lines (or why it does not apply).
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::admin::WorkflowAction;
    /// use pgoutbox::workflow::WorkflowId;
    ///
    /// if let Some(plan) = admin.workflow_plan(WorkflowId::from_i64(7), WorkflowAction::Retry).await? {
    ///     println!("{}", plan.summary());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn summary(&self) -> String {
        if let Some(why) = &self.refused {
            return format!("refused: {why}");
        }
        let list = |steps: &[PlannedStep]| {
            steps
                .iter()
                .map(|s| format!("{} {} ({})", s.id, s.name, s.status))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut lines = Vec::new();
        for (what, steps) in [
            ("cancels", &self.cancel),
            ("compensates", &self.compensate),
            ("runs again", &self.retry),
            ("cancels the compensations", &self.drop_compensations),
        ] {
            if !steps.is_empty() {
                lines.push(format!("{what} {}: {}", steps.len(), list(steps)));
            }
        }
        if lines.is_empty() {
            lines.push("changes no step".to_owned());
        }
        lines.join("\n")
    }
}

/// How an action on a workflow went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkflowActionOutcome {
    /// Applied as planned; recorded.
    Applied {
        /// What it changed.
        plan: WorkflowPlan,
        /// The workflow's state after it.
        state: WorkflowState,
    },
    /// It did not apply (`plan.refused` says why); recorded as refused.
    Refused {
        /// Why, and the workflow as it was.
        plan: WorkflowPlan,
    },
    /// No such workflow.
    NotFound,
}

/// An operator's action on a workflow as a whole, in its trail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct WorkflowActionRow {
    /// `cancel` or `retry`.
    pub action: String,
    /// `applied` or `refused`.
    pub outcome: String,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// The workflow's state before.
    pub from_state: WorkflowState,
    /// Its state after, when applied.
    pub to_state: Option<WorkflowState>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl<'r> FromRow<'r, PgRow> for WorkflowActionRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(WorkflowActionRow {
            action: row.try_get("action")?,
            outcome: row.try_get("outcome")?,
            actor: row.try_get("actor")?,
            reason: row.try_get("reason")?,
            from_state: row.try_get("from_status")?,
            to_state: row.try_get("to_status")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// A step as an action on its workflow sees it.
struct PlanStep {
    step: PlannedStep,
    compensates: Option<OperationId>,
    attempts: i32,
    declares_compensation: bool,
    compensated: bool,
}

impl<'r> FromRow<'r, PgRow> for PlanStep {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(PlanStep {
            step: PlannedStep {
                id: OperationId::from_i64(row.try_get("id")?),
                name: row.try_get("name")?,
                status: row.try_get("status")?,
            },
            compensates: row
                .try_get::<Option<i64>, _>("compensates")?
                .map(OperationId::from_i64),
            attempts: row.try_get("attempt")?,
            declares_compensation: row.try_get("declares_compensation")?,
            compensated: row.try_get("compensated")?,
        })
    }
}

/// What `action` changes in workflow `id`, in `state` (`failure`: its
/// failure, if it failed), with these steps; or why it does not apply.
fn plan(
    id: WorkflowId,
    state: WorkflowState,
    failure: Option<&str>,
    action: WorkflowAction,
    steps: Vec<PlanStep>,
) -> WorkflowPlan {
    let mut plan = WorkflowPlan {
        workflow: id,
        state,
        action,
        refused: None,
        cancel: Vec::new(),
        compensate: Vec::new(),
        retry: Vec::new(),
        drop_compensations: Vec::new(),
    };
    if state == WorkflowState::Succeeded {
        plan.refused = Some(format!(
            "workflow {id} has succeeded: there is nothing to {}",
            action.name()
        ));
        return plan;
    }
    let (own, answers): (Vec<PlanStep>, Vec<PlanStep>) =
        steps.into_iter().partition(|s| s.compensates.is_none());
    match action {
        WorkflowAction::Cancel { compensate } => {
            if let Some(why) = failure {
                plan.refused = Some(format!(
                    "workflow {id} has already failed ({why}): its compensations run as \
                     operations of their own (cancel one with `pgoutbox ops cancel`)"
                ));
                return plan;
            }
            if let Some(running) = own.iter().find(|s| s.step.status == Status::Running) {
                plan.refused = Some(format!(
                    "step {} ({}) is running right now: cancel the workflow once it has ended",
                    running.step.id, running.step.name
                ));
                return plan;
            }
            for s in own {
                match s.step.status {
                    Status::Waiting | Status::Pending | Status::Retrying => {
                        plan.cancel.push(s.step);
                    }
                    Status::Succeeded
                        if compensate && s.declares_compensation && !s.compensated =>
                    {
                        plan.compensate.push(s.step);
                    }
                    _ => {}
                }
            }
        }
        WorkflowAction::Retry => {
            if let Some(started) = answers.iter().find(|s| {
                s.attempts > 0
                    || !matches!(
                        s.step.status,
                        Status::Waiting | Status::Pending | Status::Cancelled
                    )
            }) {
                plan.refused = Some(format!(
                    "compensation {} ({}) of step {} has already run or is running ({}): a retry \
                     would redo what it undid",
                    started.step.id,
                    started.step.name,
                    started.compensates.expect("a compensation"),
                    started.step.status
                ));
                return plan;
            }
            plan.retry = own
                .into_iter()
                .filter(|s| matches!(s.step.status, Status::Dead | Status::Cancelled))
                .map(|s| s.step)
                .collect();
            if plan.retry.is_empty() {
                plan.refused = Some(format!(
                    "workflow {id} has no dead or cancelled step to retry{}",
                    if state == WorkflowState::Stalled {
                        " (resolve its stalled step: `pgoutbox ops resolve`)"
                    } else {
                        ""
                    }
                ));
                return plan;
            }
            plan.drop_compensations = answers
                .into_iter()
                .filter(|s| matches!(s.step.status, Status::Waiting | Status::Pending))
                .map(|s| s.step)
                .collect();
        }
    }
    plan
}

impl Admin {
    /// What `action` would change in workflow `id`, or why it does not
    /// apply (`None`: no such workflow); nothing is changed. The same plan
    /// is applied by [`Admin::act_on_workflow`], if nothing changed since.
    pub async fn workflow_plan(
        &self,
        id: WorkflowId,
        action: WorkflowAction,
    ) -> Result<Option<WorkflowPlan>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let planned = self.plan_locked(&mut tx, id, action).await?;
        tx.rollback().await?;
        Ok(planned)
    }

    /// Applies `action` to workflow `id`, if it applies, recording it
    /// (applied or refused) with `actor` and `reason` in the operator
    /// trail: one row for the workflow and one per step it changed. The
    /// workflow's row is locked first, so that the plan applied is the one
    /// checked.
    ///
    /// ```no_run
    /// # async fn example(admin: pgoutbox::admin::Admin) -> Result<(), Box<dyn std::error::Error>> {
    /// use pgoutbox::admin::{WorkflowAction, WorkflowActionOutcome};
    /// use pgoutbox::workflow::WorkflowId;
    ///
    /// let id = WorkflowId::from_i64(7);
    /// match admin.act_on_workflow(id, WorkflowAction::Retry, "alice", "the carrier is back").await? {
    ///     WorkflowActionOutcome::Applied { plan, state } => println!("{state}: {}", plan.summary()),
    ///     WorkflowActionOutcome::Refused { plan } => eprintln!("{}", plan.summary()),
    ///     _ => eprintln!("no workflow {id}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn act_on_workflow(
        &self,
        id: WorkflowId,
        action: WorkflowAction,
        actor: &str,
        reason: &str,
    ) -> Result<WorkflowActionOutcome, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let Some(plan) = self.plan_locked(&mut tx, id, action).await? else {
            return Ok(WorkflowActionOutcome::NotFound);
        };
        if plan.refused.is_some() {
            self.store
                .record_workflow_action(
                    &mut tx,
                    id,
                    action.name(),
                    false,
                    actor,
                    reason,
                    plan.state,
                    &[],
                )
                .await?;
            tx.commit().await?;
            return Ok(WorkflowActionOutcome::Refused { plan });
        }
        let (why, compensate) = match action {
            WorkflowAction::Cancel { compensate } => {
                (format!("cancelled by {actor}: {reason}"), compensate)
            }
            WorkflowAction::Retry => (format!("retried by {actor}: {reason}"), true),
        };
        let change = crate::store::workflows::WorkflowChange {
            action: action.name(),
            why: &why,
            compensate,
        };
        self.store.workflow_apply(&mut tx, id, &change).await?;
        let changed: Vec<(OperationId, Status)> = plan
            .cancel
            .iter()
            .chain(&plan.retry)
            .chain(&plan.drop_compensations)
            .map(|s| (s.id, s.status))
            .collect();
        self.store
            .record_workflow_action(
                &mut tx,
                id,
                action.name(),
                true,
                actor,
                reason,
                plan.state,
                &changed,
            )
            .await?;
        let state = self
            .store
            .lock_workflow(&mut tx, id)
            .await?
            .map_or(plan.state, |(state, ..)| state);
        tx.commit().await?;
        Ok(WorkflowActionOutcome::Applied { plan, state })
    }

    /// The operators' actions on workflow `id` as a whole, in order.
    pub async fn workflow_actions(
        &self,
        id: WorkflowId,
    ) -> Result<Vec<WorkflowActionRow>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        self.store.workflow_actions(&mut conn, id).await
    }

    /// The plan of `action` on workflow `id`, its row locked in `tx`.
    async fn plan_locked(
        &self,
        tx: &mut sqlx::PgConnection,
        id: WorkflowId,
        action: WorkflowAction,
    ) -> Result<Option<WorkflowPlan>, sqlx::Error> {
        let Some((state, failure, failed)) = self.store.lock_workflow(tx, id).await? else {
            return Ok(None);
        };
        let steps: Vec<PlanStep> = self.store.workflow_plan_steps(tx, id).await?;
        let failure = failed.then(|| failure.unwrap_or_default());
        Ok(Some(plan(id, state, failure.as_deref(), action, steps)))
    }
}
