//! Which tenant's link each upstream connection belongs to. Every event of an upstream
//! (a message, a transmit poll, a close) names its connection; a scan of the pool for the
//! link that has it cost up to [`crate::Config::max_upstreams`] checks per event, several
//! times per relayed message. The index answers with one lookup and the same answer: an
//! entry counts only while its link still has the connection (current, successor or
//! draining), exactly what the scan asked.

use std::rc::Rc;

use crate::idmap::IdMap;
use crate::link::UpstreamId;
use crate::links::Links;
use crate::Mux;

/// Connection → tenant, for every connection handed out and not yet known gone.
#[derive(Debug, Default)]
pub(crate) struct Conns(IdMap<UpstreamId, Rc<str>>);

impl Conns {
    /// A new connection of `tenant`'s link. Entries whose link no longer has them are
    /// dropped first: connects are rare next to events, and this bounds the index by
    /// what the pool can hold (three connections per link: current, successor,
    /// draining) plus the new one.
    pub fn insert(&mut self, id: UpstreamId, tenant: &str, links: &Links) {
        self.0.retain(|id, t| links.get(t).is_some_and(|l| l.has(*id)));
        self.0.insert(id, Rc::from(tenant));
    }

    /// Entries kept now (for the tests' bound).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl Mux {
    /// The tenant whose link knows connection `id` (current, successor or draining). A
    /// shared name: no allocation per event.
    pub(crate) fn link_of(&self, id: UpstreamId) -> Option<Rc<str>> {
        let tenant = self.conns.0.get(&id)?;
        self.links.get(tenant).is_some_and(|l| l.has(id)).then(|| tenant.clone())
    }

    /// What the index replaces, for the tests to compare: the pool scanned.
    #[cfg(test)]
    pub(crate) fn link_of_by_scan(&self, id: UpstreamId) -> Option<String> {
        self.links.values().find(|l| l.has(id)).map(|l| l.tenant.clone())
    }

    /// Asserts that the index answers as the scan does for every connection ever handed
    /// out, and that it stays within its bound ([`Conns::insert`]); and that every
    /// link's cached answers are fresh.
    #[cfg(test)]
    pub(crate) fn check_conns(&self) {
        for n in 1..self.next_upstream {
            let id = UpstreamId(n);
            let scan = self.link_of_by_scan(id);
            assert_eq!(self.link_of(id).as_deref(), scan.as_deref(), "link_of({id}) differs from the scan");
        }
        let bound = 3 * self.cfg.max_upstreams + 1;
        assert!(self.conns.len() <= bound, "the index holds {} entries, over {bound}", self.conns.len());
        // The links' cached answers (`links.rs`) are what a fresh computation gives.
        assert_eq!(self.poll_timeout(), self.poll_timeout_uncached(), "cached deadlines differ");
        for l in self.links.values() {
            let fresh = crate::links::candidate(l);
            assert_eq!(self.links.is_candidate(l, &self.cfg), fresh, "indexed candidacy of {} differs", l.tenant);
        }
    }
}
