//! `GET /__metrics`: this isolate's figures in the Prometheus text exposition format,
//! version 0.0.4. Pure: [`render`] reads the core's counters and the few figures only the
//! glue has ([`GlueFigures`]) and returns the document; the glue routes and guards it.
//!
//! Every sample carries `isolate="<id>"` (the `isolateId` of `/__stats`): each isolate
//! counts from its own start, so a scraper reaching several isolates through one address
//! must tell their series apart, and a new id is a counter reset. Per-tenant series carry
//! `tenant="<name>"` too, for at most [`MAX_LISTED_UPSTREAMS`] upstreams (the most recently
//! used), which bounds the document and the series a scraper stores.

pub use protocol::exposition::CONTENT_TYPE;
use protocol::exposition::{seconds, Exposition, Kind};

use crate::stats::RttHistogram;
use crate::{Counters, Mux, MAX_LISTED_UPSTREAMS};

/// Figures the core does not hold, read by the glue when it renders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlueFigures {
    /// When the isolate started (ms since the epoch).
    pub started_at_ms: u64,
    /// Size of the instance's WASM linear memory.
    pub wasm_memory_bytes: u64,
    /// Fetches of remote key sets (`AUTH_JWKS_URL`) started.
    pub jwks_fetches: u64,
    /// Of those, failed.
    pub jwks_fetch_failures: u64,
    /// Keys the remote sets hold now.
    pub jwks_keys: u64,
    /// Tasks of the snippet's executor alive now.
    pub live_tasks: u64,
}

/// Isolate-wide counters taken straight from [`Counters`]: name, help, value.
type CounterOf = fn(&Counters) -> u64;

const COUNTERS: [(&str, &str, CounterOf); 26] = [
    ("snippet_proxy_requests_total", "Requests that reached the snippet (any route).", |c| c.requests_handled),
    ("snippet_proxy_ws_upgrades_total", "Client WebSockets accepted.", |c| c.ws_streams_opened),
    ("snippet_proxy_http_proxied_total", "HTTP requests taken for a backend.", |c| c.http_streams_opened),
    ("snippet_proxy_backend_connects_total", "Upstreams that came up for a tenant that had none.", |c| {
        c.backend_connects
    }),
    (
        "snippet_proxy_backend_reconnects_total",
        "Of the backend connects, those for a tenant that had had an upstream before.",
        |c| c.backend_reconnects,
    ),
    ("snippet_proxy_backend_disconnects_total", "Open upstreams that went down.", |c| c.backend_disconnects),
    ("snippet_proxy_connect_attempts_total", "Upstream connection attempts started.", |c| c.connect_attempts),
    (
        "snippet_proxy_fallbacks_total",
        "HTTP requests sent to the backend directly because no upstream could carry them.",
        |c| c.fallbacks,
    ),
    ("snippet_proxy_timeouts_total", "HTTP requests answered 504 for want of a reply.", |c| c.timeouts),
    ("snippet_proxy_handovers_total", "Upstream owner hand-overs completed.", |c| c.handovers),
    (
        "snippet_proxy_retirements_total",
        "Upstreams closed when a bounded owner's lifetime ended and nobody could take them over.",
        |c| c.retirements,
    ),
    ("snippet_proxy_abandoned_requests_total", "HTTP requests whose context never collected the reply.", |c| {
        c.abandoned_requests
    }),
    ("snippet_proxy_watchdog_trips_total", "Upstreams the watchdog declared dead.", |c| c.watchdog_trips),
    (
        "snippet_proxy_heartbeat_failures_total",
        "Upstreams dropped for an unanswered heartbeat or idle-check ping.",
        |c| c.heartbeat_failures,
    ),
    ("snippet_proxy_upstream_pings_total", "Text pings sent on upstreams (heartbeat, idle check, keep-warm).", |c| {
        c.upstream_pings
    }),
    ("snippet_proxy_edge_pongs_total", "Session clients' pings answered by the snippet itself.", |c| c.edge_pongs),
    (
        "snippet_proxy_sessions_reattached_total",
        "Session streams re-opened on a new upstream after theirs was lost.",
        |c| c.sessions_reattached,
    ),
    (
        "snippet_proxy_reattach_timeouts_total",
        "Session streams that waited REATTACH_MS for a new upstream in vain.",
        |c| c.reattach_timeouts,
    ),
    (
        "snippet_proxy_dropped_deliveries_total",
        "Backend messages for clients that had left or were over their reply rate.",
        |c| c.dropped_deliveries,
    ),
    ("snippet_proxy_errors_total", "Errors: upstreams lost, backend error frames, failures the snippet logged.", |c| {
        c.errors
    }),
    (
        "snippet_proxy_refused_total",
        "Clients and requests refused for a full isolate or a caller's connection limit.",
        |c| c.refused,
    ),
    ("snippet_proxy_rate_limited_total", "Messages and requests refused for a rate limit.", |c| c.rate_limited),
    ("snippet_proxy_pool_evictions_total", "Idle upstreams closed to free a slot or after their idle TTL.", |c| {
        c.pool_evictions
    }),
    ("snippet_proxy_pool_refusals_total", "Streams refused because every upstream slot was busy.", |c| c.pool_refusals),
    ("snippet_proxy_keep_warm_pings_total", "Keep-warm pings queued by cron rounds.", |c| c.keep_warm_pings),
    ("snippet_proxy_keep_warm_pongs_total", "Keep-warm pings answered.", |c| c.keep_warm_pongs),
];

/// Counters split by a `direction` label: name, help, and (direction, value) pairs.
type Directed = (&'static str, &'static str, [(&'static str, CounterOf); 2]);

const DIRECTED: [Directed; 5] = [
    (
        "snippet_proxy_messages_total",
        "Client messages: up, from clients to backends; down, from backends to clients.",
        [("up", |c| c.messages_up), ("down", |c| c.messages_down)],
    ),
    (
        "snippet_proxy_message_bytes_total",
        "Payload bytes of those messages.",
        [("up", |c| c.bytes_up), ("down", |c| c.bytes_down)],
    ),
    (
        "snippet_proxy_upstream_batches_total",
        "Upstream WebSocket messages (batches of frames): out, sent; in, received.",
        [("out", |c| c.batches_sent), ("in", |c| c.batches_received)],
    ),
    (
        "snippet_proxy_upstream_frames_total",
        "Frames inside those batches.",
        [("out", |c| c.frames_sent), ("in", |c| c.frames_received)],
    ),
    (
        "snippet_proxy_upstream_bytes_total",
        "Bytes on the upstreams, framing included.",
        [("out", |c| c.upstream_bytes_out), ("in", |c| c.upstream_bytes_in)],
    ),
];

/// A histogram of round trips in seconds: cumulative `_bucket`s ending with `+Inf`,
/// `_sum` (seconds) and `_count`.
fn histogram(e: &mut Exposition, name: &str, help: &str, h: &RttHistogram) {
    e.family(name, Kind::Histogram, help);
    let bucket = format!("{name}_bucket");
    for (le, n) in h.cumulative() {
        e.sample(&bucket, &[("le", le)], &n.to_string());
    }
    e.sample(&format!("{name}_sum"), &[], &seconds(h.sum_ms()));
    e.sample(&format!("{name}_count"), &[], &h.count().to_string());
}

/// The whole `/__metrics` document of isolate `isolate`.
pub fn render(isolate: &str, mux: &Mux, now: u64, glue: &GlueFigures) -> String {
    let c = mux.counters();
    let mut e = Exposition::new("isolate", isolate);
    for (name, help, of) in COUNTERS {
        e.single(name, Kind::Counter, help, of(c));
    }
    for (name, help, pairs) in DIRECTED {
        e.family(name, Kind::Counter, help);
        for (direction, of) in pairs {
            e.sample(name, &[("direction", direction)], &of(c).to_string());
        }
    }
    let jwks_fetches = "Fetches of remote key sets (AUTH_JWKS_URL) started.";
    e.single("snippet_proxy_jwks_fetches_total", Kind::Counter, jwks_fetches, glue.jwks_fetches);
    let jwks_failures = "Fetches of remote key sets that failed.";
    e.single("snippet_proxy_jwks_fetch_failures_total", Kind::Counter, jwks_failures, glue.jwks_fetch_failures);

    let (clients, requests) = mux.open_streams();
    let gauges: [(&str, &str, u64); 10] = [
        ("snippet_proxy_active_clients", "Client WebSockets open now.", clients as u64),
        ("snippet_proxy_pending_requests", "HTTP requests in flight now.", requests as u64),
        (
            "snippet_proxy_streams_held",
            "Streams the core holds (clients that left count until their Close is sent).",
            mux.streams_held() as u64,
        ),
        ("snippet_proxy_upstreams_open", "Tenants with an upstream now.", mux.upstreams_open() as u64),
        ("snippet_proxy_max_upstreams", "MAX_UPSTREAMS: the pool's size.", mux.config().max_upstreams as u64),
        (
            "snippet_proxy_sessions_waiting",
            "Session streams waiting for a new upstream now.",
            mux.sessions_waiting() as u64,
        ),
        ("snippet_proxy_callers_tracked", "Callers whose usage is tracked now.", mux.callers_tracked() as u64),
        ("snippet_proxy_wasm_memory_bytes", "Size of the instance's WASM linear memory.", glue.wasm_memory_bytes),
        ("snippet_proxy_jwks_keys", "Keys the remote key sets hold now.", glue.jwks_keys),
        ("snippet_proxy_live_tasks", "Tasks of the snippet's executor alive now.", glue.live_tasks),
    ];
    for (name, help, value) in gauges {
        e.single(name, Kind::Gauge, help, value);
    }
    e.family("snippet_proxy_start_time_seconds", Kind::Gauge, "When this isolate started (seconds since the epoch).");
    e.sample("snippet_proxy_start_time_seconds", &[], &seconds(glue.started_at_ms));

    let rtt = "Round trips of HTTP requests over an upstream, since this isolate started.";
    histogram(&mut e, "snippet_proxy_request_rtt_seconds", rtt, mux.rtt_histogram());

    let upstreams = mux.upstream_stats(now);
    if !upstreams.is_empty() {
        type Of = fn(&crate::UpstreamStats) -> u64;
        let per_tenant: [(&str, Kind, &str, Of); 5] = [
            ("snippet_proxy_upstream_connected", Kind::Gauge, "1 while the tenant's upstream is open.", |u| {
                u64::from(u.connected)
            }),
            ("snippet_proxy_upstream_streams", Kind::Gauge, "Client streams on the tenant's upstream.", |u| {
                u.streams as u64
            }),
            (
                "snippet_proxy_upstream_pending_requests",
                Kind::Gauge,
                "HTTP requests in flight on the tenant's upstream.",
                |u| u.pending as u64,
            ),
            (
                "snippet_proxy_upstream_handovers_total",
                Kind::Counter,
                "Hand-overs of the tenant's upstream (from when it took its pool slot).",
                |u| u.handovers,
            ),
            (
                "snippet_proxy_upstream_errors_total",
                Kind::Counter,
                "Connections lost and error frames on the tenant's upstream (from when it took its pool slot).",
                |u| u.errors,
            ),
        ];
        for (name, kind, help, of) in per_tenant {
            e.family(name, kind, help);
            for u in upstreams.iter().take(MAX_LISTED_UPSTREAMS) {
                e.sample(name, &[("tenant", &u.tenant)], &of(u).to_string());
            }
        }
    }
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn a_histogram_is_cumulative_ends_with_inf_and_sums_in_seconds() {
        let mut h = RttHistogram::default();
        for ms in [3, 7, 7, 1_234, 20_000] {
            h.record(ms);
        }
        let mut e = Exposition::new("isolate", "i");
        histogram(&mut e, "rtt_seconds", "Round trips.", &h);
        let doc = e.finish();
        let lines: Vec<&str> = doc.lines().collect();
        assert_eq!(lines[0], "# HELP rtt_seconds Round trips.");
        assert_eq!(lines[1], "# TYPE rtt_seconds histogram");
        assert_eq!(lines[2], "rtt_seconds_bucket{isolate=\"i\",le=\"0.005\"} 1");
        assert_eq!(lines[3], "rtt_seconds_bucket{isolate=\"i\",le=\"0.01\"} 3");
        assert!(lines.contains(&"rtt_seconds_bucket{isolate=\"i\",le=\"2.5\"} 4"), "{doc}");
        assert!(lines.contains(&"rtt_seconds_bucket{isolate=\"i\",le=\"10\"} 4"), "{doc}");
        let n = RTT_BUCKETS_LEN;
        assert_eq!(lines[2 + n], "rtt_seconds_bucket{isolate=\"i\",le=\"+Inf\"} 5");
        assert_eq!(lines[3 + n], "rtt_seconds_sum{isolate=\"i\"} 21.251");
        assert_eq!(lines[4 + n], "rtt_seconds_count{isolate=\"i\"} 5");
        assert_eq!(lines.len(), 5 + n);
    }

    const RTT_BUCKETS_LEN: usize = crate::RTT_BUCKETS.len();

    #[test]
    fn the_document_has_help_and_type_for_every_family_and_counters_end_in_total() {
        let mux = Mux::new(Config::default());
        let glue = GlueFigures { started_at_ms: 1_700_000_000_123, wasm_memory_bytes: 65_536, ..Default::default() };
        let doc = render("iso-1", &mux, 0, &glue);
        let mut family: Option<(String, String)> = None;
        let mut helped = std::collections::BTreeSet::new();
        for line in doc.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_owned();
                assert!(helped.insert(name.clone()), "{name} twice");
                family = Some((name, String::new()));
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                let f = family.as_mut().unwrap();
                assert_eq!(f.0, name);
                f.1 = kind.to_owned();
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                }
            } else {
                let (name, _) = line.split_once('{').unwrap();
                let (fam, kind) = family.as_ref().unwrap();
                assert!(!kind.is_empty(), "{fam} has no TYPE");
                let ok = name == fam || (kind == "histogram" && name.strip_prefix(fam.as_str()).is_some());
                assert!(ok, "{name} outside its family {fam}");
                assert!(line.contains("{isolate=\"iso-1\""), "{line}");
            }
        }
        assert!(doc.contains("snippet_proxy_requests_total{isolate=\"iso-1\"} 0\n"), "{doc}");
        assert!(doc.contains("snippet_proxy_messages_total{isolate=\"iso-1\",direction=\"up\"} 0\n"));
        assert!(doc.contains("snippet_proxy_wasm_memory_bytes{isolate=\"iso-1\"} 65536\n"));
        assert!(doc.contains("snippet_proxy_start_time_seconds{isolate=\"iso-1\"} 1700000000.123\n"));
        assert!(doc.contains("snippet_proxy_request_rtt_seconds_count{isolate=\"iso-1\"} 0\n"));
        assert!(!doc.contains("tenant="), "no upstream, no per-tenant series");
    }

    #[test]
    fn upstreams_get_per_tenant_series() {
        let mut sim = crate::sim::Sim::new(Config::default());
        let a = sim.client("acme", "/echo");
        sim.send(a, "hi");
        sim.run();
        let doc = render("i", &sim.mux, sim.now, &GlueFigures::default());
        assert!(doc.contains("snippet_proxy_upstream_connected{isolate=\"i\",tenant=\"acme\"} 1\n"), "{doc}");
        assert!(doc.contains("snippet_proxy_upstream_streams{isolate=\"i\",tenant=\"acme\"} 1\n"), "{doc}");
        assert!(doc.contains("snippet_proxy_ws_upgrades_total{isolate=\"i\"} 1\n"), "{doc}");
        assert!(doc.contains("snippet_proxy_messages_total{isolate=\"i\",direction=\"up\"} 1\n"), "{doc}");
    }
}
