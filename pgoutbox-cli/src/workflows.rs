//! `pgoutbox workflows` (the list, with filters) and `pgoutbox workflow
//! <id>` (one workflow's graph: each step's state, attempts, result summary
//! and what it waits for).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use clap::Args;
use pgoutbox::admin::{Admin, StepNode, WorkflowFilter, WorkflowRow};
use pgoutbox::workflow::WorkflowId;
use pgoutbox::{Status, WorkflowState};

use crate::ops::{parse_duration, print_json, print_table};
use crate::{Cli, CliError};

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

pub(crate) async fn show(cli: &Cli, id: i64) -> Result<(), CliError> {
    let admin = Admin::new(cli.pool().await?, &cli.schema);
    let Some(graph) = admin.workflow_graph(WorkflowId::from_i64(id)).await? else {
        return Err(CliError::msg(format!("no workflow with id {id}")));
    };
    if cli.json {
        return print_json(&graph);
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
    )
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
    vec![
        step.id.to_string(),
        step.name.clone(),
        step.status.to_string(),
        step.attempts.to_string(),
        after,
        outcome,
    ]
}
