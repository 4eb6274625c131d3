//! The `pgoutbox` command end to end, against a real database.

mod migrate;
mod ops;
mod schema;
