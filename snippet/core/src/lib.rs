//! The snippet's multiplexer, with no I/O: a state machine fed with events and polled
//! for what to do (quinn-proto style). The glue around it (WASM, workerd) owns every
//! socket and every clock read; the core decides everything else.
//!
//! * Inputs, each with the time: [`Mux::open_client`] / [`Mux::open_request`] for a new
//!   client WebSocket or HTTP request, [`Mux::handle_client_message`],
//!   [`Mux::handle_client_closed`]; [`Mux::handle_connected`],
//!   [`Mux::handle_upstream_message`], [`Mux::handle_upstream_text`],
//!   [`Mux::handle_upstream_closed`] for the upstreams;
//!   [`Mux::handle_timeout`] when [`Mux::poll_timeout`] comes; [`Mux::handle_keep_warm`]
//!   for the scheduled handler.
//! * Outputs, pulled: [`Mux::poll_action`] (open an upstream, wake a pump or a stream,
//!   abandon a task, log), [`Mux::poll_transmit`] for what one upstream sends next, and
//!   [`Mux::poll_delivery`] for what one stream's client gets next.
//!
//! One upstream per tenant ([`link`]), pooled ([`pool`]): opened lazily, handed over
//! between owner contexts without loss ([`lifecycle`]), evicted when idle. A client of
//! the client library may carry a resumable session ([`session`]): its pings are answered
//! here, and it keeps its WebSocket when only the upstream is lost.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// Compiled into the snippet's wasm, where a panic resets the whole instance (RUNTIME.md §5).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod auth;
pub mod backend;
mod config;
mod conns;
pub mod idmap;
pub mod keeper;
mod lifecycle;
mod link;
mod links;
pub mod log;
pub mod metrics;
mod pool;
pub mod quota;
pub mod session;
pub mod site;
mod stats;
mod stream;
pub mod tenant;
mod timer;
mod transmit;

use std::collections::{BTreeSet, VecDeque};

pub use config::Config;
pub use link::{Here, OwnerKind, UpstreamId};
pub use pool::{UpstreamStats, MAX_LISTED_UPSTREAMS};
pub use protocol::{Close, ErrorFrame, Identity, Open, Request, Response, StreamId};
pub use session::{Attach, SessionId};
pub use stats::{Counters, RttHistogram, RTT_BUCKETS};
pub use stream::Delivery;
pub use transmit::Transmit;

use idmap::{id_map, IdMap};
use link::Conn;
use stream::{out_size, Client, Out, Pending, Role, Stream};

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
    /// Too many open streams ([`Config::max_streams`]) or clients ([`Config::max_clients`],
    /// or the backend session's [`protocol::MAX_SESSION_STREAMS`] on one tenant).
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
    /// Every upstream slot ([`Config::max_upstreams`]) serves a tenant with streams: a new
    /// tenant must wait.
    PoolFull {
        /// The pool size.
        limit: usize,
        /// A fair time to retry (ms).
        retry_after_ms: u64,
    },
    /// Not a tenant name ([`protocol::facts::is_valid_tenant`]).
    BadTenant,
    /// A session stream's client sent what a client may not (PROTOCOL.md §14.1): a text
    /// message, an undecodable envelope, a `Welcome` or `Pong`, a `Ping` over
    /// [`protocol::session::MAX_PING_BYTES`]. The client is closed with 1002.
    BadEnvelope {
        /// What was wrong, briefly (it goes into the close reason).
        why: &'static str,
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
            Refused::PoolFull { limit, .. } => {
                write!(f, "all {limit} upstream slots of this isolate are busy with other tenants; retry shortly")
            }
            Refused::BadTenant => write!(f, "{}", protocol::facts::TENANT_RULE),
            Refused::BadEnvelope { why } => write!(f, "bad session message: {why}"),
        }
    }
}

/// Something the glue must do, pulled with [`Mux::poll_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open an upstream to `tenant`'s backend in the context that polled this; that
    /// context owns it: it runs its pump and reports [`Mux::handle_connected`] (or
    /// [`Mux::handle_upstream_closed`] if the attempt fails).
    Connect {
        /// The new connection.
        upstream: UpstreamId,
        /// Whose Durable Object.
        tenant: String,
    },
    /// The upstream has something to send or must close: wake its pump, which calls
    /// [`Mux::poll_transmit`].
    WakeUpstream(UpstreamId),
    /// The stream has deliveries: wake its task, which calls [`Mux::poll_delivery`].
    WakeStream(StreamId),
    /// The upstream's owner context is presumed gone (it did not make progress within
    /// [`Config::watchdog_ms`]): drop its task without waiting for it.
    Abandon(UpstreamId),
    /// The HTTP request's context is presumed gone: it did not collect its final delivery
    /// (a reply, or its 504) within [`Config::watchdog_ms`] of its deadline. The core has
    /// forgotten the stream; drop the request's task.
    AbandonRequest(StreamId),
    /// Something the operator's log should show, as an error line ([`log::Line`]).
    Log {
        /// The tenant whose upstream it concerns.
        tenant: String,
        /// What happened, for a person.
        msg: String,
    },
}

/// How an HTTP request travels, decided by [`Mux::open_request`].
#[derive(Debug)]
pub enum Route {
    /// Over the tenant's upstream, as this stream.
    Stream(StreamId),
    /// Directly to the backend over HTTP: the upstream is down and backing off.
    Direct(Request),
}

/// Round-trip samples kept for the isolate-wide percentiles in `/__stats`.
pub const RTT_SAMPLES: usize = 1024;

/// The multiplexer. See the crate docs.
pub struct Mux {
    cfg: Config,
    streams: IdMap<StreamId, Stream>,
    next_stream: u32,
    /// One link per tenant with an upstream (the pool), by tenant name.
    links: links::Links,
    /// Whose link each connection handed out belongs to ([`Mux::link_of`]), so an
    /// upstream's event finds its link without a scan of the pool.
    conns: conns::Conns,
    next_upstream: u64,
    /// Connections whose link ended them: their pump closes them with this code. Since
    /// when, so a pump that never comes to close is abandoned.
    closing: IdMap<UpstreamId, (u16, &'static str, u64)>,
    /// HTTP request deadlines, earliest first.
    deadlines: BTreeSet<(u64, StreamId)>,
    /// Session streams waiting for a new upstream since theirs was lost, by the time they
    /// give up ([`Config::reattach_ms`]), earliest first.
    reattach: BTreeSet<(u64, StreamId)>,
    actions: VecDeque<Action>,
    /// Client streams, counting those whose `Close` has not left.
    clients: usize,
    /// Client streams whose client is still there (their contexts are alive).
    attached_clients: usize,
    queued_bytes: usize,
    callers: quota::Callers,
    counters: Counters,
    /// Recent request round trips over any upstream (ms), newest last.
    rtt: VecDeque<u64>,
    /// Every request round trip since the isolate started, in fixed buckets.
    rtt_histogram: RttHistogram,
    rng: u64,
    last_error: Option<String>,
}

impl Mux {
    /// A new multiplexer with nothing open.
    pub fn new(cfg: Config) -> Self {
        Mux {
            streams: id_map(),
            next_stream: 1,
            links: links::Links::default(),
            conns: conns::Conns::default(),
            next_upstream: 1,
            closing: id_map(),
            deadlines: BTreeSet::new(),
            reattach: BTreeSet::new(),
            actions: VecDeque::new(),
            clients: 0,
            attached_clients: 0,
            queued_bytes: 0,
            callers: quota::Callers::default(),
            counters: Counters::default(),
            rtt: VecDeque::new(),
            rtt_histogram: RttHistogram::default(),
            rng: splitmix64(cfg.seed) | 1,
            last_error: None,
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

    /// The last error the core reported (for `/__stats`).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Callers whose usage is tracked now (connections or a recent request).
    pub fn callers_tracked(&self) -> usize {
        self.callers.len()
    }

    /// One request reached the snippet (any route).
    pub fn count_request(&mut self) {
        self.counters.requests_handled += 1;
    }

    /// An error the glue saw and logged itself (a failed send to a client, a failed
    /// fallback): counted, and kept as the last error.
    pub fn note_error(&mut self, why: String) {
        self.counters.errors += 1;
        self.last_error = Some(why);
    }

    fn log(&mut self, tenant: &str, why: String) {
        self.last_error = Some(format!("tenant {tenant}: {why}"));
        self.actions.push_back(Action::Log { tenant: tenant.to_owned(), msg: why });
    }

    /// Open streams of each kind: (client WebSockets, HTTP requests). Clients that left
    /// are not counted.
    pub fn open_streams(&self) -> (usize, usize) {
        let live = self.streams.values().filter(|s| !s.detached);
        live.fold((0, 0), |(ws, http), s| if s.is_client() { (ws + 1, http) } else { (ws, http + 1) })
    }

    /// Streams of any kind the core still holds (clients that left count until their
    /// `Close` is sent): at rest this returns to zero.
    pub fn streams_held(&self) -> usize {
        self.streams.len()
    }

    /// Whether the stream exists and its client is still attached.
    pub fn is_open(&self, id: StreamId) -> bool {
        self.streams.get(&id).is_some_and(|s| !s.detached)
    }

    /// Whether the stream carries a session (PROTOCOL.md §14).
    pub fn is_session(&self, id: StreamId) -> bool {
        self.streams.get(&id).and_then(Stream::client).is_some_and(|c| c.session.is_some())
    }

    /// Session streams waiting for a new upstream now (their old one was lost).
    pub fn sessions_waiting(&self) -> usize {
        self.reattach.len()
    }

    fn alloc_id(&mut self) -> StreamId {
        loop {
            let id = StreamId(self.next_stream);
            self.next_stream = self.next_stream.checked_add(1).unwrap_or(1);
            if !self.streams.contains_key(&id) {
                return id;
            }
        }
    }

    /// Opens a stream for a client WebSocket speaking to backend service `path` of
    /// `tenant`, on behalf of `identity` (the caller the front door verified), counted
    /// against the allowance of `caller` ([`quota::caller_key`]): one of its connections,
    /// and [`quota::UPGRADE_COST`] of its requests. With `attach` (the upgrade's session
    /// parameters, [`session::from_query`]) it is a session stream (PROTOCOL.md §14).
    pub fn open_client(
        &mut self,
        tenant: &str,
        path: &str,
        identity: Identity,
        caller: &str,
        attach: Option<Attach>,
        now: u64,
    ) -> Result<StreamId, Refused> {
        // Clients that left count until their Close has gone: the backend still holds
        // their entry, and one session must never see more than MAX_SESSION_STREAMS.
        let on_link = self.links.get(tenant).map_or(0, |l| l.clients);
        if self.clients >= self.cfg.max_clients
            || self.streams.len() >= self.cfg.max_streams
            || on_link >= protocol::MAX_SESSION_STREAMS
        {
            self.counters.refused += 1;
            return Err(Refused::TooManyStreams);
        }
        let limit = self.cfg.max_connections_per_caller;
        if self.callers.connections(caller) >= limit && limit > 0 {
            self.counters.refused += 1;
            return Err(Refused::TooManyConnections { limit });
        }
        self.admit(tenant, now)?;
        let rate = self.cfg.caller_requests_per_sec;
        if let Err(retry_after_ms) = self.callers.take(caller, quota::UPGRADE_COST, rate, now) {
            self.counters.rate_limited += 1;
            return Err(Refused::RateLimited { what: "requests", limit: rate, retry_after_ms });
        }
        if !self.callers.connect(caller, limit, self.cfg.caller_requests_per_sec, now) {
            self.counters.refused += 1;
            return Err(Refused::TooManyConnections { limit });
        }
        let (messages, bytes) = self.client_burst();
        let client = Client {
            path: path.to_owned(),
            identity,
            caller: caller.to_owned(),
            messages: quota::Bucket::full(messages, now),
            bytes: quota::Bucket::full(bytes, now),
            replies: quota::Bucket::full(self.cfg.client_reply_bytes_per_sec, now),
            over_budget: false,
            on: None,
            session: attach.map(session::Session::new),
        };
        let id = self.insert(tenant, Role::Client(client), now);
        self.clients += 1;
        self.attached_clients += 1;
        self.enqueue(id, Out::Open, true, false, now)?;
        self.counters.ws_streams_opened += 1;
        Ok(id)
    }

    /// A client's message and byte bursts: one second's worth, and at least one largest
    /// message of bytes.
    fn client_burst(&self) -> (u64, u64) {
        let c = &self.cfg;
        (c.client_messages_per_sec, c.client_bytes_per_sec.max(c.max_message_bytes as u64))
    }

    /// Takes one HTTP request from `caller`'s allowance ([`quota::caller_key`]): asked
    /// before anything else is done for the request, whichever way it then travels.
    pub fn admit_request(&mut self, caller: &str, now: u64) -> Result<(), Refused> {
        let limit = self.cfg.caller_requests_per_sec;
        self.callers.request(caller, limit, now).map_err(|retry_after_ms| {
            self.counters.rate_limited += 1;
            Refused::RateLimited { what: "requests", limit, retry_after_ms }
        })
    }

    /// Decides how one HTTP request for `tenant` travels (its caller's allowance was taken
    /// first, with [`Mux::admit_request`]): over the upstream as a single frame that must
    /// be answered by `now + request_timeout_ms`, or directly when the upstream is down
    /// and backing off.
    pub fn open_request(&mut self, tenant: &str, req: Request, now: u64) -> Result<Route, Refused> {
        if req.body.len() > self.cfg.max_message_bytes {
            return Err(Refused::TooLarge { size: req.body.len(), limit: self.cfg.max_message_bytes });
        }
        if self.streams.len() >= self.cfg.max_streams {
            self.counters.refused += 1;
            return Err(Refused::TooManyStreams);
        }
        self.admit(tenant, now)?;
        let backing_off = self
            .links
            .get(tenant)
            .is_some_and(|l| matches!(l.conn, Conn::Down) && l.failures > 0 && l.retry_at.is_some_and(|t| now < t));
        if backing_off {
            self.counters.fallbacks += 1;
            return Ok(Route::Direct(req));
        }
        let deadline = now.saturating_add(self.cfg.request_timeout_ms);
        let id = self.insert(tenant, Role::Request(Pending { deadline, sent: None, expired: false }), now);
        if let Err(e) = self.enqueue(id, Out::Request(req), false, false, now) {
            self.forget(id, now);
            return Err(e);
        }
        self.deadlines.insert((deadline, id));
        self.counters.http_streams_opened += 1;
        Ok(Route::Stream(id))
    }

    fn insert(&mut self, tenant: &str, role: Role, now: u64) -> StreamId {
        let id = self.alloc_id();
        if let Some(link) = self.links.get_mut(tenant) {
            match role {
                Role::Client(_) => link.clients += 1,
                Role::Request(_) => link.requests += 1,
            }
            link.last_used = now;
            link.recent_uses += 1;
        }
        let stream = Stream {
            tenant: tenant.to_owned(),
            role,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            inbox: VecDeque::new(),
            detached: false,
        };
        self.streams.insert(id, stream);
        id
    }

    /// Drops a stream and everything it held, wherever it was counted.
    fn forget(&mut self, id: StreamId, now: u64) {
        let Some(s) = self.streams.remove(&id) else { return };
        self.queued_bytes -= s.outbox_bytes;
        if let Some(link) = self.links.get_mut(&s.tenant) {
            if !s.outbox.is_empty() {
                // Nothing of it is to be sent: it must not make the link look busy.
                link.ready.retain(|r| *r != id);
            }
            match s.role {
                Role::Client(_) => link.clients = link.clients.saturating_sub(1),
                Role::Request(_) => link.requests = link.requests.saturating_sub(1),
            }
            link.last_used = now;
        }
        match s.role {
            Role::Client(c) => {
                if let Some(t) = c.session.and_then(|s| s.reattach_by) {
                    self.reattach.remove(&(t, id));
                }
                self.clients = self.clients.saturating_sub(1);
                if !s.detached {
                    self.attached_clients = self.attached_clients.saturating_sub(1);
                    self.callers.disconnect(&c.caller);
                }
            }
            Role::Request(p) => {
                self.deadlines.remove(&(p.deadline, id));
                // The last request in flight on an expired bounded owner's connection.
                self.retire_if_unwanted(&s.tenant, now);
            }
        }
    }

    /// Marks a stream's client gone: its connection allowance is returned once.
    fn detach(&mut self, id: StreamId, now: u64) {
        let Some(s) = self.streams.get_mut(&id) else { return };
        if s.detached {
            return;
        }
        s.detached = true;
        s.inbox.clear();
        if let Role::Client(c) = &s.role {
            self.attached_clients = self.attached_clients.saturating_sub(1);
            self.callers.disconnect(&c.caller);
            if self.attached_clients == 0 {
                // The last client that could have taken an expired owner's upstream over.
                self.retire_unwanted(now);
            }
        }
    }

    /// Queues one client WebSocket message (text or binary) for the backend, if the
    /// client is within its rates (a burst of a second's worth, then the rate). On a
    /// session stream only binary envelopes a client sends are taken, and a `Ping` is
    /// answered here instead of going upstream: an idle session client costs its
    /// Durable Object nothing.
    /// The payload is moved into the stream's queue, never copied.
    pub fn handle_client_message(
        &mut self,
        id: StreamId,
        text: bool,
        payload: Vec<u8>,
        now: u64,
    ) -> Result<(), Refused> {
        if payload.len() > self.cfg.max_message_bytes {
            return Err(Refused::TooLarge { size: payload.len(), limit: self.cfg.max_message_bytes });
        }
        let (burst_messages, burst_bytes) = self.client_burst();
        let (message_rate, byte_rate) = (self.cfg.client_messages_per_sec, self.cfg.client_bytes_per_sec);
        let Some(Stream { role: Role::Client(client), detached: false, .. }) = self.streams.get_mut(&id) else {
            return Err(Refused::UnknownStream);
        };
        let edge = match client.session {
            None => session::FromClient::Forward,
            Some(_) => session::from_client(text, &payload).map_err(|why| Refused::BadEnvelope { why })?,
        };
        // Pings count against the client's rates too: answering a flood costs the isolate.
        let over = match client.messages.take(1, message_rate, burst_messages, now) {
            Err(ms) => Some(("messages", message_rate, ms)),
            Ok(()) => client
                .bytes
                .take(payload.len() as u64, byte_rate, burst_bytes, now)
                .err()
                .map(|ms| ("bytes", byte_rate, ms)),
        };
        if let Some((what, limit, retry_after_ms)) = over {
            self.counters.rate_limited += 1;
            return Err(Refused::RateLimited { what, limit, retry_after_ms });
        }
        if edge == session::FromClient::Ping {
            self.answer_at_edge(id, protocol::session::pong_for(&payload));
            return Ok(());
        }
        let len = payload.len() as u64;
        self.enqueue(id, Out::Data { text, payload }, false, false, now)?;
        self.counters.messages_up += 1;
        self.counters.bytes_up += len;
        Ok(())
    }

    /// Hands a session client the `Pong` for its `Ping`, behind what it was already owed.
    /// Not a backend message: it is counted in `edge_pongs` only, and not against the
    /// reply budget (it is no larger than the ping, which the client's own rates bound).
    fn answer_at_edge(&mut self, id: StreamId, pong: Vec<u8>) {
        let Some(stream) = self.streams.get_mut(&id).filter(|s| !s.detached) else { return };
        if matches!(&stream.role, Role::Client(c) if c.over_budget) {
            return;
        }
        if stream.inbox.is_empty() {
            self.actions.push_back(Action::WakeStream(id));
        }
        stream.inbox.push_back(Delivery::Binary(pong));
        self.counters.edge_pongs += 1;
    }

    /// The client side of a stream is gone (WebSocket closed, HTTP request finished or
    /// abandoned). Tells the backend with a `Close` after anything already queued, and
    /// drops whatever the backend still sends to it.
    pub fn handle_client_closed(&mut self, id: StreamId, code: u16, reason: &str, now: u64) {
        let Some(s) = self.streams.get(&id) else { return };
        if s.detached {
            return;
        }
        let client = s.is_client();
        let tenant = s.tenant.clone();
        self.detach(id, now);
        if let Some(link) = self.links.get_mut(&tenant) {
            if let Conn::Up { owner, .. } = &mut link.conn {
                if owner.stream == Some(id) {
                    owner.orphaned = true;
                }
            }
            // A successor connecting in this client's context dies with it (its connect is
            // that context's I/O, RUNTIME.md §1): dropped now, the hand-over starts again
            // from the next context that settles, instead of the watchdog finding the
            // connect dead WATCHDOG_MS later and counting an error.
            if let Some(s) = link.successor.filter(|s| s.owner.stream == Some(id)) {
                link.successor = None;
                self.actions.push_back(Action::Abandon(s.id));
            }
        }
        // The backend keeps no state for an HTTP stream: only client streams are told.
        let told = client && {
            let close = Close { code, reason: truncate_reason(reason) };
            self.enqueue(id, Out::Close(close), true, false, now).is_ok()
        };
        if !told {
            self.forget_if_drained(id, now);
        }
    }

    fn forget_if_drained(&mut self, id: StreamId, now: u64) {
        if self.streams.get(&id).is_some_and(|s| s.detached && s.outbox.is_empty()) {
            self.forget(id, now);
        }
    }

    /// Appends a frame to a stream's outbox. `force` skips the backpressure limits (open
    /// and close frames must never be refused once a stream exists); `front` puts it
    /// first (a re-open after a hand-over precedes the frames held behind it).
    fn enqueue(&mut self, id: StreamId, out: Out, force: bool, front: bool, now: u64) -> Result<(), Refused> {
        let Some(stream) = self.streams.get_mut(&id) else {
            return Err(Refused::UnknownStream);
        };
        let size = out_size(&out, stream.client());
        let total_ok = self.queued_bytes + size <= self.cfg.max_queued_bytes;
        let stream_ok = stream.outbox_bytes + size <= self.cfg.max_queued_bytes_per_stream
            && stream.outbox.len() < self.cfg.max_queued_frames_per_stream;
        // An empty queue takes one frame whatever its own bound, so a single large message
        // can pass; the isolate-wide bound holds for every queue, empty or not.
        if !(force || total_ok && (stream_ok || stream.outbox.is_empty())) {
            return Err(Refused::Backpressure);
        }
        let was_empty = stream.outbox.is_empty();
        if front {
            stream.outbox.push_front((out, size));
        } else {
            stream.outbox.push_back((out, size));
        }
        stream.outbox_bytes += size;
        self.queued_bytes += size;
        if was_empty {
            let tenant = stream.tenant.clone();
            if let Some(link) = self.links.get_mut(&tenant) {
                link.ready.push_back(id);
            }
            self.became_sendable(&tenant, now);
        }
        Ok(())
    }

    /// Something was queued on `tenant`'s link: start the watchdog's clock and wake its pump.
    fn became_sendable(&mut self, tenant: &str, now: u64) {
        let Some(link) = self.links.get_mut(tenant) else { return };
        let Some((id, _)) = link.up() else { return };
        if !transmit::wants_transmit(link, &self.streams) {
            return;
        }
        link.pending_since.get_or_insert(now);
        if !link.wake_sent {
            link.wake_sent = true;
            self.actions.push_back(Action::WakeUpstream(id));
        }
    }

    /// The next delivery for a stream, in arrival order. A final one (a close, a
    /// response, a failure) ends the stream: after handing it out the stream is forgotten.
    pub fn poll_delivery(&mut self, id: StreamId, now: u64) -> Option<Delivery> {
        let stream = self.streams.get_mut(&id)?;
        let d = stream.inbox.pop_front()?;
        if d.is_final() {
            self.detach(id, now);
            self.forget(id, now);
        }
        Some(d)
    }

    /// The next thing the glue must do, in the context `here` (which carries out any
    /// [`Action::Connect`] and owns that upstream). Poll until `None` after every input.
    pub fn poll_action(&mut self, here: Here, now: u64) -> Option<Action> {
        if let Some(a) = self.actions.pop_front() {
            return Some(a);
        }
        self.poll_connect(here, now)
    }

    fn deliver(&mut self, id: StreamId, d: Delivery, now: u64) {
        let reply_rate = self.cfg.client_reply_bytes_per_sec;
        let Some(stream) = self.streams.get_mut(&id).filter(|s| !s.detached) else {
            self.counters.dropped_deliveries += 1;
            return;
        };
        let message_len = match &d {
            Delivery::Text(s) => Some(s.len()),
            Delivery::Binary(b) => Some(b.len()),
            _ => None,
        };
        if let (Some(len), Role::Client(c)) = (message_len, &mut stream.role) {
            if c.over_budget {
                self.counters.dropped_deliveries += 1;
                return;
            }
            if c.replies.take(len as u64, reply_rate, reply_rate, now).is_err() {
                // What it is owed waits in the runtime's queue if it does not read: past
                // its budget it is sent away, and what it was owed is dropped here.
                c.over_budget = true;
                stream.inbox.clear();
                stream.inbox.push_back(Delivery::Refused {
                    code: 1008,
                    reason: format!("reply rate exceeded ({reply_rate} bytes per second)"),
                });
                self.counters.rate_limited += 1;
                self.counters.dropped_deliveries += 1;
                self.actions.push_back(Action::WakeStream(id));
                return;
            }
        }
        if let Some(len) = message_len {
            self.counters.messages_down += 1;
            self.counters.bytes_down += len as u64;
        }
        if let (Delivery::Binary(b), Role::Client(Client { session: Some(s), .. })) = (&d, &mut stream.role) {
            // Passed on: a re-open attaches after it (PROTOCOL.md §14.3).
            s.passed_on(b);
        }
        if stream.inbox.is_empty() {
            self.actions.push_back(Action::WakeStream(id));
        }
        stream.inbox.push_back(d);
    }

    /// Median and 99th percentile of recent request round trips over any upstream (ms).
    pub fn rtt_percentiles(&self) -> Option<(u64, u64)> {
        let mut v: Vec<u64> = self.rtt.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at = |q: u64| v.get(((v.len() as u64 - 1) * q / 100) as usize).copied().unwrap_or(0);
        Some((at(50), at(99)))
    }

    /// Every request round trip over any upstream since the isolate started (for
    /// `/__metrics`).
    pub fn rtt_histogram(&self) -> &RttHistogram {
        &self.rtt_histogram
    }

    fn push_rtt(&mut self, sample: u64) {
        self.rtt_histogram.record(sample);
        if self.rtt.len() == RTT_SAMPLES {
            self.rtt.pop_front();
        }
        self.rtt.push_back(sample);
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

/// Spreads a seed over all 64 bits, so nearby seeds give unrelated jitter sequences.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `s` cut to what a close frame carries ([`protocol::facts::MAX_CLOSE_REASON`]).
pub(crate) fn truncate_reason(s: &str) -> String {
    protocol::truncate_utf8(s, protocol::facts::MAX_CLOSE_REASON).to_owned()
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
mod index_tests;
#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod owner_tests;
#[cfg(test)]
mod pool_tests;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
