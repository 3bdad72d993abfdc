//! Every deadline of the core behind one pair: [`Mux::poll_timeout`] says when the next
//! one falls, [`Mux::handle_timeout`] acts on whatever is due. Request timeouts and the
//! collection of their replies, connect and hand-over bounds, the watchdog, the
//! heartbeat and the idle check, the drain barrier's bound, the end of a reconnect
//! backoff, a bounded owner's lifetime, the idle TTL and how long a session stream waits
//! to be re-attached are all here.
//!
//! The invariant the glue relies on (the simulator asserts it after every step): after
//! `handle_timeout(now)`, the next deadline is later than `now`, or there is none. Every
//! deadline is therefore consumed when it is handled — a backoff that ends clears
//! `retry_at`, a lifetime that ends marks its owner expired — never left for some other
//! input to act on, or a timer would fire again at once, without end.

use protocol::StreamId;

use crate::link::{Conn, Link, Probe, UpstreamId};
use crate::stream::Role;
use crate::{Action, Config, Delivery, Mux};

/// When `link` next needs [`Mux::handle_timeout`], if ever (computed; the pool's index,
/// `links.rs`, keeps it until the link changes).
pub(crate) fn link_deadline(link: &Link, cfg: &Config) -> Option<u64> {
    let (wd, hb, ka) = (cfg.watchdog_ms, cfg.heartbeat_ms, cfg.upstream_keepalive_ms);
    let mut at: Option<u64> = None;
    let mut consider = |t: Option<u64>| {
        if let Some(t) = t {
            at = Some(at.map_or(t, |a| a.min(t)));
        }
    };
    match link.conn {
        Conn::Down => consider(link.retry_at),
        Conn::Connecting { since, .. } => consider(Some(since.saturating_add(wd))),
        Conn::Up { owner, .. } => {
            consider(link.pending_since.map(|t| t.saturating_add(wd)));
            match link.heartbeat_sent {
                Some((t, _)) => consider(Some(t.saturating_add(cfg.backend_busy_ms))),
                None => {
                    if hb > 0 {
                        consider(link.unanswered_since.map(|t| t.saturating_add(hb)));
                    }
                    if ka > 0 {
                        consider(Some(link.last_heard.saturating_add(ka)));
                    }
                }
            }
            if owner.is_bounded() && !owner.expired && link.successor.is_none() && link.drain.is_none() {
                consider(Some(owner.since.saturating_add(cfg.owner_lifetime_ms)));
            }
        }
    }
    consider(link.successor.map(|s| s.since.saturating_add(wd)));
    consider(link.drain.map(|d| d.started.saturating_add(wd)));
    if link.is_idle() {
        consider(Some(link.last_used.saturating_add(cfg.upstream_idle_ms).max(link.warm_until)));
    }
    at
}

impl Mux {
    /// The earliest time [`Mux::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        let wd = self.cfg.watchdog_ms;
        let requests = self.deadlines.first().map(|(t, _)| *t);
        let reattach = self.reattach.first().map(|(t, _)| *t);
        let closing = self.closing.values().map(|(_, _, since)| since.saturating_add(wd));
        let links = self.links.earliest_deadline(&self.cfg);
        requests.into_iter().chain(reattach).chain(closing).chain(links).min()
    }

    /// What [`Mux::poll_timeout`] answers with every link's deadline computed afresh, for
    /// the tests to compare with the cached answer.
    #[cfg(test)]
    pub(crate) fn poll_timeout_uncached(&self) -> Option<u64> {
        let wd = self.cfg.watchdog_ms;
        let requests = self.deadlines.first().map(|(t, _)| *t);
        let reattach = self.reattach.first().map(|(t, _)| *t);
        let closing = self.closing.values().map(|(_, _, since)| since.saturating_add(wd));
        let links = self.links.values().filter_map(|l| link_deadline(l, &self.cfg));
        requests.into_iter().chain(reattach).chain(closing).chain(links).min()
    }

    /// Acts on every deadline that has passed by `now`.
    pub fn handle_timeout(&mut self, now: u64) {
        while let Some(&(t, id)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            self.expire_request(id, now);
        }
        while let Some(&(t, id)) = self.reattach.first() {
            if t > now {
                break;
            }
            self.reattach.pop_first();
            self.reattach_expired(id, t, now);
        }
        // A pump told to close that never came: its context is gone.
        let wd = self.cfg.watchdog_ms;
        let stale: Vec<UpstreamId> = self
            .closing
            .iter()
            .filter(|(_, (_, _, since))| since.saturating_add(wd) <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.closing.remove(&id);
            self.actions.push_back(Action::Abandon(id));
        }
        let tenants: Vec<String> = self.links.keys().cloned().collect();
        for tenant in tenants {
            // Each pass consumes at least one deadline of the link, so this ends.
            while self.check_link(&tenant, now) {}
        }
    }

    /// An HTTP request's deadline passed. The first time, it gets a 504 unless its reply
    /// is already waiting for it, and its context has [`Config::watchdog_ms`] more to
    /// collect it. The second time, that context is presumed gone (a client that hung up
    /// ends it): the stream is forgotten, so its link can go idle, and its task dropped.
    fn expire_request(&mut self, id: StreamId, now: u64) {
        let waited = self.cfg.request_timeout_ms;
        let collect_by = now.saturating_add(self.cfg.watchdog_ms.max(1));
        let Some(s) = self.streams.get_mut(&id) else { return };
        let Role::Request(p) = &mut s.role else { return };
        if p.expired || s.detached {
            self.counters.abandoned_requests += 1;
            self.forget(id, now);
            self.actions.push_back(Action::AbandonRequest(id));
            return;
        }
        p.expired = true;
        p.deadline = collect_by;
        self.deadlines.insert((collect_by, id));
        if s.inbox.iter().any(Delivery::is_final) {
            return;
        }
        s.inbox.clear();
        self.counters.errors += 1;
        self.counters.timeouts += 1;
        self.deliver(
            id,
            Delivery::Failed {
                status: 504,
                reason: "no reply from the backend in time",
                detail: format!("stream {id}: no reply within REQUEST_TIMEOUT_MS = {waited} ms"),
            },
            now,
        );
    }

    /// A context that should have made progress on `id` did not within the watchdog's
    /// bound: it is presumed gone, its task is dropped, and the connection counts as lost.
    fn trip(&mut self, id: UpstreamId, why: &str, now: u64) {
        self.counters.watchdog_trips += 1;
        self.actions.push_back(Action::Abandon(id));
        self.link_lost(id, why, now);
    }

    /// Acts on one due deadline of `tenant`'s link; true if it did (call again until false).
    fn check_link(&mut self, tenant: &str, now: u64) -> bool {
        let (wd, hb) = (self.cfg.watchdog_ms, self.cfg.heartbeat_ms);
        let Some(link) = self.links.get(tenant) else { return false };
        let due = |t: u64| t.saturating_add(wd) <= now;
        if let Some(s) = link.successor.filter(|s| due(s.since)) {
            // The current connection carries on.
            self.trip(s.id, &format!("hand-over: the successor did not open within WATCHDOG_MS = {wd} ms"), now);
            return true;
        }
        if let Some(d) = link.drain.filter(|d| due(d.started)) {
            let why = format!("hand-over: the old upstream did not answer its barrier within WATCHDOG_MS = {wd} ms");
            self.end_upstream(d.id, 1011, "hand-over barrier timed out", &why, now);
            return true;
        }
        match link.conn {
            Conn::Down if link.retry_at.is_some_and(|t| t <= now) => {
                // The backoff is over: whoever needs the link may connect it now.
                if let Some(l) = self.links.get_mut(tenant) {
                    l.retry_at = None;
                }
                return true;
            }
            Conn::Connecting { id, since, .. } if due(since) => {
                self.trip(id, &format!("connect attempt did not finish within WATCHDOG_MS = {wd} ms"), now);
                return true;
            }
            Conn::Up { id, owner } => {
                // Before the heartbeat: a ping queued now would keep the link from looking
                // quiet to the retirement check.
                let lifetime_over = owner.since.saturating_add(self.cfg.owner_lifetime_ms) <= now;
                if owner.is_bounded()
                    && !owner.expired
                    && lifetime_over
                    && link.successor.is_none()
                    && link.drain.is_none()
                {
                    self.owner_expired(tenant, now);
                    return true;
                }
                if link.pending_since.is_some_and(due) {
                    self.trip(id, &format!("watchdog: queued frames saw no send for {wd} ms"), now);
                    return true;
                }
                // A busy backend answers nothing until its event ends: it has BACKEND_BUSY_MS.
                let busy = self.cfg.backend_busy_ms;
                if let Some((_, probe)) = link.heartbeat_sent.filter(|(t, _)| t.saturating_add(busy) <= now) {
                    self.counters.heartbeat_failures += 1;
                    let why = match probe {
                        Probe::Keepalive => format!(
                            "idle check: nothing from the backend for UPSTREAM_KEEPALIVE_MS = {} ms, and no answer \
                             to a ping within BACKEND_BUSY_MS = {busy} ms",
                            self.cfg.upstream_keepalive_ms
                        ),
                        Probe::Heartbeat | Probe::Warm => format!(
                            "heartbeat: no answer to a ping within BACKEND_BUSY_MS = {busy} ms while replies were owed"
                        ),
                    };
                    self.end_upstream(id, 1011, "backend silent", &why, now);
                    return true;
                }
                let ka = self.cfg.upstream_keepalive_ms;
                let probe = if link.heartbeat_sent.is_some() {
                    None
                } else if hb > 0 && link.unanswered_since.is_some_and(|t| t.saturating_add(hb) <= now) {
                    Some(Probe::Heartbeat)
                } else if ka > 0 && link.last_heard.saturating_add(ka) <= now {
                    Some(Probe::Keepalive)
                } else {
                    None
                };
                if let Some(probe) = probe {
                    if let Some(l) = self.links.get_mut(tenant) {
                        l.heartbeat_sent = Some((now, probe));
                    }
                    self.queue_probe(tenant, probe, now);
                    return true;
                }
            }
            Conn::Down | Conn::Connecting { .. } => {}
        }
        let Some(link) = self.links.get(tenant) else { return false };
        if link.is_idle() && link.last_used.saturating_add(self.cfg.upstream_idle_ms) <= now && link.warm_until <= now {
            self.evict(tenant, now);
            return true;
        }
        false
    }

    /// A bounded owner's lifetime is up. A client's context takes the connection over when
    /// one is attached (the glue has one settle: [`Mux::owner_wanted`]), the next HTTP
    /// request's context when requests keep coming; with neither, the connection is
    /// retired as soon as nothing is in flight on it, so the owner's context can end.
    fn owner_expired(&mut self, tenant: &str, now: u64) {
        if let Some(Conn::Up { owner, .. }) = self.links.get_mut(tenant).map(|l| &mut l.conn) {
            owner.expired = true;
        }
        self.retire_if_unwanted(tenant, now);
    }
}
