//! LISTEN on a dedicated connection; every notification, and every
//! reconnection (notifications sent while disconnected are lost), wakes the
//! producer. The producer's polling runs regardless, so a lost notification
//! or a dead listener delays work by at most the poll interval.
//!
//! Publishers coalesce their notifications (`store`'s `{notify}`): of the
//! transactions publishing one name at the same time, only one notifies.
//! The others may commit just after the claim that notification woke, so
//! each notification is followed by trailing claims ([`TRAILING`] after the
//! last one), which find them without waiting for the poll.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};

use crate::runtime::Runtime;

/// After a notification, the producer is woken again this long after it
/// (each stage measured from the last notification), for the operations of
/// transactions that published alongside the notifying one and committed
/// just after the claim it woke.
/// A claim that finds nothing is cheap (no write, no WAL flush).
const TRAILING: [Duration; 3] = [
    Duration::from_millis(3),
    Duration::from_millis(15),
    Duration::from_millis(100),
];

pub(crate) async fn run(rt: Arc<Runtime>) {
    let mut stopping = rt.stopping.subscribe();
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stopping.borrow() {
            return;
        }
        match connect(&rt).await {
            Ok(mut listener) => {
                backoff = Duration::from_millis(100);
                // Anything published while we were not listening is found by
                // an immediate catch-up claim.
                rt.wake.notify_one();
                // The last notification and the next trailing stage.
                let mut trailing: Option<(tokio::time::Instant, usize)> = None;
                loop {
                    let next = trailing.map(|(at, stage)| at + TRAILING[stage]);
                    tokio::select! {
                        _ = stopping.changed() => return,
                        () = tokio::time::sleep_until(next.unwrap_or_else(tokio::time::Instant::now)),
                            if next.is_some() =>
                        {
                            rt.wake.notify_one();
                            trailing = trailing
                                .and_then(|(at, stage)| (stage + 1 < TRAILING.len()).then_some((at, stage + 1)));
                        }
                        received = listener.try_recv() => match received {
                            Ok(Some(notification)) => {
                                if rt.names.iter().any(|n| n == notification.payload())
                                    || notification.payload().is_empty()
                                {
                                    rt.wake.notify_one();
                                    trailing = Some((tokio::time::Instant::now(), 0));
                                }
                            }
                            Ok(None) => {
                                // sqlx reconnected (eagerly) after losing the
                                // connection: catch up.
                                tracing::warn!("listener connection lost and re-established; catching up");
                                rt.wake.notify_one();
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "listener failed; reconnecting");
                                break;
                            }
                        },
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN; retrying (polling continues meanwhile)");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stopping.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn connect(rt: &Runtime) -> Result<PgListener, sqlx::Error> {
    let options = rt
        .settings
        .listen_options()
        .map_err(|e| sqlx::Error::Configuration(e.into()))?;
    // A pool of one for the listener alone: it never takes a connection from
    // the handlers' pool.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options.application_name(&format!(
            "{}-listener",
            rt.settings.database.application_name
        )));
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.ignore_pool_close_event(true);
    listener
        .listen(&rt.settings.workflow_system.channel)
        .await?;
    Ok(listener)
}
