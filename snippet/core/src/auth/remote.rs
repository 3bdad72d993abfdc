//! Remote key sets (`AUTH_JWKS_URL`): which keys an identity provider publishes now,
//! fetched by the snippet and kept per isolate. Pure: the glue does the fetching and
//! keeps the clock; this decides who fetches, who waits, what is served and what is
//! refused.
//!
//! * Input: [`KeySets::handle_lookup`] when a token names a set (by its issuer), with
//!   the token's `alg` and `kid` and the time; [`KeySets::handle_fetched`] when the
//!   fetching context has its answer (or its failure); [`KeySets::handle_gone`] when a
//!   waiting task is dropped.
//! * Output: a [`Step`] for the asking context — verify with these keys, fetch the set
//!   yourself, wait (until woken or a deadline), or refuse — and, pulled,
//!   [`KeySets::poll_wake`] (waiters the fetching context must wake) and
//!   [`KeySets::poll_log`] (one line per load or failure).
//!
//! **One fetch for many requests, without crossing contexts.** A fetch is I/O: it
//! belongs to the context that starts it (RUNTIME.md §1). So one asking context is
//! chosen to fetch, in its own context; the others that need the answer wait, each on a
//! promise it made itself, and the fetcher — once it has handed the result here — wakes
//! them by resolving those promises. Nobody touches another's fetch; they share only the
//! plain data kept here. A fetcher whose context dies never reports: its fetch counts as
//! failed [`REPORT_GRACE_MS`] after its timeout, and each waiter holds a timer of its own
//! for that moment, so nobody waits on a dead context.
//!
//! **How often a provider is asked.** Never more than once per cooldown (30 s by
//! default), whatever the traffic: a flood of tokens with unknown `kid`s gets one fetch,
//! then 401s until the cooldown ends. A set is fresh for its `Cache-Control: max-age`
//! (10 minutes without one), bounded below by the cooldown and above by
//! [`MAX_MAX_AGE_MS`]. When a refresh fails, the last good keys keep working for the
//! stale window (1 hour by default) past their freshness; after it, requests that need
//! the set get 503 with `Retry-After` — not 401: the token may be valid, and a client
//! told 401 stops retrying or throws its token away (see `client/`), while 503 says
//! "this side, try again".
//!
//! **Keyed by set.** Each set's keys live under its URL; a token is checked only against
//! the set bound to its issuer, so a `kid` shared by two providers cannot cross.

use std::collections::VecDeque;
use std::rc::Rc;

use super::jwt::Alg;
use super::keys::{parse_key_set, Jwk};
use super::AuthError;

/// How long a set is fresh when its response has no `Cache-Control: max-age`: 10
/// minutes, what well-kept verifiers (jose's remote key sets, Envoy) use. Rotation is
/// picked up sooner through an unknown `kid`.
pub const DEFAULT_MAX_AGE_MS: u64 = 10 * 60 * 1000;

/// Longest freshness honoured, whatever `max-age` says (Google's sets say about 6 hours):
/// a key the provider withdrew — say, one that leaked — stops verifying within an hour of
/// its removal even when no token ever names an unknown `kid`.
pub const MAX_MAX_AGE_MS: u64 = 60 * 60 * 1000;

/// Default `AUTH_JWKS_COOLDOWN_SECS`: least time from the end of one fetch of a set to the
/// start of the next, 30 s (the
/// cooldown of jose's remote key sets). Bounds what tokens with made-up `kid`s can make the
/// snippet fetch: one per cooldown per set per isolate. Also the floor of freshness, so a
/// `max-age=0` or `no-store` does not make every request a fetch.
pub const DEFAULT_COOLDOWN_MS: u64 = 30_000;

/// Longest `AUTH_JWKS_COOLDOWN_SECS`: 10 minutes. A longer one would delay picking up a
/// rotated key (an unknown `kid`) past the default freshness.
pub const MAX_COOLDOWN_MS: u64 = 10 * 60 * 1000;

/// Default `AUTH_JWKS_STALE_SECS`: how long the last good keys keep verifying past their
/// freshness while the provider cannot be reached, 1 hour. A provider's outage shorter
/// than that is invisible to users; past it, keys the provider may have withdrawn meanwhile
/// are no longer trusted.
pub const DEFAULT_STALE_MS: u64 = 60 * 60 * 1000;

/// Longest `AUTH_JWKS_STALE_SECS`: 1 day.
pub const MAX_STALE_MS: u64 = 24 * 60 * 60 * 1000;

/// How long one fetch may take, answer included: 5 s (jose's default). A waiting request
/// waits at most this (and [`REPORT_GRACE_MS`]) for keys.
pub const FETCH_TIMEOUT_MS: u64 = 5_000;

/// How long after [`FETCH_TIMEOUT_MS`] a fetch that never reported is presumed lost with
/// its context (a request cancelled mid-fetch): the glue ends its own fetch at the
/// timeout, so only a dead context stays silent this long.
pub const REPORT_GRACE_MS: u64 = 1_000;

/// Largest key set read, in bytes. Providers' sets are a few KB (Auth0's two RSA keys
/// with their certificates: about 4 KB); the bound keeps a hostile or broken endpoint from
/// filling the isolate's memory.
pub const MAX_KEY_SET_BYTES: usize = 64 * 1024;

/// The limits an operator may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Least time between two fetches of one set (ms).
    pub cooldown_ms: u64,
    /// How long the last good keys serve past their freshness when refreshes fail (ms).
    pub stale_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { cooldown_ms: DEFAULT_COOLDOWN_MS, stale_ms: DEFAULT_STALE_MS }
    }
}

/// A waiting context, named so the fetcher can wake it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(pub u64);

/// The one fetch a context was told to make; handed back with its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    set: usize,
    id: u64,
}

/// What a fetch brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The body (at most [`MAX_KEY_SET_BYTES`]; the glue stops reading past it).
    pub body: Vec<u8>,
    /// The `Cache-Control` header, if any.
    pub cache_control: Option<String>,
    /// The `Age` header, if any (a cache on the way already held it that long).
    pub age: Option<String>,
}

/// What the asking context does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Verify with these keys (the whole set; the caller picks by `alg` and `kid`).
    Keys(Rc<Vec<Jwk>>),
    /// Fetch `url` yourself, within `timeout_ms`, and report with
    /// [`KeySets::handle_fetched`]; then ask again.
    Fetch {
        /// Names this fetch.
        ticket: Ticket,
        /// The set's URL.
        url: String,
        /// End the fetch after this long and report a failure.
        timeout_ms: u64,
    },
    /// Another context is fetching: wait until woken ([`KeySets::poll_wake`] names you)
    /// or until `until`, whichever comes first, then ask again.
    Wait {
        /// Who waits.
        waiter: WaiterId,
        /// Ask again at this time even if nobody woke you.
        until: u64,
    },
    /// Refuse the request.
    Refuse(AuthError),
}

#[derive(Debug, Clone)]
struct Good {
    keys: Rc<Vec<Jwk>>,
    fresh_until: u64,
    usable_until: u64,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: u64,
    /// When it counts as failed if nobody reported.
    deadline: u64,
}

#[derive(Debug)]
struct Set {
    url: String,
    good: Option<Good>,
    fetch: Option<InFlight>,
    last_attempt: Option<u64>,
    waiters: Vec<WaiterId>,
    failures: u64,
}

/// Per-set counters, for `/__stats` and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetCounts {
    /// Fetches started.
    pub fetches: u64,
    /// Of those, failed (error status, garbage, timeout, lost).
    pub failures: u64,
    /// Keys in the set now.
    pub keys: usize,
}

/// Every remote set of the isolate.
#[derive(Debug)]
pub struct KeySets {
    sets: Vec<Set>,
    counts: Vec<SetCounts>,
    limits: Limits,
    next_id: u64,
    wake: VecDeque<WaiterId>,
    logs: VecDeque<String>,
}

/// How long a set fetched now stays fresh: `max-age` less `Age`, else
/// [`DEFAULT_MAX_AGE_MS`]; `no-store` and `no-cache` count as 0; then at least the
/// cooldown and at most [`MAX_MAX_AGE_MS`].
pub fn freshness_ms(cache_control: Option<&str>, age: Option<&str>, limits: Limits) -> u64 {
    // Delta-seconds (RFC 9111 §1.2.2): digits; one too large for u64 is "very long".
    let secs = |v: &str| {
        let v = v.trim().trim_matches('"');
        (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())).then(|| v.parse::<u64>().unwrap_or(u64::MAX))
    };
    let mut max_age = None;
    for directive in cache_control.unwrap_or_default().split(',') {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "no-store" | "no-cache" => max_age = Some(0),
            "max-age" if max_age != Some(0) => max_age = secs(value).or(Some(0)),
            _ => {}
        }
    }
    let age = age.and_then(secs).unwrap_or(0);
    let ms = match max_age {
        Some(s) => s.saturating_sub(age).saturating_mul(1000),
        None => DEFAULT_MAX_AGE_MS,
    };
    ms.min(MAX_MAX_AGE_MS).max(limits.cooldown_ms)
}

impl KeySets {
    /// One entry per URL (set `i` is `urls[i]`), nothing fetched yet.
    pub fn new(urls: &[String], limits: Limits) -> Self {
        let sets = urls
            .iter()
            .map(|url| Set {
                url: url.clone(),
                good: None,
                fetch: None,
                last_attempt: None,
                waiters: vec![],
                failures: 0,
            })
            .collect::<Vec<_>>();
        KeySets {
            counts: vec![SetCounts::default(); sets.len()],
            sets,
            limits,
            next_id: 1,
            wake: VecDeque::new(),
            logs: VecDeque::new(),
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The keys (or the way to them) for a token of `alg` and `kid` checked against set
    /// `set`, at `now`.
    pub fn handle_lookup(&mut self, set: usize, alg: Alg, kid: Option<&str>, now: u64) -> Step {
        self.expire(set, now);
        let limits = self.limits;
        let id = self.id();
        let Some(s) = self.sets.get_mut(set) else {
            return Step::Refuse(AuthError::Invalid("no key set for this token's issuer"));
        };
        let usable = s.good.as_ref().filter(|g| now < g.usable_until);
        let fresh = usable.is_some_and(|g| now < g.fresh_until);
        let known = usable.is_some_and(|g| g.keys.iter().any(|k| k.fits(alg, kid)));
        let may_fetch = s.fetch.is_none() && s.last_attempt.is_none_or(|t| now >= t.saturating_add(limits.cooldown_ms));
        match (usable, known) {
            // Fresh, or stale while a refresh is under way or not yet allowed: serve it.
            (Some(g), true) if fresh || !may_fetch => return Step::Keys(g.keys.clone()),
            _ => {}
        }
        if may_fetch {
            // Expired (a refresh), never fetched, failed before, or a `kid` it lacks
            // (a rotation): this context fetches.
            let deadline = now.saturating_add(FETCH_TIMEOUT_MS + REPORT_GRACE_MS);
            s.fetch = Some(InFlight { id, deadline });
            s.last_attempt = Some(now);
            if let Some(c) = self.counts.get_mut(set) {
                c.fetches += 1;
            }
            return Step::Fetch { ticket: Ticket { set, id }, url: s.url.clone(), timeout_ms: FETCH_TIMEOUT_MS };
        }
        if let Some(f) = s.fetch {
            s.waiters.push(WaiterId(id));
            return Step::Wait { waiter: WaiterId(id), until: f.deadline };
        }
        if usable.is_some() {
            return Step::Refuse(AuthError::Invalid("no key with this kid and alg in the issuer's key set"));
        }
        let retry = s.last_attempt.map_or(0, |t| t.saturating_add(limits.cooldown_ms).saturating_sub(now));
        Step::Refuse(AuthError::Unavailable("the identity provider's keys cannot be fetched now", retry))
    }

    /// A fetch that nobody reported by its deadline failed (its context is gone).
    fn expire(&mut self, set: usize, now: u64) {
        let lost = self.sets.get(set).and_then(|s| s.fetch).filter(|f| now >= f.deadline);
        if let Some(f) = lost {
            self.fail(set, f.id, "no answer reported (the fetching request ended)".into(), now);
        }
    }

    fn fail(&mut self, set: usize, id: u64, why: String, now: u64) {
        let Some(s) = self.sets.get_mut(set) else { return };
        if s.fetch.map(|f| f.id) != Some(id) {
            return;
        }
        s.fetch = None;
        // The cooldown runs from the end of an attempt: a fetch that takes longer than the
        // cooldown (a stalled provider) must not be followed at once by the next one.
        s.last_attempt = Some(now);
        s.failures += 1;
        self.wake.extend(s.waiters.drain(..));
        if let Some(c) = self.counts.get_mut(set) {
            c.failures += 1;
        }
        let serving = match s.good.as_ref().filter(|g| now < g.usable_until) {
            Some(g) => format!("the last good keys serve for {} s more", (g.usable_until - now) / 1000),
            None => "requests that need it get 503".into(),
        };
        self.logs.push_back(format!("key set {}: fetch failed ({why}); {serving}", s.url));
    }

    /// The fetch of `ticket` ended with `result` at `now`. Returns whether the set's keys
    /// changed (the glue then forgets tokens verified before: a withdrawn key must stop
    /// vouching for them). A report for a fetch already given up is ignored.
    pub fn handle_fetched(&mut self, ticket: Ticket, result: Result<Fetched, String>, now: u64) -> bool {
        let Ticket { set, id } = ticket;
        let current = self.sets.get(set).and_then(|s| s.fetch).is_some_and(|f| f.id == id);
        if !current {
            return false;
        }
        let fetched = match result {
            Ok(f) => f,
            Err(why) => {
                self.fail(set, id, why, now);
                return false;
            }
        };
        if fetched.body.len() > MAX_KEY_SET_BYTES {
            self.fail(set, id, format!("more than {MAX_KEY_SET_BYTES} bytes"), now);
            return false;
        }
        let parsed = match parse_key_set(&fetched.body) {
            Ok(p) if p.keys.is_empty() => Err(format!(
                "no key the snippet verifies with{}",
                p.skipped_line().map(|l| format!(": {l}")).unwrap_or_default()
            )),
            other => other,
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(why) => {
                self.fail(set, id, why, now);
                return false;
            }
        };
        let fresh = freshness_ms(fetched.cache_control.as_deref(), fetched.age.as_deref(), self.limits);
        let limits = self.limits;
        let Some(s) = self.sets.get_mut(set) else { return false };
        let changed = s.good.as_ref().is_none_or(|g| *g.keys != parsed.keys);
        if changed {
            let skipped = parsed.skipped_line().map(|l| format!("; {l}")).unwrap_or_default();
            self.logs.push_back(format!(
                "key set {}: {} keys ({}), fresh for {} s{skipped}",
                s.url,
                parsed.keys.len(),
                parsed.kids(),
                fresh / 1000
            ));
        }
        let usable_until = now.saturating_add(fresh).saturating_add(limits.stale_ms);
        if let Some(c) = self.counts.get_mut(set) {
            c.keys = parsed.keys.len();
        }
        s.good = Some(Good { keys: Rc::new(parsed.keys), fresh_until: now.saturating_add(fresh), usable_until });
        s.fetch = None;
        s.last_attempt = Some(now);
        s.failures = 0;
        self.wake.extend(s.waiters.drain(..));
        changed
    }

    /// Whether set `set` has keys it may serve at `now` (fresh, or stale within the
    /// window). A verdict reached with its keys is worth keeping only while this holds.
    pub fn usable(&self, set: usize, now: u64) -> bool {
        self.sets.get(set).and_then(|s| s.good.as_ref()).is_some_and(|g| now < g.usable_until)
    }

    /// A waiting task was dropped: forget it.
    pub fn handle_gone(&mut self, waiter: WaiterId) {
        for s in &mut self.sets {
            s.waiters.retain(|w| *w != waiter);
        }
        self.wake.retain(|w| *w != waiter);
    }

    /// Whether `waiter` still waits (not yet woken, not given up).
    pub fn waiting(&self, waiter: WaiterId) -> bool {
        self.sets.iter().any(|s| s.waiters.contains(&waiter))
    }

    /// The next waiter to wake (its fetch ended).
    pub fn poll_wake(&mut self) -> Option<WaiterId> {
        self.wake.pop_front()
    }

    /// The next line for the log.
    pub fn poll_log(&mut self) -> Option<String> {
        self.logs.pop_front()
    }

    /// Counters of set `set`.
    pub fn counts(&self, set: usize) -> SetCounts {
        self.counts.get(set).copied().unwrap_or_default()
    }

    /// Counters summed over every set.
    pub fn totals(&self) -> SetCounts {
        self.counts.iter().fold(SetCounts::default(), |a, c| SetCounts {
            fetches: a.fetches + c.fetches,
            failures: a.failures + c.failures,
            keys: a.keys + c.keys,
        })
    }
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;
