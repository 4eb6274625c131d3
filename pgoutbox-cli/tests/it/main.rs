//! The `pgoutbox` command end to end, against a real database.

mod cli;
mod dashboard;
mod migrate;
mod ops;
mod relay;
mod schedules;
mod schema;
mod workflows;
