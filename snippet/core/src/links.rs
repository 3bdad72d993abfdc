//! The pool's links by tenant, each with what the core asks of every link after every
//! input cached until the link changes: its next deadline ([`Mux::poll_timeout`]) and
//! whether it may want a connection or a new owner ([`Mux::poll_connect`],
//! [`Mux::owner_wanted`]). Those questions were answered by computing them for every link
//! of the pool, several times per relayed message; a link changes only through
//! [`Links::get_mut`] or [`Links::values_mut`], which drop its cached answers, so the
//! answers read back are always what a fresh computation would give.

use std::cell::Cell;
use std::collections::HashMap;

use crate::link::{Conn, Link};
use crate::Config;

/// What is cached of one link: `None` until asked after its last change.
#[derive(Debug, Default)]
pub(crate) struct Cached {
    deadline: Cell<Option<Option<u64>>>,
    candidate: Cell<Option<bool>>,
}

impl Cached {
    fn clear(&self) {
        self.deadline.set(None);
        self.candidate.set(None);
    }
}

/// Links by tenant name.
#[derive(Debug, Default)]
pub(crate) struct Links(HashMap<String, Link>);

impl Links {
    pub fn get(&self, tenant: &str) -> Option<&Link> {
        self.0.get(tenant)
    }

    /// The link, to change: its cached answers are dropped.
    pub fn get_mut(&mut self, tenant: &str) -> Option<&mut Link> {
        let link = self.0.get_mut(tenant)?;
        link.cached.clear();
        Some(link)
    }

    pub fn values(&self) -> impl Iterator<Item = &Link> {
        self.0.values()
    }

    /// Every link, to change: every cached answer is dropped.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Link> {
        self.0.values_mut().inspect(|l| l.cached.clear())
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn insert(&mut self, tenant: String, link: Link) {
        self.0.insert(tenant, link);
    }

    pub fn remove(&mut self, tenant: &str) -> Option<Link> {
        self.0.remove(tenant)
    }
}

impl Link {
    /// When the link next needs [`crate::Mux::handle_timeout`], if ever (cached).
    pub fn deadline(&self, cfg: &Config) -> Option<u64> {
        if let Some(at) = self.cached.deadline.get() {
            return at;
        }
        let at = crate::timer::link_deadline(self, cfg);
        self.cached.deadline.set(Some(at));
        at
    }

    /// Whether it may want a connection or a new owner: it is down, or a client's
    /// context should take it over. What [`Link::needs_connect`] and
    /// [`Link::wants_client_owner`] add to this depends on the time and the asking
    /// context, and is asked only of candidates (cached).
    pub fn candidate(&self) -> bool {
        if let Some(c) = self.cached.candidate.get() {
            return c;
        }
        let c = matches!(self.conn, Conn::Down) || self.wants_client_owner();
        self.cached.candidate.set(Some(c));
        c
    }
}
