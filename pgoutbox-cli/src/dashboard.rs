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
    /// `dashboard.token` (`PGOUTBOX_DASHBOARD__TOKEN`) or
    /// `dashboard.operators`, and `0.0.0.0`/`[::]` needs
    /// `dashboard.allowed_hosts`: only the listen address and those names
    /// are answered.
    #[arg(long, default_value = "127.0.0.1:7480")]
    listen: SocketAddr,
    /// Offer retry, cancel, resolve and replay (they need the token too).
    #[arg(long)]
    allow_actions: bool,
    /// Who the single token's actions are recorded as (default:
    /// `dashboard.token_name`); named operators are recorded by name.
    #[arg(long)]
    actor: Option<String>,
}

/// Checks the address, the operators and their tokens, then serves until
/// Ctrl-C.
pub(crate) async fn run(cli: &Cli, args: &DashboardArgs) -> Result<(), CliError> {
    let settings = cli.settings.clone().unwrap_or_default();
    let dash = &settings.dashboard;
    // A blank token is a mistake (a secret that did not arrive), not a
    // request for an open dashboard: refused, wherever it listens.
    if dash.token.as_ref().is_some_and(|t| t.trim().is_empty()) {
        return Err(CliError::msg(
            "`dashboard.token` (PGOUTBOX_DASHBOARD__TOKEN) is set but blank: give it a token of \
             at least 16 characters, or unset it for an open, read-only dashboard on loopback",
        ));
    }
    let token = dash.token.clone();
    let signed_in = token.is_some() || !dash.operators.is_empty();
    if !signed_in && !args.listen.ip().is_loopback() {
        return Err(CliError::msg(format!(
            "refusing to listen on {} without an access token: set `dashboard.token` \
             (PGOUTBOX_DASHBOARD__TOKEN) or `dashboard.operators`, or listen on loopback \
             (127.0.0.1)",
            args.listen
        )));
    }
    if args.allow_actions && !signed_in {
        return Err(CliError::msg(
            "`--allow-actions` needs an access token: set `dashboard.token` \
             (PGOUTBOX_DASHBOARD__TOKEN) or `dashboard.operators`",
        ));
    }
    if args.listen.ip().is_unspecified() && dash.allowed_hosts.is_empty() {
        return Err(CliError::msg(format!(
            "listening on {} answers to any name: list the names browsers use to reach \
             the dashboard in `dashboard.allowed_hosts` (PGOUTBOX_DASHBOARD__ALLOWED_HOSTS='[\"ops.example.com\"]'); \
             any other `Host` is refused (DNS rebinding)",
            args.listen
        )));
    }
    let mut options = DashboardOptions::default();
    if let Some(token) = token {
        let actor = args
            .actor
            .clone()
            .unwrap_or_else(|| dash.token_name.clone());
        options = options
            .operator(actor, token)
            .map_err(|e| CliError::msg(e.to_string()))?;
    }
    for (name, operator_token) in &dash.operators {
        options = options
            .operator(name.clone(), operator_token.clone())
            .map_err(|e| CliError::msg(e.to_string()))?;
    }
    options = options
        .allow_actions(args.allow_actions)
        .secure_cookie(dash.secure_cookie)
        .session_lifetime(dash.session_lifetime)
        .map_err(|e| CliError::msg(e.to_string()))?
        .allowed_hosts(&dash.allowed_hosts)
        .map_err(|e| CliError::msg(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::msg(format!("cannot listen on {}: {e}", args.listen)))?;
    let address = listener.local_addr()?;
    // The listen address itself (with the port the system chose for `:0`),
    // and `localhost` on loopback.
    let mut own = Vec::new();
    if !address.ip().is_unspecified() {
        own.push(address.to_string());
    }
    if address.ip().is_loopback() {
        own.push(format!("localhost:{}", address.port()));
    }
    options = options
        .allowed_hosts(&own)
        .map_err(|e| CliError::msg(e.to_string()))?;
    let admin = Admin::new(cli.pool().await?, &cli.schema);
    eprintln!(
        "pgoutbox dashboard on http://{address}/ ({}); Ctrl-C stops it",
        if options.allows_actions() {
            "actions allowed"
        } else {
            "read-only"
        }
    );
    axum::serve(
        listener,
        dashboard::router(admin, options).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
