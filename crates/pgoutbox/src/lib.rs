//! pgoutbox: a PostgreSQL-backed workflow and outbox engine.

#[cfg(feature = "testing")]
pub mod testing;
