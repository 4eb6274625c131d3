//! The optional Prometheus endpoint: with `workflow_system.metrics_listen`
//! set (and the `prometheus` feature), the worker installs a Prometheus
//! recorder for the [`metrics`] facade and serves `GET /metrics` on that
//! address.
//!
//! A recorder is global to a process, so the endpoint is too: the first
//! system that asks installs it, and it serves for the life of the process
//! (past `stop()`, so that a last scrape sees the final counts); a later
//! system asking for the same address shares it.

use std::net::SocketAddr;

#[cfg(feature = "prometheus")]
use std::sync::Mutex;

/// The address served, and the task serving it.
#[cfg(feature = "prometheus")]
static SERVING: Mutex<Option<(SocketAddr, tokio::task::JoinHandle<()>)>> = Mutex::new(None);

/// Serves `/metrics` on `addr` unless this process already does; the
/// error says why it cannot.
#[cfg(feature = "prometheus")]
pub(crate) fn serve(addr: SocketAddr) -> Result<(), String> {
    let mut serving = SERVING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((current, task)) = &*serving {
        return if *current == addr && !task.is_finished() {
            Ok(())
        } else if task.is_finished() {
            Err(format!(
                "the endpoint on {current} stopped with the async runtime that started it; a \
                 process serves one recorder"
            ))
        } else {
            Err(format!(
                "this process already serves metrics on {current}, not {addr}"
            ))
        };
    }
    let (recorder, exporter) = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .build()
        .map_err(|e| format!("cannot serve on {addr}: {e}"))?;
    metrics::set_global_recorder(recorder).map_err(|_| {
        "a `metrics` recorder is already installed in this process: serve it yourself, or \
         leave it to pgoutbox"
            .to_owned()
    })?;
    let task = tokio::spawn(async move {
        if let Err(e) = exporter.await {
            tracing::error!(error = ?e, "metrics endpoint failed");
        }
    });
    tracing::info!(%addr, "serving Prometheus metrics on /metrics");
    *serving = Some((addr, task));
    Ok(())
}

/// Without the `prometheus` feature there is nothing to serve with.
#[cfg(not(feature = "prometheus"))]
pub(crate) fn serve(addr: SocketAddr) -> Result<(), String> {
    Err(format!(
        "`workflow_system.metrics_listen` = {addr} needs pgoutbox's `prometheus` feature"
    ))
}
