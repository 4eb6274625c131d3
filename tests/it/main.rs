//! End-to-end tests of pgoutbox against a real PostgreSQL: the
//! self-starting test database, or the server named by `DATABASE_URL`.

mod browser;
mod claims;
mod dashboard;
mod docs;
mod faults;
mod hardening;
mod kit;
mod leases;
mod limits;
mod metrics;
mod migrate;
mod ops;
mod pgbouncer;
mod processes;
mod publish;
mod relay;
mod results;
mod runtime;
mod saga_model;
mod sagas;
mod schedules;
mod settings;
mod silent;
mod support;
mod workflow_faults;
mod workflows;
