//! A worker process for the tests that kill, stop and count: it runs the
//! `fault.*` operations until SIGTERM or SIGINT (or until its standard
//! input closes), then stops gracefully.
//!
//! Configured by `PGOUTBOX_*` settings (the database URL, `n_workers`,
//! lease, …). With `--idempotent-only` it runs only the idempotent ones.
//! Prints `ready` once it claims.

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
    let router = if std::env::args().any(|a| a == "--idempotent-only") {
        pgoutbox_tests::idempotent_router()
    } else {
        pgoutbox_tests::router()
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
