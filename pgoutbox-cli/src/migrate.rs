//! `pgoutbox migrate …`

use std::io::Write as _;

use clap::Subcommand;

use crate::{Cli, CliError};

#[derive(Debug, Subcommand)]
pub(crate) enum MigrateCommand {
    /// Apply the pending migrations (safe to run from several processes).
    #[command(
        after_help = "Examples:\n  pgoutbox migrate up\n  pgoutbox migrate up --schema billing_outbox"
    )]
    Up,
    /// Show the applied and pending migrations.
    #[command(
        after_help = "Examples:\n  pgoutbox migrate status\n  pgoutbox migrate status --json"
    )]
    Status,
    /// Print the whole SQL, for teams that apply migrations with their own tool.
    #[command(
        after_help = "Examples:\n  pgoutbox migrate sql > pgoutbox.sql\n  psql \"$DATABASE_URL\" -f pgoutbox.sql"
    )]
    Sql,
}

pub(crate) async fn run(cli: &Cli, command: &MigrateCommand) -> Result<(), CliError> {
    let schema = &cli.schema;
    let mut out = std::io::stdout().lock();
    match command {
        MigrateCommand::Sql => {
            out.write_all(pgoutbox::migrate::script(schema).as_bytes())?;
        }
        MigrateCommand::Up => {
            let pool = cli.pool().await?;
            let applied = pgoutbox::migrate::run(&pool, schema).await?;
            if cli.json {
                pool.close().await;
                serde_json::to_writer_pretty(
                    &mut out,
                    &serde_json::json!({
                        "schema": schema.as_str(),
                        "applied": applied,
                        "version": pgoutbox::migrate::latest_version(),
                    }),
                )?;
                writeln!(out)?;
                return Ok(());
            }
            if applied.is_empty() {
                writeln!(
                    out,
                    "schema `{schema}` is up to date at version {}",
                    pgoutbox::migrate::latest_version()
                )?;
            }
            for version in applied {
                let name = pgoutbox::migrate::migrations()
                    .iter()
                    .find(|m| m.version() == version)
                    .map_or("", |m| m.name());
                writeln!(
                    out,
                    "applied migration {version} ({name}) to schema `{schema}`"
                )?;
            }
            pool.close().await;
        }
        MigrateCommand::Status => {
            let pool = cli.pool().await?;
            let status = pgoutbox::migrate::status(&pool, schema).await?;
            pool.close().await;
            let state = match status.database_version().cmp(&status.binary_version) {
                std::cmp::Ordering::Equal => "up to date".to_owned(),
                std::cmp::Ordering::Less => format!("{} pending", status.pending.len()),
                std::cmp::Ordering::Greater => "database is newer than this binary".to_owned(),
            };
            if cli.json {
                let pending: Vec<_> = pgoutbox::migrate::migrations()
                    .iter()
                    .filter(|m| status.pending.contains(&m.version()))
                    .map(|m| serde_json::json!({"version": m.version(), "name": m.name()}))
                    .collect();
                serde_json::to_writer_pretty(
                    &mut out,
                    &serde_json::json!({
                        "schema": schema.as_str(),
                        "database_version": status.database_version(),
                        "binary_version": status.binary_version,
                        "state": state,
                        "applied": status.applied.iter().map(|a| serde_json::json!({
                            "version": a.version,
                            "name": a.name,
                            "checksum": a.checksum,
                        })).collect::<Vec<_>>(),
                        "pending": pending,
                    }),
                )?;
                writeln!(out)?;
                return Ok(());
            }
            writeln!(
                out,
                "schema `{schema}`: database at version {}, binary at version {} ({state})",
                status.database_version(),
                status.binary_version
            )?;
            for applied in &status.applied {
                writeln!(out, "  applied  {:>4}  {}", applied.version, applied.name)?;
            }
            for migration in pgoutbox::migrate::migrations()
                .iter()
                .filter(|m| status.pending.contains(&m.version()))
            {
                writeln!(
                    out,
                    "  pending  {:>4}  {}",
                    migration.version(),
                    migration.name()
                )?;
            }
        }
    }
    Ok(())
}
