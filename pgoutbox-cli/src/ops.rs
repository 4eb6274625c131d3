//! `pgoutbox ops …`, `workflow`, `stats`, `workers` and `purge`.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{Args, Subcommand, ValueEnum};
use pgoutbox::admin::{
    Action, ActionOutcome, Admin, BulkStep, BulkTarget, OperationFilter, OperationRow, Resolution,
};
use pgoutbox::{OperationId, Outcome, Status};

use crate::{Cli, CliError, outln};

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
            ..OperationFilter::default()
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
    /// The reason, which must say something.
    fn reason(&self) -> Result<&str, CliError> {
        let reason = self.reason.trim();
        if reason.is_empty() {
            return Err(CliError::msg("`--reason` must not be empty".to_owned()));
        }
        Ok(reason)
    }

    fn actor(&self) -> Result<String, CliError> {
        actor(self.actor.as_deref())
    }
}

/// Who acts: `--actor`, else the OS user; refused when neither is known,
/// since an action recorded as done by nobody in particular is no trail.
pub(crate) fn actor(given: Option<&str>) -> Result<String, CliError> {
    if let Some(actor) = given {
        let actor = actor.trim();
        if actor.is_empty() {
            return Err(CliError::msg("`--actor` must not be empty"));
        }
        return Ok(actor.to_owned());
    }
    os_user().ok_or_else(|| {
        CliError::msg(
            "cannot tell who is acting ($USER and $LOGNAME are unset and the OS user has no name): \
             pass `--actor`",
        )
    })
}

/// The OS user: `$USER`, else `$LOGNAME`, else the name of the process's
/// user id in `/etc/passwd` (containers and cron jobs often set neither
/// variable).
fn os_user() -> Option<String> {
    let from_env = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty());
    from_env.or_else(passwd_user)
}

#[cfg(unix)]
fn passwd_user() -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    // The owner of `/proc/self` is the process's user id.
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 2 && fields[2] == uid)
        .map(|fields| fields[0].to_owned())
        .filter(|name| !name.is_empty())
}

#[cfg(not(unix))]
fn passwd_user() -> Option<String> {
    None
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ResolveAs {
    Succeeded,
    Dead,
}

#[derive(Debug, Subcommand)]
pub(crate) enum OpsCommand {
    /// List operations, newest first.
    #[command(
        after_help = "Examples:\n  pgoutbox ops list --status stalled --status dead\n  pgoutbox ops list --name billing.charge --limit 20 --after-id 1200"
    )]
    List {
        #[command(flatten)]
        filter: Filter,
        /// At most this many (a page; the next one starts with `--after-id`).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..))]
        limit: i64,
        /// Only operations older than this id: the next page after the
        /// last id shown.
        #[arg(long)]
        after_id: Option<i64>,
    },
    /// Show an operation: payload, attempts, operator actions, parent and children.
    #[command(after_help = "Examples:\n  pgoutbox ops show 42\n  pgoutbox ops show 42 --json")]
    Show {
        /// The operation's id.
        id: i64,
    },
    /// Retry dead, stalled or cancelled operations (attempt count kept).
    #[command(
        after_help = "Examples:\n  pgoutbox ops retry 42 --reason \"provider outage over\"\n  pgoutbox ops retry --status dead --name mail.send --reason \"SMTP fixed\" --dry-run"
    )]
    Retry {
        /// One operation (or use filters).
        id: Option<i64>,
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        trail: Trail,
        /// List what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Cancel waiting, pending, retrying or stalled operations (a workflow
    /// step's dependents are cancelled with it).
    #[command(
        after_help = "Examples:\n  pgoutbox ops cancel 42 --reason \"customer withdrew the order\"\n  pgoutbox ops cancel --status retrying --queue mail --reason \"campaign stopped\" --yes"
    )]
    Cancel {
        /// One operation (or use filters).
        id: Option<i64>,
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        trail: Trail,
        /// List what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Settle a stalled operation's unknown outcome.
    #[command(
        after_help = "Examples:\n  pgoutbox ops resolve 42 --as succeeded --reason \"charge ch_123 found at the provider\"\n  pgoutbox ops resolve 42 --as dead --reason \"no charge at the provider\""
    )]
    Resolve {
        /// The operation's id.
        id: i64,
        /// What really happened.
        #[arg(long = "as", value_enum)]
        resolution: ResolveAs,
        /// With `--as succeeded`: its result, as JSON, checked against the
        /// output type's schema (required for a workflow step whose
        /// dependents read it).
        #[arg(long, value_parser = parse_json)]
        result: Option<serde_json::Value>,
        #[command(flatten)]
        trail: Trail,
    },
    /// Show the tree of operations an operation belongs to (published by
    /// each other's handlers), from its root.
    #[command(after_help = "Examples:\n  pgoutbox ops tree 42\n  pgoutbox ops tree 42 --json")]
    Tree {
        /// Any operation of the tree (the root or a descendant, which is marked).
        id: i64,
    },
    /// Publish succeeded, dead or cancelled operations again, as new
    /// operations linked to the originals.
    #[command(
        after_help = "Examples:\n  pgoutbox ops replay 42 --reason \"resend the receipt\"\n  pgoutbox ops replay --status dead --since 2h --reason \"bug 77 fixed\" --dry-run"
    )]
    Replay {
        /// One operation (or use filters).
        id: Option<i64>,
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        trail: Trail,
        /// List what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn admin(cli: &Cli, pool: sqlx::PgPool) -> Admin {
    Admin::new(pool, &cli.schema)
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) -> Result<(), CliError> {
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

/// A relay's receipt as one line: `published to JetStream stream ORDERS,
/// sequence 42` (`, a duplicate` when the broker had it already), or the
/// JSON as stored for another backend.
fn receipt(result: &serde_json::Value) -> String {
    if result["backend"] == "jetstream" {
        format!(
            "published to JetStream stream {}, sequence {}{}",
            result["stream"].as_str().unwrap_or("?"),
            result["sequence"],
            if result["duplicate"] == true {
                " (a duplicate: the stream had it already)"
            } else {
                ""
            }
        )
    } else {
        format!("result {result}")
    }
}

/// Attempts counted against the limit, out of the limit, and the snoozes
/// beside them (`2/3 +1 snoozed`): a snooze does not use up an attempt.
fn attempts(op: &OperationRow) -> String {
    let counted = op.attempt - op.snoozes;
    if op.snoozes > 0 {
        format!("{counted}/{} +{} snoozed", op.max_attempts, op.snoozes)
    } else {
        format!("{counted}/{}", op.max_attempts)
    }
}

fn op_row(op: &OperationRow) -> Vec<String> {
    vec![
        op.id.to_string(),
        op.name.clone(),
        op.status.to_string(),
        op.queue.clone(),
        attempts(op),
        op.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        op.run_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        // One line per operation: a multi-line error would break the table.
        op.last_error
            .as_deref()
            .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    ]
}

const OP_HEADER: [&str; 8] = [
    "ID",
    "NAME",
    "STATUS",
    "QUEUE",
    "ATTEMPTS",
    "CREATED",
    "RUN AT",
    "LAST ERROR",
];

/// The width `ops list` fits its last column into when neither the
/// terminal nor `$COLUMNS` says.
const DEFAULT_WIDTH: usize = 120;

/// The width of the terminal standard output is, else `$COLUMNS` (piped
/// output), else [`DEFAULT_WIDTH`].
fn terminal_width() -> usize {
    console::Term::stdout()
        .size_checked()
        .map(|(_, columns)| usize::from(columns))
        .filter(|w| *w > 0)
        .or_else(|| {
            std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.trim().parse().ok())
                .filter(|w: &usize| *w > 0)
        })
        .unwrap_or(DEFAULT_WIDTH)
}

/// Cuts the last cell of each row so that the row fits `width` columns
/// (keeping at least 20 characters of it), marking the cut with `…`.
fn fit_last_column(header: &[&str], rows: &mut [Vec<String>], width: usize) {
    let n = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows.iter() {
        for (w, cell) in widths.iter_mut().zip(row).take(n - 1) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let used: usize = widths[..n - 1].iter().map(|w| w + 2).sum();
    let room = width.saturating_sub(used).max(20);
    for row in rows.iter_mut() {
        if let Some(last) = row.last_mut()
            && last.chars().count() > room
        {
            *last = last.chars().take(room - 1).collect::<String>() + "…";
        }
    }
}

pub(crate) async fn run(cli: &Cli, command: &OpsCommand) -> Result<(), CliError> {
    let pool = cli.pool().await?;
    let admin = admin(cli, pool);
    match command {
        OpsCommand::List {
            filter,
            limit,
            after_id,
        } => {
            let mut query = filter.to_filter(Some(*limit));
            query.after_id = after_id.map(OperationId::from_i64);
            let ops = admin.list(&query).await?;
            // A full page may have a next one.
            let next = (i64::try_from(ops.len()).ok() == Some(*limit))
                .then(|| ops.last().map(|o| o.id))
                .flatten();
            if cli.json {
                return print_json(&serde_json::json!({
                    "operations": ops,
                    "next_after_id": next,
                }));
            }
            let mut rows = ops.iter().map(op_row).collect::<Vec<_>>();
            fit_last_column(&OP_HEADER, &mut rows, terminal_width());
            print_table(&OP_HEADER, &rows)?;
            if let Some(next) = next {
                eprintln!("more may follow: add `--after-id {next}` for the next page");
            }
            Ok(())
        }
        OpsCommand::Show { id } => {
            let detail = admin
                .show(OperationId::from_i64(*id))
                .await?
                .ok_or_else(|| CliError::msg(format!("no operation with id {id}")))?;
            if cli.json {
                return print_json(&detail);
            }
            print_detail(&detail)
        }
        OpsCommand::Retry {
            id,
            filter,
            trail,
            dry_run,
        } => bulk(&admin, cli, Action::Retry, *id, filter, trail, *dry_run).await,
        OpsCommand::Cancel {
            id,
            filter,
            trail,
            dry_run,
        } => bulk(&admin, cli, Action::Cancel, *id, filter, trail, *dry_run).await,
        OpsCommand::Replay {
            id,
            filter,
            trail,
            dry_run,
        } => bulk(&admin, cli, Action::Replay, *id, filter, trail, *dry_run).await,
        OpsCommand::Resolve {
            id,
            resolution,
            result,
            trail,
        } => {
            let action = Action::Resolve(match resolution {
                ResolveAs::Succeeded => Resolution::Succeeded,
                ResolveAs::Dead => Resolution::Dead,
            });
            let id = OperationId::from_i64(*id);
            let outcome = match (resolution, result) {
                (ResolveAs::Dead, Some(_)) => {
                    return Err(CliError::msg(
                        "--result goes with --as succeeded: a dead operation has no result"
                            .to_owned(),
                    ));
                }
                (ResolveAs::Succeeded, result) => {
                    admin
                        .resolve_with_result(id, result.clone(), &trail.actor()?, trail.reason()?)
                        .await?
                }
                (ResolveAs::Dead, None) => {
                    admin
                        .act(id, action, &trail.actor()?, trail.reason()?)
                        .await?
                }
            };
            report_one(cli, id, action, &outcome)
        }
        OpsCommand::Tree { id } => workflow(cli, *id).await,
    }
}

fn print_detail(detail: &pgoutbox::admin::OperationDetail) -> Result<(), CliError> {
    let op = &detail.operation;
    let mut out = std::io::stdout().lock();
    writeln!(out, "operation {} `{}`: {}", op.id, op.name, op.status)?;
    writeln!(
        out,
        "  queue {}, priority {}, attempts {}, idempotent {}",
        op.queue,
        op.priority,
        attempts(op),
        op.idempotent
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
    writeln!(
        out,
        "  idempotency key {} (the handler's `ctx.idempotency_key()`)",
        op.external_key
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
        if let Some(result) = &a.result {
            writeln!(out, "      {}", receipt(result))?;
        }
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
                outln!("{}", outcome.message(id, action));
            }
            Ok(())
        }
        _ => Err(CliError::msg(outcome.message(id, action))),
    }
}

/// How many ids a bulk action reads and acts on at a time.
const BULK_PAGE: i64 = 500;

/// How many targets the confirmation prompt shows.
const BULK_SAMPLE: i64 = 5;

/// What a bulk run did, operation by operation.
#[derive(Debug, Default, serde::Serialize)]
struct BulkSummary {
    /// Changed and recorded.
    applied: u64,
    /// Matched the filter, but the action is not allowed from their state.
    refused: u64,
    /// Changed since they were listed and no longer matched the filter.
    skipped: u64,
    /// Statements that failed, with their error.
    errors: Vec<String>,
}

fn target_line(t: &BulkTarget) -> String {
    format!(
        "{} {} {} queue {} published {}",
        t.id,
        t.name,
        t.status,
        t.queue,
        t.created_at.format("%Y-%m-%d %H:%M:%S")
    )
}

#[allow(clippy::too_many_arguments)] // The command's arguments, as parsed.
async fn bulk(
    admin: &Admin,
    cli: &Cli,
    action: Action,
    id: Option<i64>,
    filter: &Filter,
    trail: &Trail,
    dry_run: bool,
) -> Result<(), CliError> {
    let reason = trail.reason()?;
    let actor = trail.actor()?;
    if let Some(id) = id.map(OperationId::from_i64) {
        if !filter.is_empty() {
            return Err(CliError::msg(
                "give an operation id or filters, not both".to_owned(),
            ));
        }
        if dry_run {
            return Err(CliError::msg(
                "`--dry-run` lists what filters select; `ops show ID` shows one operation"
                    .to_owned(),
            ));
        }
        let outcome = admin.act(id, action, &actor, reason).await?;
        return report_one(cli, id, action, &outcome);
    }
    if filter.is_empty() {
        return Err(CliError::msg(format!(
            "{action} needs an operation id or at least one filter (--status, --name, --queue, --since)"
        )));
    }
    let filter = filter.to_filter(None);
    let allowed = action.allowed_from();
    let preview = admin.bulk_preview(action, &filter, BULK_SAMPLE).await?;
    let Some(upto) = preview.upto else {
        outln!("no operation matches");
        return Ok(());
    };
    if dry_run {
        return dry_run_list(admin, cli, action, &filter, upto).await;
    }
    if !trail.yes {
        print_preview(action, &filter, &preview)?;
    }
    confirm(
        &format!("{action} {} operation(s)?", preview.count),
        trail.yes,
    )?;
    let bar = indicatif::ProgressBar::new(u64::try_from(preview.count).unwrap_or(0));
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut summary = BulkSummary::default();
    let mut after = None;
    loop {
        let page = admin
            .bulk_targets(action, &filter, after, upto, BULK_PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for t in &page {
            // Listed rows in a state the action does not allow (named with
            // `--status`) are counted, not sent and not recorded one by one.
            if !allowed.contains(&t.status) {
                summary.refused += 1;
                bar.inc(1);
                continue;
            }
            match admin
                .act_if_matching(t.id, action, &filter, &actor, reason)
                .await
            {
                Ok(BulkStep::Applied { .. }) => summary.applied += 1,
                Ok(BulkStep::NotAllowed { .. }) => summary.refused += 1,
                Ok(BulkStep::NoLongerMatches { .. }) => summary.skipped += 1,
                Err(e) => summary.errors.push(format!("operation {}: {e}", t.id)),
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let line = format!(
        "{action}: {} applied, {} refused (state not allowed), {} skipped (no longer matched), {} failed",
        summary.applied,
        summary.refused,
        summary.skipped,
        summary.errors.len()
    );
    if cli.json {
        print_json(&summary)?;
    } else {
        outln!("{line}");
        for error in &summary.errors {
            outln!("  {error}");
        }
    }
    if summary.errors.is_empty() && summary.refused == 0 {
        Ok(())
    } else {
        Err(CliError::msg(line))
    }
}

/// What a bulk action will touch, before it asks: how many, in which
/// states, and the first few.
fn print_preview(
    action: Action,
    filter: &OperationFilter,
    preview: &pgoutbox::admin::BulkPreview,
) -> Result<(), CliError> {
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "{action} would touch {} operation(s) in state(s) {}, for example:",
        preview.count,
        action
            .bulk_statuses(filter)
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    for t in &preview.sample {
        writeln!(err, "  {}", target_line(t))?;
    }
    if preview.count > BULK_SAMPLE {
        writeln!(err, "  … and {} more", preview.count - BULK_SAMPLE)?;
    }
    Ok(())
}

/// `--dry-run`: every target, and whether the action would apply to it
/// now.
async fn dry_run_list(
    admin: &Admin,
    cli: &Cli,
    action: Action,
    filter: &OperationFilter,
    upto: OperationId,
) -> Result<(), CliError> {
    let allowed = action.allowed_from();
    let (mut would, mut refused) = (Vec::new(), Vec::new());
    let mut after = None;
    loop {
        let page = admin
            .bulk_targets(action, filter, after, upto, BULK_PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for t in page {
            if allowed.contains(&t.status) {
                would.push(t);
            } else {
                refused.push(t);
            }
        }
    }
    if cli.json {
        return print_json(&serde_json::json!({
            "dry_run": true,
            "would_apply": would,
            "not_allowed": refused,
        }));
    }
    let mut out = std::io::stdout().lock();
    for t in &would {
        writeln!(out, "would {action} {}", target_line(t))?;
    }
    for t in &refused {
        writeln!(
            out,
            "cannot {action} {}: not allowed from {}",
            target_line(t),
            t.status
        )?;
    }
    writeln!(
        out,
        "dry run: {action} would apply to {} operation(s), {} refused (state not allowed); nothing changed",
        would.len(),
        refused.len()
    )?;
    Ok(())
}

/// Asks on a terminal; without one, refuses unless `--yes`.
pub(crate) fn confirm(question: &str, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::msg(format!(
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
        Err(CliError::msg("not confirmed; nothing done".to_owned()))
    }
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

async fn workflow(cli: &Cli, id: i64) -> Result<(), CliError> {
    let admin = admin(cli, cli.pool().await?);
    let asked = OperationId::from_i64(id);
    let mut ops = admin.workflow(asked).await?;
    // A descendant names its root: show the whole tree from there.
    let root = match ops.iter().find(|o| o.id == asked) {
        None => return Err(CliError::msg(format!("no operation with id {asked}"))),
        Some(op) => op.root_id.unwrap_or(asked),
    };
    if root != asked {
        ops = admin.workflow(root).await?;
    }
    if cli.json {
        return print_json(&serde_json::json!({
            "root": root,
            "requested": asked,
            "operations": ops,
        }));
    }
    // Depth-first from the root, children in id order.
    let mut out = std::io::stdout().lock();
    let mut stack = vec![(root, 0usize)];
    while let Some((id, depth)) = stack.pop() {
        if let Some(op) = ops.iter().find(|o| o.id == id) {
            writeln!(
                out,
                "{}{} {} {}{}",
                "  ".repeat(depth),
                op.id,
                op.name,
                op.status,
                if id == asked && root != asked {
                    "  <- requested"
                } else {
                    ""
                }
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
        // Named fields, never positional tuples.
        return print_json(&serde_json::json!({
            "counts": stats.counts.iter().map(|(status, name, count)| {
                serde_json::json!({"status": status, "name": name, "count": count})
            }).collect::<Vec<_>>(),
            "oldest_ready_seconds": stats.oldest_ready_seconds,
            "succeeded_per_minute": stats.succeeded_per_minute.iter().enumerate().map(|(i, count)| {
                // Oldest first: the first of n is n minutes ago.
                serde_json::json!({"minutes_ago": stats.succeeded_per_minute.len() - i, "count": count})
            }).collect::<Vec<_>>(),
            "workers": stats.workers,
            "unhandled": stats.unhandled.iter().map(|(name, count)| {
                serde_json::json!({"name": name, "count": count})
            }).collect::<Vec<_>>(),
            "unserved": stats.unserved.iter().map(|(queue, name, count)| {
                serde_json::json!({"queue": queue, "name": name, "count": count})
            }).collect::<Vec<_>>(),
            "schedule_conflicts": stats.schedule_conflicts,
            "undeclared_schedules": stats.undeclared_schedules,
        }));
    }
    let rows: Vec<Vec<String>> = stats
        .counts
        .iter()
        .map(|(status, name, n)| vec![status.to_string(), name.clone(), n.to_string()])
        .collect();
    print_table(&["STATUS", "NAME", "COUNT"], &rows)?;
    outln!();
    match stats.oldest_ready_seconds {
        Some(s) => outln!("oldest ready operation: waiting {s:.1}s"),
        None => outln!("oldest ready operation: none waiting"),
    }
    outln!(
        "succeeded per minute (last {} minutes, oldest first): {:?}",
        stats.succeeded_per_minute.len(),
        stats.succeeded_per_minute
    );
    outln!("live workers: {}", stats.workers.len());
    for w in &stats.workers {
        outln!(
            "  {} {}:{} ×{} handles {}",
            w.id,
            w.host,
            w.pid,
            w.n_workers,
            w.names.join(", ")
        );
    }
    if stats.unhandled.is_empty() {
        outln!("every ready operation has a live worker");
    } else {
        outln!("ready operations that no live worker handles:");
        for (name, n) in &stats.unhandled {
            outln!("  {name}: {n}");
        }
    }
    if !stats.unserved.is_empty() {
        outln!("ready operations in a queue that no live worker handling them serves:");
        for (queue, name, n) in &stats.unserved {
            outln!("  {queue} / {name}: {n}");
        }
    }
    if !stats.schedule_conflicts.is_empty() {
        outln!("schedules that live workers declare differently:");
        for c in &stats.schedule_conflicts {
            outln!(
                "  {}: worker {} ({}:{}) declares `{}` in {} ({}), `{}` in {} ({}) is in force",
                c.name,
                c.worker_id,
                c.host,
                c.pid,
                c.cron,
                c.time_zone,
                c.missed,
                c.in_force_cron,
                c.in_force_time_zone,
                c.in_force_missed
            );
        }
    }
    if !stats.undeclared_schedules.is_empty() {
        outln!(
            "schedules that no live worker declares (retired? `pgoutbox schedules remove NAME --reason ..`):"
        );
        for s in &stats.undeclared_schedules {
            outln!(
                "  {}: `{}` in {} ({}), next tick {}{}",
                s.name,
                s.cron,
                s.time_zone,
                s.missed,
                s.next_tick.format("%Y-%m-%d %H:%M:%S"),
                if s.paused { ", paused" } else { "" }
            );
        }
    }
    Ok(())
}

pub(crate) async fn workers(cli: &Cli) -> Result<(), CliError> {
    let admin = admin(cli, cli.pool().await?);
    let workers = admin.workers(LIVE, RECENT).await?;
    if cli.json {
        return print_json(&serde_json::json!({"workers": workers}));
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

/// What `pgoutbox purge` was asked to do.
#[derive(Debug)]
pub(crate) struct Purge<'a> {
    pub(crate) older_than: Duration,
    pub(crate) include_dead: bool,
    pub(crate) include_stalled: bool,
    pub(crate) batch: i64,
    pub(crate) reason: Option<&'a str>,
    pub(crate) actor: Option<&'a str>,
    pub(crate) yes: bool,
}

/// What the janitor's history retention keeps by default
/// (`workflow_system.retention.history`).
const HISTORY_DEFAULT: &str = "90d";

pub(crate) async fn purge(cli: &Cli, purge: &Purge<'_>) -> Result<(), CliError> {
    if purge.batch < 1 {
        return Err(CliError::msg("`--batch` must be at least 1".to_owned()));
    }
    let mut statuses = vec![Status::Succeeded, Status::Cancelled];
    if purge.include_dead {
        statuses.push(Status::Dead);
    }
    if purge.include_stalled {
        statuses.push(Status::Stalled);
    }
    let names = statuses
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    // Dead and stalled operations leave only by an operator's recorded
    // decision: ask, and record who and why.
    let decided = purge.include_dead || purge.include_stalled;
    let trail = if decided {
        let reason = purge.reason.map(str::trim).unwrap_or_default();
        if reason.is_empty() {
            return Err(CliError::msg(
                "`--include-dead` and `--include-stalled` need a `--reason` (it is recorded)"
                    .to_owned(),
            ));
        }
        confirm(
            &format!(
                "purge {names} operations finished more than {} ago, dead and stalled ones included?",
                humantime::format_duration(purge.older_than)
            ),
            purge.yes,
        )?;
        let actor = actor(purge.actor)?;
        Some((actor, reason.to_owned()))
    } else {
        None
    };
    let admin = admin(cli, cli.pool().await?);
    let bar = indicatif::ProgressBar::new_spinner();
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let batch = u64::try_from(purge.batch).unwrap_or(u64::MAX);
    let mut total = 0u64;
    loop {
        let n = match &trail {
            Some((actor, reason)) => {
                admin
                    .purge_batch_recorded(&statuses, purge.older_than, purge.batch, actor, reason)
                    .await?
            }
            None => {
                admin
                    .purge_batch(&statuses, purge.older_than, purge.batch)
                    .await?
            }
        };
        total += n;
        bar.set_message(format!("{total} deleted"));
        bar.tick();
        if n < batch {
            break;
        }
    }
    bar.finish_and_clear();
    if cli.json {
        return print_json(&serde_json::json!({"deleted": total, "statuses": statuses}));
    }
    outln!(
        "purged {total} operation(s) ({names}); their attempts and operator actions stay until \
         the history retention (`workflow_system.retention.history`, default {HISTORY_DEFAULT}) \
         removes them{}",
        if decided {
            "; each purged dead or stalled operation is recorded as a `purge` action"
        } else {
            ""
        }
    );
    Ok(())
}
