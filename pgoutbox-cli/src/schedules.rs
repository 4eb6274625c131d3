//! `pgoutbox schedules`: list the schedules (and warn of those that no
//! live worker declares), pause, resume and remove them (each action
//! recorded in `operator_actions`).

use clap::{Args, Subcommand};
use pgoutbox::admin::{Admin, ScheduleActionOutcome, ScheduleRemoval, ScheduleRow};

use crate::ops::{actor, print_json, print_table};
use crate::{Cli, CliError, outln};

/// `pgoutbox schedules [pause|resume|remove] …`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  pgoutbox schedules\n  pgoutbox schedules --json\n  pgoutbox schedules pause billing.reconcile --reason \"ledger migration\"\n  pgoutbox schedules resume billing.reconcile --reason \"migration done\"\n  pgoutbox schedules remove billing.reconcile --reason \"retired in v42\""
)]
pub(crate) struct SchedulesArgs {
    #[command(subcommand)]
    command: Option<SchedulesCommand>,
}

#[derive(Debug, Subcommand)]
enum SchedulesCommand {
    /// List the schedules (the default): next tick, last tick and its
    /// operation's state, the live workers declaring it, paused or not.
    List,
    /// Stop publishing a schedule's ticks until it is resumed (recorded).
    Pause(Target),
    /// Publish a paused schedule's ticks again from its next tick
    /// (recorded); the ticks while it was paused are not caught up.
    Resume(Target),
    /// Delete a schedule retired from the code (recorded): refused while
    /// a live worker declares it; declared again later, it starts afresh.
    Remove(Target),
}

/// Which schedule, who and why.
#[derive(Debug, Args)]
struct Target {
    /// The schedule's name.
    name: String,
    /// Why (recorded in the audit trail).
    #[arg(long)]
    reason: String,
    /// Who (recorded in the audit trail); default: the OS user.
    #[arg(long)]
    actor: Option<String>,
}

pub(crate) async fn run(cli: &Cli, args: &SchedulesArgs) -> Result<(), CliError> {
    match &args.command {
        None | Some(SchedulesCommand::List) => list(cli).await,
        Some(SchedulesCommand::Pause(target)) => act(cli, target, true).await,
        Some(SchedulesCommand::Resume(target)) => act(cli, target, false).await,
        Some(SchedulesCommand::Remove(target)) => remove(cli, target).await,
    }
}

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

fn row(s: &ScheduleRow) -> Vec<String> {
    let last = match (s.last_tick, s.last_operation_id, s.last_workflow_id) {
        (Some(tick), _, Some(workflow)) => format!(
            "{} workflow #{workflow} {}",
            when(Some(tick)),
            s.last_workflow_state
                .map_or_else(|| "?".to_owned(), |st| st.to_string())
        ),
        (Some(tick), Some(id), None) if s.operation.starts_with("workflow ") => {
            format!("{} workflow (step #{id} purged)", when(Some(tick)))
        }
        (Some(tick), Some(id), None) => format!(
            "{} #{id} {}",
            when(Some(tick)),
            s.last_status
                .map_or_else(|| "purged".to_owned(), |st| st.to_string())
        ),
        _ => "-".to_owned(),
    };
    let state = if s.paused {
        format!(
            "paused by {}: {}",
            s.paused_by.as_deref().unwrap_or("?"),
            s.paused_reason.as_deref().unwrap_or("")
        )
    } else {
        "active".to_owned()
    };
    let declared: Vec<String> = s
        .declared_by
        .iter()
        .map(|d| {
            let mark = if d.in_force { "" } else { " (differs!)" };
            format!("{}:{}{mark}", d.host, d.pid)
        })
        .collect();
    vec![
        s.name.clone(),
        format!("{} ({}, {})", s.cron, s.time_zone, s.missed),
        if s.paused {
            "-".to_owned()
        } else {
            when(Some(s.next_tick))
        },
        last,
        state,
        if declared.is_empty() {
            "no live worker".to_owned()
        } else {
            declared.join(", ")
        },
    ]
}

async fn list(cli: &Cli) -> Result<(), CliError> {
    let admin = Admin::new(cli.pool().await?, &cli.schema);
    let schedules = admin.schedules().await?;
    if cli.json {
        return print_json(&serde_json::json!({ "schedules": schedules }));
    }
    if schedules.is_empty() {
        outln!("no schedules: workers record theirs at start-up (`WorkflowRouter::schedule`)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = schedules.iter().map(row).collect();
    print_table(
        &[
            "NAME",
            "CRON (ZONE, MISSED)",
            "NEXT TICK (UTC)",
            "LAST TICK (UTC), OPERATION",
            "STATE",
            "DECLARED BY",
        ],
        &rows,
    )?;
    let undeclared: Vec<&str> = schedules
        .iter()
        .filter(|s| s.declared_by.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    if !undeclared.is_empty() {
        outln!(
            "warning: {} schedule(s) that no live worker declares: {} (retired from the code? \
             `pgoutbox schedules remove NAME --reason ..`; otherwise their missed ticks are \
             counted from their next tick when a worker declares them again)",
            undeclared.len(),
            undeclared.join(", ")
        );
    }
    Ok(())
}

fn checked_reason(target: &Target) -> Result<&str, CliError> {
    let reason = target.reason.trim();
    if reason.is_empty() {
        return Err(CliError::msg("`--reason` must not be empty"));
    }
    Ok(reason)
}

async fn remove(cli: &Cli, target: &Target) -> Result<(), CliError> {
    let reason = checked_reason(target)?;
    let actor = actor(target.actor.as_deref())?;
    let admin = Admin::new(cli.pool().await?, &cli.schema);
    let outcome = admin.remove_schedule(&target.name, &actor, reason).await?;
    if cli.json {
        print_json(&outcome)?;
    }
    let message = outcome.message(&target.name);
    match outcome {
        ScheduleRemoval::Applied => {
            if !cli.json {
                outln!("{message}");
            }
            Ok(())
        }
        _ => Err(CliError::msg(message)),
    }
}

async fn act(cli: &Cli, target: &Target, pause: bool) -> Result<(), CliError> {
    let reason = checked_reason(target)?;
    let actor = actor(target.actor.as_deref())?;
    let admin = Admin::new(cli.pool().await?, &cli.schema);
    let outcome = if pause {
        admin.pause_schedule(&target.name, &actor, reason).await?
    } else {
        admin.resume_schedule(&target.name, &actor, reason).await?
    };
    if cli.json {
        print_json(&outcome)?;
    }
    let message = outcome.message(&target.name, pause);
    match outcome {
        ScheduleActionOutcome::Applied => {
            if !cli.json {
                outln!("{message}");
            }
            Ok(())
        }
        _ => Err(CliError::msg(message)),
    }
}
