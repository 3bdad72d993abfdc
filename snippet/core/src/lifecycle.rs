//! A link's connections over time: connect and backoff, hand-over to a new owner with a
//! drain barrier, and what every stream learns when a connection is lost.
//!
//! Hand-over, step by step (RUNTIME.md §4):
//! 1. The owner should change: its client left, or an HTTP/background owner's lifetime is
//!    up, or a (preferred, long-lived) client context comes by while one holds it. The next
//!    [`Mux::poll_action`] from a suitable context returns a `Connect` for a successor.
//! 2. [`Mux::handle_connected`] on the successor makes it current. The old connection
//!    *drains*: it carries one barrier `Ping` and nothing else; requests flow on the new
//!    one at once; client frames are held so no stream's order can flip between sockets.
//! 3. The backend answers a socket's messages in order, so the barrier's `Pong` means every
//!    reply owed on the old connection has arrived. Client streams are re-opened on the new
//!    one (an `Open` before their held frames), and the old one is closed with 1000.
//!    Nothing in flight is lost.
//!
//! A connection lost outright ends what depended on it ([`Mux::link_lost`]), except
//! session streams (PROTOCOL.md §14.3): they are re-opened on the next connection like
//! streams after a barrier, for at most [`crate::Config::reattach_ms`].

use protocol::StreamId;

use crate::link::{Conn, Drain, Here, Link, Owner, OwnerKind, Successor, UpstreamId};
use crate::stream::{Out, Role};
use crate::{Action, Delivery, Mux};

impl Mux {
    /// Whether a context may own an upstream: a client context only while its client is
    /// there (a departing client's context may end at any moment), a lingering one never.
    pub fn can_own(&self, here: Here) -> bool {
        match here {
            Here::Client(id) => self.is_open(id),
            Here::Request | Here::Background => true,
            Here::Lingering => false,
        }
    }

    /// Whether a client's context is wanted to connect or take over an upstream that the
    /// context that just settled could not (it may not own): some link needs a connection
    /// or a new owner, and a client is attached to carry it out. The glue then has a
    /// client's context settle soon, rather than leaving it to whoever comes by next.
    pub fn owner_wanted(&self, now: u64) -> bool {
        self.attached_clients > 0
            && self.links.find_candidate(&self.cfg, |l| l.needs_connect(now) || l.wants_client_owner()).is_some()
    }

    /// Retires every expired bounded owner's connection that nothing holds any more (called
    /// when the last client leaves, or a link's queue empties).
    pub(crate) fn retire_unwanted(&mut self, now: u64) {
        if self.attached_clients > 0 {
            return;
        }
        let tenants: Vec<String> =
            self.links.values().filter(|l| l.expired_owner()).map(|l| l.tenant.clone()).collect();
        for tenant in tenants {
            self.retire_if_unwanted(&tenant, now);
        }
    }

    /// A `Connect` for the first link that needs a connection or a new owner, handed to
    /// `here`.
    pub(crate) fn poll_connect(&mut self, here: Here, now: u64) -> Option<Action> {
        if !self.can_own(here) {
            return None;
        }
        let lifetime = self.cfg.owner_lifetime_ms;
        let tenant = self
            .links
            .find_candidate(&self.cfg, |l| l.needs_connect(now) || wants_handover(l, here, lifetime, now))
            .map(|l| l.tenant.clone())?;
        let upstream = UpstreamId(self.next_upstream);
        self.next_upstream += 1;
        let link = self.links.get_mut(&tenant)?;
        let owner = Owner::of(here, now);
        if matches!(link.conn, Conn::Down) {
            link.conn = Conn::Connecting { id: upstream, owner, since: now };
        } else {
            link.successor = Some(Successor { id: upstream, owner, since: now });
        }
        self.conns.insert(upstream, &tenant, &self.links);
        self.counters.connect_attempts += 1;
        Some(Action::Connect { upstream, tenant })
    }

    /// Upstream `id` is open. Returns false if nobody wants it any more (the pump closes
    /// it): a stale attempt, or its link was evicted meanwhile.
    pub fn handle_connected(&mut self, id: UpstreamId, now: u64) -> bool {
        let Some(tenant) = self.link_of(id) else { return false };
        let Some(link) = self.links.get_mut(&tenant) else { return false };
        if let Some(s) = link.successor.filter(|s| s.id == id) {
            // The successor takes over; the old connection drains behind a barrier.
            let Conn::Up { id: old, .. } = link.conn else {
                return false;
            };
            link.successor = None;
            link.drain = Some(Drain { id: old, barrier_sent: false, reason: "handed over", started: now });
            // A successor whose client left while it connected is orphaned from the start.
            let owner = Owner { orphaned: s.owner.stream.is_some_and(|c| !self.is_open(c)), ..s.owner };
            let Some(link) = self.links.get_mut(&tenant) else { return false };
            link.conn = Conn::Up { id, owner };
            link.handovers += 1;
            link.pending_since = None;
            // The idle check's clock starts with the new socket.
            link.last_heard = now;
            self.counters.handovers += 1;
            self.actions.push_back(Action::WakeUpstream(old));
            self.became_sendable(&tenant, now);
            return true;
        }
        let Conn::Connecting { id: attempt, owner, .. } = link.conn else {
            return false;
        };
        if attempt != id {
            return false;
        }
        let owner = Owner { orphaned: owner.stream.is_some_and(|c| !self.is_open(c)), ..owner };
        let Some(link) = self.links.get_mut(&tenant) else { return false };
        link.conn = Conn::Up { id, owner };
        if link.ever_up {
            self.counters.backend_reconnects += 1;
        }
        link.ever_up = true;
        link.failures = 0;
        link.retry_at = None;
        link.unanswered_since = None;
        link.heartbeat_sent = None;
        link.last_heard = now;
        self.counters.backend_connects += 1;
        self.became_sendable(&tenant, now);
        true
    }

    /// The barrier came back on `id` (a draining connection): every reply it owed has
    /// arrived. Client streams re-open on the current connection and are released; the
    /// old one is closed.
    pub(crate) fn barrier_returned(&mut self, tenant: &str, id: UpstreamId, now: u64) {
        let Some(link) = self.links.get_mut(tenant) else { return };
        let Some(drain) = link.drain.filter(|d| d.id == id) else { return };
        link.drain = None;
        let reopen: Vec<(StreamId, bool)> = self
            .streams
            .iter()
            .filter(|(_, s)| s.tenant == tenant)
            .filter_map(|(sid, s)| match &s.role {
                // A departed session client's Close still matters: it may end the session
                // (a client that left on purpose), which the old socket's end would not.
                Role::Client(c) if c.on == Some(id) => Some((*sid, s.detached && c.session.is_none())),
                _ => None,
            })
            .collect();
        for (sid, gone) in reopen {
            if gone {
                // Its entry ends with the old session; what it still queued (its Close)
                // is for nobody.
                self.forget(sid, now);
                continue;
            }
            let _ = self.enqueue(sid, Out::Open, true, true, now);
            if let Some(Role::Client(c)) = self.streams.get_mut(&sid).map(|s| &mut s.role) {
                c.on = None;
            }
        }
        self.closing.insert(id, (1000, drain.reason, now));
        self.actions.push_back(Action::WakeUpstream(id));
        self.became_sendable(tenant, now);
    }

    /// Retires `tenant`'s connection if its bounded owner's lifetime is up, none of its own
    /// clients is attached (a client's context takes it over then) and nothing is in
    /// flight on it or waiting for it: it drains
    /// behind a barrier and closes, and the next request opens a fresh one in its own
    /// context. The owner's context is then free to end (a scheduled round returns).
    pub(crate) fn retire_if_unwanted(&mut self, tenant: &str, now: u64) {
        let clients_attached = self.attached_clients > 0;
        let Some(link) = self.links.get_mut(tenant) else { return };
        let Conn::Up { id, owner } = link.conn else { return };
        // Session frames still queued (a heartbeat or keep-warm ping) go out on the next
        // connection instead; they do not keep this one.
        let quiet = link.requests == 0 && link.ready.is_empty();
        // Its own clients, while attached, are for a client's context to take over.
        let wanted = link.clients > 0 && clients_attached;
        if !(owner.is_bounded()
            && owner.expired
            && quiet
            && !wanted
            && link.successor.is_none()
            && link.drain.is_none())
        {
            return;
        }
        link.conn = Conn::Down;
        // Coming up again after this is no reconnect: nothing failed.
        link.ever_up = false;
        // A keep-warm round's wish ends with its owner: otherwise the next context that
        // comes by would reopen what was just retired.
        link.warm_until = 0;
        link.drain = Some(Drain { id, barrier_sent: false, reason: "owner's lifetime over", started: now });
        link.pending_since = None;
        link.unanswered_since = None;
        link.heartbeat_sent = None;
        link.probes_out.clear();
        self.counters.retirements += 1;
        self.actions.push_back(Action::WakeUpstream(id));
    }

    /// Upstream `id` closed, failed or could not be opened (the socket is gone).
    pub fn handle_upstream_closed(&mut self, id: UpstreamId, why: &str, now: u64) {
        self.closing.remove(&id);
        self.link_lost(id, why, now);
    }

    /// Connection `id` is lost. Every stream that depended on it learns its fate: a client
    /// gets close 1012 (its in-flight messages may be lost), an HTTP request that left on
    /// it a 502 saying its fate is unknown, and a request that never left goes to the
    /// backend directly ([`Delivery::Fallback`]). A session client keeps its WebSocket and
    /// waits, at most [`crate::Config::reattach_ms`], to be re-opened on the next
    /// connection. Nothing waits forever. A failed successor changes nothing; a current
    /// connection lost during a hand-over leaves the successor as the attempt everyone
    /// waits for.
    pub(crate) fn link_lost(&mut self, id: UpstreamId, why: &str, now: u64) {
        let Some(tenant) = self.link_of(id) else { return };
        self.counters.errors += 1;
        self.log(&tenant, format!("{id}: {why}"));
        let Some(link) = self.links.get_mut(&tenant) else { return };
        link.errors += 1;
        // Its pings will never be answered.
        link.probes_out.retain(|(on, _)| *on != id);
        if link.successor.is_some_and(|s| s.id == id) {
            link.successor = None;
            return;
        }
        if link.drain.is_some_and(|d| d.id == id) {
            // Lost before its barrier: replies it owed are gone; held frames move on.
            link.drain = None;
            self.fail_streams(&tenant, id, why, false, now);
            self.became_sendable(&tenant, now);
            return;
        }
        let was_up = matches!(link.conn, Conn::Up { .. });
        link.conn = match link.successor.take() {
            Some(s) => Conn::Connecting { id: s.id, owner: s.owner, since: s.since },
            None => Conn::Down,
        };
        link.pongs.clear();
        link.probes_due.clear();
        link.pending_since = None;
        link.unanswered_since = None;
        link.heartbeat_sent = None;
        let drained = link.drain.take();
        if was_up {
            self.counters.backend_disconnects += 1;
        }
        if matches!(self.links.get(&tenant).map(|l| l.conn), Some(Conn::Down)) {
            self.back_off(&tenant, now);
        }
        if let Some(d) = drained {
            self.fail_streams(&tenant, d.id, why, false, now);
        }
        self.fail_streams(&tenant, id, why, true, now);
    }

    /// Tells every stream of `tenant` carried by `id` that it is gone. With `current`,
    /// streams not yet on any connection (queued) are affected too. Session streams stay
    /// ([`Mux::keep_for_reattach`]).
    fn fail_streams(&mut self, tenant: &str, id: UpstreamId, why: &str, current: bool, now: u64) {
        let ids: Vec<StreamId> = self.streams.iter().filter(|(_, s)| s.tenant == tenant).map(|(k, _)| *k).collect();
        for sid in ids {
            let Some(stream) = self.streams.get_mut(&sid) else { continue };
            let affected = match &stream.role {
                Role::Client(c) => c.on == Some(id) || (current && c.on.is_none()),
                Role::Request(p) => p.sent.is_some_and(|(on, _)| on == id) || (current && p.sent.is_none()),
            };
            if !affected || self.keep_for_reattach(sid, now) {
                continue;
            }
            let Some(stream) = self.streams.get_mut(&sid) else { continue };
            // A request still queued never reached the backend: it can go directly.
            let fallback = stream.take_unsent_request();
            self.queued_bytes -= stream.outbox_bytes;
            stream.outbox.clear();
            stream.outbox_bytes = 0;
            if stream.detached {
                self.forget(sid, now);
                continue;
            }
            // Clients get a short reason; `why` (internal detail) goes to the log only.
            let d = match (stream.is_client(), fallback) {
                (true, _) => {
                    Delivery::Aborted { code: 1012, reason: "upstream lost; reconnect", detail: why.to_owned() }
                }
                (false, Some(req)) => {
                    self.counters.fallbacks += 1;
                    Delivery::Fallback(req)
                }
                (false, None) => Delivery::Failed {
                    status: 502,
                    reason: "upstream lost before the reply arrived; the request may or may not have run",
                    detail: why.to_owned(),
                },
            };
            self.deliver(sid, d, now);
        }
        let streams = &self.streams;
        if let Some(link) = self.links.get_mut(tenant) {
            link.ready.retain(|sid| streams.get(sid).is_some_and(|s| !s.outbox.is_empty()));
        }
    }

    /// A session stream whose connection was lost (PROTOCOL.md §14.3) stays: its client
    /// keeps its WebSocket, what it queued and has not sent stays queued, and it is
    /// re-opened (an `Open` in front, attaching at the position it has) on the next
    /// connection, as after a hand-over's barrier. What went out on the lost connection is
    /// gone; the client sends it again after the backend's `Welcome`. A departed client's
    /// stream stays too while it holds its `Close`, which may end the session. From the
    /// first loss it waits [`crate::Config::reattach_ms`] at most. Returns false for any
    /// other stream, which then fails as usual.
    fn keep_for_reattach(&mut self, sid: StreamId, now: u64) -> bool {
        let wait = self.cfg.reattach_ms;
        let Some(stream) = self.streams.get_mut(&sid) else { return false };
        let queued = !stream.outbox.is_empty();
        let detached = stream.detached;
        let Role::Client(c) = &mut stream.role else { return false };
        let Some(session) = c.session.as_mut() else { return false };
        if wait == 0 || (detached && !queued) {
            return false;
        }
        if session.reattach_by.is_none() {
            let by = now.saturating_add(wait);
            session.reattach_by = Some(by);
            self.reattach.insert((by, sid));
        }
        // Its Open went out on the lost connection: a new one goes first. (Otherwise it is
        // still in front of its queue.)
        if c.on.take().is_some() {
            let _ = self.enqueue(sid, Out::Open, true, true, now);
        }
        true
    }

    /// A session stream waited [`crate::Config::reattach_ms`] for a new connection in vain
    /// (it is due at `at`): its client is closed 1012, as a plain client is at once, and
    /// what it queued is dropped.
    pub(crate) fn reattach_expired(&mut self, sid: StreamId, at: u64, now: u64) {
        let wait = self.cfg.reattach_ms;
        let Some(stream) = self.streams.get_mut(&sid) else { return };
        let Role::Client(c) = &mut stream.role else { return };
        let Some(session) = c.session.as_mut().filter(|s| s.reattach_by == Some(at)) else { return };
        session.reattach_by = None;
        self.queued_bytes -= stream.outbox_bytes;
        stream.outbox.clear();
        stream.outbox_bytes = 0;
        let (tenant, detached) = (stream.tenant.clone(), stream.detached);
        if let Some(link) = self.links.get_mut(&tenant) {
            link.ready.retain(|r| *r != sid);
        }
        self.counters.reattach_timeouts += 1;
        if detached {
            self.forget(sid, now);
            return;
        }
        let detail = format!("no upstream to re-attach the session on within REATTACH_MS = {wait} ms");
        self.deliver(sid, Delivery::Aborted { code: 1012, reason: "upstream lost; reconnect", detail }, now);
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Schedules the link's next attempt: full jitter, uniform in [0, min(max, base·2^(n-1))].
    fn back_off(&mut self, tenant: &str, now: u64) {
        let r = self.next_random();
        let (base, max) = (self.cfg.reconnect_base_ms, self.cfg.reconnect_max_ms);
        let Some(link) = self.links.get_mut(tenant) else { return };
        link.failures = link.failures.saturating_add(1);
        let shift = link.failures.saturating_sub(1).min(30);
        let bound = base.saturating_mul(1 << shift).min(max);
        link.retry_at = Some(now.saturating_add(r % bound.saturating_add(1)));
    }
}

/// Whether a context of kind `here` should take `link`'s connection over now: the owner's
/// client left, or a bounded (HTTP, background) owner's lifetime is up, or `here` is a
/// (preferred) client context and the owner is a bounded one.
fn wants_handover(link: &Link, here: Here, lifetime: u64, now: u64) -> bool {
    // In use, no hand-over under way, and an orphaned or bounded owner.
    if !link.wants_client_owner() {
        return false;
    }
    let Some((_, owner)) = link.up() else { return false };
    if let (Here::Client(id), Some(owning)) = (here, owner.stream) {
        if id == owning {
            return false;
        }
    }
    let expired = owner.expired || now.saturating_sub(owner.since) >= lifetime;
    owner.orphaned || (owner.is_bounded() && (here.kind() == OwnerKind::WebSocket || expired))
}
