//! `pgoutbox schema export|history|check`: the payload schemas recorded in
//! the database's history, and the ready payloads that no longer match.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use clap::Subcommand;
use pgoutbox::admin::{Admin, is_operation_name};

use crate::{Cli, CliError, outln};

#[derive(Debug, Subcommand)]
pub(crate) enum SchemaCommand {
    /// The latest JSON Schema of every operation, from the database's
    /// history (as printed JSON, or one `<name>.json` per operation).
    #[command(
        after_help = "Examples:\n  pgoutbox schema export\n  pgoutbox schema export --out schemas/"
    )]
    Export {
        /// Write one file per operation into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Every recorded schema version of one operation.
    #[command(
        after_help = "Examples:\n  pgoutbox schema history billing.charge\n  pgoutbox schema history billing.charge --json"
    )]
    History {
        /// The operation's name.
        name: String,
    },
    /// Ready payloads that no longer validate against their operation's
    /// latest schema, or against the schemas of a new binary (exit 1 when
    /// there are any).
    #[command(
        after_help = "Examples:\n  pgoutbox schema check\n  pgoutbox schema check --against target/pgoutbox-schemas   # before a deploy"
    )]
    Check {
        /// Check against the `<name>.json` files in this directory, as
        /// `pgoutbox::admin::export_schemas` writes them from the new
        /// binary's registry, instead of the schemas recorded in the
        /// database.
        #[arg(long, value_name = "DIR")]
        against: Option<PathBuf>,
    },
}

pub(crate) async fn run(cli: &Cli, command: &SchemaCommand) -> Result<(), CliError> {
    let admin = Admin::new(cli.pool().await?, &cli.schema);
    match command {
        SchemaCommand::Export { out } => {
            let latest = admin.latest_schemas().await?;
            match out {
                None => {
                    let map: BTreeMap<&str, &serde_json::Value> = latest
                        .iter()
                        .map(|v| (v.name.as_str(), &v.json_schema))
                        .collect();
                    let mut stdout = std::io::stdout().lock();
                    serde_json::to_writer_pretty(&mut stdout, &map)?;
                    writeln!(stdout)?;
                }
                Some(dir) => {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| CliError::msg(format!("{}: {e}", dir.display())))?;
                    // A name becomes a file name only when it follows the
                    // operation-name grammar (no `/`, no `..`): a row
                    // recorded before migration 2 checked names could
                    // otherwise write outside `dir`.
                    let (valid, refused): (Vec<_>, Vec<_>) =
                        latest.iter().partition(|v| is_operation_name(&v.name));
                    for version in &valid {
                        let path = dir.join(format!("{}.json", version.name));
                        let text = serde_json::to_string_pretty(&version.json_schema)? + "\n";
                        std::fs::write(&path, text)
                            .map_err(|e| CliError::msg(format!("{}: {e}", path.display())))?;
                    }
                    outln!("wrote {} schema(s) to {}", valid.len(), dir.display());
                    if !refused.is_empty() {
                        return Err(CliError::msg(format!(
                            "refused {} schema(s) whose name is not a valid operation name: {}",
                            refused.len(),
                            refused
                                .iter()
                                .map(|v| format!("{:?}", v.name))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                }
            }
            Ok(())
        }
        SchemaCommand::History { name } => {
            let history = admin.schema_history(name).await?;
            if history.is_empty() {
                return Err(CliError::msg(format!("no schema recorded for `{name}`")));
            }
            if cli.json {
                let mut stdout = std::io::stdout().lock();
                serde_json::to_writer_pretty(
                    &mut stdout,
                    &serde_json::json!({"name": name, "versions": history}),
                )?;
                writeln!(stdout)?;
                return Ok(());
            }
            for v in &history {
                outln!(
                    "{}  first seen {}  last seen {}",
                    v.schema_hash,
                    v.first_seen_at.format("%Y-%m-%d %H:%M:%S"),
                    v.last_seen_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
            Ok(())
        }
        SchemaCommand::Check { against } => check(cli, &admin, against.as_deref()).await,
    }
}

/// The schemas exported into `dir`: `<name>.json` each.
fn schemas_in(dir: &std::path::Path) -> Result<Vec<(String, serde_json::Value)>, CliError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| CliError::msg(format!("{}: {e}", dir.display())))?;
    let mut schemas = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| CliError::msg(format!("{}: {e}", path.display())))?;
        let json = serde_json::from_str(&text)
            .map_err(|e| CliError::msg(format!("{}: not JSON: {e}", path.display())))?;
        schemas.push((name.to_owned(), json));
    }
    if schemas.is_empty() {
        return Err(CliError::msg(format!(
            "no `<name>.json` schema in {}: export them with `pgoutbox::admin::export_schemas`",
            dir.display()
        )));
    }
    Ok(schemas)
}

async fn check(
    cli: &Cli,
    admin: &Admin,
    against: Option<&std::path::Path>,
) -> Result<(), CliError> {
    let (schemas, source) = match against {
        Some(dir) => (
            schemas_in(dir)?,
            format!("the schemas in {}", dir.display()),
        ),
        None => (
            admin
                .latest_schemas()
                .await?
                .into_iter()
                .map(|v| (v.name, v.json_schema))
                .collect(),
            "their latest schema".to_owned(),
        ),
    };
    let mut validators = BTreeMap::new();
    for (name, schema) in schemas {
        let validator = jsonschema::validator_for(&schema).map_err(|e| {
            CliError::msg(format!(
                "the schema of `{name}` is not a valid JSON Schema: {e}"
            ))
        })?;
        validators.insert(name, validator);
    }
    let mut invalid = Vec::new();
    let (mut after, mut checked) = (None, 0u64);
    loop {
        let page = admin.ready_payloads(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.0);
        for (id, name, payload) in page {
            checked += 1;
            let problem = match validators.get(&name) {
                None if against.is_some() => {
                    Some("no schema for this name in the new binary's export".to_owned())
                }
                None => Some("no schema recorded for this name".to_owned()),
                Some(validator) => validator.validate(&payload).err().map(|e| e.to_string()),
            };
            if let Some(problem) = problem {
                invalid.push(serde_json::json!({"id": id, "name": name, "error": problem}));
            }
        }
    }
    if cli.json {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer_pretty(
            &mut stdout,
            &serde_json::json!({"checked": checked, "invalid": invalid}),
        )?;
        writeln!(stdout)?;
    } else {
        for entry in &invalid {
            outln!(
                "{} {}: {}",
                entry["id"],
                entry["name"].as_str().unwrap_or_default(),
                entry["error"].as_str().unwrap_or_default()
            );
        }
        outln!(
            "checked {checked} ready payload(s): {} do not validate",
            invalid.len()
        );
    }
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(CliError::msg(format!(
            "{} ready payload(s) do not validate against {source}",
            invalid.len()
        )))
    }
}
