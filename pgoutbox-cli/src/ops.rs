//! `pgoutbox ops …`, `workflow`, `stats`, `workers` and `purge`.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{Args, Subcommand, ValueEnum};
use pgoutbox::admin::{Action, ActionOutcome, Admin, OperationFilter, OperationRow, Resolution};
use pgoutbox::{OperationId, Outcome, Status};

use crate::{Cli, CliError};

/// A duration on the command line: `90s`, `15m`, `2h`, `7d`, `1h 30m` (as
/// `humantime` reads them, like the settings).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = "expected an integer and a unit (`s`, `m`, `h`, `d`), e.g. `7d`";
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration `{text}`: {e}; {expected}"))?;
    // Milliseconds that fit an `i64`, as the statements take them.
    i64::try_from(duration.as_millis())
        .map(|_| duration)
        .map_err(|_| format!("invalid duration `{text}`: too long; {expected}"))
}

/// A state on the command line: `pgoutbox::Status`, with its texts as
/// clap's possible values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatusArg(Status);

impl ValueEnum for StatusArg {
    fn value_variants<'a>() -> &'a [Self] {
        const VARIANTS: [StatusArg; Status::ALL.len()] = {
            let mut variants = [StatusArg(Status::Pending); Status::ALL.len()];
            let mut i = 0;
            while i < variants.len() {
                variants[i] = StatusArg(Status::ALL[i]);
                i += 1;
            }
            variants
        };
        &VARIANTS
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.0.as_str()))
    }
}

/// Filters shared by `ops list` and bulk actions.
#[derive(Debug, Args)]
pub(crate) struct Filter {
    /// Only operations in this state (repeatable).
    #[arg(long = "status", value_enum)]
    statuses: Vec<StatusArg>,
    /// Only operations with this name.
    #[arg(long)]
    name: Option<String>,
    /// Only operations in this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only operations published within this long (e.g. `2h`, `7d`).
    #[arg(long, value_parser = parse_duration)]
    since: Option<Duration>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.statuses.is_empty()
            && self.name.is_none()
            && self.queue.is_none()
            && self.since.is_none()
    }

    fn to_filter(&self, limit: Option<i64>) -> OperationFilter {
        OperationFilter {
            statuses: self.statuses.iter().map(|s| s.0).collect(),
            name: self.name.clone(),
            queue: self.queue.clone(),
            since: self.since,
            limit,
        }
    }
}

/// Who acts and why.
#[derive(Debug, Args)]
pub(crate) struct Trail {
    /// Why (recorded in the audit trail).
    #[arg(long)]
    reason: String,
    /// Who (recorded in the audit trail); default: the OS user.
    #[arg(long)]
    actor: Option<String>,
    /// Act on a filtered set without asking.
    #[arg(long)]
    yes: bool,
}

impl Trail {
    fn actor(&self) -> String {
        self.actor.clone().unwrap_or_else(|| {
            std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "unknown".to_owned())
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ResolveAs {
    Succeeded,
    Dead,
}

#[derive(Debug, Subcommand)]
pub(crate) enum OpsCommand {
    /// List operations, newest first.
    List {
        #[command(flatten)]
        filter: Filter,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show an operation: payload, attempts, operator actions, parent and children.
    Show {
        /// The operation's id.
        id: i64,
    },
    /// Retry dead, stalled or cancelled operations (attempt count kept).
    Retry {
        /// One operation (or use filters).
        id: Option<i64>,
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        trail: Trail,
    },
    /// Cancel pending, retrying or stalled operations.
    Cancel {
        /// One operation (or use filters).
        id: Option<i64>,
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        trail: Trail,
    },
    /// Settle a stalled operation's unknown outcome.
    Resolve {
        /// The operation's id.
        id: i64,
        /// What really happened.
        #[arg(long = "as", value_enum)]
        resolution: ResolveAs,
        #[command(flatten)]
        trail: Trail,
    },
    /// Publish succeeded, dead or cancelled operations again, as new
    /// operations linked to the originals.
    Replay {
        /// One operation (or use filters).
        id: Option<i64>,
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        trail: Trail,
    },
}

fn admin(cli: &Cli, pool: sqlx::PgPool) -> Admin {
    Admin::new(pool, &cli.schema)
}

fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn print_table(header: &[&str], rows: &[Vec<String>]) -> Result<(), CliError> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn op_row(op: &OperationRow) -> Vec<String> {
    vec![
        op.id.to_string(),
        op.name.clone(),
        op.status.to_string(),
        op.queue.clone(),
        format!("{}/{}", op.attempt, op.max_attempts),
        op.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        op.last_error.clone().unwrap_or_default(),
    ]
}

const OP_HEADER: [&str; 7] = [
    "ID",
    "NAME",
    "STATUS",
    "QUEUE",
    "ATTEMPTS",
    "CREATED",
    "LAST ERROR",
];

pub(crate) async fn run(cli: &Cli, command: &OpsCommand) -> Result<(), CliError> {
    let pool = cli.pool().await?;
    let admin = admin(cli, pool);
    match command {
        OpsCommand::List { filter, limit } => {
            let ops = admin.list(&filter.to_filter(Some(*limit))).await?;
            if cli.json {
                print_json(&ops)
            } else {
                print_table(&OP_HEADER, &ops.iter().map(op_row).collect::<Vec<_>>())
            }
        }
        OpsCommand::Show { id } => {
            let detail = admin
                .show(OperationId::from_i64(*id))
                .await?
                .ok_or_else(|| CliError(format!("no operation with id {id}")))?;
            if cli.json {
                return print_json(&detail);
            }
            print_detail(&detail)
        }
        OpsCommand::Retry { id, filter, trail } => {
            bulk(&admin, cli, Action::Retry, *id, filter, trail).await
        }
        OpsCommand::Cancel { id, filter, trail } => {
            bulk(&admin, cli, Action::Cancel, *id, filter, trail).await
        }
        OpsCommand::Replay { id, filter, trail } => {
            bulk(&admin, cli, Action::Replay, *id, filter, trail).await
        }
        OpsCommand::Resolve {
            id,
            resolution,
            trail,
        } => {
            let action = Action::Resolve(match resolution {
                ResolveAs::Succeeded => Resolution::Succeeded,
                ResolveAs::Dead => Resolution::Dead,
            });
            let id = OperationId::from_i64(*id);
            let outcome = admin.act(id, action, &trail.actor(), &trail.reason).await?;
            report_one(cli, id, action, &outcome)
        }
    }
}

fn print_detail(detail: &pgoutbox::admin::OperationDetail) -> Result<(), CliError> {
    let op = &detail.operation;
    let mut out = std::io::stdout().lock();
    writeln!(out, "operation {} `{}`: {}", op.id, op.name, op.status)?;
    writeln!(
        out,
        "  queue {}, priority {}, attempts {}/{}, idempotent {}",
        op.queue, op.priority, op.attempt, op.max_attempts, op.idempotent
    )?;
    writeln!(
        out,
        "  created {}, run at {}, finished {}",
        op.created_at,
        op.run_at,
        op.finished_at.map_or("-".to_owned(), |t| t.to_string())
    )?;
    writeln!(
        out,
        "  parent {}, root {}, children {:?}",
        op.parent_id.map_or("-".to_owned(), |p| p.to_string()),
        op.root_id.map_or("-".to_owned(), |p| p.to_string()),
        detail
            .children
            .iter()
            .map(|c| c.as_i64())
            .collect::<Vec<_>>()
    )?;
    writeln!(out, "  schema hash {}", op.schema_hash)?;
    writeln!(out, "  payload {}", op.payload)?;
    if let Some(error) = &op.last_error {
        writeln!(out, "  last error: {error}")?;
    }
    writeln!(out, "attempts:")?;
    for a in &detail.attempts {
        writeln!(
            out,
            "  #{} {} by {} at {}{}",
            a.number,
            a.outcome.map_or("running", Outcome::as_str),
            a.worker_id,
            a.started_at,
            a.error.as_ref().map_or(String::new(), |e| format!(": {e}"))
        )?;
        if let Some(chain) = a
            .error_chain
            .as_ref()
            .and_then(|c| c.as_array())
            .filter(|c| c.len() > 1)
        {
            for cause in chain.iter().skip(1) {
                writeln!(
                    out,
                    "      caused by: {}",
                    cause.as_str().unwrap_or_default()
                )?;
            }
        }
    }
    writeln!(out, "operator actions:")?;
    for a in &detail.actions {
        writeln!(
            out,
            "  {} {} ({}) by {} at {}: {} → {}{} — {}",
            a.action,
            a.outcome,
            a.from_status,
            a.actor,
            a.created_at,
            a.from_status,
            a.to_status.map_or("-", Status::as_str),
            a.new_operation_id
                .map_or(String::new(), |n| format!(", new operation {n}")),
            a.reason
        )?;
    }
    Ok(())
}

fn report_one(
    cli: &Cli,
    id: OperationId,
    action: Action,
    outcome: &ActionOutcome,
) -> Result<(), CliError> {
    if cli.json {
        print_json(outcome)?;
    }
    match outcome {
        ActionOutcome::Applied { .. } => {
            if !cli.json {
                println!("{}", outcome.message(id, action));
            }
            Ok(())
        }
        _ => Err(CliError(outcome.message(id, action))),
    }
}

async fn bulk(
    admin: &Admin,
    cli: &Cli,
    action: Action,
    id: Option<i64>,
    filter: &Filter,
    trail: &Trail,
) -> Result<(), CliError> {
    if trail.reason.trim().is_empty() {
        return Err(CliError("`--reason` must not be empty".to_owned()));
    }
    let actor = trail.actor();
    if let Some(id) = id.map(OperationId::from_i64) {
        if !filter.is_empty() {
            return Err(CliError(
                "give an operation id or filters, not both".to_owned(),
            ));
        }
        let outcome = admin.act(id, action, &actor, &trail.reason).await?;
        return report_one(cli, id, action, &outcome);
    }
    if filter.is_empty() {
        return Err(CliError(format!(
            "{action} needs an operation id or at least one filter (--status, --name, --queue, --since)"
        )));
    }
    let targets = admin.list(&filter.to_filter(None)).await?;
    if targets.is_empty() {
        println!("no operation matches");
        return Ok(());
    }
    confirm(
        &format!("{action} {} operation(s)?", targets.len()),
        trail.yes,
    )?;
    let bar = indicatif::ProgressBar::new(targets.len() as u64);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut applied, mut refused) = (0, Vec::new());
    for op in &targets {
        match admin.act(op.id, action, &actor, &trail.reason).await? {
            ActionOutcome::Applied { .. } => applied += 1,
            other => refused.push(other.message(op.id, action)),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if cli.json {
        return print_json(&serde_json::json!({"applied": applied, "refused": refused}));
    }
    println!("{action}: {applied} applied, {} refused", refused.len());
    for line in refused {
        println!("  {line}");
    }
    Ok(())
}

/// Asks on a terminal; without one, refuses unless `--yes`.
pub(crate) fn confirm(question: &str, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError(format!(
            "{question} refusing without confirmation on a non-interactive input: pass --yes"
        )));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CliError("not confirmed; nothing done".to_owned()))
    }
}

pub(crate) async fn workflow(cli: &Cli, root: i64) -> Result<(), CliError> {
    let admin = admin(cli, cli.pool().await?);
    let root = OperationId::from_i64(root);
    let ops = admin.workflow(root).await?;
    if ops.is_empty() {
        return Err(CliError(format!("no operation with id {root}")));
    }
    if cli.json {
        return print_json(&ops);
    }
    // Depth-first from the root, children in id order.
    let mut out = std::io::stdout().lock();
    let mut stack = vec![(root, 0usize)];
    while let Some((id, depth)) = stack.pop() {
        if let Some(op) = ops.iter().find(|o| o.id == id) {
            writeln!(
                out,
                "{}{} {} {}",
                "  ".repeat(depth),
                op.id,
                op.name,
                op.status
            )?;
            let mut children: Vec<OperationId> = ops
                .iter()
                .filter(|o| o.parent_id == Some(id))
                .map(|o| o.id)
                .collect();
            children.reverse();
            stack.extend(children.into_iter().map(|c| (c, depth + 1)));
        }
    }
    Ok(())
}

/// A worker counts as live when its heartbeat is younger than this.
const LIVE: Duration = Duration::from_mins(1);

/// `workers` lists the workers seen within this long.
const RECENT: Duration = Duration::from_hours(24);

pub(crate) async fn stats(cli: &Cli) -> Result<(), CliError> {
    let admin = admin(cli, cli.pool().await?);
    let stats = admin.stats(LIVE, 5).await?;
    if cli.json {
        return print_json(&stats);
    }
    let rows: Vec<Vec<String>> = stats
        .counts
        .iter()
        .map(|(status, name, n)| vec![status.to_string(), name.clone(), n.to_string()])
        .collect();
    print_table(&["STATUS", "NAME", "COUNT"], &rows)?;
    println!();
    match stats.oldest_ready_seconds {
        Some(s) => println!("oldest ready operation: waiting {s:.1}s"),
        None => println!("oldest ready operation: none waiting"),
    }
    println!(
        "succeeded per minute (last {} minutes, oldest first): {:?}",
        stats.succeeded_per_minute.len(),
        stats.succeeded_per_minute
    );
    println!("live workers: {}", stats.workers.len());
    for w in &stats.workers {
        println!(
            "  {} {}:{} ×{} handles {}",
            w.id,
            w.host,
            w.pid,
            w.n_workers,
            w.names.join(", ")
        );
    }
    if stats.unhandled.is_empty() {
        println!("every ready operation has a live worker");
    } else {
        println!("ready operations that no live worker handles:");
        for (name, n) in &stats.unhandled {
            println!("  {name}: {n}");
        }
    }
    if !stats.unserved.is_empty() {
        println!("ready operations in a queue that no live worker handling them serves:");
        for (queue, name, n) in &stats.unserved {
            println!("  {queue} / {name}: {n}");
        }
    }
    Ok(())
}

pub(crate) async fn workers(cli: &Cli) -> Result<(), CliError> {
    let admin = admin(cli, cli.pool().await?);
    let workers = admin.workers(LIVE, RECENT).await?;
    if cli.json {
        return print_json(&workers);
    }
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                w.id.to_string(),
                if w.live {
                    "live".into()
                } else if w.stopped_at.is_some() {
                    "stopped".into()
                } else {
                    "dead".into()
                },
                format!("{}:{}", w.host, w.pid),
                w.heartbeat_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                w.names.join(","),
            ]
        })
        .collect();
    print_table(&["ID", "STATE", "PROCESS", "HEARTBEAT", "NAMES"], &rows)
}

pub(crate) async fn purge(
    cli: &Cli,
    older_than: Duration,
    include_dead: bool,
    include_stalled: bool,
    batch: i64,
) -> Result<(), CliError> {
    let admin = admin(cli, cli.pool().await?);
    let mut statuses = vec![Status::Succeeded, Status::Cancelled];
    if include_dead {
        statuses.push(Status::Dead);
    }
    if include_stalled {
        statuses.push(Status::Stalled);
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut total = 0u64;
    loop {
        let n = admin.purge_batch(&statuses, older_than, batch).await?;
        total += n;
        bar.set_message(format!("{total} deleted"));
        bar.tick();
        if n < u64::try_from(batch).unwrap_or(u64::MAX) {
            break;
        }
    }
    bar.finish_and_clear();
    if cli.json {
        return print_json(&serde_json::json!({"deleted": total, "statuses": statuses}));
    }
    println!(
        "purged {total} operation(s) ({}); attempts and operator actions are kept",
        statuses
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
