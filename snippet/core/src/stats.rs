/// Monotonic counters kept by the multiplexer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Client WebSocket streams opened.
    pub ws_streams_opened: u64,
    /// HTTP streams opened.
    pub http_streams_opened: u64,
    /// Client messages queued for the backend.
    pub messages_up: u64,
    /// Backend messages delivered to client WebSockets.
    pub messages_down: u64,
    /// Payload bytes of `messages_up`.
    pub bytes_up: u64,
    /// Payload bytes of `messages_down`.
    pub bytes_down: u64,
    /// Upstream messages sent (each a batch of one or more frames).
    pub batches_sent: u64,
    /// Frames inside those batches.
    pub frames_sent: u64,
    /// Upstream messages received.
    pub batches_received: u64,
    /// Frames inside those.
    pub frames_received: u64,
    /// Bytes written to the upstream, framing included.
    pub upstream_bytes_out: u64,
    /// Bytes read from the upstream, framing included.
    pub upstream_bytes_in: u64,
    /// Times an upstream came up because its tenant had none (first connects and
    /// reconnects, every tenant; hand-overs are counted in `handovers`).
    pub backend_connects: u64,
    /// Upstreams that came up for a tenant that had had one before.
    pub backend_reconnects: u64,
    /// Connection attempts started.
    pub connect_attempts: u64,
    /// HTTP requests that timed out (504).
    pub timeouts: u64,
    /// Owner hand-overs completed.
    pub handovers: u64,
    /// Upstreams closed because their bounded (HTTP, scheduled) owner's lifetime was up
    /// and no client was there to take them over.
    pub retirements: u64,
    /// HTTP requests whose context never collected its reply (the context ended first):
    /// forgotten and their tasks dropped.
    pub abandoned_requests: u64,
    /// Times the watchdog declared the upstream dead.
    pub watchdog_trips: u64,
    /// Times an open upstream went down.
    pub backend_disconnects: u64,
    /// Backend frames for streams whose client had left.
    pub dropped_deliveries: u64,
    /// Errors: backend error frames, and whatever the glue counts.
    pub errors: u64,
    /// Clients and requests refused for a full isolate or a caller's connection limit.
    pub refused: u64,
    /// Messages and requests refused for a rate limit.
    pub rate_limited: u64,
    /// Requests that reached the snippet (any route).
    pub requests_handled: u64,
    /// HTTP requests sent to the backend directly because no upstream could carry them.
    pub fallbacks: u64,
    /// Idle upstreams closed to free a slot or after their idle TTL.
    pub pool_evictions: u64,
    /// Streams refused because every upstream slot was busy.
    pub pool_refusals: u64,
    /// Keep-warm pings queued.
    pub keep_warm_pings: u64,
    /// Keep-warm pings answered.
    pub keep_warm_pongs: u64,
    /// Upstreams dropped because the backend did not answer a heartbeat or idle-check ping.
    pub heartbeat_failures: u64,
    /// Text pings sent on upstreams (heartbeat, idle check, keep-warm).
    pub upstream_pings: u64,
    /// Session clients' pings answered by the snippet itself (never forwarded).
    pub edge_pongs: u64,
    /// Session streams re-opened on a new upstream after theirs was lost.
    pub sessions_reattached: u64,
    /// Session streams that waited `REATTACH_MS` for a new upstream in vain.
    pub reattach_timeouts: u64,
}
