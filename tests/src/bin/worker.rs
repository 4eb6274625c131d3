//! A worker process for the tests that kill, stop and count: it runs the
//! `fault.*` operations until SIGTERM or SIGINT (or until its standard
//! input closes), then stops gracefully.
//!
//! Configured by `PGOUTBOX_*` settings (the database URL, `n_workers`,
//! lease, …). Prints `ready` once it claims.
//!
//! `pgoutbox-test-worker relay NATS_URL STREAM` relays
//! `relay.order_placed` to JetStream instead (`pgoutbox_tests::relay_router`).

use std::process::ExitCode;

use pgoutbox::{Settings, WorkflowSystem};
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

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::load()?;
    pgoutbox_tests::set_side_effect_pool(settings.pool()?);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let router = match args.as_slice() {
        [] => pgoutbox_tests::router(),
        [mode, url, stream] if mode == "relay" => {
            let mut nats = settings.relay.nats.clone();
            nats.url = Some(url.clone());
            let client = pgoutbox::relay::connect(&nats).await?;
            pgoutbox_tests::relay_router(&client, stream)
        }
        _ => return Err("usage: pgoutbox-test-worker [relay NATS_URL STREAM]".into()),
    };
    let system = WorkflowSystem::builder(settings)
        .router(router)
        .start()
        .await?;
    say(&format!("ready {}", system.worker_id()));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
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
