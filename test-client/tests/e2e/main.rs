//! End-to-end tests: the real backend-do and snippet under `wrangler dev` (workerd),
//! driven by the test client's own load generator. Each test starts its own stack on
//! free ports; `./x test` runs them one at a time.

mod abuse;
mod auth;
mod backend;
mod browser;
mod common;
mod idp;
mod limits;
mod presence;
mod proxy;
mod resilience;
mod tenants;
mod ts_backend;
