//! `GET /__stats`: what this isolate is doing, as JSON.

use std::fmt::Write;

use mux_core::json_string;
use mux_core::log::{Level, Line};
use mux_core::metrics::GlueFigures;

use crate::executor;
use crate::js;
use crate::state;

/// Renders the stats document: isolate-wide totals across every upstream, then the
/// upstreams one by one (the most recently used first, at most
/// [`mux_core::MAX_LISTED_UPSTREAMS`]).
pub fn render() -> String {
    let now_ms = js::now_ms();
    let now = js::now();
    state::with(|s| {
        let m = &s.mux;
        let c = m.counters();
        let (ws, http) = m.open_streams();
        let upstreams = m.upstream_stats(now);
        let uptime = (now_ms - s.started_at).max(0.0);
        let rps = if uptime > 0.0 { c.requests_handled as f64 * 1000.0 / uptime } else { 0.0 };
        let frames_per_batch = if c.batches_sent > 0 { c.frames_sent as f64 / c.batches_sent as f64 } else { 0.0 };
        let mut out = String::with_capacity(1024 + 200 * upstreams.len());
        out.push('{');
        let mut field = |name: &str, value: String| {
            if out.len() > 1 {
                out.push(',');
            }
            let _ = write!(out, "\"{name}\":{value}");
        };
        field("isolateId", json_string(&s.isolate_id));
        field("startedAt", (s.started_at as u64).to_string());
        field("uptimeMs", format!("{}", uptime as u64));
        field("requestsHandled", c.requests_handled.to_string());
        field("wsUpgrades", c.ws_streams_opened.to_string());
        field("httpProxied", c.http_streams_opened.to_string());
        field("messagesProxied", (c.messages_up + c.messages_down).to_string());
        field("messagesUp", c.messages_up.to_string());
        field("messagesDown", c.messages_down.to_string());
        field("backendConnects", c.backend_connects.to_string());
        field("backendReconnects", c.backend_reconnects.to_string());
        field("backendDisconnects", c.backend_disconnects.to_string());
        field("connectAttempts", c.connect_attempts.to_string());
        field("fallbacks", c.fallbacks.to_string());
        field("timeouts", c.timeouts.to_string());
        let (rtt50, rtt99) = match m.rtt_percentiles() {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => ("null".into(), "null".into()),
        };
        field("upstreamRttP50Ms", rtt50);
        field("upstreamRttP99Ms", rtt99);
        field("batching", m.config().batching.to_string());
        field("backendConnected", upstreams.iter().any(|u| u.connected).to_string());
        field("activeClients", ws.to_string());
        field("pendingRequests", http.to_string());
        field("streamsHeld", m.streams_held().to_string());
        field("requestsPerSecond", fixed2(rps));
        field("errors", c.errors.to_string());
        // Remote key sets (AUTH_JWKS_URL): fetches started, failed, keys held now.
        let sets = crate::jwks::totals();
        field("jwksFetches", sets.fetches.to_string());
        field("jwksFetchFailures", sets.failures.to_string());
        field("jwksKeys", sets.keys.to_string());
        // The most recently used upstream's owner (each upstream's is in `upstreams`).
        let owner = upstreams.first().map_or(mux_core::OwnerKind::None, |u| u.owner);
        field("ownerKind", json_string(owner.as_str()));
        field("handovers", c.handovers.to_string());
        field("retirements", c.retirements.to_string());
        field("abandonedRequests", c.abandoned_requests.to_string());
        field("watchdogTrips", c.watchdog_trips.to_string());
        field("heartbeatFailures", c.heartbeat_failures.to_string());
        field("upstreamPings", c.upstream_pings.to_string());
        // Sessions (PROTOCOL.md §14): pings answered here, streams re-attached after an
        // upstream was lost, those that waited in vain, and those waiting now.
        field("edgePongs", c.edge_pongs.to_string());
        field("sessionsReattached", c.sessions_reattached.to_string());
        field("reattachTimeouts", c.reattach_timeouts.to_string());
        field("sessionsWaiting", m.sessions_waiting().to_string());
        field("batchesSent", c.batches_sent.to_string());
        field("framesSent", c.frames_sent.to_string());
        field("framesPerBatch", fixed2(frames_per_batch));
        field("batchesReceived", c.batches_received.to_string());
        field("framesReceived", c.frames_received.to_string());
        field("bytesIn", c.upstream_bytes_in.to_string());
        field("bytesOut", c.upstream_bytes_out.to_string());
        field("droppedDeliveries", c.dropped_deliveries.to_string());
        field("refused", c.refused.to_string());
        field("rateLimited", c.rate_limited.to_string());
        field("callersTracked", m.callers_tracked().to_string());
        field("upstreamsOpen", m.upstreams_open().to_string());
        field("maxUpstreams", m.config().max_upstreams.to_string());
        field("poolEvictions", c.pool_evictions.to_string());
        field("poolRefusals", c.pool_refusals.to_string());
        field("keepWarmPings", c.keep_warm_pings.to_string());
        field("keepWarmPongs", c.keep_warm_pongs.to_string());
        field("wakePromises", executor::wake_promises_created().to_string());
        field("liveTasks", executor::live_tasks().to_string());
        // Who holds the core's timer, and when it and the next deadline fall (ms from now).
        let ms_from_now = |t: Option<u64>| t.map_or("null".into(), |t| (t as i64 - now as i64).to_string());
        field("timerHolders", s.keeper.holders().to_string());
        field("timerKeeper", s.keeper.keeper().map_or("null".into(), |k| json_string(&k.to_string())));
        field("timerDueInMs", ms_from_now(s.keeper.armed()));
        field("nextDeadlineInMs", ms_from_now(m.poll_timeout()));
        field("wasmMemoryBytes", wasm_memory_bytes().to_string());
        field("lastError", m.last_error().map(json_string).unwrap_or_else(|| "null".into()));
        let list: Vec<String> = upstreams.iter().map(upstream_json).collect();
        field("upstreams", format!("[{}]", list.join(",")));
        out.push('}');
        out
    })
}

/// `GET /__metrics`: the same figures for Prometheus (`mux_core::metrics`).
pub fn metrics() -> String {
    let now = js::now();
    let sets = crate::jwks::totals();
    state::with(|s| {
        let glue = GlueFigures {
            started_at_ms: s.started_at.max(0.0) as u64,
            wasm_memory_bytes: wasm_memory_bytes(),
            jwks_fetches: sets.fetches,
            jwks_fetch_failures: sets.failures,
            jwks_keys: sets.keys as u64,
            live_tasks: executor::live_tasks() as u64,
        };
        mux_core::metrics::render(&s.isolate_id, &s.mux, now, &glue)
    })
}

/// The log line that sums up cron round `round` of this isolate: what it pinged and what
/// answered (`pongs_before`: the answers counted before it began), and the isolate's
/// state after it, so the platform's log search shows every isolate's health once a
/// round without anyone scraping.
pub fn round_summary(round: u32, pinged: u64, pongs_before: u64) -> Line {
    state::with(|s| {
        let m = &s.mux;
        let c = m.counters();
        let (clients, requests) = m.open_streams();
        let new_errors = c.errors.saturating_sub(s.errors_at_last_round);
        s.errors_at_last_round = c.errors;
        let uptime = (js::now_ms() - s.started_at).max(0.0) as u64;
        Line::new(Level::Info, "cron round")
            .str("isolate", &s.isolate_id)
            .num("round", u64::from(round))
            .num("pinged", pinged)
            .num("answered", c.keep_warm_pongs.saturating_sub(pongs_before))
            .num("upstreams", m.upstreams_open() as u64)
            .num("clients", clients as u64)
            .num("pendingRequests", requests as u64)
            .num("streamsHeld", m.streams_held() as u64)
            .num("errors", c.errors)
            .num("errorsSinceLastRound", new_errors)
            .num("requestsHandled", c.requests_handled)
            .num("uptimeMs", uptime)
            .num("wasmMemoryBytes", wasm_memory_bytes())
    })
}

fn upstream_json(u: &mux_core::UpstreamStats) -> String {
    format!(
        "{{\"tenant\":{},\"connected\":{},\"streams\":{},\"pending\":{},\"ownerKind\":{},\"idleMs\":{},\
         \"rttP50Ms\":{},\"handovers\":{},\"errors\":{}}}",
        json_string(&u.tenant),
        u.connected,
        u.streams,
        u.pending,
        json_string(u.owner.as_str()),
        u.idle_ms,
        u.rtt_p50_ms.map_or_else(|| "null".to_owned(), |v| v.to_string()),
        u.handovers,
        u.errors
    )
}

/// Size of this instance's WASM linear memory: it only grows, so a steady value under
/// load means the snippet's own buffers are bounded.
fn wasm_memory_bytes() -> u64 {
    use wasm_bindgen::JsCast;
    let memory = wasm_bindgen::memory().unchecked_into::<js_sys::WebAssembly::Memory>();
    memory.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as u64
}

/// `x` with two decimals, by integer arithmetic: float formatting would add ~11 KB of
/// wasm for two fields.
fn fixed2(x: f64) -> String {
    let hundredths = (x.max(0.0) * 100.0).round() as u64;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}
