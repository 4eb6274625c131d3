//! `pgoutbox workflows` (the list, with filters), `pgoutbox workflow <id>`
//! (one workflow's graph: each step's state, attempts, result summary and
//! what it waits for; its failure and its operator trail) and `pgoutbox
//! workflow cancel|retry <id>` (an operator's action on the whole
//! workflow, recorded, planned first).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use pgoutbox::admin::{
    Admin, StepNode, WorkflowAction, WorkflowActionOutcome, WorkflowActionRow, WorkflowFilter,
    WorkflowPlan, WorkflowRow,
};
use pgoutbox::workflow::WorkflowId;
use pgoutbox::{Status, WorkflowState};

use crate::ops::{parse_duration, print_json, print_table};
use crate::{Cli, CliError, outln};

/// `pgoutbox workflow`: show one (`pgoutbox workflow 7`), or act on it.
#[derive(Debug, Args)]
pub(crate) struct WorkflowArgs {
    /// The workflow's id (`pgoutbox workflows` lists them).
    id: Option<i64>,
    #[command(subcommand)]
    action: Option<WorkflowCommand>,
}

/// The actions on a whole workflow.
#[derive(Debug, Subcommand)]
pub(crate) enum WorkflowCommand {
    /// Cancel a running or stalled workflow: every step that has not
    /// started is cancelled; with `--compensate`, the steps that succeeded
    /// get their compensations published (refused while a step runs, and
    /// for a workflow that succeeded or failed already).
    #[command(
        group(ArgGroup::new("compensation").required(true).args(["compensate", "no_compensate"])),
        after_help = "Examples:\n  pgoutbox workflow cancel 7 --compensate --reason \"customer withdrew\" --dry-run\n  pgoutbox workflow cancel 7 --no-compensate --reason \"test order\""
    )]
    Cancel {
        /// The workflow's id.
        id: i64,
        /// Publish the compensations of the steps that succeeded (a refund
        /// for a charge): the workflow is `compensating` until they end.
        #[arg(long)]
        compensate: bool,
        /// Compensate nothing: what succeeded stays done.
        #[arg(long)]
        no_compensate: bool,
        #[command(flatten)]
        trail: ActTrail,
    },
    /// Retry a failed (or cancelled) workflow where it stopped: its dead
    /// and cancelled steps run again, their dependents wait for them again,
    /// and its compensations that have not started are cancelled (refused
    /// once a compensation has started, and for a workflow that succeeded).
    #[command(
        after_help = "Examples:\n  pgoutbox workflow retry 7 --reason \"carrier is back\" --dry-run\n  pgoutbox workflow retry 7 --reason \"carrier is back\" --json"
    )]
    Retry {
        /// The workflow's id.
        id: i64,
        #[command(flatten)]
        trail: ActTrail,
    },
}

/// Who acts, why, and whether only to look.
#[derive(Debug, Args)]
pub(crate) struct ActTrail {
    /// Why (recorded in the audit trail).
    #[arg(long)]
    reason: String,
    /// Who (recorded in the audit trail); default: the OS user.
    #[arg(long)]
    actor: Option<String>,
    /// Print what would change, change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) async fn run(cli: &Cli, args: &WorkflowArgs) -> Result<(), CliError> {
    match (&args.action, args.id) {
        (
            Some(WorkflowCommand::Cancel {
                id,
                compensate,
                no_compensate,
                trail,
            }),
            _,
        ) => {
            // clap's group makes exactly one of the two present.
            debug_assert!(*compensate != *no_compensate);
            let action = WorkflowAction::Cancel {
                compensate: *compensate,
            };
            act(cli, *id, action, trail).await
        }
        (Some(WorkflowCommand::Retry { id, trail }), _) => {
            act(cli, *id, WorkflowAction::Retry, trail).await
        }
        (None, Some(id)) => show(cli, id).await,
        (None, None) => Err(CliError::msg(
            "name a workflow: `pgoutbox workflow ID`, or `pgoutbox workflow cancel|retry ID`",
        )),
    }
}

/// Plans (`--dry-run`) or applies `action` on workflow `id`: what changed
/// and the new state on stdout; a refusal's reason, or no such workflow,
/// on stderr with exit 1, as `ops retry`/`ops cancel` do.
async fn act(cli: &Cli, id: i64, action: WorkflowAction, trail: &ActTrail) -> Result<(), CliError> {
    let reason = trail.reason.trim();
    if reason.is_empty() {
        return Err(CliError::msg("`--reason` must not be empty"));
    }
    let actor = crate::ops::actor(trail.actor.as_deref())?;
    let admin = Admin::new(cli.pool().await?, &cli.schema);
    let wid = WorkflowId::from_i64(id);
    let name = action.name();
    if trail.dry_run {
        let Some(plan) = admin.workflow_plan(wid, action).await? else {
            return Err(not_found(wid));
        };
        if cli.json {
            print_json(&serde_json::json!({ "dry_run": true, "plan": plan }))?;
        }
        if let Some(why) = &plan.refused {
            return Err(CliError::msg(format!(
                "{name} of workflow {wid} would be refused: {why}"
            )));
        }
        if !cli.json {
            outln!("dry run: {name} of workflow {wid} ({}) would:", plan.state);
            print_plan(&plan)?;
            outln!("nothing changed");
        }
        return Ok(());
    }
    let outcome = admin.act_on_workflow(wid, action, &actor, reason).await?;
    if cli.json {
        print_json(&outcome)?;
    }
    match outcome {
        WorkflowActionOutcome::Applied { plan, state } => {
            if !cli.json {
                outln!(
                    "{name}: workflow {wid} {} → {state} (recorded as done by {actor})",
                    plan.state
                );
                print_plan(&plan)?;
            }
            Ok(())
        }
        WorkflowActionOutcome::Refused { plan } => Err(CliError::msg(format!(
            "cannot {name} workflow {wid}: {}",
            plan.refused.as_deref().unwrap_or("refused")
        ))),
        _ => Err(not_found(wid)),
    }
}

fn not_found(id: WorkflowId) -> CliError {
    CliError::msg(format!("no workflow with id {id}"))
}

/// The plan's summary, indented.
fn print_plan(plan: &WorkflowPlan) -> Result<(), CliError> {
    for line in plan.summary().lines() {
        outln!("  {line}");
    }
    Ok(())
}

/// The filters of `pgoutbox workflows`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only workflows in this state.
    #[arg(long, value_parser = parse_state)]
    state: Option<WorkflowState>,
    /// Only workflows of this name.
    #[arg(long)]
    name: Option<String>,
    /// Only workflows created within this long (e.g. `2h`).
    #[arg(long, value_parser = parse_duration)]
    since: Option<Duration>,
    /// Only workflows created at least this long ago (e.g. `1d`).
    #[arg(long, value_parser = parse_duration)]
    older_than: Option<Duration>,
    /// At most this many (a page; the next one starts with `--after-id`).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..))]
    limit: i64,
    /// Only workflows older than this id: the next page after the last id
    /// shown.
    #[arg(long)]
    after_id: Option<i64>,
}

fn parse_state(text: &str) -> Result<WorkflowState, String> {
    text.parse().map_err(|_| {
        format!(
            "unknown workflow state `{text}` (one of {})",
            WorkflowState::ALL.map(WorkflowState::as_str).join(", ")
        )
    })
}

fn counts(counts: &BTreeMap<Status, i64>) -> String {
    counts
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) async fn list(cli: &Cli, args: &ListArgs) -> Result<(), CliError> {
    let admin = Admin::new(cli.pool().await?, &cli.schema);
    let filter = WorkflowFilter {
        state: args.state,
        name: args.name.clone(),
        newer_than: args.since,
        older_than: args.older_than,
        after_id: args.after_id.map(WorkflowId::from_i64),
        limit: Some(args.limit),
    };
    let rows: Vec<WorkflowRow> = admin.workflows(&filter).await?;
    if cli.json {
        return print_json(&serde_json::json!({ "workflows": rows }));
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|w| {
            vec![
                w.id.to_string(),
                w.name.clone(),
                w.state.to_string(),
                w.steps.to_string(),
                counts(&w.counts),
                w.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        })
        .collect();
    print_table(
        &["ID", "NAME", "STATE", "STEPS", "BY STATE", "CREATED"],
        &table,
    )
}

async fn show(cli: &Cli, id: i64) -> Result<(), CliError> {
    let admin = Admin::new(cli.pool().await?, &cli.schema);
    let wid = WorkflowId::from_i64(id);
    let Some(graph) = admin.workflow_graph(wid).await? else {
        return Err(not_found(wid));
    };
    let actions = admin.workflow_actions(wid).await?;
    if cli.json {
        let mut value = serde_json::to_value(&graph)?;
        value["actions"] = serde_json::to_value(&actions)?;
        return print_json(&value);
    }
    let w = &graph.workflow;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "workflow {} `{}`: {} ({} steps: {}), created {}{}",
        w.id,
        w.name,
        w.state,
        w.steps,
        counts(&w.counts),
        w.created_at.format("%Y-%m-%d %H:%M:%S"),
        w.finished_at.map_or(String::new(), |f| format!(
            ", finished {}",
            f.format("%Y-%m-%d %H:%M:%S")
        )),
    )?;
    if let Some(failure) = &w.failure {
        writeln!(
            out,
            "  failed {}: {failure}",
            w.failed_at.map_or_else(
                || "-".to_owned(),
                |t| t.format("%Y-%m-%d %H:%M:%S").to_string()
            ),
        )?;
    }
    drop(out);
    let table: Vec<Vec<String>> = graph.steps.iter().map(step_line).collect();
    print_table(
        &[
            "STEP",
            "NAME",
            "STATE",
            "ATTEMPTS",
            "AFTER",
            "RESULT / ERROR",
        ],
        &table,
    )?;
    print_trail(&actions)
}

/// The operators' actions on the workflow as a whole.
fn print_trail(actions: &[WorkflowActionRow]) -> Result<(), CliError> {
    if actions.is_empty() {
        outln!("operator actions: none");
        return Ok(());
    }
    outln!("operator actions:");
    for a in actions {
        outln!(
            "  {} {} by {} at {}: {} → {} — {}",
            a.action,
            a.outcome,
            a.actor,
            a.created_at.format("%Y-%m-%d %H:%M:%S"),
            a.from_state,
            a.to_state.map_or("-", WorkflowState::as_str),
            a.reason
        );
    }
    Ok(())
}

/// One step: what it waits for (`~` marks a dependency it runs after
/// however it ends), and its result or last error.
fn step_line(step: &StepNode) -> Vec<String> {
    let after = step
        .depends_on
        .iter()
        .map(|(id, required)| {
            if *required {
                id.to_string()
            } else {
                format!("~{id}")
            }
        })
        .collect::<Vec<_>>();
    let after = match (after.len(), step.waiting_for) {
        (0, _) => "-".to_owned(),
        (n, Some(left)) if n > 8 => format!("{n} steps ({left} to go)"),
        (n, None) if n > 8 => format!("{n} steps"),
        (_, Some(left)) => format!("{} ({left} to go)", after.join(",")),
        (_, None) => after.join(","),
    };
    let outcome = step
        .result_summary(60)
        .or_else(|| step.last_error.clone())
        .unwrap_or_else(|| "-".to_owned());
    let name = match step.compensates {
        Some(of) => format!("{} (compensates step {of})", step.name),
        None => step.name.clone(),
    };
    vec![
        step.id.to_string(),
        name,
        step.status.to_string(),
        step.attempts.to_string(),
        after,
        outcome,
    ]
}
