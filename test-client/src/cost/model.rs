//! The arithmetic of the cost model: what a workload uses in a month under each design,
//! and what that costs. Pure functions; COST.md explains every term.

use serde::Serialize;

use super::prices::{self, at, over, MONTH_SECS};

/// The workload, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// Client WebSockets connected at any time.
    pub clients: f64,
    /// Messages each active client sends per minute.
    pub messages_per_minute: f64,
    /// Share of the clients that are idle (connected, sending nothing), 0–1.
    pub idle_share: f64,
    /// Tenants, one Durable Object each.
    pub tenants: f64,
    /// Edge isolates serving each tenant (each opens its own upstream to it).
    pub isolates: f64,
    /// HTTP requests per minute, all tenants together.
    pub http_per_minute: f64,
    /// Messages the object sends to clients per client message (1: a reply to the
    /// sender; above 1, spread over every client alike, as a broadcast to a room).
    pub fanout: f64,
    /// How often each client connects again per day.
    pub connects_per_day: f64,
    /// Whether the clients use the client library's sessions through the snippet (its
    /// default): resumable, heartbeats answered at the edge, messages kept until
    /// acknowledged. Without, plain WebSocket clients whose heartbeats reach the object.
    pub sessions: bool,
}

/// The model's other inputs: measured by the benchmark, given as flags, or built in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inputs {
    /// Snippet CPU per relayed frame with batching on, at `batch_max` frames per message (µs).
    pub cpu_batched_us: f64,
    /// The same at one frame per message (µs).
    pub cpu_unbatched_us: f64,
    /// Frames per upstream message at the benchmark's load.
    pub batch_max: f64,
    /// Frames per second up one upstream at that load.
    pub batch_rate: f64,
    /// Frames per upstream message, if given; else derived from the load.
    pub frames_per_batch: Option<f64>,
    /// Session storage rows written per echo.
    pub rows_per_echo: f64,
    /// Object wakes per idle client-hour through the snippet.
    pub idle_wakes_snippet: f64,
    /// Object wakes per idle client-hour straight to the object.
    pub idle_wakes_direct: f64,
    /// Worker CPU per request or upgrade (ms).
    pub worker_cpu_ms_per_request: f64,
    /// The object's wall time per client message or HTTP request: the application's work (ms).
    pub object_ms_per_message: f64,
    /// The object's wall time per event it is invoked for, beyond that work (ms).
    pub object_ms_per_event: f64,
    /// The client library's heartbeat interval (s).
    pub heartbeat_secs: f64,
}

/// How long an HTTP request's context may own an upstream (the snippet's
/// `OWNER_LIFETIME_MS` default): an upstream only HTTP requests use is replaced this often.
pub const OWNER_LIFETIME_SECS: f64 = 20.0;
/// The client library acknowledges after this many unacknowledged messages…
pub const ACK_AFTER_MESSAGES: f64 = 32.0;
/// …or this long after the first (PROTOCOL.md §14.4), unless it sends data first.
pub const ACK_AFTER_SECS: f64 = 2.0;
/// The snippet's keep-warm cron runs once a minute (`wrangler.toml`).
pub const CRON_RUNS_PER_MONTH: f64 = MONTH_SECS / 60.0;
/// Session rows are written per input of the object, not per delivery: one journal
/// record per client message taken (its replies and broadcasts, each payload once,
/// inside), deleted once acknowledged and superseded (do-server `sessions/journal.rs`).
/// The measured rows per echo (2: the record and, later, its deletion) is that per
/// client message; a stand-alone acknowledgement writes nothing of its own.
/// A stream's record, written then deleted (do-server; counted from the code, not
/// measured). Also per stream re-opened on a new upstream.
pub const ROWS_PER_STREAM: f64 = 2.0;
/// A session's summary, written when it begins and deleted when it ends (do-server;
/// counted from the code). A session client has no stream record.
pub const ROWS_PER_SESSION: f64 = 2.0;
/// An upstream socket's record and its hand-over barrier, each written then deleted
/// (at most; counted from the code).
pub const ROWS_PER_UPSTREAM: f64 = 4.0;

/// What one design uses in a month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Worker requests (upgrades and HTTP requests included).
    pub worker_requests: f64,
    /// Worker CPU (ms).
    pub worker_cpu_ms: f64,
    /// Durable Object requests as billed: upgrades, HTTP requests, and incoming
    /// WebSocket messages at 20:1.
    pub do_requests: f64,
    /// Incoming WebSocket messages at the objects (before the 20:1).
    pub do_ws_messages: f64,
    /// Times an object is invoked (each may wake it): upgrades and closes, HTTP
    /// requests, incoming WebSocket messages, wakes of idle clients.
    pub do_events: f64,
    /// Durable Object duration (GB-s).
    pub do_gb_s: f64,
    /// SQLite rows written (session storage; the application's own rows are not counted).
    pub rows_written: f64,
}

/// What a month's usage costs (USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Costs {
    /// Worker requests.
    pub worker_requests: f64,
    /// Worker CPU.
    pub worker_cpu: f64,
    /// Durable Object requests.
    pub do_requests: f64,
    /// Durable Object duration.
    pub do_duration: f64,
    /// Storage rows written.
    pub rows_written: f64,
    /// The sum.
    pub total: f64,
}

impl Usage {
    /// Every unit at list price, no allotment: what the workload adds to an account
    /// that already uses its included usage. Designs are compared on this.
    pub fn at_list_price(&self) -> Costs {
        Costs::of([
            at(self.worker_requests, prices::WORKER_REQUEST_USD_PER_MILLION),
            at(self.worker_cpu_ms, prices::WORKER_CPU_USD_PER_MILLION_MS),
            at(self.do_requests, prices::DO_REQUEST_USD_PER_MILLION),
            at(self.do_gb_s, prices::DO_GB_S_USD_PER_MILLION),
            at(self.rows_written, prices::ROWS_WRITTEN_USD_PER_MILLION),
        ])
    }

    /// The month's bill if this workload were the account's only one: the plan's
    /// minimum, then what exceeds each included allotment.
    pub fn bill_alone(&self) -> Costs {
        let mut c = Costs::of([
            over(self.worker_requests, prices::WORKER_REQUESTS_INCLUDED, prices::WORKER_REQUEST_USD_PER_MILLION),
            over(self.worker_cpu_ms, prices::WORKER_CPU_MS_INCLUDED, prices::WORKER_CPU_USD_PER_MILLION_MS),
            over(self.do_requests, prices::DO_REQUESTS_INCLUDED, prices::DO_REQUEST_USD_PER_MILLION),
            over(self.do_gb_s, prices::DO_GB_S_INCLUDED, prices::DO_GB_S_USD_PER_MILLION),
            over(self.rows_written, prices::ROWS_WRITTEN_INCLUDED, prices::ROWS_WRITTEN_USD_PER_MILLION),
        ]);
        c.total += prices::PLAN_MINIMUM_USD;
        c
    }
}

impl Costs {
    fn of([worker_requests, worker_cpu, do_requests, do_duration, rows_written]: [f64; 5]) -> Costs {
        let total = worker_requests + worker_cpu + do_requests + do_duration + rows_written;
        Costs { worker_requests, worker_cpu, do_requests, do_duration, rows_written, total }
    }
}

/// The quantities on the way to the three designs' usage, so a result can be checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Derived {
    /// Messages clients send in the month.
    pub client_messages: f64,
    /// Messages the objects send to clients.
    pub deliveries: f64,
    /// HTTP requests.
    pub http_requests: f64,
    /// WebSocket upgrades by clients.
    pub connects: f64,
    /// Client library heartbeats (every client, idle or not).
    pub heartbeats: f64,
    /// Upstreams: tenants × isolates.
    pub upstreams: f64,
    /// Clients per upstream.
    pub clients_per_upstream: f64,
    /// Upstream connections opened (hand-overs included).
    pub upstream_connects: f64,
    /// Client streams re-opened on a successor upstream.
    pub reopened_streams: f64,
    /// Stand-alone acknowledgements clients send (those not riding on a message).
    pub standalone_acks: f64,
    /// Frames up the upstreams (client messages, HTTP requests, acks, opens, closes).
    pub frames_up: f64,
    /// Frames down (deliveries, HTTP responses, welcomes).
    pub frames_down: f64,
    /// Frames per second up one upstream.
    pub frames_per_sec_per_upstream: f64,
    /// How long frames gather before a batch leaves, from the benchmark (ms).
    pub coalescing_window_ms: f64,
    /// Frames per upstream message used.
    pub frames_per_batch: f64,
    /// Snippet CPU per relayed frame at that batch size (µs).
    pub cpu_per_frame_us: f64,
    /// Frames per upstream message carrying deliveries down (a broadcast's frames for one
    /// upstream leave together).
    pub delivery_frames_per_batch: f64,
    /// Snippet CPU per delivery relayed (µs).
    pub cpu_per_delivery_us: f64,
    /// Snippet CPU per frame that never goes upstream, e.g. a heartbeat (µs).
    pub cpu_per_edge_frame_us: f64,
    /// Object events the snippet causes that direct clients would not: upstream accepts
    /// and closes, and the upstream messages of stand-alone acks, re-opens and plain
    /// clients' heartbeats.
    pub snippet_only_events: f64,
}

/// The three designs' usage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    /// The quantities on the way.
    pub derived: Derived,
    /// Clients straight to the object: the object's bill alone.
    pub direct: Usage,
    /// A Worker in front forwarding each upgrade and HTTP request through a binding.
    pub forwarding: Usage,
    /// snippet-proxy.
    pub snippet: Usage,
}

/// Stand-alone acks per second from a client that receives `r` messages a second and
/// sends `s`: one per [`ACK_AFTER_MESSAGES`] received or [`ACK_AFTER_SECS`] after the
/// first unacknowledged, whichever comes first, less those riding on its own messages.
pub fn standalone_ack_rate(r: f64, s: f64) -> f64 {
    if r <= 0.0 {
        return 0.0;
    }
    let cycle = 1.0 / r + ACK_AFTER_SECS.min((ACK_AFTER_MESSAGES - 1.0) / r);
    (1.0 / cycle - s).max(0.0)
}

/// Upstream connects per second of an upstream only HTTP requests use, at `r` requests
/// per second: each connection serves [`OWNER_LIFETIME_SECS`] from the request that
/// opened it, then the next request opens another.
pub fn http_owned_connect_rate(r: f64) -> f64 {
    if r <= 0.0 {
        return 0.0;
    }
    r / (1.0 + r * OWNER_LIFETIME_SECS)
}

/// Snippet CPU per frame at `b` frames per upstream message, as `a + β / b` (a cost per
/// frame plus one per upstream message shared by its frames), through the two measured
/// points: `unbatched` at one frame per message, `batched` at `batch_max`. Returns
/// `(per frame at b, a)`.
pub fn cpu_per_frame_us(i: &Inputs, b: f64) -> (f64, f64) {
    let beta = if i.batch_max > 1.0 {
        ((i.cpu_unbatched_us - i.cpu_batched_us) * i.batch_max / (i.batch_max - 1.0)).max(0.0)
    } else {
        0.0
    };
    let a = (i.cpu_unbatched_us - beta).max(0.0);
    (a + beta / b.max(1.0), a)
}

/// The object's billed duration (GB-s) for `events` invocations and `work` messages,
/// at most every object awake all month.
fn gb_s(w: &Workload, i: &Inputs, events: f64, work: f64) -> f64 {
    let awake = (events * i.object_ms_per_event + work * i.object_ms_per_message) / 1000.0;
    awake.min(w.tenants * MONTH_SECS) * prices::DO_MEMORY_GB
}

/// What the workload uses in a month under each design.
pub fn estimate(w: &Workload, i: &Inputs) -> Estimate {
    let secs = MONTH_SECS;
    let minutes = secs / 60.0;
    let hours = secs / 3600.0;
    let active = w.clients * (1.0 - w.idle_share);
    let idle = w.clients - active;
    let msgs = active * w.messages_per_minute * minutes;
    let deliveries = msgs * w.fanout;
    let http = w.http_per_minute * minutes;
    let connects = w.clients * w.connects_per_day * secs / 86_400.0;
    let work = msgs + http;

    // 1. Straight to the object: every upgrade and HTTP request is a request, incoming
    // messages 20:1; heartbeats go to the auto-response (free, no wake). A socket's close
    // is an event too (not a request).
    let direct_events = 2.0 * connects + http + msgs + i.idle_wakes_direct * idle * hours;
    let direct = Usage {
        worker_requests: 0.0,
        worker_cpu_ms: 0.0,
        do_requests: connects + http + msgs / prices::WS_MESSAGES_PER_REQUEST,
        do_ws_messages: msgs,
        do_events: direct_events,
        do_gb_s: gb_s(w, i, direct_events, work),
        rows_written: 0.0,
    };

    // 2. A Worker in front: one Worker request per upgrade and HTTP request (the call
    // through the binding is no second one); the socket is the object's, passed through.
    let forwarding = Usage {
        worker_requests: connects + http,
        worker_cpu_ms: (connects + http) * i.worker_cpu_ms_per_request,
        ..direct
    };

    // 3. snippet-proxy.
    let upstreams = w.tenants * w.isolates;
    let per_upstream = w.clients / upstreams;
    // Share of upstreams a client's context owns; the rest only HTTP requests use.
    let client_owned = per_upstream.min(1.0);
    // A client-owned upstream is handed over when its owner leaves: as often as a client
    // connects again. Each hand-over re-opens the upstream's streams on the successor.
    let handovers = upstreams * client_owned * w.connects_per_day * secs / 86_400.0;
    let http_connects = upstreams * (1.0 - client_owned) * http_owned_connect_rate(http / upstreams / secs) * secs;
    let upstream_connects = handovers + http_connects;
    let reopened = handovers * per_upstream.max(1.0);
    let send_rate = w.messages_per_minute / 60.0;
    let acks = if !w.sessions {
        0.0
    } else if w.fanout <= 1.0 {
        // Replies to the sender, who acknowledges them on its next message.
        active * standalone_ack_rate(send_rate * w.fanout, send_rate) * secs
    } else if w.clients > 0.0 {
        let r = deliveries / w.clients / secs;
        (idle * standalone_ack_rate(r, 0.0) + active * standalone_ack_rate(r, send_rate)) * secs
    } else {
        0.0
    };
    let heartbeats = if i.heartbeat_secs > 0.0 { w.clients * secs / i.heartbeat_secs } else { 0.0 };
    // A session client's heartbeat is answered at the edge; a plain client's travels to
    // the object and back like any message.
    let (edge_heartbeats, relayed_heartbeats) = if w.sessions { (heartbeats, 0.0) } else { (0.0, heartbeats) };
    let frames_up = msgs + http + acks + 2.0 * connects + reopened + relayed_heartbeats;
    let frames_down = deliveries + http + connects + relayed_heartbeats;
    let rate = frames_up / upstreams / secs;
    let window = if i.batch_rate > 0.0 { (i.batch_max - 1.0).max(0.0) / i.batch_rate } else { 0.0 };
    let cap = i.batch_max.max(1.0);
    let b = i.frames_per_batch.unwrap_or((1.0 + rate * window).clamp(1.0, cap)).max(1.0);
    // A broadcast's deliveries to the clients of one upstream leave in one message.
    let b_down = if w.fanout > 1.0 { (w.fanout / w.isolates).clamp(b, cap.max(b)) } else { b };
    let (cpu_frame, cpu_edge) = cpu_per_frame_us(i, b);
    let (cpu_delivery, _) = cpu_per_frame_us(i, b_down);
    let incoming = frames_up / b;
    let idle_wakes = if w.sessions { i.idle_wakes_snippet * idle * hours } else { 0.0 };
    // An upstream's accept and, later, its close.
    let snippet_events = 2.0 * upstream_connects + incoming + idle_wakes;
    let worker_requests = connects + http + CRON_RUNS_PER_MONTH + upstream_connects;
    let (session_rows, per_stream) =
        if w.sessions { (msgs * i.rows_per_echo, ROWS_PER_SESSION) } else { (0.0, ROWS_PER_STREAM) };
    let snippet = Usage {
        // The snippet's own (upgrades, HTTP, cron), and the backend Worker's per upstream.
        worker_requests,
        worker_cpu_ms: worker_requests * i.worker_cpu_ms_per_request
            + ((frames_up + frames_down - deliveries) * cpu_frame + deliveries * cpu_delivery) / 1000.0
            + edge_heartbeats * 2.0 * cpu_edge / 1000.0,
        do_requests: upstream_connects + incoming / prices::WS_MESSAGES_PER_REQUEST,
        do_ws_messages: incoming,
        do_events: snippet_events,
        do_gb_s: gb_s(w, i, snippet_events, work),
        rows_written: session_rows + (connects + reopened) * per_stream + upstream_connects * ROWS_PER_UPSTREAM,
    };

    let derived = Derived {
        client_messages: msgs,
        deliveries,
        http_requests: http,
        connects,
        heartbeats,
        upstreams,
        clients_per_upstream: per_upstream,
        upstream_connects,
        reopened_streams: reopened,
        standalone_acks: acks,
        frames_up,
        frames_down,
        frames_per_sec_per_upstream: rate,
        coalescing_window_ms: window * 1000.0,
        frames_per_batch: b,
        cpu_per_frame_us: cpu_frame,
        delivery_frames_per_batch: b_down,
        cpu_per_delivery_us: cpu_delivery,
        cpu_per_edge_frame_us: cpu_edge,
        snippet_only_events: 2.0 * upstream_connects + (acks + reopened + relayed_heartbeats) / b,
    };
    Estimate { derived, direct, forwarding, snippet }
}
