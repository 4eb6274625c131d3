//! `pgoutbox dashboard`: serves the operators' web dashboard
//! (`pgoutbox::dashboard`) on loopback, or elsewhere with an access token.

use std::net::SocketAddr;

use pgoutbox::admin::Admin;
use pgoutbox::dashboard::{self, DashboardOptions};

use crate::{Cli, CliError};

/// Where to listen and what to allow.
#[derive(Debug, clap::Args)]
pub(crate) struct DashboardArgs {
    /// The address to listen on; anything but loopback needs
    /// `dashboard.token` (`PGOUTBOX_DASHBOARD__TOKEN`).
    #[arg(long, default_value = "127.0.0.1:7480")]
    listen: SocketAddr,
    /// Offer retry, cancel, resolve and replay (they need the token too).
    #[arg(long)]
    allow_actions: bool,
    /// Who actions are recorded as (default: `dashboard.token_name`).
    #[arg(long)]
    actor: Option<String>,
}

/// Checks the address and the token, then serves until Ctrl-C.
pub(crate) async fn run(cli: &Cli, args: &DashboardArgs) -> Result<(), CliError> {
    let settings = cli.settings.clone().unwrap_or_default();
    let token = settings
        .dashboard
        .token
        .clone()
        .filter(|t| !t.trim().is_empty());
    if token.is_none() && !args.listen.ip().is_loopback() {
        return Err(CliError::msg(format!(
            "refusing to listen on {} without an access token: set `dashboard.token` \
             (PGOUTBOX_DASHBOARD__TOKEN), or listen on loopback (127.0.0.1)",
            args.listen
        )));
    }
    if args.allow_actions && token.is_none() {
        return Err(CliError::msg(
            "`--allow-actions` needs an access token: set `dashboard.token` \
             (PGOUTBOX_DASHBOARD__TOKEN)",
        ));
    }
    let admin = Admin::new(cli.pool().await?, &cli.schema);
    let options = DashboardOptions {
        token,
        allow_actions: args.allow_actions,
        actor: args
            .actor
            .clone()
            .unwrap_or_else(|| settings.dashboard.token_name.clone()),
        ..DashboardOptions::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::msg(format!("cannot listen on {}: {e}", args.listen)))?;
    let address = listener.local_addr()?;
    eprintln!(
        "pgoutbox dashboard on http://{address}/ ({}); Ctrl-C stops it",
        if options.allow_actions {
            "actions allowed"
        } else {
            "read-only"
        }
    );
    axum::serve(listener, dashboard::router(admin, options))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
