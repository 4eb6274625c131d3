//! `pgoutbox relay`: forwards operations, by name, to NATS JetStream
//! without any application code. Payloads go as stored; the runtime's
//! claims, leases and retries apply as to any worker.

use std::time::Duration;

use pgoutbox::relay::{JetStreamOptions, Relay};

use crate::{Cli, CliError, outln};

/// The arguments of `pgoutbox relay`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  pgoutbox relay --nats nats://127.0.0.1:4222 --names 'orders.*'\n  pgoutbox relay --names orders.placed,orders.cancelled --subject-prefix events --stream EVENTS\n\nOperation `orders.placed` goes to subject `events.orders.placed` with `--subject-prefix events`.\nThe NATS settings (`relay.nats.*`) come from PGOUTBOX_CONFIG_FILE or PGOUTBOX_RELAY__NATS__* variables;\nthe options here win. Stops on SIGTERM or Ctrl-C, finishing the messages in flight."
)]
pub(crate) struct RelayArgs {
    /// The NATS server(s), comma-separated (default: `relay.nats.url`,
    /// else `nats://127.0.0.1:4222`).
    #[arg(long, value_name = "URL", hide_env_values = true)]
    nats: Option<String>,
    /// Operation names to relay; `*` matches any run of characters
    /// (`orders.*`). Comma-separated or repeated.
    #[arg(long, required = true, value_delimiter = ',', value_name = "PATTERN")]
    names: Vec<String>,
    /// Publish to `PREFIX.<name>` instead of `<name>`.
    #[arg(long, value_name = "PREFIX")]
    subject_prefix: Option<String>,
    /// The JetStream stream the subjects must land in (default:
    /// `relay.nats.stream`, else any stream that captures them).
    #[arg(long)]
    stream: Option<String>,
    /// A NATS credentials file (default: `relay.nats.credentials_file`).
    #[arg(long, value_name = "FILE")]
    credentials: Option<std::path::PathBuf>,
    /// The most messages awaiting JetStream's acknowledgement (default:
    /// `relay.nats.max_in_flight`).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// How long a publish waits for its acknowledgement (default:
    /// `relay.nats.publish_timeout`); past it the outcome is unknown
    /// (`timed_out`): re-sent only within the stream's duplicate window of
    /// the first send, else `stalled`.
    #[arg(long, value_parser = crate::ops::parse_duration)]
    publish_timeout: Option<Duration>,
}

/// Runs the relay until SIGTERM or SIGINT.
pub(crate) async fn run(cli: &Cli, args: &RelayArgs) -> Result<(), CliError> {
    let mut settings = cli.settings.clone().unwrap_or_default();
    let nats = &mut settings.relay.nats;
    if let Some(url) = &args.nats {
        nats.url = Some(url.clone());
    }
    if let Some(stream) = &args.stream {
        nats.stream = Some(stream.clone());
    }
    if let Some(file) = &args.credentials {
        nats.credentials_file = Some(file.clone());
    }
    if let Some(n) = args.max_in_flight {
        nats.max_in_flight = n;
    }
    if let Some(timeout) = args.publish_timeout {
        nats.publish_timeout = timeout;
    }
    // A relay's handler slot is held only while a message is handed to the
    // client; each slot keeps up to four outcomes unrecorded, so this many
    // slots let `max_in_flight` messages await their acknowledgements.
    let ws = &mut settings.workflow_system;
    ws.n_workers = ws
        .n_workers
        .max(nats.max_in_flight.div_ceil(4))
        .min(pgoutbox::MAX_N_WORKERS);
    let pool_max = u32::try_from(ws.n_workers + 2).unwrap_or(u32::MAX);
    settings.database.pool_max = settings.database.pool_max.max(pool_max);
    settings.validate()?;
    let options = cli.connect_options()?;
    // Connections are opened as needed: a relay uses few of them.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(settings.database.pool_max)
        .acquire_timeout(settings.database.acquire_timeout)
        .connect_lazy_with(options);
    let client = pgoutbox::relay::connect(&settings.relay.nats).await?;
    let relay = Relay::jetstream_by_name(
        &client,
        args.subject_prefix.as_deref(),
        JetStreamOptions::from_settings(&settings.relay.nats),
    );
    let system = pgoutbox::WorkflowSystem::builder(settings)
        .pool(pool)
        .relay_by_name(args.names.clone(), relay)
        .start()
        .await?;
    outln!(
        "relaying {} to NATS as worker {}",
        system.names().join(", "),
        system.worker_id()
    );
    wait_for_signal().await?;
    let report = system.stop().await?;
    outln!("stopped; {} relay attempt(s) aborted", report.aborted);
    Ok(())
}

async fn wait_for_signal() -> Result<(), CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
