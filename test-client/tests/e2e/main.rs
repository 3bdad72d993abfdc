//! End-to-end tests: the real backend-do and snippet under `wrangler dev` (workerd),
//! driven by the test client's own load generator, on free ports. Every test runs through
//! `common::e2e()`: tests of the default configuration share one stack per backend, the
//! others start their own, and every test's log lines are checked (`common.rs` says how);
//! `./x test` runs them one at a time.

mod abuse;
mod auth;
mod backend;
mod binding;
mod browser;
mod chaos;
mod common;
mod idp;
mod isolates;
mod limits;
mod metrics;
mod presence;
mod proxy;
mod resilience;
mod sessions;
mod tenants;
mod ts_backend;
