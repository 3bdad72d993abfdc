//! Allowances that keep one client from being everyone's outage: token buckets for
//! message, byte and request rates, and a count of WebSocket connections per caller.
//! Pure arithmetic on the times the glue passes in (ms), no clock of its own.

use std::collections::HashMap;

use protocol::Identity;

/// A token bucket: refills at `rate` units per second up to `burst` units. Levels are
/// kept in thousandths of a unit so that a rate is exact per millisecond with integers
/// only (no float arithmetic in the hot path, and none to format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Thousandths of a unit available.
    level: u64,
    /// When `level` was last brought up to date (ms).
    at: u64,
}

impl Bucket {
    /// A bucket holding `burst` units at `now`.
    pub fn full(burst: u64, now: u64) -> Bucket {
        Bucket { level: burst.saturating_mul(1000), at: now }
    }

    /// Takes `amount` units, refilled at `rate` per second with room for `burst`. A rate
    /// of 0 means no limit. `Err` carries how many ms until `amount` would fit (the
    /// `Retry-After` of a refusal); an `amount` above `burst` is measured against a full
    /// bucket, so one large message is allowed when nothing else was sent for a while.
    pub fn take(&mut self, amount: u64, rate: u64, burst: u64, now: u64) -> Result<(), u64> {
        if rate == 0 {
            return Ok(());
        }
        let cap = burst.max(amount).saturating_mul(1000);
        let elapsed = now.saturating_sub(self.at);
        self.level = self.level.saturating_add(elapsed.saturating_mul(rate)).min(cap);
        self.at = now.max(self.at);
        let need = amount.saturating_mul(1000);
        if self.level >= need {
            self.level -= need;
            Ok(())
        } else {
            Err((need - self.level).div_ceil(rate))
        }
    }

    /// Whether the bucket would be full at `now` (then forgetting it loses nothing).
    fn is_full(&self, rate: u64, burst: u64, now: u64) -> bool {
        let elapsed = now.saturating_sub(self.at);
        self.level.saturating_add(elapsed.saturating_mul(rate)) >= burst.saturating_mul(1000)
    }
}

/// Who a limit applies to. A caller with a token is the token's issuer, tenant and
/// subject together: `alice` of tenant `a` and `alice` of tenant `b` are two callers, and
/// so are two issuers' `alice` (a token without `iss` has the empty issuer). Each part is
/// length-prefixed, so no two triples give one key (`a|b` + `c` is not `a` + `b|c`).
/// Anonymous callers (no subject) are keyed by the client's address as the runtime
/// reports it (`CF-Connecting-IP`); those with no address share one allowance.
pub fn caller_key(issuer: Option<&str>, identity: &Identity, addr: Option<&str>) -> String {
    if identity.subject.is_empty() {
        return format!("addr:{}", addr.unwrap_or("unknown"));
    }
    let mut key = String::from("tok:");
    for part in [issuer.unwrap_or_default(), &identity.tenant, &identity.subject] {
        key.push_str(&part.len().to_string());
        key.push(':');
        key.push_str(part);
    }
    key
}

/// What one WebSocket upgrade takes from its caller's request allowance
/// ([`crate::Config::caller_requests_per_sec`]): an upgrade costs the backend an `Open`, a
/// `Close` and a stored stream-table entry, and the snippet a socket pair, three listeners
/// and a task — about ten requests' worth. With the default 1,000 requests/s a caller may
/// open 100 WebSockets a second (a second's worth at once), far past any page's needs, while
/// one that opens and closes sockets in a loop is refused with 429 instead of costing every
/// other client of the tenant its latency (it measured 2.8 → 47 ms at 280 upgrades/s).
pub const UPGRADE_COST: u64 = 10;

/// What one caller uses of this isolate.
#[derive(Debug)]
struct Usage {
    /// Client WebSockets open.
    connections: usize,
    /// HTTP requests.
    requests: Bucket,
}

/// Per-caller usage of this isolate, by [`caller_key`]. Entries that hold no connection
/// and whose request bucket is full again are forgotten, so the table holds only callers
/// active within the last second or so, whatever the number of distinct callers.
#[derive(Debug, Default)]
pub struct Callers {
    usage: HashMap<String, Usage>,
    /// Prune when the table grows past this (doubles with the live size: amortised O(1)).
    prune_at: usize,
}

/// Below this many entries the table is never pruned (pruning is a full scan).
const PRUNE_FLOOR: usize = 1024;

impl Callers {
    /// Counts a new connection for `key` unless it has `limit` already (0 = no limit).
    pub fn connect(&mut self, key: &str, limit: usize, rate: u64, now: u64) -> bool {
        let usage = self.entry(key, rate, now);
        if limit != 0 && usage.connections >= limit {
            return false;
        }
        usage.connections += 1;
        true
    }

    /// A connection of `key` ended.
    pub fn disconnect(&mut self, key: &str) {
        if let Some(u) = self.usage.get_mut(key) {
            u.connections = u.connections.saturating_sub(1);
        }
    }

    /// Takes one request from `key`'s bucket (`rate` per second, a second's worth of
    /// burst); `Err` is the ms until one fits.
    pub fn request(&mut self, key: &str, rate: u64, now: u64) -> Result<(), u64> {
        self.take(key, 1, rate, now)
    }

    /// Takes `cost` requests' worth from `key`'s bucket at once (a WebSocket upgrade costs
    /// [`UPGRADE_COST`]); `Err` is the ms until it fits.
    pub fn take(&mut self, key: &str, cost: u64, rate: u64, now: u64) -> Result<(), u64> {
        self.entry(key, rate, now).requests.take(cost, rate, rate, now)
    }

    /// Connections open for `key`.
    pub fn connections(&self, key: &str) -> usize {
        self.usage.get(key).map_or(0, |u| u.connections)
    }

    /// Callers tracked now.
    pub fn len(&self) -> usize {
        self.usage.len()
    }

    /// Whether no caller is tracked.
    pub fn is_empty(&self) -> bool {
        self.usage.is_empty()
    }

    fn entry(&mut self, key: &str, rate: u64, now: u64) -> &mut Usage {
        if self.usage.len() >= self.prune_at.max(PRUNE_FLOOR) && !self.usage.contains_key(key) {
            self.usage.retain(|_, u| u.connections > 0 || !u.requests.is_full(rate, rate, now));
            self.prune_at = self.usage.len().saturating_mul(2);
        }
        self.usage.entry(key.to_owned()).or_insert_with(|| Usage { connections: 0, requests: Bucket::full(rate, now) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = Bucket::full(10, 0);
        for _ in 0..10 {
            assert_eq!(b.take(1, 10, 10, 0), Ok(()));
        }
        // Empty: one unit at 10/s takes 100 ms to come back.
        assert_eq!(b.take(1, 10, 10, 0), Err(100));
        assert_eq!(b.take(1, 10, 10, 50), Err(50));
        assert_eq!(b.take(1, 10, 10, 100), Ok(()));
        // A long idle time refills only up to the burst.
        for _ in 0..10 {
            assert_eq!(b.take(1, 10, 10, 60_000), Ok(()));
        }
        assert!(b.take(1, 10, 10, 60_000).is_err());
        // A rate of 0 is no limit.
        assert_eq!(b.take(1_000_000, 0, 0, 0), Ok(()));
    }

    #[test]
    fn an_amount_above_the_burst_fits_a_full_bucket_only() {
        let mut b = Bucket::full(100, 0);
        assert_eq!(b.take(500, 100, 100, 4_000), Ok(()), "idle long enough: the large message passes");
        assert_eq!(b.take(500, 100, 100, 4_000), Err(5_000));
    }

    #[test]
    fn the_sustained_rate_is_exact_over_time() {
        // 1,000/s for 10 s of one message per ms: a burst of 1,000 plus 10,000 refilled.
        let mut b = Bucket::full(1_000, 0);
        let ok = (0..20_000u64).filter(|i| b.take(1, 1_000, 1_000, i / 2).is_ok()).count();
        assert_eq!(ok, 1_000 + 9_999, "the burst, then one per ms refilled");
    }

    #[test]
    fn connections_are_counted_per_caller_and_released() {
        let mut c = Callers::default();
        assert!(c.connect("sub:a", 2, 10, 0));
        assert!(c.connect("sub:a", 2, 10, 0));
        assert!(!c.connect("sub:a", 2, 10, 0), "the third connection of a is refused");
        assert!(c.connect("sub:b", 2, 10, 0), "b has its own allowance");
        c.disconnect("sub:a");
        assert!(c.connect("sub:a", 2, 10, 0));
        assert_eq!(c.connections("sub:a"), 2);
        assert!(c.connect("sub:z", 0, 10, 0), "0 = no limit");
    }

    #[test]
    fn the_table_forgets_idle_callers_but_keeps_connected_and_busy_ones() {
        let mut c = Callers::default();
        assert!(c.connect("sub:held", 10, 5, 0));
        let _ = c.request("sub:busy", 5, 0);
        for i in 0..5_000 {
            let _ = c.request(&format!("addr:{i}"), 5, i);
        }
        // Every second-old caller with a full bucket was forgotten along the way.
        assert!(c.len() < 3_000, "table bounded by recent activity: {}", c.len());
        assert_eq!(c.connections("sub:held"), 1, "a connected caller is kept");
        // A caller that was refused keeps its (empty) bucket while it is not full again.
        for _ in 0..10 {
            let _ = c.request("sub:flood", 5, 10_000);
        }
        assert!(c.request("sub:flood", 5, 10_000).is_err());
    }

    #[test]
    fn anonymous_callers_are_keyed_by_address() {
        let anon = Identity::default();
        assert_eq!(caller_key(None, &anon, Some("192.0.2.1")), "addr:192.0.2.1");
        assert_eq!(caller_key(Some("idp"), &anon, None), "addr:unknown");
        let alice = Identity { subject: "alice".into(), tenant: "acme".into(), ..Identity::default() };
        assert_eq!(caller_key(Some("idp"), &alice, Some("192.0.2.1")), "tok:3:idp4:acme5:alice");
    }

    fn who(tenant: &str, subject: &str, scopes: &str) -> Identity {
        Identity { subject: subject.into(), tenant: tenant.into(), scopes: scopes.into(), expires_at: 9 }
    }

    /// `alice` holding every connection she may have on tenant `a` leaves `alice` of
    /// tenant `b` (or of another issuer) her own allowance, requests included; another
    /// token of the same issuer, tenant and subject shares hers.
    #[test]
    fn a_subject_has_one_allowance_per_issuer_and_tenant() {
        let mut c = Callers::default();
        let key = |iss: &str, id: &Identity| caller_key(Some(iss), id, Some("192.0.2.1"));
        let on_a = key("idp", &who("a", "alice", "read"));
        assert!(c.connect(&on_a, 2, 1, 0) && c.connect(&on_a, 2, 1, 0));
        assert_eq!(c.request(&on_a, 1, 0), Ok(()));
        let same = key("idp", &who("a", "alice", "read write publish"));
        assert!(!c.connect(&same, 2, 1, 0), "another token of the same caller shares the allowance");
        assert!(c.request(&same, 1, 0).is_err(), "and the request bucket");
        for other in [key("idp", &who("b", "alice", "read")), key("other-idp", &who("a", "alice", "read"))] {
            assert!(c.connect(&other, 2, 1, 0), "{other} has its own connections");
            assert_eq!(c.request(&other, 1, 0), Ok(()), "{other} has its own requests");
        }
    }

    /// No two (issuer, tenant, subject) triples share a key, however their parts are cut.
    #[test]
    fn caller_keys_cannot_be_forged_by_moving_separators() {
        let parts = ["", "a", "b", "1", ":", "1:", "a1:", ":a", "0:", "|", "a|b", "b|c", "c"];
        let mut keys = std::collections::HashSet::new();
        let mut triples = 0;
        for iss in parts {
            for tenant in parts {
                for sub in parts.iter().filter(|s| !s.is_empty()) {
                    keys.insert(caller_key(Some(iss), &who(tenant, sub, ""), None));
                    triples += 1;
                }
            }
        }
        assert_eq!(keys.len(), triples);
        let a = caller_key(Some("a|b"), &who("c", "s", ""), None);
        assert_ne!(a, caller_key(Some("a"), &who("b|c", "s", ""), None));
        assert!(!keys.contains("addr:unknown"), "no token caller shares the anonymous allowance");
    }
}
