//! `test-client bench`: starts the real stack and measures the snippet against going to
//! the backend directly, in the same run, on the same machine. Every figure is a ratio
//! or a count taken here; nothing is assumed. Writes a JSON file and `BENCHMARKS.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The benchmark measures the proxy at full speed, so the per-client and per-caller rate
/// limits are lifted (one benchmark client sends ~2,000 messages a second, twice the
/// default allowance). What the limits cost and do is measured by the abuse suite.
pub(crate) const UNLIMITED: &[(&str, &str)] = &[
    ("CLIENT_MESSAGES_PER_SEC", "0"),
    ("CLIENT_BYTES_PER_SEC", "0"),
    ("CLIENT_REPLY_BYTES_PER_SEC", "0"),
    ("CALLER_REQUESTS_PER_SEC", "0"),
];

/// [`UNLIMITED`] as `--var`s.
fn unlimited() -> Vec<(String, String)> {
    UNLIMITED.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};

use crate::load::{self, LoadOpts, Method, Report};
use crate::stack::{repo_root, Stack, StackOpts, Worker};

/// Options of `test-client bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchOpts {
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 6.0)]
    pub seconds: f64,
    /// Rounds of each throughput pair (alternating snippet and direct); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Round trips in the single-client latency runs.
    #[arg(long, default_value_t = 3000)]
    pub round_trips: u64,
    /// Where to write bench.json.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Also write BENCHMARKS.md at the repository root.
    #[arg(long)]
    pub markdown: bool,
    /// Run one section only: `sessions` (what resumable sessions cost; idle clients'
    /// wakes), `idp` (verification cost per algorithm, a key set's first fetch),
    /// `datapath` (the data path against a plain JavaScript multiplexer: CPU per relayed
    /// message, idle echo latency), `profile` (where the data path's CPU goes: the
    /// snippet and the JS multiplexer sampled by V8's profiler under the same load),
    /// `memory` (per client stream and per upstream; streams one isolate holds),
    /// `coldstart` (a new tenant's first request split into connect, object start and the
    /// request), or `forward` (HTTP against a forwarding Worker that reaches the object
    /// through a binding: latency, billable units). Its rows go to bench-{section}.json;
    /// BENCHMARKS.md is left alone.
    #[arg(long, value_parser = ["idp", "sessions", "datapath", "profile", "memory", "coldstart", "forward"])]
    pub only: Option<String>,
}

/// One measured comparison.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Through the snippet (or the first of two configurations).
    pub snippet: String,
    /// Directly to the backend (or the baseline configuration).
    pub direct: String,
    /// snippet ÷ direct, where a ratio makes sense.
    pub ratio: Option<f64>,
    /// The target, in words.
    pub target: String,
    /// Whether the target was met (None: no target).
    pub met: Option<bool>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    /// The machine it ran on.
    pub machine: String,
    /// The table.
    pub rows: Vec<Row>,
    /// The raw load reports and counts behind the rows.
    pub raw: Value,
}

fn ms(v: f64) -> String {
    format!("{v:.3} ms")
}

/// A row comparing two durations in ms, with their ratio.
pub(crate) fn ms_row(name: &str, snippet: f64, direct: f64, target: &str, met: Option<bool>) -> Row {
    row(name, ms(snippet), ms(direct), Some(snippet / direct), target, met)
}

pub(crate) fn row(
    name: &str,
    snippet: String,
    direct: String,
    ratio: Option<f64>,
    target: &str,
    met: Option<bool>,
) -> Row {
    Row { name: name.into(), snippet, direct, ratio, target: target.into(), met }
}

/// The Durable Object's own counters for a tenant (via its HTTP JSON-RPC `stats`).
pub async fn do_stats(stack: &Stack, tenant: &str) -> Result<Value> {
    let url = format!("{}/db/{tenant}/rpc", stack.backend.http());
    let res = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&stack.token)
        .json(&json!({ "jsonrpc": "2.0", "method": "stats", "id": 1 }))
        .send()
        .await?;
    let v: Value = res.json().await?;
    v.get("result").cloned().with_context(|| format!("stats from {url}: {v}"))
}

pub(crate) fn count(v: &Value, field: &str) -> u64 {
    v.get(field).and_then(Value::as_u64).unwrap_or(0)
}

/// WebSocket message events the DO handled during `f`, for `tenant`.
pub(crate) async fn do_messages_during<F: std::future::Future<Output = Result<Report>>>(
    stack: &Stack,
    tenant: &str,
    f: F,
) -> Result<(Report, u64, u64)> {
    let before = do_stats(stack, tenant).await?;
    let report = f.await?;
    let after = do_stats(stack, tenant).await?;
    anyhow::ensure!(count(&before, "wakes") == count(&after, "wakes"), "the object hibernated mid-run; rerun");
    let messages = count(&after, "messages") - count(&before, "messages");
    // Minus the `stats` call itself.
    let http = (count(&after, "httpRequests") - count(&before, "httpRequests")).saturating_sub(1);
    Ok((report, messages, http))
}

fn checked(r: Report) -> Result<Report> {
    anyhow::ensure!(r.passed, "a benchmark run had errors, so its figures mean nothing:\n{}", r.to_text());
    Ok(r)
}

pub(crate) async fn run_load(opts: LoadOpts) -> Result<Report> {
    checked(load::run(opts, false).await?)
}

/// The run with the median `key` (for an even count, the upper of the two middle runs).
pub(crate) fn median_by<T: Clone>(runs: &[T], key: impl Fn(&T) -> f64) -> T {
    let mut v = runs.to_vec();
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v.swap_remove(v.len() / 2)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok()))
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1048576.0))
        .unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {mem}; {} {}; loopback, client and both workerd processes on the same cores",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

fn wasm_size(root: &Path, krate: &str) -> Result<(u64, u64)> {
    let path = root.join(krate).join("build/index_bg.wasm");
    let raw = std::fs::metadata(&path).with_context(|| format!("{} (build first: ./x bench)", path.display()))?.len();
    let gz = std::process::Command::new("gzip").arg("-9c").arg(&path).output().context("gzip")?;
    Ok((raw, gz.stdout.len() as u64))
}

/// Time to the first reply right after the runtime reports ready.
async fn first_reply(url: &str, token: Option<&str>) -> Result<Duration> {
    let started = Instant::now();
    let mut req = reqwest::Client::new().post(url).json(&json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await?;
    anyhow::ensure!(res.status().is_success(), "first request to {url}: HTTP {}", res.status());
    Ok(started.elapsed())
}

/// Runs the whole benchmark.
pub async fn run(opts: BenchOpts) -> Result<BenchReport> {
    let root = repo_root()?;
    let secs = opts.seconds;
    let mut rows = Vec::new();
    let mut raw = serde_json::Map::new();
    let say = |s: &str| eprintln!("bench: {s}");
    if let Some(only) = opts.only.as_deref() {
        // The data path runs at full speed, as the steady-state runs do.
        let vars = if only == "datapath" || only == "profile" { unlimited() } else { Vec::new() };
        let stack =
            tokio::task::block_in_place(|| Stack::start(StackOpts { snippet_vars: vars, ..Default::default() }))?;
        match only {
            "idp" => {
                say("identity providers only: verification cost per algorithm");
                crate::bench_idp::run(&stack, &mut rows, &mut raw, opts.round_trips.min(300) as usize).await?;
            }
            "sessions" => {
                say("sessions only: their cost, and idle clients");
                crate::bench_sessions::run(&stack, &mut rows, &mut raw, opts.round_trips).await?;
            }
            "datapath" => {
                say("data path only: the snippet against a plain JavaScript multiplexer");
                crate::bench_datapath::run(&stack, &mut rows, &mut raw, &opts).await?;
            }
            "profile" => {
                say("profile only: where the data path's CPU goes, snippet and JS multiplexer");
                crate::bench_profile::run(&stack, &mut rows, &mut raw, &opts).await?;
            }
            "memory" => crate::bench_pool::memory(&stack, &mut rows, &mut raw).await?,
            "coldstart" => crate::bench_coldstart::run(&stack, &mut rows, &mut raw).await?,
            "forward" => crate::bench_forward::run(&stack, &mut rows, &mut raw, opts.round_trips).await?,
            other => {
                anyhow::bail!("--only {other}: use idp, sessions, datapath, profile, memory, coldstart or forward")
            }
        }
        let report = BenchReport { machine: machine(), rows, raw: Value::Object(raw) };
        std::fs::create_dir_all(&opts.out)?;
        std::fs::write(opts.out.join(format!("bench-{only}.json")), serde_json::to_string_pretty(&report)?)?;
        return Ok(report);
    }

    // Cold start: fresh stacks; the first request after "ready" (the readiness probe has
    // loaded each worker's wasm; the Durable Object and the upstream are still new).
    say("cold start (two fresh stacks)");
    let direct_cold = {
        let stack = tokio::task::block_in_place(|| Stack::start(StackOpts::default()))?;
        first_reply(&format!("{}/db/cold/rpc", stack.backend.http()), Some(&stack.token)).await?
    };
    let snippet_cold = {
        let stack = tokio::task::block_in_place(|| Stack::start(StackOpts::default()))?;
        first_reply(&format!("{}/rpc", stack.snippet.http()), Some(&stack.client_token)).await?
    };

    say("starting the stack for the steady-state runs");
    let stack = tokio::task::block_in_place(|| {
        Stack::start(StackOpts { tenant: Some("bench".into()), snippet_vars: unlimited(), ..Default::default() })
    })?;
    let unbatched: Worker = tokio::task::block_in_place(|| {
        stack.extra_snippet("unbatched", &[UNLIMITED, &[("BATCHING", "off")]].concat())
    })?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snippet_ws = stack.snippet.ws();
    let direct_ws = stack.backend.ws();
    let token = Some(stack.token.clone());
    // The snippet's client JWT (HS256): every snippet row includes verifying it.
    let ctok = Some(stack.client_token.clone());
    let echo = |url: String| LoadOpts { method: Method::Raw, payload: 64, ..LoadOpts::new(url) };

    // 1. One idle client, sequential WebSocket echo round trips.
    say("1 client, WebSocket echo round trip");
    let one =
        |url: String, token: Option<String>| LoadOpts { clients: 1, messages: opts.round_trips, token, ..echo(url) };
    let _warm = run_load(LoadOpts { messages: 200, ..one(format!("{snippet_ws}/ws/echo"), ctok.clone()) }).await?;
    let s1 = run_load(one(format!("{snippet_ws}/ws/echo"), ctok.clone())).await?;
    let d1 = run_load(one(format!("{direct_ws}/db/direct/echo"), token.clone())).await?;
    let added = s1.latency.p50_ms - d1.latency.p50_ms;
    rows.push(ms_row(
        "WS echo p50, 1 idle client",
        s1.latency.p50_ms,
        d1.latency.p50_ms,
        "snippet adds ≤ 0.3 ms",
        Some(added <= 0.3),
    ));
    rows.push(ms_row("WS echo p99, 1 idle client", s1.latency.p99_ms, d1.latency.p99_ms, "", None));
    raw.insert("wsEchoOneClient".into(), json!({ "snippet": s1, "direct": d1 }));

    // 2. 32 clients × 20 in flight.
    say("32 clients × 20 in flight, WebSocket echo");
    let busy = |url: String, token: Option<String>| LoadOpts {
        clients: 32,
        in_flight: 20,
        duration: Some(secs),
        token,
        ..echo(url)
    };
    let (mut s_rounds, mut d_rounds) = (Vec::new(), Vec::new());
    for _ in 0..opts.rounds.max(1) {
        s_rounds.push(run_load(busy(format!("{snippet_ws}/ws/echo"), ctok.clone())).await?);
        d_rounds.push(run_load(busy(format!("{direct_ws}/db/direct/echo"), token.clone())).await?);
    }
    let (s32, d32) = (median_by(&s_rounds, |r| r.throughput), median_by(&d_rounds, |r| r.throughput));
    rows.push(ms_row(
        "WS echo p50, 32 clients × 20 in flight",
        s32.latency.p50_ms,
        d32.latency.p50_ms,
        "snippet ≤ direct",
        Some(s32.latency.p50_ms <= d32.latency.p50_ms),
    ));
    rows.push(row(
        "WS echo throughput, 32 clients × 20 in flight",
        format!("{:.0} msg/s", s32.throughput),
        format!("{:.0} msg/s", d32.throughput),
        Some(s32.throughput / d32.throughput),
        "snippet ≥ 1.2× direct",
        Some(s32.throughput >= 1.2 * d32.throughput),
    ));
    raw.insert("wsEcho32x20".into(), json!({ "snippetRounds": s_rounds, "directRounds": d_rounds }));

    // 3. HTTP POST /rpc: over the warm socket vs direct HTTP.
    say("HTTP POST /rpc, 1 client sequential");
    let http = |url: String, token: Option<String>| LoadOpts {
        clients: 1,
        messages: opts.round_trips / 2,
        method: Method::Ping,
        token,
        ..LoadOpts::new(url)
    };
    let _warm =
        run_load(LoadOpts { messages: 100, ..http(format!("{}/rpc", stack.snippet.http()), ctok.clone()) }).await?;
    let sh = run_load(http(format!("{}/rpc", stack.snippet.http()), ctok.clone())).await?;
    let dh = run_load(http(format!("{}/db/direct/rpc", stack.backend.http()), token.clone())).await?;
    rows.push(ms_row(
        "HTTP POST /rpc p50",
        sh.latency.p50_ms,
        dh.latency.p50_ms,
        "snippet ≤ 1.5× direct",
        Some(sh.latency.p50_ms <= 1.5 * dh.latency.p50_ms),
    ));
    rows.push(ms_row("HTTP POST /rpc p99", sh.latency.p99_ms, dh.latency.p99_ms, "", None));
    raw.insert("httpRpc".into(), json!({ "snippet": sh, "direct": dh }));

    // 4. 64 clients: batching on, off, direct; DO message events per client message.
    say("64 clients: batching on / off / direct");
    let wide = |url: String, token: Option<String>| LoadOpts {
        clients: 64,
        in_flight: 8,
        duration: Some(secs),
        token,
        ..echo(url)
    };
    let mut rounds: [Vec<(Report, u64)>; 3] = Default::default();
    // The snippet's CPU per relayed message, batching on and off: the CPU time its workerd
    // processes used during the runs over the messages relayed (each echo is relayed
    // twice, up and down).
    let (mut cpu_on, mut cpu_off) = ((0.0, 0u64), (0.0, 0u64));
    for _ in 0..opts.rounds.max(1) {
        let before = stack.snippet.workerd_cpu_secs();
        let (r, m, _) =
            do_messages_during(&stack, "bench", run_load(wide(format!("{snippet_ws}/ws/echo"), ctok.clone()))).await?;
        cpu_on = (cpu_on.0 + stack.snippet.workerd_cpu_secs() - before, cpu_on.1 + 2 * r.ok);
        rounds[0].push((r, m));
        let before = unbatched.workerd_cpu_secs();
        let (r, m, _) = do_messages_during(
            &stack,
            "unbatched",
            run_load(wide(format!("{}/ws/echo", unbatched.ws()), ctok.clone())),
        )
        .await?;
        cpu_off = (cpu_off.0 + unbatched.workerd_cpu_secs() - before, cpu_off.1 + 2 * r.ok);
        rounds[1].push((r, m));
        let direct = run_load(wide(format!("{direct_ws}/db/direct64/echo"), token.clone()));
        let (r, m, _) = do_messages_during(&stack, "direct64", direct).await?;
        rounds[2].push((r, m));
    }
    let median = |v: &[(Report, u64)]| median_by(v, |(r, _)| r.throughput);
    let ((on, on_msgs), (off, off_msgs), (dir, dir_msgs)) =
        (median(&rounds[0]), median(&rounds[1]), median(&rounds[2]));
    let per = |m: u64, r: &Report| m as f64 / r.sent.max(1) as f64;
    let (p_on, p_off, p_dir) = (per(on_msgs, &on), per(off_msgs, &off), per(dir_msgs, &dir));
    rows.push(row(
        "throughput, 64 clients: batching on vs off",
        format!("{:.0} msg/s", on.throughput),
        format!("{:.0} msg/s", off.throughput),
        Some(on.throughput / off.throughput),
        "batched ≥ unbatched",
        Some(on.throughput >= off.throughput),
    ));
    rows.push(row(
        "throughput, 64 clients: batching on vs direct",
        format!("{:.0} msg/s", on.throughput),
        format!("{:.0} msg/s", dir.throughput),
        Some(on.throughput / dir.throughput),
        "",
        None,
    ));
    rows.push(row(
        "DO WebSocket message events per client message, 64 clients: batching on vs off",
        format!("{p_on:.3}"),
        format!("{p_off:.3}"),
        Some(p_on / p_off),
        "≥ 3× fewer with batching",
        Some(p_off >= 3.0 * p_on),
    ));
    rows.push(row(
        "DO WebSocket message events per client message, 64 clients: direct",
        format!("{p_on:.3}"),
        format!("{p_dir:.3}"),
        Some(p_on / p_dir),
        "",
        None,
    ));
    let us_per = |(secs, msgs): (f64, u64)| secs * 1e6 / msgs.max(1) as f64;
    let (us_on, us_off) = (us_per(cpu_on), us_per(cpu_off));
    rows.push(row(
        "snippet CPU per relayed message (workerd user+system CPU ÷ messages up and down), 64 clients: batching on vs off",
        format!("{us_on:.1} µs"),
        format!("{us_off:.1} µs"),
        Some(us_on / us_off.max(1e-9)),
        "reported",
        None,
    ));
    raw.insert(
        "cpuPerMessage".into(),
        json!({ "batched": { "cpuSecs": cpu_on.0, "relayed": cpu_on.1 }, "unbatched": { "cpuSecs": cpu_off.0, "relayed": cpu_off.1 } }),
    );
    let as_json = |v: &[(Report, u64)]| -> Vec<Value> {
        v.iter().map(|(r, m)| json!({ "report": r, "doMessages": m })).collect()
    };
    raw.insert(
        "wide64".into(),
        json!({ "batchedRounds": as_json(&rounds[0]), "unbatchedRounds": as_json(&rounds[1]), "directRounds": as_json(&rounds[2]) }),
    );

    // 4b. The data path against a plain JavaScript multiplexer of the same design.
    crate::bench_datapath::run(&stack, &mut rows, &mut raw, &opts).await?;

    // 5. Upstream connections the backend sees.
    say("connections the backend sees for 1, 16, 256 clients");
    for clients in [1usize, 16, 256] {
        let through =
            connections_seen(&stack, &format!("{snippet_ws}/ws/echo"), ctok.clone(), "bench", clients).await?;
        let tenant = format!("conn{clients}");
        let direct =
            connections_seen(&stack, &format!("{direct_ws}/db/{tenant}/echo"), token.clone(), &tenant, clients).await?;
        rows.push(row(
            &format!("connections at the DO, {clients} clients"),
            through.to_string(),
            direct.to_string(),
            Some(through as f64 / direct.max(1) as f64),
            "",
            None,
        ));
    }

    // 6. Billable units per 10,000 HTTP requests: incoming WebSocket messages bill 20:1.
    say("billable units per 10,000 HTTP requests");
    let reqs = 10_000 / 8;
    let h = |url: String, token: Option<String>| LoadOpts {
        clients: 8,
        in_flight: 4,
        messages: reqs as u64,
        method: Method::Ping,
        token,
        ..LoadOpts::new(url)
    };
    let (sb, s_msgs, s_http) =
        do_messages_during(&stack, "bench", run_load(h(format!("{}/rpc", stack.snippet.http()), ctok.clone()))).await?;
    let (db_, _, d_http) = do_messages_during(
        &stack,
        "billing",
        run_load(h(format!("{}/db/billing/rpc", stack.backend.http()), token.clone())),
    )
    .await?;
    let units = |msgs: u64, http: u64, sent: u64| (msgs as f64 / 20.0 + http as f64) * 10_000.0 / sent.max(1) as f64;
    let (u_s, u_d) = (units(s_msgs, s_http, sb.sent), units(0, d_http, db_.sent));
    rows.push(row(
        "DO billable units per 10,000 HTTP requests",
        format!("{u_s:.1}"),
        format!("{u_d:.1}"),
        Some(u_s / u_d),
        "≤ 0.05× direct",
        Some(u_s <= 0.05 * u_d),
    ));
    raw.insert("billing".into(), json!({ "snippet": { "requests": sb.sent, "doMessages": s_msgs, "doHttp": s_http }, "direct": { "requests": db_.sent, "doHttp": d_http } }));

    // 6b. The same HTTP through a forwarding Worker (a binding per request).
    crate::bench_forward::run(&stack, &mut rows, &mut raw, opts.round_trips).await?;

    // 7. What the front door costs: one snippet with ALLOW_ANONYMOUS=true (and the same
    // AUTH_SECRET), so the same isolate and upstream serve requests with a token (verified
    // with WebCrypto) and without one (no verification), in alternating rounds.
    say("authentication cost: token vs anonymous on one snippet");
    let anon: Worker = tokio::task::block_in_place(|| {
        stack.extra_snippet("anon", &[UNLIMITED, &[("ALLOW_ANONYMOUS", "true")]].concat())
    })?;
    let anon_rpc = format!("{}/rpc", anon.http());
    let seq_http = |token: Option<String>| LoadOpts {
        clients: 1,
        messages: opts.round_trips,
        method: Method::Ping,
        token,
        ..LoadOpts::new(anon_rpc.clone())
    };
    // Each sequential request or upgrade with a token never seen before (the signature is
    // checked every time), with one token reused (checked once, then cached), and with none.
    let n = opts.round_trips.min(300) as usize;
    let fresh = |i: usize| stack.mint(&format!("bench-{i}-{}", fastrand::u64(..)), "*", "read write", 3600);
    let _warm = run_load(seq_http(ctok.clone())).await?;
    let (mut http_fresh, mut http_reused, mut http_anon) = (Vec::new(), Vec::new(), Vec::new());
    let (mut up_fresh, mut up_reused, mut up_anon) = (Vec::new(), Vec::new(), Vec::new());
    let anon_ws = format!("{}/ws/echo", anon.ws());
    for _ in 0..opts.rounds.max(1) {
        let tokens: Vec<String> = (0..n).map(fresh).collect();
        http_fresh.push(http_p50(&anon_rpc, tokens.iter().map(|t| Some(t.as_str()))).await?);
        http_reused.push(http_p50(&anon_rpc, (0..n).map(|_| ctok.as_deref())).await?);
        http_anon.push(http_p50(&anon_rpc, (0..n).map(|_| None)).await?);
        let tokens: Vec<String> = (0..n).map(fresh).collect();
        up_fresh.push(upgrade_p50(&anon_ws, tokens.iter().map(|t| Some(t.as_str()))).await?);
        up_reused.push(upgrade_p50(&anon_ws, (0..n).map(|_| ctok.as_deref())).await?);
        up_anon.push(upgrade_p50(&anon_ws, (0..n).map(|_| None)).await?);
    }
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    for (what, with, without) in [
        ("HTTP /rpc p50, sequential: a new JWT each request (verified) vs anonymous", &http_fresh, &http_anon),
        ("HTTP /rpc p50, sequential: one JWT reused (verified once, cached) vs anonymous", &http_reused, &http_anon),
        ("WebSocket upgrade p50, sequential: a new JWT each upgrade (verified) vs anonymous", &up_fresh, &up_anon),
        ("WebSocket upgrade p50, sequential: one JWT reused vs anonymous", &up_reused, &up_anon),
    ] {
        let (w, a) = (med(with), med(without));
        rows.push(row(
            what,
            format!("{w:.3} ms"),
            format!("{a:.3} ms"),
            Some(w / a.max(1e-9)),
            "≤ +0.1 ms",
            Some(w - a <= 0.1),
        ));
    }
    raw.insert(
        "auth".into(),
        json!({
            "httpP50Ms": { "fresh": http_fresh, "reused": http_reused, "anonymous": http_anon },
            "upgradeP50Ms": { "fresh": up_fresh, "reused": up_reused, "anonymous": up_anon },
        }),
    );
    drop(anon);

    // 7b. Identity providers: each algorithm's verification, and a key set's first fetch.
    say("identity providers: verification cost per algorithm");
    crate::bench_idp::run(&stack, &mut rows, &mut raw, n).await?;

    // 8. Many tenants: connections, eviction churn, memory per stream and per upstream.
    crate::bench_pool::run(&stack, &mut rows, &mut raw).await?;

    // 8b. Resumable sessions: what they cost, and idle clients.
    crate::bench_sessions::run(&stack, &mut rows, &mut raw, opts.round_trips).await?;

    // 9. Sizes and cold start.
    let (sr, sg) = wasm_size(&root, "snippet")?;
    let (br, bg) = wasm_size(&root, "backend-do")?;
    rows.push(row(
        "wasm size (snippet vs backend-do), gzip",
        format!("{:.1} KB", sg as f64 / 1000.0),
        format!("{:.1} KB", bg as f64 / 1000.0),
        None,
        "snippet ≤ 100 KB gzip",
        Some(sg <= 100_000),
    ));
    rows.push(row(
        "wasm size (snippet vs backend-do), raw",
        format!("{:.1} KB", sr as f64 / 1000.0),
        format!("{:.1} KB", br as f64 / 1000.0),
        None,
        "",
        None,
    ));
    let (snippet_cold_ms, direct_cold_ms) = (snippet_cold.as_secs_f64() * 1000.0, direct_cold.as_secs_f64() * 1000.0);
    rows.push(ms_row("cold start: first reply after the runtime is ready", snippet_cold_ms, direct_cold_ms, "", None));
    drop(unbatched);

    let report = BenchReport { machine: machine(), rows, raw: Value::Object(raw) };
    std::fs::create_dir_all(&opts.out)?;
    let json_path = opts.out.join("bench.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    say(&format!("wrote {}", json_path.display()));
    if opts.markdown {
        let md = root.join("BENCHMARKS.md");
        // Hand-written analysis below the marker survives regeneration.
        let notes = std::fs::read_to_string(&md)
            .ok()
            .and_then(|old| old.find(NOTES_MARKER).map(|i| old[i..].to_owned()))
            .unwrap_or_else(|| format!("{NOTES_MARKER}\n"));
        std::fs::write(&md, format!("{}\n{notes}", markdown(&report)))?;
        say(&format!("wrote {}", md.display()));
    }
    Ok(report)
}

/// Median time of sequential JSON-RPC pings over HTTP (one connection kept alive), one per
/// token given (`None`: no token).
pub(crate) async fn http_p50<'a>(url: &str, tokens: impl Iterator<Item = Option<&'a str>>) -> Result<f64> {
    let client = reqwest::Client::new();
    let mut times = Vec::new();
    for token in tokens {
        let mut req = client.post(url).json(&json!({ "jsonrpc": "2.0", "method": "ping", "id": 1 }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let started = Instant::now();
        let res = req.send().await?;
        let status = res.status();
        let _ = res.bytes().await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(status.is_success(), "POST {url}: HTTP {status}");
    }
    times.sort_by(f64::total_cmp);
    Ok(times.get(times.len() / 2).copied().unwrap_or(0.0))
}

/// Median time of sequential WebSocket upgrades (TCP connect to the 101 response), one per
/// token given, each closed again at once.
async fn upgrade_p50<'a>(url: &str, tokens: impl Iterator<Item = Option<&'a str>>) -> Result<f64> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut times = Vec::new();
    for token in tokens {
        let mut req = url.into_client_request()?;
        if let Some(t) = token {
            req.headers_mut().insert("Authorization", format!("Bearer {t}").parse()?);
        }
        let started = Instant::now();
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        let _ = ws.close(None).await;
    }
    times.sort_by(f64::total_cmp);
    Ok(times.get(times.len() / 2).copied().unwrap_or(0.0))
}

/// Opens `clients` WebSockets, has each send one message, and reads how many sockets the
/// Durable Object of `tenant` holds while they are all open.
async fn connections_seen(
    stack: &Stack,
    url: &str,
    token: Option<String>,
    tenant: &str,
    clients: usize,
) -> Result<u64> {
    let sockets = crate::bench_pool::open_clients(url, token.as_deref(), clients).await?;
    let seen = crate::bench_pool::sockets_at(stack, &[tenant.to_owned()]).await?;
    crate::bench_pool::close_all(sockets).await;
    Ok(seen)
}

/// Everything after this line in BENCHMARKS.md is kept when the table is regenerated.
pub const NOTES_MARKER: &str = "<!-- notes: kept when ./x bench regenerates the table above -->";

/// The report as the BENCHMARKS.md page.
pub fn markdown(r: &BenchReport) -> String {
    let mut s = String::from("# Benchmarks\n\n");
    let _ = writeln!(s, "Measured by `./x bench` (which runs `test-client bench --markdown`) on: {}.\n", r.machine);
    s.push_str("Every pair was measured in the same run against the same backend; a run with any error fails the benchmark instead of reporting a figure. Throughput pairs alternate over several rounds and show the median round. \"Direct\" means the client talks to backend-do itself (WebSocket `/db/{name}/echo`, HTTP `/db/{name}/rpc`).\n\n");
    s.push_str("| measure | snippet | direct / baseline | ratio | target | met |\n|---|---|---|---|---|---|\n");
    for row in &r.rows {
        let ratio = row.ratio.map(|x| format!("{x:.2}×")).unwrap_or_default();
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let _ =
            writeln!(s, "| {} | {} | {} | {} | {} | {} |", row.name, row.snippet, row.direct, ratio, row.target, met);
    }
    s.push_str("\nRaw figures (every load report, DO counters): `bench-results/bench.json`.\n");
    s
}

/// Text table for the terminal.
pub fn text(r: &BenchReport) -> String {
    let mut s = format!("machine: {}\n\n", r.machine);
    for row in &r.rows {
        let ratio = row.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default();
        let met = match row.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        let _ =
            writeln!(s, "{:<80} {:>14} {:>14} {:>8}  {} {}", row.name, row.snippet, row.direct, ratio, row.target, met);
    }
    s
}
