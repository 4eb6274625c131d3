//! The `pgoutbox` command: apply the migrations, inspect operations and
//! workers, steer them (retry, cancel, resolve, replay), purge what
//! retention allows, and export or check payload schemas.

mod migrate;
mod ops;
mod schema;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use pgoutbox::migrate::Identifier;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgPool};

/// Operate pgoutbox: apply its migrations, inspect and steer operations.
#[derive(Debug, Parser)]
#[command(name = "pgoutbox", version, about, long_about = None)]
struct Cli {
    /// PostgreSQL connection URL; without it, the workers' configuration
    /// (`PGOUTBOX_CONFIG_FILE`, `PGOUTBOX_DATABASE__*`).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// The schema that holds pgoutbox's tables (default: the workers'
    /// `database.schema`, else `pgoutbox`).
    #[arg(long, env = "PGOUTBOX_SCHEMA", global = true, default_value = pgoutbox::migrate::DEFAULT_SCHEMA)]
    schema: Identifier,

    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,

    /// The workers' settings, when the environment configures them.
    #[arg(skip)]
    settings: Option<pgoutbox::Settings>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply, inspect or export the storage migrations.
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
    /// Inspect and act on operations (every action is recorded).
    #[command(subcommand)]
    Ops(ops::OpsCommand),
    /// Show a whole workflow tree under a root operation.
    Workflow {
        /// The root operation's id.
        id: i64,
    },
    /// Counts by state and name, pace, live workers, unhandled names.
    Stats,
    /// Live and recently dead workers.
    Workers,
    /// Payload schemas: export, history, check stored payloads.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Delete old succeeded and cancelled operations (dead and stalled only
    /// when named, asking first, recorded); their attempts and operator
    /// actions stay until the history retention removes them.
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
struct CliError(String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

impl Cli {
    /// Reads the workers' configuration, as workers do, when the
    /// environment gives one (`PGOUTBOX_CONFIG_FILE` or any setting
    /// variable): the schema comes from it unless `--schema` or
    /// `PGOUTBOX_SCHEMA` is given.
    fn configure(&mut self, matches: &clap::ArgMatches) -> Result<(), CliError> {
        let configured = std::env::vars_os().any(|(name, _)| {
            name.to_str()
                .is_some_and(|n| n.starts_with("PGOUTBOX_") && n != "PGOUTBOX_SCHEMA")
        });
        if !configured {
            return Ok(());
        }
        let settings = pgoutbox::Settings::load()?;
        if matches.value_source("schema") == Some(ValueSource::DefaultValue) {
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
                return Err(CliError(
                    "invalid database URL: expected `postgres://` or `postgresql://`".to_owned(),
                ));
            }
            return Ok(url
                .parse::<PgConnectOptions>()
                .map_err(|e| CliError(format!("invalid database URL: {e}")))?
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
            _ => Err(CliError(
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
                CliError(format!(
                    "cannot connect to the database: no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| CliError(format!("cannot connect to the database: {e}")))?;
        first.close().await?;
        Ok(PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(options))
    }
}

fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let cli = match parsed {
        Ok((cli, matches)) => {
            let mut cli = cli;
            if let Err(CliError(message)) = cli.configure(&matches) {
                eprintln!("error: {message}");
                return ExitCode::FAILURE;
            }
            cli
        }
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's own message, without the usage and tip that follow it.
            let rendered = e.render().to_string();
            let line = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("error: invalid arguments");
            eprintln!("{line}");
            return ExitCode::from(2);
        }
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
        Err(CliError(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Migrate(command) => migrate::run(cli, command).await,
        Command::Ops(command) => ops::run(cli, command).await,
        Command::Workflow { id } => ops::workflow(cli, *id).await,
        Command::Stats => ops::stats(cli).await,
        Command::Workers => ops::workers(cli).await,
        Command::Schema(command) => schema::run(cli, command).await,
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
