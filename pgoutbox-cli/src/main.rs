//! The `pgoutbox` command: apply the migrations, inspect operations and
//! workers, steer them (retry, cancel, resolve, replay), pause and resume
//! schedules, purge what retention allows, and export or check payload
//! schemas.

#[cfg(feature = "dashboard")]
mod dashboard;
mod migrate;
mod ops;
#[cfg(feature = "nats")]
mod relay;
mod schedules;
mod schema;
mod workflows;

use std::process::ExitCode;

use std::io::Write as _;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use pgoutbox::migrate::Identifier;
use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgPool};

/// Operate pgoutbox: apply its migrations, inspect and steer operations.
#[derive(Debug, Parser)]
#[command(
    name = "pgoutbox",
    version,
    about,
    long_about = None,
    arg_required_else_help = true,
    after_help = "Examples:\n  pgoutbox migrate up --database-url postgres://app@db/app\n  pgoutbox ops list --status stalled"
)]
struct Cli {
    /// PostgreSQL connection URL; without it, the workers' configuration
    /// (`PGOUTBOX_CONFIG_FILE`, `PGOUTBOX_DATABASE__*`).
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        hide_env_values = true,
        help_heading = GLOBAL
    )]
    database_url: Option<String>,

    /// The schema that holds pgoutbox's tables (default: the workers'
    /// `database.schema`, else `pgoutbox`).
    #[arg(long, env = "PGOUTBOX_SCHEMA", global = true, default_value = pgoutbox::migrate::DEFAULT_SCHEMA, help_heading = GLOBAL)]
    schema: Identifier,

    /// Print JSON instead of tables.
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,

    #[command(subcommand)]
    command: Command,

    /// The workers' settings, when the environment configures them.
    #[arg(skip)]
    settings: Option<pgoutbox::Settings>,
}

/// The heading of the options every command accepts, listed apart from
/// each command's own.
const GLOBAL: &str = "Global options";

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply, inspect or export the storage migrations.
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
    /// Inspect and act on operations (every action is recorded).
    #[command(subcommand)]
    Ops(ops::OpsCommand),
    /// List workflows, newest first (filters: state, name, age).
    #[command(
        after_help = "Examples:\n  pgoutbox workflows --state failed --since 1d\n  pgoutbox workflows --name order.fulfil --json"
    )]
    Workflows(workflows::ListArgs),
    /// Show a workflow's graph (each step's state, attempts, result and
    /// what it waits for, its failure and operator trail), or act on it as
    /// a whole: cancel, retry (recorded).
    #[command(
        args_conflicts_with_subcommands = true,
        arg_required_else_help = true,
        after_help = "Examples:\n  pgoutbox workflow 7\n  pgoutbox workflow 7 --json\n  pgoutbox workflow cancel 7 --compensate --reason \"customer withdrew\" --dry-run\n  pgoutbox workflow retry 7 --reason \"carrier is back\""
    )]
    Workflow(workflows::WorkflowArgs),
    /// Counts by state and name, pace, live workers, unhandled names.
    #[command(after_help = "Examples:\n  pgoutbox stats\n  pgoutbox stats --json")]
    Stats,
    /// Live and recently dead workers.
    #[command(after_help = "Examples:\n  pgoutbox workers\n  pgoutbox workers --json")]
    Workers,
    /// Periodic operations: list schedules, pause, resume and remove them (recorded).
    Schedules(schedules::SchedulesArgs),
    /// Payload schemas: export, history, check stored payloads.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Serve the operators' web dashboard (read-only unless
    /// `--allow-actions`).
    #[cfg(feature = "dashboard")]
    #[command(
        after_help = "Examples:\n  pgoutbox dashboard\n  PGOUTBOX_DASHBOARD__TOKEN=… pgoutbox dashboard --listen 0.0.0.0:7480 --allow-actions --actor alice"
    )]
    Dashboard(dashboard::DashboardArgs),
    /// Relay operations, by name, to NATS JetStream (payloads as stored).
    #[cfg(feature = "nats")]
    Relay(relay::RelayArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  pgoutbox completions bash > /etc/bash_completion.d/pgoutbox\n  pgoutbox completions zsh > \"${fpath[1]}/_pgoutbox\""
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Delete old succeeded and cancelled operations (dead and stalled only
    /// when named, asking first, recorded); their attempts and operator
    /// actions stay until the history retention removes them.
    #[command(
        after_help = "Examples:\n  pgoutbox purge --older-than 30d\n  pgoutbox purge --older-than 90d --include-dead --reason \"ticket 123\" --yes"
    )]
    Purge {
        /// Only operations finished longer ago than this (e.g. `30d`).
        #[arg(long, value_parser = ops::parse_duration)]
        older_than: std::time::Duration,
        /// Also purge `dead` operations.
        #[arg(long)]
        include_dead: bool,
        /// Also purge `stalled` operations.
        #[arg(long)]
        include_stalled: bool,
        /// Rows per batch (at least 1).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..))]
        batch: i64,
        /// Why (recorded for each purged dead or stalled operation; needed
        /// with `--include-dead` or `--include-stalled`).
        #[arg(long)]
        reason: Option<String>,
        /// Who (recorded with the reason); default: the OS user.
        #[arg(long)]
        actor: Option<String>,
        /// Purge dead or stalled operations without asking.
        #[arg(long)]
        yes: bool,
    },
}

/// How long to wait for the database to answer.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A failure to report: one line on stderr and a non-zero exit.
#[derive(Debug)]
struct CliError {
    message: String,
    cause: Cause,
}

/// What the error turned out to be, where it changes what is said.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    Other,
    /// Our output's reader went away (`pgoutbox ops list | head`): not an
    /// error at all.
    BrokenPipe,
    /// A relation the statement names does not exist: the schema has not
    /// been migrated.
    MissingRelation,
}

impl CliError {
    fn msg(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            cause: Cause::Other,
        }
    }

    /// The line to print, given the schema the command was pointed at.
    fn render(&self, schema: &Identifier) -> String {
        match self.cause {
            Cause::MissingRelation => format!(
                "schema `{schema}` has no pgoutbox tables ({}): create them with \
                 `pgoutbox migrate up --schema {schema}`, or name the right schema with `--schema`",
                self.message
            ),
            _ => self.message.clone(),
        }
    }
}

impl<E: std::error::Error + 'static> From<E> for CliError {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut cause = Cause::Other;
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(current) = source {
            if let Some(io) = current.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::BrokenPipe
            {
                cause = Cause::BrokenPipe;
            }
            if let Some(json) = current.downcast_ref::<serde_json::Error>()
                && json.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe)
            {
                cause = Cause::BrokenPipe;
            }
            let db = current
                .downcast_ref::<sqlx::Error>()
                .and_then(sqlx::Error::as_database_error)
                .and_then(|d| d.try_downcast_ref::<PgDatabaseError>())
                .or_else(|| current.downcast_ref::<PgDatabaseError>());
            if let Some(db) = db {
                // PostgreSQL's own source line is noise to an operator.
                if let Some(line) = db.line() {
                    message = message.replace(&format!(" at line {line}"), "");
                }
                if db.code() == "42P01" {
                    cause = Cause::MissingRelation;
                    db.message().clone_into(&mut message);
                }
            }
            source = current.source();
        }
        CliError { message, cause }
    }
}

/// Writes a line to stdout, as `println!` does, but returns the error
/// (a closed pipe among them) instead of panicking.
macro_rules! outln {
    () => {
        std::io::Write::write_all(&mut std::io::stdout().lock(), b"\n")?
    };
    ($($arg:tt)*) => {
        std::io::Write::write_fmt(&mut std::io::stdout().lock(), format_args!("{}\n", format_args!($($arg)*)))?
    };
}
pub(crate) use outln;

impl Cli {
    /// Reads the workers' configuration, as workers do, when the
    /// environment gives one (`PGOUTBOX_CONFIG_FILE` or any setting
    /// variable): the schema comes from it unless `--schema` or
    /// `PGOUTBOX_SCHEMA` is given.
    fn configure(&mut self, schema_defaulted: bool) -> Result<(), CliError> {
        let configured = std::env::vars_os().any(|(name, _)| {
            name.to_str()
                .is_some_and(|n| n.starts_with("PGOUTBOX_") && n != "PGOUTBOX_SCHEMA")
        });
        if !configured {
            return Ok(());
        }
        let settings = pgoutbox::Settings::load()?;
        if schema_defaulted {
            self.schema = settings.schema()?;
        }
        self.settings = Some(settings);
        Ok(())
    }

    /// The database to use: `--database-url` / `DATABASE_URL` win; else
    /// the workers' `database` settings, when a file or a
    /// `PGOUTBOX_DATABASE__*` variable gives them (their defaults alone
    /// would quietly mean a server on localhost).
    fn connect_options(&self) -> Result<PgConnectOptions, CliError> {
        if let Some(url) = self.database_url.as_deref() {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(CliError::msg(
                    "invalid database URL: expected `postgres://` or `postgresql://`".to_owned(),
                ));
            }
            return Ok(url
                .parse::<PgConnectOptions>()
                .map_err(|e| CliError::msg(format!("invalid database URL: {e}")))?
                .application_name("pgoutbox-cli"));
        }
        let database_configured = std::env::var_os("PGOUTBOX_CONFIG_FILE").is_some()
            || std::env::vars_os().any(|(name, _)| {
                name.to_str()
                    .is_some_and(|n| n.starts_with("PGOUTBOX_DATABASE__"))
            });
        match &self.settings {
            Some(settings) if database_configured => {
                Ok(settings.connect_options()?.application_name("pgoutbox-cli"))
            }
            _ => Err(CliError::msg(
                "no database given: pass `--database-url`, set DATABASE_URL, or configure the \
                 workers' `PGOUTBOX_DATABASE__URL` or `PGOUTBOX_CONFIG_FILE`"
                    .to_owned(),
            )),
        }
    }

    /// Connects to the database named by [`Cli::connect_options`].
    async fn pool(&self) -> Result<PgPool, CliError> {
        let options = self.connect_options()?;
        // One direct connection first: a pool would retry until its timeout
        // and then report only "pool timed out", hiding the real cause.
        let first = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| {
                CliError::msg(format!(
                    "cannot connect to the database: no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| CliError::msg(format!("cannot connect to the database: {e}")))?;
        first.close().await?;
        Ok(PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(options))
    }
}

/// Parses the command line: the whole of clap's message on a usage error
/// (exit 2), help on stdout for `--help` and for a bare `pgoutbox`.
fn parse() -> Result<Cli, ExitCode> {
    // An unset variable is shown as `[env: PGOUTBOX_SCHEMA]`, not as an
    // empty value; a set one with its value.
    let schema_unset = std::env::var_os("PGOUTBOX_SCHEMA").is_none();
    let command = Cli::command().mut_arg("schema", |a| a.hide_env_values(schema_unset));
    let parsed = command.try_get_matches().and_then(|mut matches| {
        let schema_defaulted = matches.value_source("schema") == Some(ValueSource::DefaultValue);
        Cli::from_arg_matches_mut(&mut matches).map(|cli| (cli, schema_defaulted))
    });
    let (mut cli, schema_defaulted) = parsed.map_err(|e| {
        let _ = e.print();
        match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
            _ => ExitCode::from(2),
        }
    })?;
    // The workers' configuration, read as workers read it.
    if let Err(e) = cli.configure(schema_defaulted) {
        eprintln!("error: {}", e.render(&cli.schema));
        return Err(ExitCode::FAILURE);
    }
    Ok(cli)
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.cause == Cause::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.render(&cli.schema));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Migrate(command) => migrate::run(cli, command).await,
        Command::Ops(command) => ops::run(cli, command).await,
        Command::Workflows(args) => workflows::list(cli, args).await,
        Command::Workflow(args) => workflows::run(cli, args).await,
        Command::Stats => ops::stats(cli).await,
        Command::Workers => ops::workers(cli).await,
        Command::Completions { shell } => {
            // Into memory first: clap_complete panics on a failed write,
            // and a closed pipe must end quietly.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "pgoutbox", &mut script);
            let mut out = std::io::stdout().lock();
            out.write_all(&script)?;
            out.flush()?;
            Ok(())
        }
        Command::Schema(command) => schema::run(cli, command).await,
        Command::Schedules(args) => schedules::run(cli, args).await,
        #[cfg(feature = "dashboard")]
        Command::Dashboard(args) => dashboard::run(cli, args).await,
        #[cfg(feature = "nats")]
        Command::Relay(args) => relay::run(cli, args).await,
        Command::Purge {
            older_than,
            include_dead,
            include_stalled,
            batch,
            reason,
            actor,
            yes,
        } => {
            let purge = ops::Purge {
                older_than: *older_than,
                include_dead: *include_dead,
                include_stalled: *include_stalled,
                batch: *batch,
                reason: reason.as_deref(),
                actor: actor.as_deref(),
                yes: *yes,
            };
            ops::purge(cli, &purge).await
        }
    }
}
