//! `test-client soak`: churning clients across many tenants through one snippet whose pool
//! is smaller than the tenant count, so upstreams are opened, handed over and evicted all
//! the time. It checks that nothing is lost or crossed, that every count returns to its
//! baseline at rest, and it samples memory so that a leak shows apart from V8's lazy
//! collection: the instance's WASM linear memory (`/__stats`), and the isolate's JS heap
//! after a forced GC (DevTools protocol on the inspector port), against a trivial
//! pass-through Worker under the same churn in the same run.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::load::{self, LoadOpts, Method};
use crate::stack::{Stack, StackOpts};

/// Options of `test-client soak`.
#[derive(Debug, Clone, Args)]
pub struct SoakOpts {
    /// How long to churn, in seconds.
    #[arg(long, default_value_t = 600)]
    pub seconds: u64,
    /// Tenants the clients spread over.
    #[arg(long, default_value_t = 24)]
    pub tenants: usize,
    /// The snippet's pool size (`MAX_UPSTREAMS`); below `tenants`, so slots are evicted.
    #[arg(long, default_value_t = 8)]
    pub max_upstreams: usize,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 10)]
    pub sample_every: u64,
}

/// Failure kinds of the load client that mean a wrong answer rather than a clear refusal.
const WRONG: [&str; 6] = ["lost", "misrouted", "mismatch", "duplicate", "out-of-order", "unexpected"];

/// One memory sample.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Seconds since the churn began.
    pub at_secs: f64,
    /// The snippet's WASM linear memory.
    pub wasm_bytes: u64,
    /// The snippet isolate's JS heap after a forced GC.
    pub snippet_heap: Option<u64>,
    /// The pass-through Worker's JS heap after a forced GC.
    pub passthrough_heap: Option<u64>,
    /// `workerd` resident memory of each (KiB).
    pub snippet_rss_kb: Option<u64>,
    /// See `snippet_rss_kb`.
    pub passthrough_rss_kb: Option<u64>,
}

/// What a soak found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SoakReport {
    /// Seconds of churn.
    pub seconds: u64,
    /// Tenants and pool size.
    pub tenants: usize,
    /// See [`SoakOpts::max_upstreams`].
    pub max_upstreams: usize,
    /// Requests sent and answered correctly through the snippet.
    pub sent: u64,
    /// See `sent`.
    pub ok: u64,
    /// Wrong answers through the snippet: lost, misrouted, mismatched, duplicated, out of
    /// order or unexpected replies (must be none).
    pub wrong: Vec<(String, u64)>,
    /// Clear failures through the snippet (a refused upgrade, a 5xx, a close code): every
    /// one reached its client as such.
    pub refused: Vec<(String, u64)>,
    /// Requests through the pass-through control (`sent`, `ok`).
    pub control: (u64, u64),
    /// The snippet's counters at the end.
    pub evictions: u64,
    /// See `evictions`.
    pub handovers: u64,
    /// See `evictions`.
    pub upstreams_opened: u64,
    /// Memory over time.
    pub samples: Vec<Sample>,
    /// Least-squares slope after warm-up (bytes per minute) of each heap series.
    pub snippet_heap_slope: Option<f64>,
    /// See `snippet_heap_slope`.
    pub passthrough_heap_slope: Option<f64>,
    /// The snippet's `/__stats` at rest, after the churn.
    pub at_rest: Value,
}

pub use crate::inspector::heap_after_gc;

/// Least-squares slope of `(x, y)` in y-units per x-unit.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let (mx, my) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let num: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    (den > 0.0).then(|| num / den)
}

/// One wave of churn against `base` (`ws://host[:port]` with the tenant routes below it):
/// a few tenants, each with WebSocket echo clients and an HTTP client, all verified.
pub(crate) async fn wave(
    base_ws: &str,
    base_http: &str,
    tenants: &[String],
    token: Option<String>,
) -> Vec<load::Report> {
    let mut runs = Vec::new();
    for t in tenants {
        let ws = LoadOpts {
            clients: 2,
            messages: 20,
            method: Method::Raw,
            payload: 128,
            token: token.clone(),
            ..LoadOpts::new(format!("{base_ws}/db/{t}/{}", if token.is_some() { "ws/echo" } else { "echo" }))
        };
        let http = LoadOpts {
            clients: 1,
            messages: 5,
            method: Method::Ping,
            token: token.clone(),
            ..LoadOpts::new(format!("{base_http}/db/{t}/rpc"))
        };
        runs.push(tokio::spawn(load::run(ws, false)));
        runs.push(tokio::spawn(load::run(http, false)));
    }
    let mut out = Vec::new();
    for r in runs {
        if let Ok(Ok(report)) = r.await {
            out.push(report);
        }
    }
    out
}

/// Runs the soak.
pub async fn run(opts: SoakOpts) -> Result<SoakReport> {
    if opts.max_upstreams >= opts.tenants {
        bail!("--max-upstreams must be below --tenants, or nothing is evicted");
    }
    let vars: Vec<(String, String)> = [
        ("MAX_UPSTREAMS", opts.max_upstreams.to_string()),
        ("UPSTREAM_IDLE_MS", "3000".to_owned()),
        ("OWNER_LIFETIME_MS", "2000".to_owned()),
        ("REQUEST_TIMEOUT_MS", "5000".to_owned()),
        ("CLIENT_MESSAGES_PER_SEC", "0".to_owned()),
        ("CALLER_REQUESTS_PER_SEC", "0".to_owned()),
        ("MAX_CONNECTIONS_PER_CALLER", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let stack = tokio::task::block_in_place(|| Stack::start(StackOpts { snippet_vars: vars, ..StackOpts::default() }))?;
    let control_vars =
        vec![("BACKEND_HTTP".to_owned(), stack.backend.http()), ("BACKEND_TOKEN".to_owned(), stack.token.clone())];
    let control = tokio::task::block_in_place(|| stack.extra_worker("test-client/passthrough", &control_vars))?;
    let baseline = stack.snippet_stats().await?;
    let tenants: Vec<String> = (0..opts.tenants).map(|i| format!("soak-{i}")).collect();
    let (snippet_http, control_http) = (stack.snippet.origin(), control.origin());
    let snippet_ws = snippet_http.replacen("http", "ws", 1);
    let control_ws = control_http.replacen("http", "ws", 1);
    // Half the pool per wave: the last wave's tenants may still be finishing a hand-over
    // (not idle, so not evictable) while this wave's take the other half.
    let per_wave = (opts.max_upstreams / 2).max(1);

    let start = Instant::now();
    let mut next_sample = Duration::ZERO;
    let (mut sent, mut ok, mut control_counts) = (0, 0, (0, 0));
    let (mut wrong, mut refused) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
    let mut samples = Vec::new();
    let mut turn = 0usize;
    while start.elapsed() < Duration::from_secs(opts.seconds) {
        // Rotate through the tenants, a few at a time: more tenants than slots, so every
        // few waves the least recently used idle upstream is evicted for a new one.
        let pick: Vec<String> = (0..per_wave).map(|i| tenants[(turn + i) % tenants.len()].clone()).collect();
        turn += per_wave;
        let token = Some(stack.client_token.clone());
        let (mine, theirs) =
            tokio::join!(wave(&snippet_ws, &snippet_http, &pick, token), wave(&control_ws, &control_http, &pick, None));
        for r in mine {
            sent += r.sent;
            ok += r.ok;
            for (kind, n) in &r.errors {
                let wrong_answer = WRONG.contains(&kind.as_str());
                let into = if wrong_answer { &mut wrong } else { &mut refused };
                *into.entry(kind.clone()).or_insert(0) += n;
            }
        }
        for r in theirs {
            control_counts.0 += r.sent;
            control_counts.1 += r.ok;
        }
        if start.elapsed() >= next_sample {
            next_sample += Duration::from_secs(opts.sample_every);
            let stats = stack.snippet_stats().await?;
            samples.push(Sample {
                at_secs: start.elapsed().as_secs_f64(),
                wasm_bytes: stats["wasmMemoryBytes"].as_u64().unwrap_or(0),
                snippet_heap: heap_after_gc(&stack.snippet).await.ok(),
                passthrough_heap: heap_after_gc(&control).await.ok(),
                snippet_rss_kb: stack.snippet.workerd_rss_kb(),
                passthrough_rss_kb: control.workerd_rss_kb(),
            });
        }
    }
    // At rest for 2 × the longest timeout in force (5 s), then everything is back.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let at_rest = stack.snippet_stats().await?;
    for field in ["liveTasks", "pendingRequests", "activeClients", "streamsHeld"] {
        if at_rest[field] != baseline[field] {
            bail!("{field} is {} at rest, {} before: {at_rest}", at_rest[field], baseline[field]);
        }
    }
    let warm = samples.len() / 3;
    let series = |f: &dyn Fn(&Sample) -> Option<u64>| {
        let pts: Vec<(f64, f64)> =
            samples.iter().skip(warm).filter_map(|s| f(s).map(|v| (s.at_secs / 60.0, v as f64))).collect();
        slope(&pts)
    };
    let num = |f: &str| at_rest[f].as_u64().unwrap_or(0);
    Ok(SoakReport {
        seconds: opts.seconds,
        tenants: opts.tenants,
        max_upstreams: opts.max_upstreams,
        sent,
        ok,
        wrong: wrong.into_iter().collect(),
        refused: refused.into_iter().collect(),
        control: control_counts,
        evictions: num("poolEvictions"),
        handovers: num("handovers"),
        upstreams_opened: num("backendConnects"),
        snippet_heap_slope: series(&|s| s.snippet_heap),
        passthrough_heap_slope: series(&|s| s.passthrough_heap),
        samples,
        at_rest,
    })
}

/// The report as text (and the BENCHMARKS.md section).
pub fn text(r: &SoakReport) -> String {
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut s = format!(
        "soak: {} s, {} tenants over a pool of {}\nthrough the snippet: {} sent, {} ok, wrong answers {:?}, clear refusals {:?}\n\
         pass-through control: {} sent, {} ok\nupstreams opened {}, evictions {}, hand-overs {}\n\n\
         | t (s) | snippet wasm (MiB) | snippet heap after GC (MiB) | pass-through heap after GC (MiB) | snippet RSS (MiB) | pass-through RSS (MiB) |\n|---|---|---|---|---|---|\n",
        r.seconds, r.tenants, r.max_upstreams, r.sent, r.ok, r.wrong, r.refused, r.control.0, r.control.1,
        r.upstreams_opened, r.evictions, r.handovers
    );
    let opt = |v: Option<u64>, f: &dyn Fn(u64) -> f64| v.map_or("—".to_owned(), |v| format!("{:.2}", f(v)));
    for x in &r.samples {
        s.push_str(&format!(
            "| {:.0} | {:.2} | {} | {} | {} | {} |\n",
            x.at_secs,
            mib(x.wasm_bytes),
            opt(x.snippet_heap, &mib),
            opt(x.passthrough_heap, &mib),
            opt(x.snippet_rss_kb, &|k| k as f64 / 1024.0),
            opt(x.passthrough_rss_kb, &|k| k as f64 / 1024.0),
        ));
    }
    let per_min = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{:+.1} KiB/min", v / 1024.0));
    s.push_str(&format!(
        "\nheap trend after warm-up (least squares): snippet {}, pass-through {}\n",
        per_min(r.snippet_heap_slope),
        per_min(r.passthrough_heap_slope)
    ));
    s
}
