//! The pool: at most [`crate::Config::max_upstreams`] links, one per tenant, opened on
//! first use. A new tenant takes a free slot, else the least recently used idle link's
//! (closed with 1000), else it is refused with a retry time: a link with streams or
//! requests is never evicted. Idle links also go after
//! [`crate::Config::upstream_idle_ms`]. Also here: keep-warm rounds and the per-upstream
//! view in `/__stats`.

use crate::link::{Conn, Link, OwnerKind, Probe};
use crate::{Action, Mux, Refused};

/// Upstreams listed one by one in `/__stats` (the most recently used first): the
/// document stays small whatever the pool size; totals cover them all.
pub const MAX_LISTED_UPSTREAMS: usize = 64;

/// What a client is told to wait before retrying when every slot is busy: long enough for
/// a short request elsewhere to finish, short enough not to matter to a person.
const POOL_RETRY_AFTER_MS: u64 = 1_000;

/// One upstream, as `/__stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Its tenant.
    pub tenant: String,
    /// Its connection is open.
    pub connected: bool,
    /// Client streams on it.
    pub streams: usize,
    /// HTTP requests in flight on it.
    pub pending: usize,
    /// Who owns it.
    pub owner: OwnerKind,
    /// How long nothing has used it (0 while streams are open), ms.
    pub idle_ms: u64,
    /// Median request round trip (ms).
    pub rtt_p50_ms: Option<u64>,
    /// Hand-overs completed.
    pub handovers: u64,
    /// Connections lost and error frames.
    pub errors: u64,
}

impl Mux {
    /// Makes sure `tenant` has a link, taking a slot if needed.
    pub(crate) fn admit(&mut self, tenant: &str, now: u64) -> Result<(), Refused> {
        if !protocol::facts::is_valid_tenant(tenant) {
            return Err(Refused::BadTenant);
        }
        if let Some(link) = self.links.get_mut(tenant) {
            link.last_used = now;
            return Ok(());
        }
        let limit = self.cfg.max_upstreams;
        if self.links.len() >= limit {
            let victim =
                self.links.values().filter(|l| l.is_idle()).min_by_key(|l| l.last_used).map(|l| l.tenant.clone());
            match victim {
                Some(t) => self.evict(&t, now),
                None => {
                    self.counters.pool_refusals += 1;
                    return Err(Refused::PoolFull { limit, retry_after_ms: POOL_RETRY_AFTER_MS });
                }
            }
        }
        self.links.insert(tenant.to_owned(), Link::new(tenant, now));
        Ok(())
    }

    /// Closes an idle link and frees its slot. An open connection is closed with 1000 by
    /// its pump; an attempt under way is refused when it completes.
    pub(crate) fn evict(&mut self, tenant: &str, now: u64) {
        let Some(link) = self.links.remove(tenant) else { return };
        if let Conn::Up { id, .. } = link.conn {
            self.closing.insert(id, (1000, "idle upstream closed", now));
            self.actions.push_back(Action::WakeUpstream(id));
        }
        self.counters.pool_evictions += 1;
    }

    /// Upstreams in the pool now.
    pub fn upstreams_open(&self) -> usize {
        self.links.len()
    }

    /// A keep-warm round (the scheduled handler): pings the tenants of
    /// [`crate::Config::keep_warm_tenants`] (opening their upstreams if needed) and this
    /// isolate's [`crate::Config::keep_warm_hottest`] most used upstreams since the last
    /// round. Returns the pings queued; answers are counted in `keep_warm_pongs`. The
    /// pings are text `ping`s, answered by the backend's runtime: the round keeps the
    /// connections, without waking a hibernating Durable Object.
    pub fn handle_keep_warm(&mut self, now: u64) -> u64 {
        let mut hot: Vec<(u64, String)> =
            self.links.values().filter(|l| l.recent_uses > 0).map(|l| (l.recent_uses, l.tenant.clone())).collect();
        hot.sort_unstable_by(|a, b| b.cmp(a));
        for link in self.links.values_mut() {
            link.recent_uses = 0;
        }
        let listed = self.cfg.keep_warm_tenants.clone();
        let hottest = hot.into_iter().take(self.cfg.keep_warm_hottest).map(|(_, t)| t);
        let mut tenants: Vec<String> = Vec::new();
        for t in listed.into_iter().chain(hottest) {
            if !tenants.contains(&t) {
                tenants.push(t);
            }
        }
        let mut pinged = 0;
        let window = now.saturating_add(self.cfg.watchdog_ms);
        for tenant in tenants {
            // Listed tenants are kept in the pool; the hottest are only pinged.
            let listed = self.cfg.keep_warm_tenants.contains(&tenant);
            if listed && self.admit(&tenant, now).is_err() {
                continue;
            }
            let Some(link) = self.links.get_mut(&tenant) else { continue };
            link.warm_until = link.warm_until.max(window);
            self.queue_probe(&tenant, Probe::Warm, now);
            pinged += 1;
        }
        self.counters.keep_warm_pings += pinged;
        pinged
    }

    /// The upstreams, most recently used first, at most [`MAX_LISTED_UPSTREAMS`].
    pub fn upstream_stats(&self, now: u64) -> Vec<UpstreamStats> {
        let mut links: Vec<&Link> = self.links.values().collect();
        links.sort_unstable_by(|a, b| b.last_used.cmp(&a.last_used).then_with(|| a.tenant.cmp(&b.tenant)));
        links
            .into_iter()
            .take(MAX_LISTED_UPSTREAMS)
            .map(|l| UpstreamStats {
                tenant: l.tenant.clone(),
                connected: l.up().is_some(),
                streams: l.clients,
                pending: l.requests,
                owner: l.owner_kind(),
                idle_ms: if l.is_idle() { now.saturating_sub(l.last_used) } else { 0 },
                rtt_p50_ms: l.rtt_p50(),
                handovers: l.handovers,
                errors: l.errors,
            })
            .collect()
    }
}
