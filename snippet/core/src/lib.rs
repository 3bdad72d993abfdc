//! The snippet's multiplexer, with no I/O: a state machine fed with events and polled
//! for what to send (quinn-proto style).
//!
//! * Client side: [`Mux::open`] a stream per client WebSocket or HTTP request,
//!   [`Mux::send`] its messages, [`Mux::client_closed`] when it leaves.
//! * Upstream side: [`Mux::upstream_up`] / [`Mux::upstream_down`] as the one backend
//!   WebSocket comes and goes, [`Mux::handle_upstream_message`] for what it receives,
//!   and [`Mux::poll_transmit`] for the next batch to send on it.
//! * Deliveries: [`Mux::take_woken`] lists streams that got something;
//!   [`Mux::poll_delivery`] hands it out, per stream, in order.
//!
//! The glue around it (WASM, workerd) owns every socket and every clock read.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod stats;

use std::collections::{HashMap, VecDeque};

pub use config::Config;
use protocol::{encode_frame, FrameKind};
pub use protocol::{Close, ErrorFrame, Open, Request, Response, StreamId};
pub use stats::Counters;

/// Kind of a stream, fixed at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A client WebSocket: many messages each way until a close.
    WebSocket,
    /// One HTTP request answered by one response.
    Http,
}

/// A message for the client side of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A text message for a client WebSocket.
    Text(String),
    /// A binary message for a client WebSocket.
    Binary(Vec<u8>),
    /// The stream is over: close the client WebSocket with this code.
    Close(Close),
    /// The HTTP reply.
    Response(Response),
    /// The upstream could not carry this HTTP request and it never left: send it to the
    /// backend directly over HTTP instead.
    Fallback(Request),
}

/// Why the mux refused a client event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The stream does not exist (closed already, or never opened).
    UnknownStream,
    /// A message exceeds [`Config::max_message_bytes`].
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many open streams ([`Config::max_streams`]) or clients ([`Config::max_clients`]).
    TooManyStreams,
    /// The queues are full ([`Config::max_queued_bytes_per_stream`], [`Config::max_queued_bytes`]).
    Backpressure,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::UnknownStream => write!(f, "unknown stream"),
            Refused::TooLarge { size, limit } => {
                write!(f, "message of {size} bytes exceeds the limit of {limit}")
            }
            Refused::TooManyStreams => write!(f, "too many open streams on this isolate"),
            Refused::Backpressure => write!(f, "upstream queue is full"),
        }
    }
}

/// State of the one upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// Nothing open, nothing being opened.
    Down,
    /// A connection attempt is under way; everyone else waits for it.
    Connecting,
    /// Open; frames flow.
    Up,
}

struct Stream {
    kind: StreamKind,
    /// HTTP only: when the request times out (ms).
    deadline: Option<u64>,
    /// HTTP only: when its request frame left (ms), for round-trip samples.
    sent_at: Option<u64>,
    /// Encoded frames waiting for the upstream, oldest first.
    outbox: VecDeque<Vec<u8>>,
    outbox_bytes: usize,
    /// What the backend sent, waiting for the client side to take it.
    inbox: VecDeque<Delivery>,
    /// The client left: drop what arrives; forget the stream once its outbox drains.
    detached: bool,
}

/// The multiplexer. See the crate docs.
pub struct Mux {
    cfg: Config,
    streams: HashMap<StreamId, Stream>,
    next_id: u32,
    /// Streams with a non-empty outbox, in round-robin order (each at most once).
    ready: VecDeque<StreamId>,
    /// Session-level frames (pongs), sent before stream frames.
    control: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    upstream: Upstream,
    woken: Vec<StreamId>,
    session_errors: Vec<String>,
    counters: Counters,
    /// Connect failures since the upstream was last up (drives the backoff).
    failures: u32,
    /// No connect attempt before this time (ms), while backing off.
    next_connect_at: Option<u64>,
    rng: u64,
    /// Recent request round trips (ms), newest last.
    rtt: VecDeque<u64>,
}

/// Round-trip samples kept for the percentiles in `/__stats`.
pub const RTT_SAMPLES: usize = 1024;

impl Mux {
    /// A new multiplexer with nothing open.
    pub fn new(cfg: Config) -> Self {
        Mux {
            streams: HashMap::new(),
            next_id: 1,
            ready: VecDeque::new(),
            control: VecDeque::new(),
            queued_bytes: 0,
            upstream: Upstream::Down,
            woken: Vec::new(),
            session_errors: Vec::new(),
            counters: Counters::default(),
            failures: 0,
            next_connect_at: None,
            rng: splitmix64(cfg.seed) | 1,
            rtt: VecDeque::new(),
            cfg,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters for `/__stats`.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Counts an error seen by the glue (for `/__stats`).
    pub fn count_error(&mut self) {
        self.counters.errors += 1;
    }

    /// Open streams of each kind: (WebSocket, HTTP). Detached streams are not counted.
    pub fn open_streams(&self) -> (usize, usize) {
        let live = self.streams.values().filter(|s| !s.detached);
        live.fold((0, 0), |(ws, http), s| match s.kind {
            StreamKind::WebSocket => (ws + 1, http),
            StreamKind::Http => (ws, http + 1),
        })
    }

    /// State of the upstream.
    pub fn upstream(&self) -> Upstream {
        self.upstream
    }

    /// Whether the stream exists and its client is still attached.
    pub fn is_open(&self, id: StreamId) -> bool {
        self.streams.get(&id).is_some_and(|s| !s.detached)
    }

    fn alloc_id(&mut self) -> StreamId {
        loop {
            let id = StreamId(self.next_id);
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.streams.contains_key(&id) {
                return id;
            }
        }
    }

    /// Opens a stream for a client WebSocket speaking to backend service `path`.
    pub fn open_websocket(&mut self, path: &str) -> Result<StreamId, Refused> {
        if self.open_streams().0 >= self.cfg.max_clients {
            return Err(Refused::TooManyStreams);
        }
        let payload = Open { path: path.to_owned() }.encode();
        let id = self.open(StreamKind::WebSocket)?;
        self.enqueue(id, FrameKind::Open, &payload, true)?;
        self.counters.ws_streams_opened += 1;
        Ok(id)
    }

    /// Opens a stream for one HTTP request; the request leaves as a single frame and
    /// must be answered by `now + request_timeout_ms`.
    pub fn open_http(&mut self, req: &Request, now: u64) -> Result<StreamId, Refused> {
        if req.body.len() > self.cfg.max_message_bytes {
            return Err(Refused::TooLarge { size: req.body.len(), limit: self.cfg.max_message_bytes });
        }
        let payload = req.encode();
        let id = self.open(StreamKind::Http)?;
        if let Err(e) = self.enqueue(id, FrameKind::Request, &payload, false) {
            self.streams.remove(&id);
            return Err(e);
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.deadline = Some(now.saturating_add(self.cfg.request_timeout_ms));
        }
        self.counters.http_streams_opened += 1;
        Ok(id)
    }

    fn open(&mut self, kind: StreamKind) -> Result<StreamId, Refused> {
        if self.streams.len() >= self.cfg.max_streams {
            return Err(Refused::TooManyStreams);
        }
        let id = self.alloc_id();
        let stream = Stream {
            kind,
            deadline: None,
            sent_at: None,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            inbox: VecDeque::new(),
            detached: false,
        };
        self.streams.insert(id, stream);
        Ok(id)
    }

    /// Queues one client WebSocket message (text or binary) for the backend.
    pub fn send(&mut self, id: StreamId, text: bool, payload: &[u8]) -> Result<(), Refused> {
        if payload.len() > self.cfg.max_message_bytes {
            return Err(Refused::TooLarge { size: payload.len(), limit: self.cfg.max_message_bytes });
        }
        if !self.is_open(id) {
            return Err(Refused::UnknownStream);
        }
        let kind = if text { FrameKind::Text } else { FrameKind::Binary };
        self.enqueue(id, kind, payload, false)?;
        self.counters.messages_up += 1;
        self.counters.bytes_up += payload.len() as u64;
        Ok(())
    }

    /// The client side of a stream is gone (WebSocket closed, HTTP request finished or
    /// abandoned). Tells the backend with a `Close` frame after anything already queued,
    /// and drops whatever the backend still sends to it.
    pub fn client_closed(&mut self, id: StreamId, code: u16, reason: &str) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if stream.detached {
            return;
        }
        stream.detached = true;
        stream.inbox.clear();
        // The backend keeps no state for an HTTP stream: only WebSocket streams are told.
        let told = stream.kind == StreamKind::WebSocket && {
            let payload = Close { code, reason: truncate_reason(reason) }.encode();
            self.enqueue(id, FrameKind::Close, &payload, true).is_ok()
        };
        if !told {
            self.forget_if_drained(id);
        }
    }

    fn forget_if_drained(&mut self, id: StreamId) {
        if self.streams.get(&id).is_some_and(|s| s.detached && s.outbox.is_empty()) {
            self.streams.remove(&id);
        }
    }

    /// Appends an encoded frame to a stream's outbox. `force` skips the backpressure
    /// limits (open and close frames must never be refused once a stream exists).
    fn enqueue(&mut self, id: StreamId, kind: FrameKind, payload: &[u8], force: bool) -> Result<(), Refused> {
        let size = protocol::frame_len(payload.len());
        let total_ok = self.queued_bytes + size <= self.cfg.max_queued_bytes;
        let Some(stream) = self.streams.get_mut(&id) else {
            return Err(Refused::UnknownStream);
        };
        let stream_ok = stream.outbox_bytes + size <= self.cfg.max_queued_bytes_per_stream
            && stream.outbox.len() < self.cfg.max_queued_frames_per_stream;
        // An empty queue always takes one frame, so a single large message can pass.
        if !(force || stream.outbox.is_empty() || total_ok && stream_ok) {
            return Err(Refused::Backpressure);
        }
        let mut frame = Vec::with_capacity(size);
        encode_frame(&mut frame, kind, id, payload)
            .map_err(|_| Refused::TooLarge { size: payload.len(), limit: protocol::MAX_FRAME_PAYLOAD })?;
        if stream.outbox.is_empty() {
            self.ready.push_back(id);
        }
        stream.outbox.push_back(frame);
        stream.outbox_bytes += size;
        self.queued_bytes += size;
        Ok(())
    }

    /// Whether [`Mux::poll_transmit`] has something to hand out.
    pub fn wants_transmit(&self) -> bool {
        self.upstream == Upstream::Up && (!self.ready.is_empty() || !self.control.is_empty())
    }

    /// The next upstream message to send, if the upstream is up and anything is queued.
    ///
    /// With batching on, takes one frame per stream in round-robin turns until the
    /// batch would exceed [`Config::max_batch_bytes`] (a lone frame may exceed it).
    /// With batching off, every message holds exactly one frame.
    pub fn poll_transmit(&mut self, now: u64) -> Option<Vec<u8>> {
        if !self.wants_transmit() {
            return None;
        }
        let mut msg = Vec::new();
        protocol::begin_message(&mut msg);
        let mut frames = 0u64;
        let limit = if self.cfg.batching { self.cfg.max_batch_bytes } else { 0 };
        while let Some(frame) = self.control.front() {
            if frames > 0 && msg.len() + frame.len() > limit {
                break;
            }
            msg.extend_from_slice(frame);
            self.control.pop_front();
            frames += 1;
        }
        while let Some(&id) = self.ready.front() {
            let Some(stream) = self.streams.get_mut(&id) else {
                self.ready.pop_front();
                continue;
            };
            let Some(frame) = stream.outbox.front() else {
                self.ready.pop_front();
                continue;
            };
            if frames > 0 && msg.len() + frame.len() > limit {
                break;
            }
            msg.extend_from_slice(frame);
            let size = frame.len();
            if frame.first() == Some(&(FrameKind::Request as u8)) {
                stream.sent_at = Some(now);
            }
            stream.outbox.pop_front();
            stream.outbox_bytes -= size;
            self.queued_bytes -= size;
            frames += 1;
            self.ready.pop_front();
            if stream.outbox.is_empty() {
                self.forget_if_drained(id);
            } else {
                self.ready.push_back(id);
            }
        }
        self.counters.batches_sent += 1;
        self.counters.frames_sent += frames;
        self.counters.upstream_bytes_out += msg.len() as u64;
        Some(msg)
    }

    /// Feeds one message received on the upstream. Frames for unknown or detached
    /// streams are dropped (and counted); a malformed message is an error for the
    /// whole session (the caller closes the upstream with 1002).
    pub fn handle_upstream_message(&mut self, msg: &[u8], now: u64) -> Result<(), protocol::DecodeError> {
        self.counters.upstream_bytes_in += msg.len() as u64;
        self.counters.batches_received += 1;
        for frame in protocol::decode_message(msg)? {
            let frame = frame?;
            self.counters.frames_received += 1;
            let delivery = match frame.kind {
                FrameKind::Text => match std::str::from_utf8(frame.payload) {
                    Ok(s) => Delivery::Text(s.to_owned()),
                    Err(_) => Delivery::Binary(frame.payload.to_vec()),
                },
                FrameKind::Binary => Delivery::Binary(frame.payload.to_vec()),
                FrameKind::Close => Delivery::Close(Close::decode(frame.payload)?),
                FrameKind::Response => {
                    if let Some(sent) = self.streams.get(&frame.stream).and_then(|s| s.sent_at) {
                        if self.rtt.len() == RTT_SAMPLES {
                            self.rtt.pop_front();
                        }
                        self.rtt.push_back(now.saturating_sub(sent));
                    }
                    Delivery::Response(Response::decode(frame.payload)?)
                }
                FrameKind::Error if frame.stream == StreamId::SESSION => {
                    self.counters.errors += 1;
                    let e = ErrorFrame::decode(frame.payload)?;
                    self.session_errors.push(format!("backend session error {}: {}", e.code, e.message));
                    continue;
                }
                FrameKind::Error => {
                    let e = ErrorFrame::decode(frame.payload)?;
                    self.counters.errors += 1;
                    self.stream_error(frame.stream, e)
                }
                FrameKind::Ping => {
                    let mut pong = Vec::new();
                    let _ = encode_frame(&mut pong, FrameKind::Pong, frame.stream, frame.payload);
                    self.control.push_back(pong);
                    continue;
                }
                FrameKind::Pong | FrameKind::Open | FrameKind::Request => continue,
            };
            self.deliver(frame.stream, delivery);
        }
        Ok(())
    }

    fn stream_error(&self, id: StreamId, e: ErrorFrame) -> Delivery {
        match self.streams.get(&id).map(|s| s.kind) {
            Some(StreamKind::Http) => {
                let body = format!("{{\"error\":{}}}", json_string(&e.message));
                Delivery::Response(Response { status: e.code, content_type: JSON.into(), body: body.into_bytes() })
            }
            _ => Delivery::Close(Close { code: 1011, reason: truncate_reason(&e.message) }),
        }
    }

    fn deliver(&mut self, id: StreamId, d: Delivery) {
        let Some(stream) = self.streams.get_mut(&id) else {
            self.counters.dropped_deliveries += 1;
            return;
        };
        if stream.detached {
            self.counters.dropped_deliveries += 1;
            return;
        }
        match &d {
            Delivery::Text(s) => {
                self.counters.messages_down += 1;
                self.counters.bytes_down += s.len() as u64;
            }
            Delivery::Binary(b) => {
                self.counters.messages_down += 1;
                self.counters.bytes_down += b.len() as u64;
            }
            Delivery::Close(_) | Delivery::Response(_) | Delivery::Fallback(_) => {}
        }
        if stream.inbox.is_empty() {
            self.woken.push(id);
        }
        stream.inbox.push_back(d);
    }

    /// Session-level errors the backend reported since the last call (for the log).
    pub fn take_session_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.session_errors)
    }

    /// Streams that received something since the last call: wake their owners.
    pub fn take_woken(&mut self) -> Vec<StreamId> {
        std::mem::take(&mut self.woken)
    }

    /// The next delivery for a stream, in arrival order. A `Close` or `Response`
    /// ends the stream: after handing it out the stream is forgotten.
    pub fn poll_delivery(&mut self, id: StreamId) -> Option<Delivery> {
        let stream = self.streams.get_mut(&id)?;
        let d = stream.inbox.pop_front()?;
        if matches!(d, Delivery::Close(_) | Delivery::Response(_) | Delivery::Fallback(_)) {
            stream.detached = true;
            stream.inbox.clear();
            self.queued_bytes -= stream.outbox_bytes;
            stream.outbox.clear();
            stream.outbox_bytes = 0;
            self.streams.remove(&id);
        }
        Some(d)
    }

    /// Whether a connection attempt may start now: the upstream is down and any backoff
    /// delay has passed.
    pub fn can_connect(&self, now: u64) -> bool {
        self.upstream == Upstream::Down && self.next_connect_at.is_none_or(|t| now >= t)
    }

    /// Whether an HTTP request should skip the upstream and go to the backend directly:
    /// the upstream is down and the last attempts failed (we are backing off).
    pub fn should_fall_back(&self, now: u64) -> bool {
        self.upstream == Upstream::Down && self.failures > 0 && !self.can_connect(now)
    }

    /// When the backoff ends, if the upstream is down and backing off.
    pub fn next_connect_at(&self) -> Option<u64> {
        self.next_connect_at.filter(|_| self.upstream == Upstream::Down)
    }

    /// A connection attempt started (the caller became the owner).
    pub fn upstream_connecting(&mut self) {
        self.upstream = Upstream::Connecting;
        self.counters.connect_attempts += 1;
    }

    /// The upstream is open: queued frames may flow.
    pub fn upstream_up(&mut self) {
        self.upstream = Upstream::Up;
        if self.counters.backend_connects > 0 {
            self.counters.backend_reconnects += 1;
        }
        self.counters.backend_connects += 1;
        self.failures = 0;
        self.next_connect_at = None;
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Schedules the next attempt: full jitter, uniform in [0, min(max, base·2^(n-1))].
    fn back_off(&mut self, now: u64) {
        self.failures = self.failures.saturating_add(1);
        let shift = self.failures.saturating_sub(1).min(30);
        let bound = self.cfg.reconnect_base_ms.saturating_mul(1 << shift).min(self.cfg.reconnect_max_ms);
        let delay = self.next_random() % bound.saturating_add(1);
        self.next_connect_at = Some(now.saturating_add(delay));
    }

    /// The earliest time [`Mux::handle_timeout`] has work: a request deadline, or the end
    /// of the reconnect backoff.
    pub fn poll_timeout(&self) -> Option<u64> {
        let deadlines = self.streams.values().filter(|s| !s.detached).filter_map(|s| s.deadline);
        deadlines.chain(self.next_connect_at()).min()
    }

    /// Expires HTTP requests whose deadline passed: each gets a 504 with a JSON error.
    pub fn handle_timeout(&mut self, now: u64) {
        let expired: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.detached && s.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let waited = self.cfg.request_timeout_ms;
            let body = format!("{{\"error\":\"no reply from the backend within {waited} ms\"}}");
            let res = Response { status: 504, content_type: JSON.into(), body: body.into_bytes() };
            if let Some(s) = self.streams.get_mut(&id) {
                s.inbox.clear();
                s.deadline = None;
            }
            self.counters.errors += 1;
            self.counters.timeouts += 1;
            self.deliver(id, Delivery::Response(res));
        }
    }

    /// Median and 99th percentile of recent request round trips over the upstream (ms).
    pub fn rtt_percentiles(&self) -> Option<(u64, u64)> {
        let mut v: Vec<u64> = self.rtt.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at = |q: f64| v.get(((v.len() - 1) as f64 * q).round() as usize).copied().unwrap_or(0);
        Some((at(0.50), at(0.99)))
    }

    /// The upstream closed, failed or could not be opened. Every live stream learns it:
    /// a WebSocket client gets close 1012 (its in-flight messages may be lost) and an
    /// HTTP request a 502 whose body says its fate is unknown. Nothing waits forever.
    pub fn upstream_down(&mut self, why: &str, now: u64) {
        let was_up = self.upstream == Upstream::Up;
        self.upstream = Upstream::Down;
        if was_up {
            self.counters.backend_disconnects += 1;
        }
        self.back_off(now);
        self.control.clear();
        self.ready.clear();
        self.queued_bytes = 0;
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in ids {
            let Some(stream) = self.streams.get_mut(&id) else { continue };
            // An HTTP request still queued never reached the backend: it can go directly.
            let unsent = stream.kind == StreamKind::Http && stream.sent_at.is_none();
            let fallback = stream
                .outbox
                .front()
                .filter(|_| unsent)
                .and_then(|f| f.get(protocol::HEADER_LEN..))
                .and_then(|p| Request::decode(p).ok());
            stream.outbox.clear();
            stream.outbox_bytes = 0;
            if stream.detached {
                self.streams.remove(&id);
                continue;
            }
            let d = match (stream.kind, fallback) {
                (StreamKind::WebSocket, _) => {
                    Delivery::Close(Close { code: 1012, reason: truncate_reason(&format!("upstream lost: {why}")) })
                }
                (StreamKind::Http, Some(req)) => Delivery::Fallback(req),
                (StreamKind::Http, None) => {
                    let msg =
                        format!("upstream lost before the reply arrived ({why}); the request may or may not have run");
                    let body = format!("{{\"error\":{}}}", json_string(&msg));
                    Delivery::Response(Response { status: 502, content_type: JSON.into(), body: body.into_bytes() })
                }
            };
            self.deliver(id, d);
        }
    }
}

const JSON: &str = "application/json";

/// The backend's HTTP base URL beside its mux endpoint, for fallbacks:
/// `ws://host/db/t/mux` → `http://host/db/t` (then `/rpc` or `/query` is appended).
pub fn http_base(mux_url: &str) -> String {
    let url = if let Some(rest) = mux_url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = mux_url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else {
        mux_url.to_owned()
    };
    let trimmed = url.trim_end_matches('/');
    trimmed.strip_suffix("/mux").unwrap_or(trimmed).to_owned()
}

/// Spreads a seed over all 64 bits, so nearby seeds give unrelated jitter sequences.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// WebSocket close reasons are limited to 123 bytes.
fn truncate_reason(s: &str) -> String {
    let mut end = s.len().min(123);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Minimal JSON string escaping (the core has no serde dependency).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
