/// Limits and switches of the multiplexer. Every limit has a reason; each can be
/// overridden by a wrangler var of the name given in [`Config::VARS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest single client message or HTTP body. 1 MiB: Cloudflare's WebSocket limit is
    /// 32 MiB, but one huge message blocks every other stream's frames behind it on the
    /// shared socket (head-of-line blocking), so the proxy keeps messages small.
    pub max_message_bytes: usize,
    /// Most client WebSockets per isolate. Each holds a request context and queues; 5,000
    /// keeps an isolate well inside its 128 MB even with full queues. (One tenant's
    /// upstream also carries at most [`protocol::MAX_SESSION_STREAMS`], the backend
    /// session's limit, so the backend never refuses a client the snippet admitted.)
    pub max_clients: usize,
    /// Most open streams of any kind (clients + HTTP requests in flight).
    pub max_streams: usize,
    /// Frames one stream may have queued for the upstream: bounds per-frame overhead when
    /// a client floods tiny messages faster than the upstream drains.
    pub max_queued_frames_per_stream: usize,
    /// Bytes one stream may have queued for the upstream: one chatty client cannot fill
    /// the isolate's memory. Past it the client gets backpressure (1013 / 503).
    pub max_queued_bytes_per_stream: usize,
    /// Bytes all streams together may have queued for the upstream.
    pub max_queued_bytes: usize,
    /// Put several queued frames in one upstream message.
    pub batching: bool,
    /// Upper bound of a batch in bytes: large enough to amortise the per-message cost,
    /// small enough that the backend is never handed a huge message at once.
    pub max_batch_bytes: usize,
    /// How long an HTTP request waits for its reply before a 504. 30 s: the same as
    /// production's budget after a response, so nothing outlives its context.
    pub request_timeout_ms: u64,
    /// First reconnect delay bound; each failure doubles it (full jitter: the delay is
    /// uniform in [0, bound]) so a fleet of isolates does not stampede a recovering backend.
    pub reconnect_base_ms: u64,
    /// Largest reconnect delay bound: a recovered backend is found within this time.
    pub reconnect_max_ms: u64,
    /// Longest an HTTP request's context owns the upstream before another context takes
    /// over. Production keeps a context ~30 s after its response (`waitUntil`); 20 s hands
    /// over well before that. A WebSocket owner keeps it while its client is connected.
    pub owner_lifetime_ms: u64,
    /// Queued frames that see no transmit for this long mean the owner's pump is dead:
    /// the upstream is dropped (clear errors for what was pending) and reopened.
    pub watchdog_ms: u64,
    /// Client WebSockets one caller may hold on this isolate (a caller is a token's
    /// subject, or an anonymous client's address). 1,000: a fifth of `max_clients`, so no
    /// single caller can fill an isolate, yet far above what one user or service needs.
    /// 0 = no limit.
    pub max_connections_per_caller: usize,
    /// Messages per second one client WebSocket may send, with one second's worth of
    /// burst. 1,000/s: a Durable Object runs one thread, and one client at this rate
    /// already takes a large share of it. Exceeding the burst closes the client 1008.
    /// 0 = no limit.
    pub client_messages_per_sec: u64,
    /// Payload bytes per second one client WebSocket may send; the burst is one second's
    /// worth or one largest message, whichever is more. 4 MiB/s: a client cannot take the
    /// shared upstream's bandwidth from the others. Exceeding it closes the client 1008.
    /// 0 = no limit.
    pub client_bytes_per_sec: u64,
    /// Payload bytes per second one client WebSocket may be sent (replies and pushes); the
    /// burst is one second's worth, and one reply of any size fits a full budget. A Worker
    /// cannot see whether a client reads (RUNTIME.md §12): what it is sent and has not read
    /// waits in the runtime's queue, without bound. A small request can ask for a large
    /// reply (a 775-byte JSON-RPC batch for 4 MB of results), so the client's own send
    /// rate does not bound what it is owed; this does, at the same 4 MiB/s as
    /// `client_bytes_per_sec`. Exceeding it closes the client 1008 and drops what it was
    /// still owed. 0 = no limit.
    pub client_reply_bytes_per_sec: u64,
    /// HTTP requests per second one caller may make on this isolate, with one second's
    /// worth of burst; past it, 429 with `Retry-After`. 1,000/s, for the same reason as
    /// `client_messages_per_sec`. 0 = no limit.
    pub caller_requests_per_sec: u64,
    /// Upstreams (tenants) one isolate keeps open at once. 50: each is a socket and a
    /// backend session; production allows 6 outbound connections per invocation to wait
    /// for headers at once, so a pool this size is opened over time, not in one burst.
    /// A new tenant beyond it takes the least recently used idle slot, else gets 503.
    pub max_upstreams: usize,
    /// An upstream nobody used for this long is closed (1000) and its slot freed. 5 min:
    /// long enough that a tenant's bursts reuse a warm socket, short enough that an isolate
    /// does not hold sockets to Durable Objects that would otherwise hibernate.
    pub upstream_idle_ms: u64,
    /// Heartbeat: when something sent on an upstream has had no message back for this
    /// long, a text `ping` goes out (the runtime's auto-response answers it with `pong`
    /// without waking a hibernating Durable Object); no message at all within
    /// `backend_busy_ms` and the upstream is dropped with clear errors. 5 s: a quiet
    /// upstream is asked soon, and an active one costs no extra messages. 0 = off.
    pub heartbeat_ms: u64,
    /// Idle check: an upstream from which nothing has arrived for this long gets a text
    /// `ping` too, answered (or not) as the heartbeat's. 30 s: below the minute or two
    /// after which a socket that carries nothing may be cut on the way without either end
    /// being told (RUNTIME.md §17; not measured here), and often enough that a dead
    /// upstream with nothing owed on it — one whose session clients would otherwise sit
    /// on it unaware — is found within this + `backend_busy_ms`. The ping is answered by
    /// the runtime, not the object: it neither wakes nor bills it. 0 = off.
    pub upstream_keepalive_ms: u64,
    /// How long a session client (PROTOCOL.md §14) whose upstream was lost keeps its
    /// WebSocket while the snippet waits for a new upstream to re-attach it on. 30 s: a
    /// restarting or redeployed backend is back within a few reconnect attempts (each
    /// waits at most `reconnect_max_ms`), and a client whose backend stays away is told
    /// (1012) soon enough to try another isolate, with most of the backend's resume window
    /// (`session.resume_window_ms`, 2 min) still left. At most that window: past it the
    /// backend has ended the session anyway. 0 = session clients are closed at once, as
    /// plain ones are.
    pub reattach_ms: u64,
    /// How long a backend may take to answer the heartbeat's `ping` before it counts as
    /// gone. A Durable Object runs one event at a time and sends nothing, not even its
    /// runtime's auto-response, until the event ends (measured, RUNTIME.md §17); one event
    /// may compute for up to its CPU limit, 30 s by default. So a busy object is told from
    /// a dead one only by time: 30 s, and a stalled backend is found after
    /// `heartbeat_ms` + 30 s. Raise it with the backend's `limits.cpu_ms`.
    pub backend_busy_ms: u64,
    /// Tenants every keep-warm round pings (opening their upstreams if needed),
    /// comma-separated in `KEEP_WARM_TENANTS`.
    pub keep_warm_tenants: Vec<String>,
    /// How many of this isolate's most used upstreams a keep-warm round pings too. 10: the
    /// hot set is small, and each ping wakes a Durable Object.
    pub keep_warm_hottest: usize,
    /// Seed of the jitter generator (the glue seeds it randomly; tests fix it).
    pub seed: u64,
}

/// Highest `MAX_UPSTREAMS`: every decision scans the pool, and each upstream holds a
/// socket and a backend session; 1,000 is far past what one isolate's memory and the
/// platform's connection limits make useful.
pub const MAX_UPSTREAMS_LIMIT: usize = 1_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_bytes: 1024 * 1024,
            max_clients: 5_000,
            max_streams: 10_000,
            max_queued_frames_per_stream: 1_024,
            max_queued_bytes_per_stream: 4 * 1024 * 1024,
            max_queued_bytes: 32 * 1024 * 1024,
            batching: true,
            max_batch_bytes: protocol::facts::MAX_BATCH_BYTES,
            request_timeout_ms: 30_000,
            reconnect_base_ms: 100,
            reconnect_max_ms: 5_000,
            owner_lifetime_ms: 20_000,
            watchdog_ms: 5_000,
            max_connections_per_caller: 1_000,
            client_messages_per_sec: 1_000,
            client_bytes_per_sec: 4 * 1024 * 1024,
            client_reply_bytes_per_sec: 4 * 1024 * 1024,
            caller_requests_per_sec: 1_000,
            max_upstreams: 50,
            upstream_idle_ms: 5 * 60 * 1000,
            heartbeat_ms: 5_000,
            upstream_keepalive_ms: 30_000,
            reattach_ms: 30_000,
            backend_busy_ms: 30_000,
            keep_warm_tenants: Vec::new(),
            keep_warm_hottest: 10,
            seed: 0x5EED,
        }
    }
}

impl Config {
    /// The wrangler vars that override a field, by name.
    pub const VARS: [&'static str; 26] = [
        "MAX_MESSAGE_BYTES",
        "MAX_CLIENTS",
        "MAX_STREAMS",
        "MAX_QUEUED_FRAMES_PER_STREAM",
        "MAX_QUEUED_BYTES_PER_STREAM",
        "MAX_QUEUED_BYTES",
        "BATCHING",
        "MAX_BATCH_BYTES",
        "REQUEST_TIMEOUT_MS",
        "RECONNECT_BASE_MS",
        "RECONNECT_MAX_MS",
        "OWNER_LIFETIME_MS",
        "WATCHDOG_MS",
        "MAX_CONNECTIONS_PER_CALLER",
        "CLIENT_MESSAGES_PER_SEC",
        "CLIENT_BYTES_PER_SEC",
        "CLIENT_REPLY_BYTES_PER_SEC",
        "CALLER_REQUESTS_PER_SEC",
        "MAX_UPSTREAMS",
        "UPSTREAM_IDLE_MS",
        "HEARTBEAT_MS",
        "UPSTREAM_KEEPALIVE_MS",
        "REATTACH_MS",
        "BACKEND_BUSY_MS",
        "KEEP_WARM_TENANTS",
        "KEEP_WARM_HOTTEST",
    ];

    /// The defaults with every var that `get` returns applied. A malformed value is an
    /// error naming the var, not a silent default.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let mut c = Config::default();
        for name in Config::VARS {
            let Some(raw) = get(name) else { continue };
            let raw = raw.trim();
            let num = || raw.parse::<u64>().map_err(|_| format!("{name} must be a whole number"));
            match name {
                "MAX_MESSAGE_BYTES" => c.max_message_bytes = num()? as usize,
                "MAX_CLIENTS" => c.max_clients = num()? as usize,
                "MAX_STREAMS" => c.max_streams = num()? as usize,
                "MAX_QUEUED_FRAMES_PER_STREAM" => c.max_queued_frames_per_stream = num()? as usize,
                "MAX_QUEUED_BYTES_PER_STREAM" => c.max_queued_bytes_per_stream = num()? as usize,
                "MAX_QUEUED_BYTES" => c.max_queued_bytes = num()? as usize,
                "MAX_BATCH_BYTES" => c.max_batch_bytes = num()? as usize,
                "REQUEST_TIMEOUT_MS" => c.request_timeout_ms = num()?,
                "RECONNECT_BASE_MS" => c.reconnect_base_ms = num()?,
                "RECONNECT_MAX_MS" => c.reconnect_max_ms = num()?,
                "OWNER_LIFETIME_MS" => c.owner_lifetime_ms = num()?,
                "WATCHDOG_MS" => c.watchdog_ms = num()?,
                "MAX_CONNECTIONS_PER_CALLER" => c.max_connections_per_caller = num()? as usize,
                "CLIENT_MESSAGES_PER_SEC" => c.client_messages_per_sec = num()?,
                "CLIENT_BYTES_PER_SEC" => c.client_bytes_per_sec = num()?,
                "CLIENT_REPLY_BYTES_PER_SEC" => c.client_reply_bytes_per_sec = num()?,
                "CALLER_REQUESTS_PER_SEC" => c.caller_requests_per_sec = num()?,
                "MAX_UPSTREAMS" => c.max_upstreams = num()? as usize,
                "UPSTREAM_IDLE_MS" => c.upstream_idle_ms = num()?,
                "HEARTBEAT_MS" => c.heartbeat_ms = num()?,
                "UPSTREAM_KEEPALIVE_MS" => c.upstream_keepalive_ms = num()?,
                "REATTACH_MS" => c.reattach_ms = num()?,
                "BACKEND_BUSY_MS" => c.backend_busy_ms = num()?,
                "KEEP_WARM_HOTTEST" => c.keep_warm_hottest = num()? as usize,
                "KEEP_WARM_TENANTS" => {
                    c.keep_warm_tenants =
                        raw.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect();
                    if let Some(bad) = c.keep_warm_tenants.iter().find(|t| !protocol::facts::is_valid_tenant(t)) {
                        return Err(format!("KEEP_WARM_TENANTS: \"{bad}\" is not a tenant name"));
                    }
                }
                "BATCHING" => {
                    c.batching = match raw {
                        "1" | "true" | "on" => true,
                        "0" | "false" | "off" => false,
                        _ => return Err("BATCHING must be on/off".to_owned()),
                    }
                }
                _ => {}
            }
        }
        if c.max_message_bytes > protocol::MAX_FRAME_PAYLOAD - 1024 {
            return Err(format!("MAX_MESSAGE_BYTES may be at most {}", protocol::MAX_FRAME_PAYLOAD - 1024));
        }
        // One isolate's upstreams: at least one, and few enough to list and scan.
        if !(1..=MAX_UPSTREAMS_LIMIT).contains(&c.max_upstreams) {
            return Err(format!("MAX_UPSTREAMS must be 1 to {MAX_UPSTREAMS_LIMIT}"));
        }
        // 0 would drop every upstream the moment its first heartbeat went out.
        if c.backend_busy_ms == 0 {
            return Err("BACKEND_BUSY_MS must be at least 1 (HEARTBEAT_MS=0 switches the heartbeat off)".to_owned());
        }
        // Longer would keep a client waiting for a session its backend has ended.
        if c.reattach_ms > protocol::session::RESUME_WINDOW_MS {
            return Err(format!(
                "REATTACH_MS may be at most {} (the backend's resume window)",
                protocol::session::RESUME_WINDOW_MS
            ));
        }
        if c.keep_warm_tenants.len() > c.max_upstreams {
            return Err("KEEP_WARM_TENANTS may name at most MAX_UPSTREAMS tenants".to_owned());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_override_defaults_and_bad_values_are_named() {
        let c = Config::from_vars(|n| match n {
            "BATCHING" => Some("off".into()),
            "MAX_MESSAGE_BYTES" => Some(" 2048 ".into()),
            _ => None,
        })
        .expect("valid");
        assert!(!c.batching);
        assert_eq!(c.max_message_bytes, 2048);
        assert_eq!(c.request_timeout_ms, Config::default().request_timeout_ms);
        let e = Config::from_vars(|n| (n == "MAX_CLIENTS").then(|| "lots".into())).expect_err("invalid");
        assert!(e.contains("MAX_CLIENTS"), "{e}");
        assert!(Config::from_vars(|n| (n == "BATCHING").then(|| "maybe".into())).is_err());
    }

    #[test]
    fn a_backend_is_allowed_its_cpu_limit_to_answer_and_never_zero() {
        assert_eq!(Config::default().backend_busy_ms, 30_000, "a Durable Object's default CPU limit per event");
        let c = Config::from_vars(|n| (n == "BACKEND_BUSY_MS").then(|| "120000".into())).expect("valid");
        assert_eq!(c.backend_busy_ms, 120_000);
        let e = Config::from_vars(|n| (n == "BACKEND_BUSY_MS").then(|| "0".into())).expect_err("0");
        assert!(e.contains("BACKEND_BUSY_MS"), "{e}");
    }

    #[test]
    fn session_clients_wait_for_a_new_upstream_at_most_the_backends_resume_window() {
        let c = Config::from_vars(|n| match n {
            "REATTACH_MS" => Some("120000".into()),
            "UPSTREAM_KEEPALIVE_MS" => Some("0".into()),
            _ => None,
        })
        .expect("valid");
        assert_eq!((c.reattach_ms, c.upstream_keepalive_ms), (120_000, 0));
        let e = Config::from_vars(|n| (n == "REATTACH_MS").then(|| "120001".into())).expect_err("too long");
        assert!(e.contains("REATTACH_MS"), "{e}");
    }
}
