//! Run-time tests of typed operations: the registry, routers and the
//! committed JSON Schema snapshots. (Database tests live in the workspace's
//! `tests` crate; compile-time behaviour in `tests/ui`.)

mod fixtures;
mod imports;
mod registry;
mod router;
mod schema;
