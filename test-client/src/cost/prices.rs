//! Cloudflare's published prices, Workers Paid plan (Standard usage model), as the cost
//! model uses them. Every constant says which page it comes from; the pages were read on
//! [`READ_ON`]. When a page changes, change the constant here and the table in COST.md.
//!
//! - Workers: <https://developers.cloudflare.com/workers/platform/pricing/>
//! - Durable Objects: <https://developers.cloudflare.com/durable-objects/platform/pricing/>

/// The day the pricing pages were read.
pub const READ_ON: &str = "2026-12-07";

/// The Workers pricing page.
pub const WORKERS_PAGE: &str = "https://developers.cloudflare.com/workers/platform/pricing/";

/// The Durable Objects pricing page.
pub const DURABLE_OBJECTS_PAGE: &str = "https://developers.cloudflare.com/durable-objects/platform/pricing/";

/// Workers pricing page: the Paid plan's monthly minimum, which includes the allotments
/// below (Workers and Durable Objects alike).
pub const PLAN_MINIMUM_USD: f64 = 5.00;

/// Workers pricing page: each request to a Worker, a WebSocket upgrade included (the
/// messages over an open WebSocket are not requests), after the included ones.
pub const WORKER_REQUEST_USD_PER_MILLION: f64 = 0.30;
/// Workers pricing page: requests included per month.
pub const WORKER_REQUESTS_INCLUDED: f64 = 10_000_000.0;

/// Workers pricing page: CPU time, per million CPU milliseconds. Duration (wall time) of
/// a Worker is not billed on the Standard model.
pub const WORKER_CPU_USD_PER_MILLION_MS: f64 = 0.02;
/// Workers pricing page: CPU milliseconds included per month.
pub const WORKER_CPU_MS_INCLUDED: f64 = 30_000_000.0;

/// Durable Objects pricing page: requests to objects (HTTP requests, RPC sessions,
/// WebSocket upgrades, alarms, and incoming WebSocket messages at [`WS_MESSAGES_PER_REQUEST`]).
pub const DO_REQUEST_USD_PER_MILLION: f64 = 0.15;
/// Durable Objects pricing page: requests included per month.
pub const DO_REQUESTS_INCLUDED: f64 = 1_000_000.0;

/// Durable Objects pricing page: incoming WebSocket messages are billed at 20 to one
/// request. Outgoing messages, protocol pings and auto-responses are not billed.
pub const WS_MESSAGES_PER_REQUEST: f64 = 20.0;

/// Durable Objects pricing page: duration, per million GB-s. Billed while an object runs
/// or sits in memory unable to hibernate; an idle object that may hibernate is not billed.
pub const DO_GB_S_USD_PER_MILLION: f64 = 12.50;
/// Durable Objects pricing page: GB-s included per month.
pub const DO_GB_S_INCLUDED: f64 = 400_000.0;
/// Durable Objects pricing page: duration is billed for 128 MB per object, whatever it uses.
pub const DO_MEMORY_GB: f64 = 0.128;

/// Durable Objects pricing page (SQLite storage backend): rows written, per million;
/// deletes count as rows written, and so do key-value `put`s and `delete`s.
pub const ROWS_WRITTEN_USD_PER_MILLION: f64 = 1.00;
/// Durable Objects pricing page: rows written included per month.
pub const ROWS_WRITTEN_INCLUDED: f64 = 50_000_000.0;

/// The month the model bills: 30 days, as both pricing pages' own examples count it.
pub const MONTH_SECS: f64 = 30.0 * 24.0 * 3600.0;

/// Usage billed at list price, per million units.
pub fn at(units: f64, usd_per_million: f64) -> f64 {
    units * usd_per_million / 1_000_000.0
}

/// Usage billed after an included allotment.
pub fn over(units: f64, included: f64, usd_per_million: f64) -> f64 {
    at((units - included).max(0.0), usd_per_million)
}
