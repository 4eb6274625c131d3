//! The `pgoutbox` command end to end, against a real database.

mod cli;
mod migrate;
mod ops;
mod relay;
mod schema;
