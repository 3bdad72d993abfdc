//! The per-object view an operator asks for: the snippet upstreams (mux sockets, one per
//! snippet isolate, two for a moment during that isolate's hand-over) connected now, the
//! streams on each, and what the object has done since this instance woke ([`Counters`]).
//! The core gathers it ([`Object::view`]); the glue serves it ([`View::to_json`],
//! [`View::to_prometheus`]) on whatever operator-only path the object chooses. It reads
//! what the object holds anyway: nothing is counted per message beyond an integer, and
//! nothing is stored, so every counter starts at 0 when the instance does
//! ([`View::woke_at`]).
//!
//! server-ts builds the same JSON and the same text (`src/view.js`, `src/metrics.js`); the
//! session vectors pin both (`protocol/vectors/session.json`).

mod metrics;

use serde_json::{json, Value};

use crate::app::App;
use crate::ids::SocketId;
use crate::object::{Counters, Object};
use crate::HANDOVER_WINDOW_MS;

/// Most sockets the view lists one by one (those with the most streams first): it bounds
/// the answer and the series a scraper keeps for an object with a socket from every
/// isolate of a large fleet, as the snippet bounds its per-tenant list (64). The totals
/// count every socket.
pub const MAX_LISTED_SOCKETS: usize = 64;

/// One mux socket: one snippet isolate's upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketView {
    /// Its id (12 hex digits; a new one for every connection, hand-overs included).
    pub socket: String,
    /// Clients open on it now.
    pub streams: u64,
    /// Of those, clients of resumable sessions.
    pub sessions: u64,
    /// Messages (batches) received on it since this instance knew it.
    pub messages_in: u64,
    /// Messages (batches) sent on it since this instance knew it.
    pub messages_out: u64,
    /// Whether its isolate is handing it over: a barrier arrived within
    /// [`HANDOVER_WINDOW_MS`], and its streams are moving to that isolate's new socket.
    pub handing_over: bool,
}

/// What an operator sees of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The tenant the object serves ('' before its first socket after a wake).
    pub tenant: String,
    /// When this instance was built from storage (ms since the epoch): every counter
    /// counts from then.
    pub woke_at: u64,
    /// Mux sockets connected now (snippet upstreams).
    pub upstreams: u64,
    /// Clients on them now.
    pub streams: u64,
    /// Sessions' clients whose connection is down, waiting to come back.
    pub detached: u64,
    /// Clients of a socket that closed mid-hand-over, waiting for their re-open.
    pub orphans: u64,
    /// Up to [`MAX_LISTED_SOCKETS`] sockets, most streams first, then by id.
    pub sockets: Vec<SocketView>,
    /// What the object has done since [`View::woke_at`].
    pub counters: Counters,
}

impl<A: App> Object<A> {
    /// The operator's view of the object at `now` (ms). `live` are the mux sockets the
    /// runtime has (as for [`Object::handle_accept`]): one that died without a close event
    /// is not an upstream any more, though the object has not yet swept its clients.
    pub fn view(&self, now: u64, live: &[SocketId]) -> View {
        let mut sockets: Vec<SocketView> = self
            .tables
            .sockets()
            .filter(|(id, _)| live.contains(id))
            .map(|(id, t)| SocketView {
                socket: id.to_string(),
                streams: t.clients.len() as u64,
                sessions: t.clients.values().filter(|c| c.session.is_some()).count() as u64,
                messages_in: t.messages_in,
                messages_out: t.messages_out,
                handing_over: t.barrier_at.is_some_and(|at| now.saturating_sub(at) <= HANDOVER_WINDOW_MS),
            })
            .collect();
        // Ids are fixed-width hex, so their order as text is their order as numbers.
        sockets.sort_by(|a, b| b.streams.cmp(&a.streams).then_with(|| a.socket.cmp(&b.socket)));
        let upstreams = sockets.len() as u64;
        let streams = sockets.iter().map(|s| s.streams).sum();
        sockets.truncate(MAX_LISTED_SOCKETS);
        View {
            tenant: self.tenant().to_owned(),
            woke_at: self.woke_at,
            upstreams,
            streams,
            detached: self.sessions.detached().count() as u64,
            orphans: self.orphan_count() as u64,
            sockets,
            counters: self.counters(),
        }
    }
}

impl View {
    /// The view as JSON (camelCase, as `/__stats` of the snippet): the figures, `sockets`,
    /// and `totals` (the counters).
    pub fn to_json(&self) -> Value {
        let c = &self.counters;
        let r = &c.refused;
        let s = &c.sessions;
        let sockets: Vec<Value> = self
            .sockets
            .iter()
            .map(|k| {
                json!({
                    "socket": k.socket,
                    "streams": k.streams,
                    "sessions": k.sessions,
                    "messagesIn": k.messages_in,
                    "messagesOut": k.messages_out,
                    "handingOver": k.handing_over,
                })
            })
            .collect();
        json!({
            "tenant": self.tenant,
            "wokeAt": self.woke_at,
            "upstreams": self.upstreams,
            "streams": self.streams,
            "detached": self.detached,
            "orphans": self.orphans,
            "sockets": sockets,
            "totals": {
                "socketsAccepted": c.sockets_accepted,
                "socketsClosed": c.sockets_closed,
                "messagesIn": c.messages_in,
                "framesIn": c.frames_in,
                "messagesOut": c.messages_out,
                "framesOut": c.frames_out,
                "opened": c.opened,
                "closed": c.closed,
                "requests": c.requests,
                "handovers": c.handovers,
                "adopted": c.adopted,
                "orphaned": c.orphaned,
                "lost": c.lost,
                "errors": c.errors,
                "refused": {
                    "malformed": r.malformed,
                    "service": r.service,
                    "admission": r.admission,
                    "limit": r.limit,
                    "app": r.app,
                    "expired": r.expired,
                    "request": r.request,
                },
                "sessions": {
                    "resumed": s.resumed,
                    "expired": s.expired,
                    "replayed": s.replayed,
                    "duplicates": s.duplicates,
                    "rowsWritten": s.rows_written,
                },
            },
        })
    }

    /// The view in the Prometheus text format 0.0.4 ([`metrics`] has the families).
    pub fn to_prometheus(&self) -> String {
        metrics::render(self)
    }
}

/// The `Content-Type` of [`View::to_prometheus`].
pub const METRICS_CONTENT_TYPE: &str = protocol::exposition::CONTENT_TYPE;
