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
// Compiled into the snippet's wasm, where a panic resets the whole instance (RUNTIME.md §5).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod auth;
mod config;
pub mod quota;
mod stats;
mod upstream;

use std::collections::{HashMap, VecDeque};

pub use config::Config;
use protocol::{encode_frame, FrameKind};
pub use protocol::{Close, ErrorFrame, Identity, Open, Request, Response, StreamId};
pub use stats::Counters;
pub use upstream::{Gen, GenState, OwnerKind};

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
    /// The WebSocket stream failed in the proxy (upstream lost, refused by the backend):
    /// close the client with `code` and the short `reason`; `detail` is for the log.
    Aborted {
        /// WebSocket close code.
        code: u16,
        /// What the client is told.
        reason: &'static str,
        /// What the operator's log is told.
        detail: String,
    },
    /// The HTTP request failed in the proxy (timeout, upstream lost, refused by the
    /// backend's session): answer `status` with the short `reason`; `detail` is for the log.
    Failed {
        /// HTTP status.
        status: u16,
        /// What the client is told.
        reason: &'static str,
        /// What the operator's log is told.
        detail: String,
    },
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
    /// The caller holds [`Config::max_connections_per_caller`] client WebSockets already.
    TooManyConnections {
        /// The limit.
        limit: usize,
    },
    /// The client or caller is over its rate ([`Config::client_messages_per_sec`],
    /// [`Config::client_bytes_per_sec`], [`Config::caller_requests_per_sec`]).
    RateLimited {
        /// Which rate: `"messages"`, `"bytes"` or `"requests"`.
        what: &'static str,
        /// The rate per second.
        limit: u64,
        /// How long until the same would be allowed (ms).
        retry_after_ms: u64,
    },
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
            Refused::TooManyConnections { limit } => {
                write!(f, "too many connections for this caller (limit {limit} per isolate)")
            }
            Refused::RateLimited { what, limit, .. } => write!(f, "rate limit exceeded ({limit} {what} per second)"),
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
    /// WebSocket only: the backend service, to re-open the stream on a new upstream.
    path: String,
    /// WebSocket only: the caller, sent again when the stream is re-opened.
    identity: Identity,
    /// WebSocket only: whose connection allowance it holds ([`quota::caller_key`]).
    caller: String,
    /// WebSocket only: the client's message and byte allowances.
    messages: quota::Bucket,
    bytes: quota::Bucket,
    /// WebSocket only: the upstream generation this stream's frames flow on.
    on: Gen,
    /// HTTP only: the upstream generation its request left on.
    sent_on: Option<Gen>,
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
    /// Generation of the current upstream (0 before the first).
    gen: Gen,
    /// Highest generation handed out.
    last_gen: Gen,
    /// A successor upstream being opened to take over from the current one.
    handover: Option<Gen>,
    /// The previous upstream, finishing its in-flight replies after a hand-over.
    drain: Option<upstream::Drain>,
    /// WebSocket frames wait until the drain barrier returns (keeps per-stream order).
    held: bool,
    /// Since when queued frames have waited for a transmit (the watchdog's clock).
    pending_since: Option<u64>,
    /// Who owns the current upstream.
    owner: upstream::Owner,
    /// Who will own the successor being opened.
    next_owner: upstream::Owner,
    /// When the pending connect (first or successor) started.
    connect_started: u64,
    /// What each caller uses of this isolate (connections, request rate).
    callers: quota::Callers,
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
            gen: 0,
            last_gen: 0,
            handover: None,
            drain: None,
            held: false,
            pending_since: None,
            owner: upstream::Owner::default(),
            next_owner: upstream::Owner::default(),
            connect_started: 0,
            callers: quota::Callers::default(),
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

    /// Callers whose usage is tracked now (connections or a recent request).
    pub fn callers_tracked(&self) -> usize {
        self.callers.len()
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

    /// Opens a stream for a client WebSocket speaking to backend service `path` on
    /// behalf of `identity` (the caller the front door verified), counted against the
    /// allowance of `caller` ([`quota::caller_key`]).
    pub fn open_websocket(
        &mut self,
        path: &str,
        identity: Identity,
        caller: &str,
        now: u64,
    ) -> Result<StreamId, Refused> {
        // Detached streams count too: until their Close has left, the backend still holds
        // their entry, and it must never see more than MAX_CLIENTS (≤ MAX_SESSION_STREAMS).
        let ws_streams = self.streams.values().filter(|s| s.kind == StreamKind::WebSocket).count();
        if ws_streams >= self.cfg.max_clients || self.streams.len() >= self.cfg.max_streams {
            self.counters.refused += 1;
            return Err(Refused::TooManyStreams);
        }
        let limit = self.cfg.max_connections_per_caller;
        if !self.callers.connect(caller, limit, self.cfg.caller_requests_per_sec, now) {
            self.counters.refused += 1;
            return Err(Refused::TooManyConnections { limit });
        }
        let payload = Open { path: path.to_owned(), identity: identity.clone() }.encode();
        let id = self.open(StreamKind::WebSocket)?;
        let (messages, bytes) = self.client_burst();
        if let Some(s) = self.streams.get_mut(&id) {
            s.path = path.to_owned();
            s.identity = identity;
            s.caller = caller.to_owned();
            s.messages = quota::Bucket::full(messages, now);
            s.bytes = quota::Bucket::full(bytes, now);
        }
        self.enqueue(id, FrameKind::Open, &payload, true)?;
        self.counters.ws_streams_opened += 1;
        Ok(id)
    }

    /// A client's message and byte bursts: one second's worth, and at least one largest
    /// message of bytes.
    fn client_burst(&self) -> (u64, u64) {
        let c = &self.cfg;
        (c.client_messages_per_sec, c.client_bytes_per_sec.max(c.max_message_bytes as u64))
    }

    /// Opens a stream for one HTTP request (its caller's allowance was taken first, with
    /// [`Mux::take_request`]); the request leaves as a single frame and must be answered
    /// by `now + request_timeout_ms`.
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

    /// Takes one HTTP request from `caller`'s allowance ([`quota::caller_key`]): asked
    /// before anything else is done for the request, whichever way it then travels.
    pub fn take_request(&mut self, caller: &str, now: u64) -> Result<(), Refused> {
        let limit = self.cfg.caller_requests_per_sec;
        self.callers.request(caller, limit, now).map_err(|retry_after_ms| {
            self.counters.rate_limited += 1;
            Refused::RateLimited { what: "requests", limit, retry_after_ms }
        })
    }

    fn open(&mut self, kind: StreamKind) -> Result<StreamId, Refused> {
        if self.streams.len() >= self.cfg.max_streams {
            self.counters.refused += 1;
            return Err(Refused::TooManyStreams);
        }
        let id = self.alloc_id();
        let stream = Stream {
            kind,
            path: String::new(),
            identity: Identity::default(),
            caller: String::new(),
            messages: quota::Bucket::full(0, 0),
            bytes: quota::Bucket::full(0, 0),
            on: self.gen,
            sent_on: None,
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

    /// Queues one client WebSocket message (text or binary) for the backend, if the
    /// client is within its rates (a burst of a second's worth, then the rate).
    pub fn send(&mut self, id: StreamId, text: bool, payload: &[u8], now: u64) -> Result<(), Refused> {
        if payload.len() > self.cfg.max_message_bytes {
            return Err(Refused::TooLarge { size: payload.len(), limit: self.cfg.max_message_bytes });
        }
        let (burst_messages, burst_bytes) = self.client_burst();
        let (message_rate, byte_rate) = (self.cfg.client_messages_per_sec, self.cfg.client_bytes_per_sec);
        let Some(stream) = self.streams.get_mut(&id).filter(|s| !s.detached) else {
            return Err(Refused::UnknownStream);
        };
        let over = match stream.messages.take(1, message_rate, burst_messages, now) {
            Err(ms) => Some(("messages", message_rate, ms)),
            Ok(()) => stream
                .bytes
                .take(payload.len() as u64, byte_rate, burst_bytes, now)
                .err()
                .map(|ms| ("bytes", byte_rate, ms)),
        };
        if let Some((what, limit, retry_after_ms)) = over {
            self.counters.rate_limited += 1;
            return Err(Refused::RateLimited { what, limit, retry_after_ms });
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
        if stream.kind == StreamKind::WebSocket {
            self.callers.disconnect(&stream.caller);
        }
        if self.owner.stream == Some(id) {
            self.owner.orphaned = true;
        }
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
        self.enqueue_at(id, kind, payload, force, false)
    }

    /// [`Mux::enqueue`], optionally at the front of the outbox (a re-open after hand-over
    /// must precede the frames held behind it).
    fn enqueue_at(
        &mut self,
        id: StreamId,
        kind: FrameKind,
        payload: &[u8],
        force: bool,
        front: bool,
    ) -> Result<(), Refused> {
        let size = protocol::frame_len(payload.len());
        let total_ok = self.queued_bytes + size <= self.cfg.max_queued_bytes;
        let Some(stream) = self.streams.get_mut(&id) else {
            return Err(Refused::UnknownStream);
        };
        let stream_ok = stream.outbox_bytes + size <= self.cfg.max_queued_bytes_per_stream
            && stream.outbox.len() < self.cfg.max_queued_frames_per_stream;
        // An empty queue takes one frame whatever its own bound, so a single large message
        // can pass; the isolate-wide bound holds for every queue, empty or not.
        if !(force || total_ok && (stream_ok || stream.outbox.is_empty())) {
            return Err(Refused::Backpressure);
        }
        let mut frame = Vec::with_capacity(size);
        encode_frame(&mut frame, kind, id, payload)
            .map_err(|_| Refused::TooLarge { size: payload.len(), limit: protocol::MAX_FRAME_PAYLOAD })?;
        if stream.outbox.is_empty() {
            self.ready.push_back(id);
        }
        if front {
            stream.outbox.push_front(frame);
        } else {
            stream.outbox.push_back(frame);
        }

        stream.outbox_bytes += size;
        self.queued_bytes += size;
        Ok(())
    }

    /// Whether a stream's frames must wait for the drain barrier.
    fn is_held(&self, id: StreamId) -> bool {
        self.held && self.streams.get(&id).is_some_and(|s| s.kind == StreamKind::WebSocket)
    }

    /// Whether [`Mux::poll_transmit`] has something for upstream `gen`.
    pub fn wants_transmit_on(&self, gen: Gen) -> bool {
        if let Some(d) = self.drain.as_ref().filter(|d| d.gen == gen) {
            return !d.barrier_sent;
        }
        gen == self.gen
            && self.upstream == Upstream::Up
            && (!self.control.is_empty() || self.ready.iter().any(|id| !self.is_held(*id)))
    }

    /// Whether any upstream has something to send (the glue then wakes its pumps).
    pub fn wants_transmit(&self) -> bool {
        self.wants_transmit_on(self.gen) || self.drain.as_ref().is_some_and(|d| !d.barrier_sent)
    }

    /// The next message to send on upstream `gen`, if it is up and anything is queued.
    ///
    /// With batching on, takes one frame per stream in round-robin turns until the
    /// batch would exceed [`Config::max_batch_bytes`] (a lone frame may exceed it).
    /// With batching off, every message holds exactly one frame. A draining upstream
    /// only ever carries its barrier ping.
    pub fn poll_transmit(&mut self, gen: Gen, now: u64) -> Option<Vec<u8>> {
        if let Some(d) = self.drain.as_mut().filter(|d| d.gen == gen) {
            if d.barrier_sent {
                return None;
            }
            d.barrier_sent = true;
            let token = upstream::barrier_token(gen);
            return Some(protocol::single_frame_message(FrameKind::Ping, StreamId::SESSION, &token));
        }
        if !self.wants_transmit_on(gen) {
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
        // Held streams keep their turn: set aside, then put back in front, in order.
        let mut held = Vec::new();
        while let Some(&id) = self.ready.front() {
            if self.is_held(id) {
                held.push(id);
                self.ready.pop_front();
                continue;
            }
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
                stream.sent_on = Some(gen);
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
        for id in held.into_iter().rev() {
            self.ready.push_front(id);
        }
        // The watchdog measures how long queued frames wait for a transmit.
        self.pending_since = self.wants_transmit_on(gen).then_some(now);
        if frames == 0 {
            return None;
        }
        self.counters.batches_sent += 1;
        self.counters.frames_sent += frames;
        self.counters.upstream_bytes_out += msg.len() as u64;
        Some(msg)
    }

    /// Feeds one message received on the upstream. Frames for unknown or detached
    /// streams are dropped (and counted); a malformed message is an error for the
    /// whole session (the caller closes the upstream with 1002).
    pub fn handle_upstream_message(&mut self, gen: Gen, msg: &[u8], now: u64) -> Result<(), protocol::DecodeError> {
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
                    // The backend could not read (part of) what was sent — e.g. the other
                    // protocol version during a deploy. Which frames it dropped is unknown,
                    // so this upstream cannot be trusted to answer what it owes: end it now,
                    // so every stream on it hears its fate, and let a fresh one be opened.
                    self.counters.errors += 1;
                    let e = ErrorFrame::decode(frame.payload)?;
                    let why = format!("backend session error {}: {}", e.code, e.message);
                    self.session_errors.push(why.clone());
                    self.upstream_down(gen, &why, now);
                    return Ok(());
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
                FrameKind::Pong if frame.stream == StreamId::SESSION => {
                    self.barrier_returned(gen, frame.payload);
                    continue;
                }
                FrameKind::Pong | FrameKind::Open | FrameKind::Request => continue,
            };
            self.deliver(frame.stream, delivery);
        }
        Ok(())
    }

    /// The backend refused a stream. Clients get a close code (or status) that says what
    /// kind of refusal it was; the backend's own message goes to the log.
    fn stream_error(&mut self, id: StreamId, e: ErrorFrame) -> Delivery {
        let (code, reason) = match e.code {
            401 | 403 => (1008, "refused by the backend: not allowed"),
            503 => (1013, "refused by the backend: too busy; retry later"),
            _ => (1011, "refused by the backend"),
        };
        let detail = format!("backend refused stream {id} ({}): {}", e.code, e.message);
        match self.streams.get(&id).map(|s| s.kind) {
            Some(StreamKind::Http) => Delivery::Failed { status: e.code.max(400), reason, detail },
            _ => Delivery::Aborted { code, reason, detail },
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
        let message_len = match &d {
            Delivery::Text(s) => Some(s.len()),
            Delivery::Binary(b) => Some(b.len()),
            _ => None,
        };
        if let Some(len) = message_len {
            self.counters.messages_down += 1;
            self.counters.bytes_down += len as u64;
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
        if !matches!(d, Delivery::Text(_) | Delivery::Binary(_)) {
            if stream.kind == StreamKind::WebSocket && !stream.detached {
                self.callers.disconnect(&stream.caller);
            }
            stream.detached = true;
            stream.inbox.clear();
            self.queued_bytes -= stream.outbox_bytes;
            stream.outbox.clear();
            stream.outbox_bytes = 0;
            self.streams.remove(&id);
        }
        Some(d)
    }

    /// The earliest time [`Mux::handle_timeout`] has work: a request deadline, or the end
    /// of the reconnect backoff.
    pub fn poll_timeout(&self) -> Option<u64> {
        let deadlines = self.streams.values().filter(|s| !s.detached).filter_map(|s| s.deadline);
        deadlines.chain(self.next_connect_at()).chain(self.drain_deadline()).min()
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
            let res = Delivery::Failed {
                status: 504,
                reason: "no reply from the backend in time",
                detail: format!("stream {id}: no reply within REQUEST_TIMEOUT_MS = {waited} ms"),
            };
            if let Some(s) = self.streams.get_mut(&id) {
                s.inbox.clear();
                s.deadline = None;
            }
            self.counters.errors += 1;
            self.counters.timeouts += 1;
            self.deliver(id, res);
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
}

/// The JSON body every error reply of the snippet carries: `{"error": "<reason>",
/// "requestId": "<id>"}` — a short reason for the client, and the id under which the
/// details were logged.
pub fn error_body(reason: &str, request_id: &str) -> String {
    format!("{{\"error\":{},\"requestId\":{}}}", json_string(reason), json_string(request_id))
}

/// `ws://` → `http://`, `wss://` → `https://` (workerd opens WebSockets with an HTTP
/// request carrying `Upgrade: websocket`); other URLs unchanged.
pub fn http_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else {
        url.to_owned()
    }
}

/// The backend's HTTP base URL beside its mux endpoint, for fallbacks:
/// `ws://host/db/t/mux` → `http://host/db/t` (then `/rpc` or `/query` is appended).
pub fn http_base(mux_url: &str) -> String {
    let url = http_url(mux_url);
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

/// How to answer a client's close frame with `code`: (the code to close the client with,
/// the code to tell the backend). A valid code is reciprocated and passed on; 1005 (the
/// client sent no code) and 1006 (the connection dropped) are reported by the runtime, not
/// sent, and become 1000 and 1001; any other code a client may not send (RFC 6455 §7.4:
/// 0–999, 1004, 1015, 1016–2999, 5000+) is a protocol error, answered with 1002 and never
/// forwarded — the backend never sees an invalid code.
pub fn client_close(code: u16) -> (u16, u16) {
    match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => (code, code),
        1005 => (1000, 1000),
        1006 => (1001, 1001),
        _ => (1002, 1002),
    }
}

/// WebSocket close reasons are limited to 123 bytes.
pub(crate) fn truncate_reason(s: &str) -> String {
    protocol::truncate_utf8(s, 123).to_owned()
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
mod limit_tests;
#[cfg(test)]
mod tests;
