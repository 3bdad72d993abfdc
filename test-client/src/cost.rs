//! `test-client cost`: what a workload costs per month on Cloudflare's published prices,
//! three ways — clients straight to the Durable Object, a plain forwarding Worker, and
//! snippet-proxy — from the benchmark's measured figures where it has them. COST.md
//! explains the model, term by term.

mod figures;
mod model;
pub mod prices;
#[cfg(test)]
mod tests;
mod text;

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

pub use figures::Figure;
pub use model::{Costs, Derived, Estimate, Inputs, Usage, Workload};
pub use text::text;

/// Options of `test-client cost`.
#[derive(Debug, Clone, Args)]
pub struct CostOpts {
    /// Client WebSockets connected at any time, all month.
    #[arg(long)]
    pub clients: u64,
    /// Messages each active client sends per minute.
    #[arg(long, value_parser = non_negative)]
    pub messages_per_minute: f64,
    /// Share of the clients that are idle: connected, sending nothing (0–1).
    #[arg(long, value_parser = share)]
    pub idle_share: f64,
    /// Tenants: one Durable Object each, the clients spread evenly over them.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub tenants: u64,
    /// Edge isolates serving each tenant; each holds its own upstream to it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub isolates: u64,
    /// HTTP requests per minute, all tenants together.
    #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
    pub http_per_minute: f64,
    /// Messages the object sends to clients per client message: 1 is a reply to the
    /// sender; a broadcast to a room of 50 is 50 (spread over every client alike).
    #[arg(long, default_value_t = 1.0, value_parser = non_negative)]
    pub fanout: f64,
    /// How often each client connects again per day (page loads, networks changing,
    /// isolates restarting).
    #[arg(long, default_value_t = 1.0, value_parser = non_negative)]
    pub connects_per_day: f64,
    /// The object's wall time per client message or HTTP request, the application's own
    /// work (ms); the same in every design. Default 1, an assumption.
    #[arg(long, value_parser = non_negative)]
    pub object_ms_per_message: Option<f64>,
    /// The object's wall time per event it is invoked for, beyond that work (ms).
    /// Default 0.25, an assumption.
    #[arg(long, value_parser = non_negative)]
    pub object_ms_per_event: Option<f64>,
    /// Worker CPU per request or WebSocket upgrade: routing, checking a token (ms).
    /// Default 1, an assumption.
    #[arg(long, value_parser = non_negative)]
    pub worker_cpu_ms_per_request: Option<f64>,
    /// Frames per upstream message; default: from the benchmark's batching and the load.
    #[arg(long, value_parser = at_least_one)]
    pub frames_per_batch: Option<f64>,
    /// Plain WebSocket clients instead of the client library's sessions: nothing kept in
    /// storage or acknowledged, no resume after a reconnect, and their heartbeats travel
    /// to the object like any message.
    #[arg(long)]
    pub no_sessions: bool,
    /// The clients' heartbeat interval (s): the client library's, answered by the snippet.
    #[arg(long, default_value_t = 15.0, value_parser = non_negative)]
    pub heartbeat_secs: f64,
    /// Where bench.json and bench-sessions.json are read (default: the checkout's
    /// bench-results). Figures they lack fall back to built-in defaults, which say so.
    #[arg(long)]
    pub bench_dir: Option<PathBuf>,
}

fn number(s: &str) -> Result<f64, String> {
    s.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| format!("`{s}` is not a number"))
}

fn non_negative(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| if v >= 0.0 { Ok(v) } else { Err(format!("{v} is negative")) })
}

fn share(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("{v} is not between 0 and 1")) })
}

fn at_least_one(s: &str) -> Result<f64, String> {
    number(s).and_then(|v| if v >= 1.0 { Ok(v) } else { Err(format!("{v} is below 1")) })
}

/// A price as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Price {
    /// What is billed.
    pub item: &'static str,
    /// Included per month on the Paid plan.
    pub included: f64,
    /// USD per million units beyond that.
    pub usd_per_million: f64,
    /// The pricing page it comes from.
    pub source: &'static str,
}

/// One design's month.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Design {
    /// Its name.
    pub name: &'static str,
    /// What it uses.
    pub usage: Usage,
    /// That at list price (no allotments): what the designs are compared on.
    pub list_price: Costs,
    /// The bill were it the account's only workload (allotments, the plan's minimum).
    pub bill_alone: Costs,
}

/// Everything `test-client cost` says.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CostReport {
    /// The workload.
    pub workload: Workload,
    /// The month modelled.
    pub month_days: f64,
    /// Every input besides the workload, with where it came from.
    pub figures: Vec<Figure>,
    /// The prices used.
    pub prices: Vec<Price>,
    /// When the pricing pages were read.
    pub prices_read_on: &'static str,
    /// The quantities on the way.
    pub derived: Derived,
    /// Direct, forwarding Worker, snippet-proxy.
    pub designs: Vec<Design>,
    /// Where the snippet costs more, where it saves, and whether it is worth it here.
    pub notes: Vec<String>,
}

/// Builds the report for `opts`.
pub fn run(opts: &CostOpts) -> CostReport {
    let (dir, shown) = match &opts.bench_dir {
        Some(d) => (Some(d.clone()), d.display().to_string()),
        None => (crate::stack::repo_root().ok().map(|r| r.join("bench-results")), "bench-results".to_owned()),
    };
    let m = figures::read(dir.as_deref(), &shown);
    let assumed = |flag: &'static str, given: Option<f64>, default: f64, why: &str| match given {
        Some(v) => (v, format!("given: --{flag}")),
        None => (default, format!("built-in assumption, not measured: {why}")),
    };
    let (om, om_src) = assumed(
        "object-ms-per-message",
        opts.object_ms_per_message,
        1.0,
        "a small handler; Cloudflare's own example uses 10",
    );
    let (oe, oe_src) =
        assumed("object-ms-per-event", opts.object_ms_per_event, 0.25, "dispatching an event, beyond the handler");
    let (wc, wc_src) = assumed(
        "worker-cpu-ms-per-request",
        opts.worker_cpu_ms_per_request,
        1.0,
        "routing and a cached token check; Cloudflare's example Worker uses 7",
    );
    let inputs = Inputs {
        cpu_batched_us: m.cpu_batched_us.value,
        cpu_unbatched_us: m.cpu_unbatched_us.value,
        batch_max: m.batch_max.value,
        batch_rate: m.batch_rate.value,
        frames_per_batch: opts.frames_per_batch,
        rows_per_echo: m.rows_per_echo.value,
        idle_wakes_snippet: m.idle_wakes_snippet.value,
        idle_wakes_direct: m.idle_wakes_direct.value,
        worker_cpu_ms_per_request: wc,
        object_ms_per_message: om,
        object_ms_per_event: oe,
        heartbeat_secs: opts.heartbeat_secs,
    };
    let workload = Workload {
        clients: opts.clients as f64,
        messages_per_minute: opts.messages_per_minute,
        idle_share: opts.idle_share,
        tenants: opts.tenants as f64,
        isolates: opts.isolates as f64,
        http_per_minute: opts.http_per_minute,
        fanout: opts.fanout,
        connects_per_day: opts.connects_per_day,
        sessions: !opts.no_sessions,
    };
    let est = model::estimate(&workload, &inputs);
    let mut figs = vec![
        m.cpu_batched_us,
        m.cpu_unbatched_us,
        m.batch_max,
        m.batch_rate,
        m.rows_per_echo,
        m.idle_wakes_snippet,
        m.idle_wakes_direct,
    ];
    if let Some(b) = opts.frames_per_batch {
        figs.push(Figure {
            name: "frames per upstream message",
            value: b,
            unit: "frames",
            source: "given: --frames-per-batch".into(),
        });
    }
    figs.extend([
        Figure { name: "Worker CPU per request or upgrade", value: wc, unit: "ms", source: wc_src },
        Figure { name: "object wall time per message (application work)", value: om, unit: "ms", source: om_src },
        Figure { name: "object wall time per event", value: oe, unit: "ms", source: oe_src },
        Figure {
            name: "client heartbeat interval",
            value: opts.heartbeat_secs,
            unit: "s",
            source: "--heartbeat-secs (default: the client library's heartbeatMs, 15 s)".into(),
        },
    ]);
    let design =
        |name, usage: Usage| Design { name, usage, list_price: usage.at_list_price(), bill_alone: usage.bill_alone() };
    let designs = vec![
        design("direct (object only)", est.direct),
        design("forwarding Worker", est.forwarding),
        design("snippet-proxy", est.snippet),
    ];
    let notes = text::notes(&workload, &inputs, &est);
    CostReport {
        workload,
        month_days: prices::MONTH_SECS / 86_400.0,
        figures: figs,
        prices: price_list(),
        prices_read_on: prices::READ_ON,
        derived: est.derived,
        designs,
        notes,
    }
}

fn price_list() -> Vec<Price> {
    use prices::*;
    let (w, d) = (WORKERS_PAGE, DURABLE_OBJECTS_PAGE);
    vec![
        Price {
            item: "Worker requests",
            included: WORKER_REQUESTS_INCLUDED,
            usd_per_million: WORKER_REQUEST_USD_PER_MILLION,
            source: w,
        },
        Price {
            item: "Worker CPU ms",
            included: WORKER_CPU_MS_INCLUDED,
            usd_per_million: WORKER_CPU_USD_PER_MILLION_MS,
            source: w,
        },
        Price {
            item: "Durable Object requests (incoming WebSocket messages 20:1)",
            included: DO_REQUESTS_INCLUDED,
            usd_per_million: DO_REQUEST_USD_PER_MILLION,
            source: d,
        },
        Price {
            item: "Durable Object GB-s (128 MB per object)",
            included: DO_GB_S_INCLUDED,
            usd_per_million: DO_GB_S_USD_PER_MILLION,
            source: d,
        },
        Price {
            item: "SQLite rows written",
            included: ROWS_WRITTEN_INCLUDED,
            usd_per_million: ROWS_WRITTEN_USD_PER_MILLION,
            source: d,
        },
    ]
}
