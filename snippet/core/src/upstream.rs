//! The upstream's life: generations, ownership, connect and backoff, hand-over to a new
//! owner with a drain barrier, the watchdog, and what every stream learns when an
//! upstream is lost.
//!
//! Hand-over, step by step (RUNTIME.md §4):
//! 1. [`Mux::wants_handover`] says the owner should change (its lifetime is up, its client
//!    left, or a long-lived WebSocket context can replace an HTTP one). The caller's
//!    context calls [`Mux::begin_handover`] and opens a fresh upstream.
//! 2. [`Mux::upstream_up`] on the successor makes it current. The old one *drains*: it
//!    carries one barrier `Ping` and nothing else; HTTP requests flow on the new one at
//!    once; WebSocket frames are held so no stream's order can flip between sockets.
//! 3. The backend answers a socket's messages in order, so the barrier's `Pong` means every
//!    reply to the old upstream has arrived. WebSocket streams are re-opened on the new
//!    upstream (an `Open` before their held frames), and the old one is retired: its owner
//!    closes it with 1000. Nothing in flight is lost.

use protocol::{FrameKind, StreamId};

use crate::{Delivery, Mux, Open, Request, StreamKind, Upstream};

/// Identifies one upstream connection; each connect gets a new one.
pub type Gen = u64;

/// What kind of request context owns an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OwnerKind {
    /// No upstream.
    #[default]
    None,
    /// A client WebSocket's context: long-lived, preferred.
    WebSocket,
    /// An HTTP request's context: bounded by [`crate::Config::owner_lifetime_ms`].
    Http,
}

impl OwnerKind {
    /// Name used in `/__stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::None => "none",
            OwnerKind::WebSocket => "websocket",
            OwnerKind::Http => "http",
        }
    }
}

/// The owner of the current upstream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Owner {
    pub kind: OwnerKind,
    pub since: u64,
    /// The client stream whose context owns it (WebSocket owners).
    pub stream: Option<StreamId>,
    /// That client has left: the context may end at any time.
    pub orphaned: bool,
}

/// An upstream finishing its in-flight replies after a hand-over.
#[derive(Debug, Clone)]
pub(crate) struct Drain {
    pub gen: Gen,
    pub barrier_sent: bool,
    /// When the drain began; it must end within [`crate::Config::watchdog_ms`].
    pub started: u64,
}

/// Where an upstream generation stands, for the pump that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenState {
    /// Being opened (first connect or a successor).
    Connecting,
    /// The current upstream.
    Current,
    /// Handed over; waiting for its barrier. Keep reading, send nothing new.
    Draining,
    /// Done: close it (1000) and stop.
    Retired,
}

/// The barrier ping's payload for a generation.
pub(crate) fn barrier_token(gen: Gen) -> [u8; 8] {
    gen.to_be_bytes()
}

impl Mux {
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

    /// The owner of the current upstream.
    pub fn owner(&self) -> OwnerKind {
        self.owner.kind
    }

    /// Where upstream `gen` stands.
    pub fn gen_state(&self, gen: Gen) -> GenState {
        if self.handover == Some(gen) || (gen == self.gen && self.upstream == Upstream::Connecting) {
            GenState::Connecting
        } else if gen == self.gen && self.upstream == Upstream::Up {
            GenState::Current
        } else if self.drain.as_ref().is_some_and(|d| d.gen == gen) {
            GenState::Draining
        } else {
            GenState::Retired
        }
    }

    /// A connection attempt starts; the caller's context will own it. Returns its generation.
    pub fn upstream_connecting(&mut self, kind: OwnerKind, stream: Option<StreamId>, now: u64) -> Gen {
        self.last_gen += 1;
        self.gen = self.last_gen;
        self.upstream = Upstream::Connecting;
        self.connect_started = now;
        self.owner = Owner { kind, since: now, stream, orphaned: false };
        self.counters.connect_attempts += 1;
        self.gen
    }

    /// Whether a context of kind `caller` should take the upstream over now: the owner's
    /// client left, or an HTTP owner's lifetime is up, or the caller is a (preferred)
    /// WebSocket context and the owner is an HTTP one.
    pub fn wants_handover(&self, caller: OwnerKind, now: u64) -> bool {
        if self.upstream != Upstream::Up || self.handover.is_some() || self.drain.is_some() {
            return false;
        }
        let o = &self.owner;
        o.orphaned
            || (o.kind == OwnerKind::Http
                && (caller == OwnerKind::WebSocket || now.saturating_sub(o.since) >= self.cfg.owner_lifetime_ms))
    }

    /// The caller's context opens a successor upstream. Returns its generation.
    pub fn begin_handover(&mut self, kind: OwnerKind, stream: Option<StreamId>, now: u64) -> Option<Gen> {
        if !self.wants_handover(kind, now) {
            return None;
        }
        self.last_gen += 1;
        self.handover = Some(self.last_gen);
        self.connect_started = now;
        self.next_owner = Owner { kind, since: now, stream, orphaned: false };
        self.counters.connect_attempts += 1;
        Some(self.last_gen)
    }

    /// Upstream `gen` is open. Returns false if nobody wants it any more (the caller
    /// closes it): a stale attempt.
    pub fn upstream_up(&mut self, gen: Gen, now: u64) -> bool {
        if self.handover == Some(gen) {
            // The successor takes over; the old upstream drains behind a barrier.
            self.handover = None;
            self.drain = Some(Drain { gen: self.gen, barrier_sent: false, started: now });
            self.held = true;
            self.gen = gen;
            self.owner = std::mem::take(&mut self.next_owner);
            self.counters.handovers += 1;
            self.pending_since = Some(now);
            return true;
        }
        if gen != self.gen || self.upstream != Upstream::Connecting {
            return false;
        }
        self.upstream = Upstream::Up;
        if self.counters.backend_connects > 0 {
            self.counters.backend_reconnects += 1;
        }
        self.counters.backend_connects += 1;
        self.failures = 0;
        self.next_connect_at = None;
        self.pending_since = (!self.ready.is_empty() || !self.control.is_empty()).then_some(now);
        for s in self.streams.values_mut() {
            if s.kind == StreamKind::WebSocket {
                s.on = gen;
            }
        }
        true
    }

    /// The barrier came back on `gen` (a draining upstream): every reply it owed has
    /// arrived. Re-open WebSocket streams on the current upstream and release them.
    pub(crate) fn barrier_returned(&mut self, gen: Gen, payload: &[u8]) {
        if self.drain.as_ref().is_none_or(|d| d.gen != gen) || payload != barrier_token(gen) {
            return;
        }
        self.drain = None;
        self.held = false;
        let current = self.gen;
        let ws: Vec<(StreamId, Vec<u8>)> = self
            .streams
            .iter()
            .filter(|(_, s)| s.kind == StreamKind::WebSocket && s.on != current)
            .map(|(id, s)| (*id, Open { path: s.path.clone(), identity: s.identity.clone() }.encode()))
            .collect();
        for (id, open) in ws {
            let _ = self.enqueue_at(id, FrameKind::Open, &open, true, true);
            if let Some(s) = self.streams.get_mut(&id) {
                s.on = current;
            }
        }
    }

    /// Whether the pump has made no progress for [`crate::Config::watchdog_ms`] while
    /// frames waited: the owner's context is gone or stuck. Called on every submit; the
    /// wait is timed from the first call that sees frames pending (a send resets it).
    pub fn watchdog_expired(&mut self, now: u64) -> bool {
        if self.upstream != Upstream::Up || !self.wants_transmit_on(self.gen) {
            self.pending_since = None;
            return false;
        }
        let since = *self.pending_since.get_or_insert(now);
        now.saturating_sub(since) >= self.cfg.watchdog_ms
    }

    /// When the current drain must have ended, if one is under way.
    pub fn drain_deadline(&self) -> Option<u64> {
        self.drain.as_ref().map(|d| d.started.saturating_add(self.cfg.watchdog_ms))
    }

    /// Ends whatever is stuck for [`crate::Config::watchdog_ms`] because the context
    /// driving it is gone: a drain whose barrier did not come back (the old upstream counts
    /// as lost: its streams get clear errors, the held ones move on), a successor that never
    /// came up (abandoned; the current upstream carries on), or a first connect that never
    /// finished (down, with errors or fallbacks for what waited). Returns what it ended.
    pub fn check_stuck(&mut self, now: u64) -> Vec<&'static str> {
        let mut ended = Vec::new();
        let limit = self.cfg.watchdog_ms;
        if let Some(gen) =
            self.drain.as_ref().filter(|_| self.drain_deadline().is_some_and(|t| now >= t)).map(|d| d.gen)
        {
            self.upstream_down(gen, "hand-over: the old upstream did not answer its barrier in time", now);
            ended.push("hand-over: the old upstream did not answer its barrier in time");
        }
        let overdue = now.saturating_sub(self.connect_started) >= limit;
        if self.handover.is_some() && overdue {
            self.handover = None;
            ended.push("hand-over: the successor upstream did not open in time");
        }
        if self.upstream == Upstream::Connecting && overdue {
            let gen = self.gen;
            self.upstream_down(gen, "connect attempt did not finish in time", now);
            ended.push("connect attempt did not finish in time");
        }
        self.counters.watchdog_trips += ended.len() as u64;
        self.counters.errors += ended.len() as u64;
        ended
    }

    /// Counts a watchdog trip (the glue then calls [`Mux::upstream_down`]).
    pub fn count_watchdog_trip(&mut self) {
        self.counters.watchdog_trips += 1;
    }

    /// The generation of the current upstream.
    pub fn current_gen(&self) -> Gen {
        self.gen
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

    /// Upstream `gen` closed, failed or could not be opened. Every stream that depended
    /// on it learns its fate: a WebSocket client gets close 1012 (its in-flight messages
    /// may be lost), an HTTP request that left on it a 502 saying its fate is unknown, and
    /// a request that never left goes to the backend directly ([`Delivery::Fallback`]).
    /// Nothing waits forever. A failed successor or a stale generation changes nothing.
    pub fn upstream_down(&mut self, gen: Gen, why: &str, now: u64) {
        if self.handover == Some(gen) {
            self.handover = None;
            return;
        }
        let draining = self.drain.as_ref().is_some_and(|d| d.gen == gen);
        if draining {
            // Lost before its barrier: replies it owed are gone.
            self.drain = None;
            self.held = false;
            self.fail_streams(gen, why, false);
            return;
        }
        if gen != self.gen || self.upstream == Upstream::Down {
            return;
        }
        let was_up = self.upstream == Upstream::Up;
        self.upstream = Upstream::Down;
        self.owner = Owner::default();
        self.pending_since = None;
        if was_up {
            self.counters.backend_disconnects += 1;
        }
        self.back_off(now);
        self.control.clear();
        if let Some(old) = self.drain.take() {
            self.fail_streams(old.gen, why, false);
        }
        self.held = false;
        self.fail_streams(gen, why, true);
    }

    /// Tells every stream carried by `gen` that it is gone. With `current`, streams not
    /// yet on any upstream (queued) are affected too, and their queues are dropped.
    fn fail_streams(&mut self, gen: Gen, why: &str, current: bool) {
        let ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for id in ids {
            let Some(stream) = self.streams.get_mut(&id) else { continue };
            let affected = match stream.kind {
                StreamKind::WebSocket => stream.on == gen || current,
                StreamKind::Http => stream.sent_on == Some(gen) || (current && stream.sent_on.is_none()),
            };
            if !affected {
                continue;
            }
            // An HTTP request still queued never reached the backend: it can go directly.
            let fallback = stream
                .outbox
                .front()
                .filter(|_| stream.kind == StreamKind::Http && stream.sent_on.is_none())
                .and_then(|f| f.get(protocol::HEADER_LEN..))
                .and_then(|p| Request::decode(p).ok());
            self.queued_bytes -= stream.outbox_bytes;
            stream.outbox.clear();
            stream.outbox_bytes = 0;
            if stream.detached {
                self.streams.remove(&id);
                continue;
            }
            // Clients get a short reason; `why` (internal detail) goes to the log only.
            let d = match (stream.kind, fallback) {
                (StreamKind::WebSocket, _) => {
                    Delivery::Aborted { code: 1012, reason: "upstream lost; reconnect", detail: why.to_owned() }
                }
                (StreamKind::Http, Some(req)) => Delivery::Fallback(req),
                (StreamKind::Http, None) => Delivery::Failed {
                    status: 502,
                    reason: "upstream lost before the reply arrived; the request may or may not have run",
                    detail: why.to_owned(),
                },
            };
            self.deliver(id, d);
        }
        self.ready.retain(|id| self.streams.get(id).is_some_and(|s| !s.outbox.is_empty()));
    }
}
