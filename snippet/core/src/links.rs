//! The pool's links by tenant, indexed by what the core asks of every link after every
//! input: its next deadline ([`Mux::poll_timeout`]) and whether it may want a connection
//! or a new owner ([`Mux::poll_connect`], [`Mux::owner_wanted`]). Computing those for every
//! link of the pool, several times per relayed message, was ~15 % of the snippet's CPU per
//! message with 50 tenants busy (`bench --only profile`, BENCHMARKS.md). A link changes
//! only through [`Links::get_mut`], [`Links::values_mut`], [`Links::insert`] or
//! [`Links::remove`]; each marks it dirty, and the index looks again at the dirty links
//! only, when it is next asked. So every answer is what a fresh computation over the whole
//! pool would give (the simulator checks it after every step).
//!
//! [`Mux::poll_timeout`]: crate::Mux::poll_timeout
//! [`Mux::poll_connect`]: crate::Mux
//! [`Mux::owner_wanted`]: crate::Mux::owner_wanted

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use crate::link::{Conn, Link};
use crate::Config;

/// Where a link stands in the index.
#[derive(Debug, Default)]
pub(crate) struct Indexed {
    /// Changed since the index last looked at it (its key is in the dirty list).
    dirty: Cell<bool>,
    /// Its deadline as the index holds it.
    deadline: Cell<Option<u64>>,
}

#[derive(Debug, Default)]
struct Index {
    /// Links changed since the index last looked at them.
    dirty: Vec<Rc<str>>,
    /// Every clean link's next deadline, earliest first.
    deadlines: BTreeSet<(u64, Rc<str>)>,
    /// Clean links that may want a connection or a new owner ([`candidate`]).
    candidates: BTreeSet<Rc<str>>,
}

/// Whether `link` may want a connection or a new owner: it is down, or a client's context
/// should take it over. What `needs_connect` and `wants_handover` add to this depends on
/// the time and the asking context, and is asked of candidates only.
pub(crate) fn candidate(link: &Link) -> bool {
    matches!(link.conn, Conn::Down) || link.wants_client_owner()
}

/// Links by tenant name, with their index.
#[derive(Debug, Default)]
pub(crate) struct Links {
    map: HashMap<String, Link>,
    index: RefCell<Index>,
}

impl Links {
    pub fn get(&self, tenant: &str) -> Option<&Link> {
        self.map.get(tenant)
    }

    /// The link, to change: marked dirty.
    pub fn get_mut(&mut self, tenant: &str) -> Option<&mut Link> {
        let link = self.map.get_mut(tenant)?;
        mark(self.index.get_mut(), link);
        Some(link)
    }

    pub fn values(&self) -> impl Iterator<Item = &Link> {
        self.map.values()
    }

    /// Every link, to change: every one marked dirty.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Link> {
        let index = self.index.get_mut();
        self.map.values_mut().inspect(move |l| mark(index, l))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.map.keys()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn insert(&mut self, tenant: String, link: Link) {
        mark(self.index.get_mut(), &link);
        if let Some(old) = self.map.insert(tenant, link) {
            unindex(self.index.get_mut(), &old);
        }
    }

    pub fn remove(&mut self, tenant: &str) -> Option<Link> {
        let link = self.map.remove(tenant)?;
        unindex(self.index.get_mut(), &link);
        Some(link)
    }

    /// The earliest deadline of any link.
    pub fn earliest_deadline(&self, cfg: &Config) -> Option<u64> {
        let Ok(mut index) = self.index.try_borrow_mut() else {
            // Asked from inside the index (never): the whole pool, computed.
            return self.map.values().filter_map(|l| crate::timer::link_deadline(l, cfg)).min();
        };
        self.refresh(&mut index, cfg);
        index.deadlines.first().map(|(t, _)| *t)
    }

    /// The first candidate link (in tenant order) that `wants` accepts.
    pub fn find_candidate(&self, cfg: &Config, wants: impl Fn(&Link) -> bool) -> Option<&Link> {
        let Ok(mut index) = self.index.try_borrow_mut() else {
            return self.map.values().find(|l| candidate(l) && wants(l));
        };
        self.refresh(&mut index, cfg);
        index.candidates.iter().filter_map(|t| self.map.get(&**t)).find(|l| wants(l))
    }

    /// Looks again at every dirty link.
    fn refresh(&self, index: &mut Index, cfg: &Config) {
        for key in std::mem::take(&mut index.dirty) {
            // A key left by a removed link, or listed twice: nothing to do.
            let Some(link) = self.map.get(&*key).filter(|l| l.indexed.dirty.get()) else { continue };
            link.indexed.dirty.set(false);
            if let Some(old) = link.indexed.deadline.take() {
                index.deadlines.remove(&(old, key.clone()));
            }
            if let Some(at) = crate::timer::link_deadline(link, cfg) {
                index.deadlines.insert((at, key.clone()));
                link.indexed.deadline.set(Some(at));
            }
            if candidate(link) {
                index.candidates.insert(key);
            } else {
                index.candidates.remove(&key);
            }
        }
    }

    /// Whether the index holds `link` as a candidate (for the tests, after a refresh).
    #[cfg(test)]
    pub fn is_candidate(&self, link: &Link, cfg: &Config) -> bool {
        self.find_candidate(cfg, |l| std::ptr::eq(l, link)).is_some()
    }
}

/// Puts `link` on the dirty list, once until the index looks at it.
fn mark(index: &mut Index, link: &Link) {
    if !link.indexed.dirty.replace(true) {
        index.dirty.push(link.key.clone());
    }
}

/// Takes a link that leaves the pool out of the index.
fn unindex(index: &mut Index, link: &Link) {
    if let Some(old) = link.indexed.deadline.take() {
        index.deadlines.remove(&(old, link.key.clone()));
    }
    index.candidates.remove(&link.key);
}
