//! Who keeps the core's one timer. The core has one next deadline ([`crate::Mux::poll_timeout`]),
//! but a timer fires only while the request context that set it is alive (RUNTIME.md §4),
//! and contexts come and go: a client's lives as long as its socket, a pump's as long as
//! its upstream, a scheduled round's until it returns, an HTTP request's until it answers.
//! This type decides, in the glue's terms and without I/O, which living context holds the
//! timer, so that whenever the core has a deadline some living context will act on it.
//!
//! * Contexts that can hold a timer are [`Holder`]s: the glue calls [`Timekeeper::join`]
//!   when such a task starts and [`Timekeeper::leave`] when it ends or is dropped.
//! * After every settle the glue calls [`Timekeeper::decide`] with the core's deadline:
//!   [`Duty::Wake`] names a holder that must (re-)arm — the glue wakes its task — or
//!   there is nothing to do.
//! * A holder, in its own poll, asks [`Timekeeper::poll`] when its timer must fire (only
//!   the keeper gets a time); when it fires it calls [`Timekeeper::fired`] and settles in
//!   its own context.
//!
//! Clients are preferred (their contexts live longest, and a client context may take an
//! upstream over), then a scheduled round, then pumps. A keeper whose timer is more than
//! [`TIMER_STALE_MS`] overdue is presumed dead with its context and passed over until it
//! shows life again. An HTTP request holds no timer for others: it has its own timer for
//! its own deadline, and ends with its reply.

use std::collections::BTreeMap;

use protocol::StreamId;

use crate::link::UpstreamId;

/// A timer this late is presumed to have died with its context: ample for a busy isolate's
/// event loop, short next to every deadline the core keeps (seconds).
pub const TIMER_STALE_MS: u64 = 1_000;

/// A task whose context can hold the core's timer. The order is the preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Holder {
    /// A client WebSocket's delivery task: its context lives as long as the client.
    Client(StreamId),
    /// A scheduled round's task, while its handler runs.
    Round(u32),
    /// An upstream's pump: its context lives at least as long as its connection.
    Pump(UpstreamId),
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Client(id) => write!(f, "client {id}"),
            Holder::Round(n) => write!(f, "round {n}"),
            Holder::Pump(id) => write!(f, "pump of {id}"),
        }
    }
}

/// What the glue must do after a settle, from [`Timekeeper::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a holder named here must be woken, or no context keeps the core's timer"]
pub enum Duty {
    /// The timer is in good hands.
    Nothing,
    /// Wake this holder's task: it is the keeper and must arm (or re-arm) its timer.
    Wake(Holder),
}

#[derive(Debug, Default, Clone, Copy)]
struct Held {
    /// When its timer fires, if it holds one.
    armed: Option<u64>,
    /// When it was made keeper and woken, until it polls.
    woken_at: Option<u64>,
    /// It failed to act in time: its context is presumed gone.
    suspect: bool,
}

impl Held {
    /// Whether it should have acted by now and did not.
    fn overdue(&self, now: u64) -> bool {
        self.armed.or(self.woken_at).is_some_and(|t| now > t.saturating_add(TIMER_STALE_MS))
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Timekeeper {
    holders: BTreeMap<Holder, Held>,
    keeper: Option<Holder>,
    /// A client's context is wanted to settle now ([`crate::Mux::owner_wanted`]).
    errand: bool,
}

impl Timekeeper {
    /// A task that can hold the timer has started in its context.
    pub fn join(&mut self, h: Holder) {
        self.holders.entry(h).or_default();
    }

    /// That task ended or was dropped. If it was the keeper, the next best is named.
    pub fn leave(&mut self, h: Holder, now: u64) -> Duty {
        self.holders.remove(&h);
        if self.keeper != Some(h) {
            return Duty::Nothing;
        }
        self.keeper = None;
        self.appoint(self.errand, now)
    }

    /// The current keeper, if any.
    pub fn keeper(&self) -> Option<Holder> {
        self.keeper
    }

    /// Holders alive now (for `/__stats`).
    pub fn holders(&self) -> usize {
        self.holders.len()
    }

    /// When the keeper's timer fires, if it holds one (for `/__stats`).
    pub fn armed(&self) -> Option<u64> {
        self.keeper.and_then(|k| self.holders.get(&k)).and_then(|h| h.armed)
    }

    /// After a settle: who must act so that a living context has a timer for the core's
    /// next `deadline`, and, with `owner_wanted`, so that a client's context settles now.
    pub fn decide(&mut self, deadline: Option<u64>, owner_wanted: bool, now: u64) -> Duty {
        self.errand |= owner_wanted;
        let Some(target) = self.target(deadline, now) else {
            // Nothing to time: a timer already armed fires once, harmlessly.
            return Duty::Nothing;
        };
        if let Some(k) = self.keeper {
            let held = self.holders.get(&k).copied().unwrap_or_default();
            if held.overdue(now) {
                self.suspect(k);
            } else if self.errand && !matches!(k, Holder::Client(_)) && self.best(true).is_some() {
                // The errand needs a client's context; this keeper is not one.
                self.keeper = None;
            } else if held.armed.is_some_and(|at| at <= target) {
                return Duty::Nothing;
            } else {
                return self.wake(k, now);
            }
        }
        self.appoint(self.errand, now)
    }

    /// In holder `h`'s own poll: when its timer must fire, if it is the keeper and there
    /// is something to time. The time and the core's `deadline` are asked only then: a
    /// holder that is not the keeper (every client's delivery task but one, polled for
    /// each message it delivers) costs a map lookup. It is recorded as armed for that time.
    pub fn poll(
        &mut self,
        h: Holder,
        now: impl FnOnce() -> u64,
        deadline: impl FnOnce() -> Option<u64>,
    ) -> Option<u64> {
        let held = self.holders.get_mut(&h)?;
        // It polled, so its context is alive.
        held.suspect = false;
        held.woken_at = None;
        if self.keeper.is_none() {
            self.keeper = Some(h);
        }
        if self.keeper != Some(h) {
            held.armed = None;
            return None;
        }
        let errand = self.errand && matches!(h, Holder::Client(_));
        let at = if errand {
            // An errand keeps the time it was first armed for: a client polled for every
            // message it delivers must not put it off again and again.
            let now = now();
            Some(held.armed.filter(|t| *t <= now).unwrap_or(now))
        } else {
            deadline()
        };
        if let Some(held) = self.holders.get_mut(&h) {
            held.armed = at;
        }
        at
    }

    /// The keeper `h` keeps the timer it has already set for `t`, which fires no later
    /// than [`Timekeeper::poll`] asked: recorded as armed for `t`. Setting a new timer at
    /// every change of the deadline cost a timer made and one cleared per relayed message
    /// (the deadline moves with every batch sent and every reply heard); a timer that
    /// fires early only settles and arms again. Recording the earlier time keeps
    /// [`Timekeeper::decide`] from waking the keeper to re-arm for a deadline its timer
    /// already precedes.
    pub fn keep_armed(&mut self, h: Holder, t: u64) {
        if self.keeper != Some(h) {
            return;
        }
        if let Some(held) = self.holders.get_mut(&h) {
            held.armed = Some(t);
        }
    }

    /// Holder `h`'s timer fired; it settles now in its own context.
    pub fn fired(&mut self, h: Holder) {
        if let Some(held) = self.holders.get_mut(&h) {
            held.armed = None;
        }
        if self.keeper == Some(h) && matches!(h, Holder::Client(_)) {
            self.errand = false;
        }
    }

    /// The time the keeper must act by: now for an errand a client can run, else the
    /// core's deadline.
    fn target(&mut self, deadline: Option<u64>, now: u64) -> Option<u64> {
        if self.errand && self.best(true).is_none() {
            // No client to run it: the next client context that settles does it anyway.
            self.errand = false;
        }
        if self.errand {
            Some(now)
        } else {
            deadline
        }
    }

    fn suspect(&mut self, h: Holder) {
        if let Some(held) = self.holders.get_mut(&h) {
            held.suspect = true;
            held.armed = None;
            held.woken_at = None;
        }
        if self.keeper == Some(h) {
            self.keeper = None;
        }
    }

    /// The preferred holder that is not suspect; only clients when `client`.
    fn best(&self, client: bool) -> Option<Holder> {
        let mut usable = self.holders.iter().filter(|(_, held)| !held.suspect).map(|(h, _)| *h);
        if client {
            usable.find(|h| matches!(h, Holder::Client(_)))
        } else {
            usable.next()
        }
    }

    fn appoint(&mut self, client: bool, now: u64) -> Duty {
        let Some(h) = self.best(client).or_else(|| self.best(false)) else {
            return Duty::Nothing;
        };
        self.keeper = Some(h);
        self.wake(h, now)
    }

    fn wake(&mut self, h: Holder, now: u64) -> Duty {
        if let Some(held) = self.holders.get_mut(&h) {
            held.armed = None;
            held.woken_at.get_or_insert(now);
        }
        Duty::Wake(h)
    }
}

#[cfg(test)]
#[path = "keeper_tests.rs"]
mod tests;
