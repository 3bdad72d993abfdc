//! One tenant's upstream: the connection to its Durable Object and everything about its
//! life — who owns it, a successor being opened, the old one draining after a hand-over,
//! backoff after failures, the heartbeat, and what waits to be sent on it. Plain data;
//! the decisions that use it live in `lifecycle.rs`, `transmit.rs`, `timer.rs` and
//! `pool.rs`.

use std::collections::VecDeque;
use std::fmt;

use protocol::StreamId;

/// One upstream connection: each connect attempt gets a new id, unique in the isolate, so
/// a late event from an old connection can never be mistaken for the current one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamId(pub u64);

impl fmt::Display for UpstreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream {}", self.0)
    }
}

/// What kind of request context owns an upstream (only the owner may use its socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OwnerKind {
    /// No upstream.
    #[default]
    None,
    /// A client WebSocket's context: long-lived, preferred.
    WebSocket,
    /// An HTTP request's context: bounded by [`crate::Config::owner_lifetime_ms`].
    Http,
    /// A scheduled event's (keep-warm) context: bounded like an HTTP one.
    Background,
}

impl OwnerKind {
    /// Name used in `/__stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::None => "none",
            OwnerKind::WebSocket => "websocket",
            OwnerKind::Http => "http",
            OwnerKind::Background => "background",
        }
    }
}

/// The request context the glue runs in when it polls for actions. A
/// [`crate::Action::Connect`] is carried out by that context, which then owns the
/// upstream, so the core must know who it is handing the socket to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Here {
    /// A client WebSocket's context (its stream).
    Client(StreamId),
    /// An HTTP request's context while it waits for its reply (it holds `waitUntil` for
    /// what it owns).
    Request,
    /// A scheduled event's context while its handler runs.
    Background,
    /// A bounded context whose own work is done — an HTTP request that answered, a
    /// scheduled round that ended — running only for what it already owns (an upstream's
    /// events): it may end at any time, so it carries out no new `Connect`.
    Lingering,
}

impl Here {
    pub(crate) fn kind(self) -> OwnerKind {
        match self {
            Here::Client(_) => OwnerKind::WebSocket,
            Here::Request => OwnerKind::Http,
            Here::Background | Here::Lingering => OwnerKind::Background,
        }
    }
}

/// Who owns a connection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Owner {
    pub kind: OwnerKind,
    pub since: u64,
    /// The client stream whose context owns it (WebSocket owners).
    pub stream: Option<StreamId>,
    /// That client has left: the context may end at any time.
    pub orphaned: bool,
    /// A bounded (HTTP, background) owner whose [`crate::Config::owner_lifetime_ms`] is up.
    pub expired: bool,
}

impl Owner {
    /// Bounded: an HTTP request's or a scheduled event's context, which the platform ends
    /// soon after its own work (RUNTIME.md §4).
    pub fn is_bounded(&self) -> bool {
        matches!(self.kind, OwnerKind::Http | OwnerKind::Background)
    }
}

impl Owner {
    pub fn of(here: Here, now: u64) -> Owner {
        let stream = match here {
            Here::Client(id) => Some(id),
            Here::Request | Here::Background | Here::Lingering => None,
        };
        Owner { kind: here.kind(), since: now, stream, orphaned: false, expired: false }
    }
}

/// The current connection's state.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Conn {
    /// Nothing open, nothing being opened.
    Down,
    /// An attempt is under way; everyone else waits for it.
    Connecting { id: UpstreamId, owner: Owner, since: u64 },
    /// Open; frames flow.
    Up { id: UpstreamId, owner: Owner },
}

/// A successor being opened to take over from the current connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Successor {
    pub id: UpstreamId,
    pub owner: Owner,
    pub since: u64,
}

/// The previous connection, finishing its in-flight replies after a hand-over or when its
/// owner retires it: it carries one barrier `Ping` and nothing else.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drain {
    pub id: UpstreamId,
    pub barrier_sent: bool,
    /// The close reason once the barrier is back.
    pub reason: &'static str,
    /// It must end within [`crate::Config::watchdog_ms`] of this.
    pub started: u64,
}

/// The purpose byte of the hand-over barrier's `Ping` (PROTOCOL.md §5.3). Bytes 2 and
/// 3 were the heartbeat's and keep-warm's binary pings, which are text pings now.
const BARRIER: u8 = 1;

/// The barrier `Ping`'s payload: the purpose, then the connection it is sent on, so its
/// `Pong` is matched to that connection.
pub(crate) fn barrier_token(on: UpstreamId) -> [u8; 9] {
    let mut t = [BARRIER; 9];
    for (to, from) in t.iter_mut().skip(1).zip(on.0.to_be_bytes()) {
        *to = from;
    }
    t
}

/// Whether a `Pong` on `on` answers that connection's barrier.
pub(crate) fn is_barrier_pong(payload: &[u8], on: UpstreamId) -> bool {
    payload == barrier_token(on)
}

/// The text message of a probe, and its answer. Backends set the runtime's
/// auto-response for it (`setWebSocketAutoResponse`), which answers without waking (or
/// billing) a hibernating Durable Object. The hand-over barrier cannot be one: the
/// auto-response is not ordered after the object's replies (PROTOCOL.md §5.2).
pub(crate) const PROBE_PING: &str = "ping";
/// See [`PROBE_PING`].
pub(crate) const PROBE_PONG: &str = "pong";

/// Why a text `ping` went out on an upstream. The runtime answers a socket's pings in
/// order, so each `pong` answers the oldest ping still out on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Something sent has had no message back for [`crate::Config::heartbeat_ms`].
    Heartbeat,
    /// Nothing has arrived for [`crate::Config::upstream_keepalive_ms`].
    Keepalive,
    /// A keep-warm round's ping.
    Warm,
}

/// Pings remembered per link as out and unanswered: one heartbeat or idle check at a
/// time and a keep-warm round's per minute, answered within seconds, keep it short; a
/// backend that answers none with the heartbeat off would grow it a round at a time, so
/// past this the oldest is forgotten (its `pong` is then taken for a later ping's, which
/// only a keep-warm count could notice).
pub(crate) const MAX_PROBES_OUT: usize = 16;

/// Round trips of one link, newest last.
pub(crate) const LINK_RTT_SAMPLES: usize = 64;

/// One tenant's upstream.
#[derive(Debug)]
pub(crate) struct Link {
    pub tenant: String,
    pub conn: Conn,
    pub successor: Option<Successor>,
    pub drain: Option<Drain>,
    /// Streams with frames queued, in round-robin order (each at most once).
    pub ready: VecDeque<StreamId>,
    /// Answers to the backend's `Ping`s, sent before stream frames.
    pub pongs: VecDeque<Vec<u8>>,
    /// Text pings to send on the current connection, before anything else.
    pub probes_due: VecDeque<Probe>,
    /// Text pings sent and not answered yet, oldest first, with their connection.
    pub probes_out: VecDeque<(UpstreamId, Probe)>,
    /// Client streams on this link, counting those whose `Close` has not left yet: the
    /// backend session still holds their entry.
    pub clients: usize,
    /// HTTP requests in flight on this link.
    pub requests: usize,
    /// Last time a stream opened or ended here, or the link was created (LRU and TTL).
    pub last_used: u64,
    /// Streams opened since the last keep-warm round ("hottest" upstreams).
    pub recent_uses: u64,
    /// Connect failures since it was last up (drives the backoff).
    pub failures: u32,
    /// No connect before this time, while backing off.
    pub retry_at: Option<u64>,
    /// Keep-warm wants it open until then even with no stream.
    pub warm_until: u64,
    /// Since when sendable frames have waited for a transmit (the watchdog's clock).
    pub pending_since: Option<u64>,
    /// Since when something sent has had no message back (the heartbeat's clock).
    pub unanswered_since: Option<u64>,
    /// A heartbeat or idle-check ping is out since then: any message ends the wait.
    pub heartbeat_sent: Option<(u64, Probe)>,
    /// When a connection of the link last came up or received anything (the idle
    /// check's clock).
    pub last_heard: u64,
    /// The pump was told to wake and has not polled since.
    pub wake_sent: bool,
    /// It has been up before (so coming up again is a reconnect).
    pub ever_up: bool,
    /// Recent request round trips (ms).
    pub rtt: VecDeque<u64>,
    pub handovers: u64,
    pub errors: u64,
    /// Its tenant, shared with the pool's index ([`crate::links`]).
    pub key: std::rc::Rc<str>,
    /// Where it stands in that index.
    pub indexed: crate::links::Indexed,
}

impl Link {
    pub fn new(tenant: &str, now: u64) -> Link {
        Link {
            tenant: tenant.to_owned(),
            conn: Conn::Down,
            successor: None,
            drain: None,
            ready: VecDeque::new(),
            pongs: VecDeque::new(),
            probes_due: VecDeque::new(),
            probes_out: VecDeque::new(),
            clients: 0,
            requests: 0,
            last_used: now,
            recent_uses: 0,
            failures: 0,
            retry_at: None,
            warm_until: 0,
            pending_since: None,
            unanswered_since: None,
            heartbeat_sent: None,
            last_heard: now,
            wake_sent: false,
            ever_up: false,
            rtt: VecDeque::new(),
            handovers: 0,
            errors: 0,
            key: std::rc::Rc::from(tenant),
            indexed: crate::links::Indexed::default(),
        }
    }

    /// The open connection, if any.
    pub fn up(&self) -> Option<(UpstreamId, &Owner)> {
        match &self.conn {
            Conn::Up { id, owner } => Some((*id, owner)),
            Conn::Down | Conn::Connecting { .. } => None,
        }
    }

    /// Whether `id` is any of this link's connections (current, successor, draining).
    pub fn has(&self, id: UpstreamId) -> bool {
        let current = match self.conn {
            Conn::Down => None,
            Conn::Connecting { id, .. } | Conn::Up { id, .. } => Some(id),
        };
        current == Some(id) || self.successor.is_some_and(|s| s.id == id) || self.drain.is_some_and(|d| d.id == id)
    }

    /// Client frames wait while the old connection drains (per-stream order).
    pub fn held(&self) -> bool {
        self.drain.is_some()
    }

    /// Nothing depends on it: no stream, no request, no hand-over under way.
    pub fn is_idle(&self) -> bool {
        self.clients == 0 && self.requests == 0 && self.successor.is_none() && self.drain.is_none()
    }

    /// Whether it needs a connection now: it is down, not backing off, and a client, a
    /// queued frame or a keep-warm round wants it (requests already sent on a draining
    /// connection do not: their replies come back on it).
    pub fn needs_connect(&self, now: u64) -> bool {
        matches!(self.conn, Conn::Down)
            && self.retry_at.is_none_or(|t| now >= t)
            && (self.clients > 0 || !self.ready.is_empty() || self.warm_until > now)
    }

    /// Whether its open connection belongs to a bounded owner whose lifetime is up.
    pub fn expired_owner(&self) -> bool {
        self.up().is_some_and(|(_, o)| o.is_bounded() && o.expired)
    }

    /// Whether a client's (long-lived) context should take the open connection over: it is
    /// in use, and its owner's client left or it is owned by a bounded context.
    pub fn wants_client_owner(&self) -> bool {
        let Some((_, owner)) = self.up() else { return false };
        self.in_use() && self.successor.is_none() && self.drain.is_none() && (owner.orphaned || owner.is_bounded())
    }

    /// Something depends on its connection: a client, a request, a queued frame. An
    /// upstream nothing uses needs no new owner: it retires, goes idle or is evicted.
    pub fn in_use(&self) -> bool {
        self.clients > 0 || self.requests > 0 || !self.ready.is_empty()
    }

    /// The owner of the open connection, or none.
    pub fn owner_kind(&self) -> OwnerKind {
        match &self.conn {
            Conn::Up { owner, .. } | Conn::Connecting { owner, .. } => owner.kind,
            Conn::Down => OwnerKind::None,
        }
    }

    /// Median of recent round trips (ms).
    pub fn rtt_p50(&self) -> Option<u64> {
        let mut v: Vec<u64> = self.rtt.iter().copied().collect();
        v.sort_unstable();
        v.get(v.len().checked_sub(1)? / 2).copied()
    }

    pub fn push_rtt(&mut self, sample: u64) {
        if self.rtt.len() == LINK_RTT_SAMPLES {
            self.rtt.pop_front();
        }
        self.rtt.push_back(sample);
    }
}
