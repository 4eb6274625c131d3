//! A worker process for the tests that kill, stop and count: it runs the
//! `fault.*` operations until SIGTERM or SIGINT (or until its standard
//! input closes), then stops gracefully.
//!
//! Configured by `PGOUTBOX_*` settings (the database URL, `n_workers`,
//! lease, …). Prints `ready` once it claims. Arguments:
//!
//! - `--idempotent-only` runs only the idempotent operations;
//! - `--gate left|right` runs only that side's gated workflow step and
//!   the step that joins both (`pgoutbox_tests::gate_router`);
//! - `--schedule CRON` also publishes `fault.tick` on that schedule (and
//!   handles it), with `--zone ZONE`, `--missed latest|all|none`,
//!   `--take-over`;
//! - `--schedule-workflow CRON` publishes the workflow `fault.tick_flow`
//!   (`pgoutbox_tests::tick_workflow`) on that schedule instead, and
//!   handles its steps, with `--missed` as above; `--empty-ticks N`
//!   makes the first `N` ticks' workflows empty (unpublishable);
//! - `--log` writes pgoutbox's log (info and above) to stderr.
//! - `relay NATS_URL STREAM` relays `relay.order_placed` to JetStream
//!   instead (`pgoutbox_tests::relay_router`).

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use pgoutbox::{MissedTicks, Schedule, Settings, WorkflowSystem};
use pgoutbox_tests::ScheduledTick;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The router, with the schedule the arguments ask for.
fn router(args: &[String]) -> Result<pgoutbox::WorkflowRouter, Box<dyn std::error::Error>> {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let mut router = if let Some(side) = value("--gate") {
        pgoutbox_tests::gate_router(&side)?
    } else if args.iter().any(|a| a == "--idempotent-only") {
        pgoutbox_tests::idempotent_router()
    } else {
        pgoutbox_tests::router()
    };
    if let Some(cron) = value("--schedule") {
        let mut schedule = Schedule::cron(cron)
            .time_zone(value("--zone").unwrap_or_else(|| "UTC".into()))
            .missed(value("--missed").map_or(Ok(MissedTicks::Latest), |m| m.parse())?);
        if args.iter().any(|a| a == "--take-over") {
            schedule = schedule.take_over();
        }
        router = router
            .operation::<ScheduledTick>()
            .schedule::<ScheduledTick>(schedule, |tick| ScheduledTick {
                at: tick.at().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
    }
    if let Some(cron) = value("--schedule-workflow") {
        let empty: usize = value("--empty-ticks").map_or(Ok(0), |n| n.parse())?;
        let built = AtomicUsize::new(0);
        let schedule = Schedule::cron(cron)
            .missed(value("--missed").map_or(Ok(MissedTicks::Latest), |m| m.parse())?);
        router = router
            .operation::<ScheduledTick>()
            .operation::<pgoutbox_tests::TickDone>()
            .schedule_workflow(pgoutbox_tests::TICK_FLOW, schedule, move |tick| {
                if built.fetch_add(1, Ordering::Relaxed) < empty {
                    return pgoutbox::workflow::Workflow::new(pgoutbox_tests::TICK_FLOW);
                }
                pgoutbox_tests::tick_workflow(&tick)
            });
    }
    Ok(router)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // First: a test may signal as soon as the system's start shows in the
    // database (its worker row, its schedules), before "ready".
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--log") {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
    }
    let settings = Settings::load()?;
    pgoutbox_tests::set_side_effect_pool(settings.pool()?);
    let router = match args.as_slice() {
        [mode, url, stream] if mode == "relay" => {
            let mut nats = settings.relay.nats.clone();
            nats.url = Some(url.clone());
            let client = pgoutbox::relay::connect(&nats).await?;
            pgoutbox_tests::relay_router(&client, stream)
        }
        _ => router(&args)?,
    };
    let system = WorkflowSystem::builder(settings)
        .router(router)
        .start()
        .await?;
    say(&format!("ready {}", system.worker_id()));
    // Standard input closing means the test that started us is gone: stop
    // too, rather than linger as an orphan.
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        let _ = closed_tx.send(());
    });
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = closed => {}
    }
    let report = system.stop().await?;
    say(&format!("stopped, aborted {}", report.aborted));
    Ok(())
}

/// A line on stdout; a reader that went away is no reason to fail.
fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
