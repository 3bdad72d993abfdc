//! `GET /__stats`: what this isolate is doing, as JSON.

use std::fmt::Write;

use mux_core::{json_string, Upstream};

use crate::executor;
use crate::js;
use crate::state;

/// Renders the stats document.
pub fn render() -> String {
    let now = js::now_ms();
    state::with(|s| {
        let c = s.mux.counters();
        let (ws, http) = s.mux.open_streams();
        let uptime = (now - s.started_at).max(0.0);
        let rps = if uptime > 0.0 { s.requests_handled as f64 * 1000.0 / uptime } else { 0.0 };
        let frames_per_batch = if c.batches_sent > 0 { c.frames_sent as f64 / c.batches_sent as f64 } else { 0.0 };
        let mut out = String::with_capacity(1024);
        out.push('{');
        let mut field = |name: &str, value: String| {
            if out.len() > 1 {
                out.push(',');
            }
            let _ = write!(out, "\"{name}\":{value}");
        };
        field("isolateId", json_string(&s.isolate_id));
        field("startedAt", json_string(&iso8601(s.started_at)));
        field("uptimeMs", format!("{}", uptime as u64));
        field("requestsHandled", s.requests_handled.to_string());
        field("wsUpgrades", s.ws_upgrades.to_string());
        field("httpProxied", c.http_streams_opened.to_string());
        field("messagesProxied", (c.messages_up + c.messages_down).to_string());
        field("messagesUp", c.messages_up.to_string());
        field("messagesDown", c.messages_down.to_string());
        field("backendConnects", c.backend_connects.to_string());
        field("backendReconnects", c.backend_reconnects.to_string());
        field("backendDisconnects", c.backend_disconnects.to_string());
        field("connectAttempts", c.connect_attempts.to_string());
        field("fallbacks", s.fallbacks.to_string());
        field("timeouts", c.timeouts.to_string());
        let (rtt50, rtt99) = match s.mux.rtt_percentiles() {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => ("null".into(), "null".into()),
        };
        field("upstreamRttP50Ms", rtt50);
        field("upstreamRttP99Ms", rtt99);
        field("batching", s.mux.config().batching.to_string());
        field("backendConnected", (s.mux.upstream() == Upstream::Up).to_string());
        field("activeClients", ws.to_string());
        field("pendingRequests", http.to_string());
        field("requestsPerSecond", fixed2(rps));
        field("errors", c.errors.to_string());
        field("ownerKind", json_string(s.mux.owner().as_str()));
        field("handovers", c.handovers.to_string());
        field("watchdogTrips", c.watchdog_trips.to_string());
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
        field("callersTracked", s.mux.callers_tracked().to_string());
        field("wakePromises", executor::wake_promises_created().to_string());
        field("liveTasks", executor::live_tasks().to_string());
        field("wasmMemoryBytes", wasm_memory_bytes().to_string());
        field("lastError", s.last_error.as_deref().map(json_string).unwrap_or_else(|| "null".into()));
        out.push('}');
        out
    })
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

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from ms since the epoch.
fn iso8601(ms: f64) -> String {
    String::from(js_sys::Date::new(&ms.into()).to_iso_string())
}
