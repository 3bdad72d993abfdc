//! The snippet's data path against a plain JavaScript multiplexer of the same design
//! (`test-client/jsmux`), in one run with alternating rounds: the runtime's CPU per
//! relayed message (one tenant, then 50 tenants busy at once) and one idle client's echo
//! round trip (snippet, JS multiplexer, and each one's backend directly).
//!
//! The JS multiplexer runs as two instances of the same Worker: one serves the echo
//! objects, the other multiplexes clients onto them by URL (`UPSTREAM_URL`), as the
//! snippet reaches backend-do. So each multiplexer's `workerd` does the multiplexing
//! alone, and its CPU is compared with the other's. Their backends differ (backend-do
//! decodes every frame and answers each; the JS echo object sends each batch back whole):
//! the backends' CPU and their direct round trips are reported beside, not compared.

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::bench::{row, BenchOpts, Row};
use crate::load::{self, LoadOpts, Method, Report};
use crate::stack::{tail, Stack, Worker, FORBIDDEN_LOG_LINES, RUNTIME_CLOSE_NOISE};

/// The one-tenant run: clients × messages in flight each (as the CPU section's 64).
const CLIENTS: usize = 64;
const IN_FLIGHT: usize = 20;
/// The many-tenant run: tenants busy at once (the snippet's default pool holds 50), each
/// with this many clients × [`IN_FLIGHT`].
const TENANTS: usize = 50;
const CLIENTS_PER_TENANT: usize = 2;
/// Target: the snippet's CPU per relayed message at most this × the JS multiplexer's.
const CPU_TARGET: f64 = 0.75;

/// One multiplexer under test: where its clients connect, and its runtimes.
struct Side<'a> {
    name: &'static str,
    /// The multiplexer's `wrangler dev`.
    mux: &'a Worker,
    /// Its backend's (for the backend's CPU, reported beside).
    backend: &'a Worker,
    token: Option<String>,
}

impl Side<'_> {
    /// The raw echo route of `tenant` (`None`: the unprefixed `/ws/echo`).
    fn url(&self, tenant: Option<&str>) -> String {
        let prefix = tenant.map(|t| format!("/db/{t}")).unwrap_or_default();
        format!("ws://127.0.0.1:{}{prefix}/ws/echo", self.mux.port)
    }
}

/// CPU and messages summed over a side's rounds.
#[derive(Default)]
struct Cpu {
    mux_secs: f64,
    backend_secs: f64,
    /// Messages relayed: each echo counts twice (up and down).
    relayed: u64,
    throughputs: Vec<f64>,
}

impl Cpu {
    fn us_per(&self, secs: f64) -> f64 {
        secs * 1e6 / self.relayed.max(1) as f64
    }
    fn median_throughput(&self) -> f64 {
        median(&self.throughputs)
    }
    fn json(&self) -> Value {
        json!({ "muxCpuSecs": self.mux_secs, "backendCpuSecs": self.backend_secs, "relayed": self.relayed,
                "throughputs": self.throughputs })
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs `loads` at once; every reply must be right (else the figures mean nothing).
async fn run_all(loads: Vec<LoadOpts>) -> Result<Vec<Report>> {
    let mut set = tokio::task::JoinSet::new();
    for opts in loads {
        set.spawn(load::run(opts, false));
    }
    let mut reports = Vec::new();
    while let Some(r) = set.join_next().await {
        let r = r??;
        anyhow::ensure!(r.passed, "a data-path run had errors, so its figures mean nothing:\n{}", r.to_text());
        reports.push(r);
    }
    Ok(reports)
}

/// The loads of one run of `side`: one tenant with [`CLIENTS`], or [`TENANTS`] with
/// [`CLIENTS_PER_TENANT`] each.
fn loads(side: &Side<'_>, many: bool, secs: f64) -> Vec<LoadOpts> {
    let opts = |url: String, clients: usize| LoadOpts {
        clients,
        in_flight: IN_FLIGHT,
        duration: Some(secs),
        method: Method::Raw,
        payload: 64,
        token: side.token.clone(),
        ..LoadOpts::new(url)
    };
    if many {
        (0..TENANTS).map(|t| opts(side.url(Some(&format!("datapath-{t}"))), CLIENTS_PER_TENANT)).collect()
    } else {
        vec![opts(side.url(None), CLIENTS)]
    }
}

/// One measured run: adds the runtimes' CPU over it and what it relayed to `cpu`.
async fn measured(side: &Side<'_>, many: bool, secs: f64, cpu: &mut Cpu) -> Result<()> {
    let (mux, backend) = (side.mux.workerd_cpu_secs(), side.backend.workerd_cpu_secs());
    let reports = run_all(loads(side, many, secs)).await?;
    cpu.mux_secs += side.mux.workerd_cpu_secs() - mux;
    cpu.backend_secs += side.backend.workerd_cpu_secs() - backend;
    let ok: u64 = reports.iter().map(|r| r.ok).sum();
    let elapsed = reports.iter().map(|r| r.elapsed_s).fold(0.0, f64::max);
    cpu.relayed += 2 * ok;
    cpu.throughputs.push(ok as f64 / elapsed.max(1e-9));
    Ok(())
}

/// One idle client's sequential echo round trips: p50 and p99 in ms.
async fn idle(url: String, token: Option<String>, n: u64) -> Result<(f64, f64)> {
    let opts = LoadOpts { clients: 1, messages: n, method: Method::Raw, payload: 64, token, ..LoadOpts::new(url) };
    let r = run_all(vec![opts]).await?;
    Ok(r.first().map(|r| (r.latency.p50_ms, r.latency.p99_ms)).unwrap_or_default())
}

/// Starts the JS multiplexer (`test-client/jsmux`) in front of echo objects of its own (a
/// second instance of the same Worker): (the echo objects' Worker, the multiplexer).
pub(crate) fn js_multiplexer(stack: &Stack) -> Result<(Worker, Worker)> {
    let echo = tokio::task::block_in_place(|| stack.extra_worker_as("test-client/jsmux", "jsmux-echo", &[]))?;
    let upstream = format!("http://127.0.0.1:{}/do/{{tenant}}", echo.port);
    let jsmux = tokio::task::block_in_place(|| {
        stack.extra_worker_as("test-client/jsmux", "jsmux", &[("UPSTREAM_URL".to_owned(), upstream)])
    })?;
    Ok((echo, jsmux))
}

pub(crate) async fn run(
    stack: &Stack,
    rows: &mut Vec<Row>,
    raw: &mut Map<String, Value>,
    opts: &BenchOpts,
) -> Result<()> {
    let say = |s: &str| eprintln!("bench: {s}");
    say("data path: starting the JS multiplexer (test-client/jsmux) and its echo objects");
    let (echo, jsmux) = js_multiplexer(stack)?;
    let snippet =
        Side { name: "snippet", mux: &stack.snippet, backend: &stack.backend, token: Some(stack.client_token.clone()) };
    let js = Side { name: "JS multiplexer", mux: &jsmux, backend: &echo, token: None };
    let rounds = opts.rounds.max(1);
    let mut section = Map::new();

    for many in [false, true] {
        let what = if many {
            format!("{TENANTS} tenants × {CLIENTS_PER_TENANT} clients × {IN_FLIGHT} in flight")
        } else {
            format!("{CLIENTS} clients × {IN_FLIGHT} in flight, one tenant")
        };
        say(&format!("data path: CPU per relayed message, {what}: snippet vs JS multiplexer"));
        // Unmeasured first: JIT and tier-up of both, and every tenant's upstream opened.
        for side in [&snippet, &js] {
            run_all(loads(side, many, opts.seconds.min(2.0))).await?;
        }
        let (mut s, mut j) = (Cpu::default(), Cpu::default());
        for round in 0..rounds {
            // Alternating which goes first, so neither always runs on a machine the other
            // has just warmed (or heated).
            if round % 2 == 0 {
                measured(&snippet, many, opts.seconds, &mut s).await?;
                measured(&js, many, opts.seconds, &mut j).await?;
            } else {
                measured(&js, many, opts.seconds, &mut j).await?;
                measured(&snippet, many, opts.seconds, &mut s).await?;
            }
        }
        let (us_s, us_j) = (s.us_per(s.mux_secs), j.us_per(j.mux_secs));
        rows.push(row(
            &format!(
                "runtime CPU per relayed message (workerd user+system ÷ messages up and down), {what}: snippet vs JS multiplexer"
            ),
            format!("{us_s:.1} µs"),
            format!("{us_j:.1} µs"),
            Some(us_s / us_j.max(1e-9)),
            &format!("snippet ≤ {CPU_TARGET}× JS"),
            Some(us_s <= CPU_TARGET * us_j),
        ));
        rows.push(row(
            &format!("throughput (median round), {what}: snippet vs JS multiplexer"),
            format!("{:.0} msg/s", s.median_throughput()),
            format!("{:.0} msg/s", j.median_throughput()),
            Some(s.median_throughput() / j.median_throughput().max(1e-9)),
            "reported",
            None,
        ));
        let (b_s, b_j) = (s.us_per(s.backend_secs), j.us_per(j.backend_secs));
        rows.push(row(
            &format!("their backends' CPU per relayed message, {what}: backend-do vs the JS echo object"),
            format!("{b_s:.1} µs"),
            format!("{b_j:.1} µs"),
            Some(b_s / b_j.max(1e-9)),
            "reported (different backends)",
            None,
        ));
        let key = if many { "cpuManyTenants" } else { "cpuOneTenant" };
        section.insert(key.into(), json!({ "what": what, "snippet": s.json(), "js": j.json() }));
    }

    say("data path: 1 idle client, sequential echo: snippet, JS multiplexer, each backend directly");
    let paths: [(&str, String, Option<String>); 4] = [
        (snippet.name, snippet.url(None), snippet.token.clone()),
        (js.name, js.url(None), None),
        ("backend-do directly", format!("{}/db/datapath-direct/echo", stack.backend.ws()), Some(stack.token.clone())),
        ("JS echo object directly", format!("ws://127.0.0.1:{}/do/datapath-direct", echo.port), None),
    ];
    for (_, url, token) in &paths {
        idle(url.clone(), token.clone(), 200).await?;
    }
    let n = (opts.round_trips / rounds as u64).max(200);
    let mut p50s: [Vec<f64>; 4] = Default::default();
    let mut p99s: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        for k in 0..paths.len() {
            // Each round starts with the next path.
            let i = (k + round) % paths.len();
            let (_, url, token) = &paths[i];
            let (p50, p99) = idle(url.clone(), token.clone(), n).await?;
            p50s[i].push(p50);
            p99s[i].push(p99);
        }
    }
    let [s50, j50, sd50, jd50] = [0, 1, 2, 3].map(|i| median(&p50s[i]));
    let [s99, j99, _, _] = [0, 1, 2, 3].map(|i| median(&p99s[i]));
    rows.push(row(
        "idle echo p50, 1 client sequential: snippet vs JS multiplexer",
        format!("{s50:.3} ms"),
        format!("{j50:.3} ms"),
        Some(s50 / j50.max(1e-9)),
        "snippet ≤ JS",
        Some(s50 <= j50),
    ));
    rows.push(row(
        "idle echo p99, 1 client sequential: snippet vs JS multiplexer",
        format!("{s99:.3} ms"),
        format!("{j99:.3} ms"),
        Some(s99 / j99.max(1e-9)),
        "reported",
        None,
    ));
    rows.push(row(
        "idle echo p50, 1 client sequential, direct: backend-do vs the JS echo object",
        format!("{sd50:.3} ms"),
        format!("{jd50:.3} ms"),
        Some(sd50 / jd50.max(1e-9)),
        "reported (different backends)",
        None,
    ));
    rows.push(row(
        "idle echo p50 the proxy adds over its backend directly: snippet vs JS multiplexer",
        format!("{:+.3} ms", s50 - sd50),
        format!("{:+.3} ms", j50 - jd50),
        None,
        "reported",
        None,
    ));
    let idle_json: Map<String, Value> = paths
        .iter()
        .zip(p50s.iter().zip(&p99s))
        .map(|((name, url, _), (p50, p99))| ((*name).to_owned(), json!({ "url": url, "p50Ms": p50, "p99Ms": p99 })))
        .collect();
    section.insert("idleEcho".into(), json!({ "roundTripsPerRound": n, "rounds": rounds, "paths": idle_json }));
    raw.insert("datapath".into(), Value::Object(section));
    // A baseline that broke the context rule (RUNTIME.md §1, §2) would not be one.
    for w in [&jsmux, &echo] {
        let log = w.log();
        let bad = |l: &&str| FORBIDDEN_LOG_LINES.iter().any(|b| l.contains(b)) && !l.contains(RUNTIME_CLOSE_NOISE);
        if let Some(line) = log.lines().find(bad) {
            anyhow::bail!("the JS multiplexer's log has {line:?}:\n{}", tail(&log, 40));
        }
    }
    drop(jsmux);
    drop(echo);
    Ok(())
}
