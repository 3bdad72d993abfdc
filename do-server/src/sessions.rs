//! Resumable sessions, the object's side (PROTOCOL.md §14): each session's positions and
//! the messages it sent that its client has not acknowledged, kept in storage, so that a
//! client that reconnects — through any snippet isolate, after the object hibernated or
//! restarted — gets what it missed and nothing twice, and the application sees one
//! client throughout.
//!
//! This module keeps the state and says what to store; [`crate::Object`] decides when
//! (attach, detach, end) and the glue stores it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use protocol::session::{Envelope, SessionId, MAX_REPLAY_BYTES, MAX_REPLAY_MESSAGES, RESUME_WINDOW_MS};
use protocol::{FrameKind, Identity, StreamId};

use crate::app::{Client, Msg};
use crate::ids::{ClientId, SocketId};
use crate::out::Outboxes;
use crate::store;

/// A message the session sent and its client has not acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    seq: u64,
    text: bool,
    /// When it was sent (ms): kept no longer than [`RESUME_WINDOW_MS`].
    at: u64,
    payload: Vec<u8>,
}

/// One session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The application's client (its id is the session's for life).
    pub(crate) client: Client,
    /// The stream it is attached to, if any.
    pub(crate) at: Option<(SocketId, StreamId)>,
    /// When it was detached (ms), while it is.
    pub(crate) detached_at: Option<u64>,
    /// The last client message taken, in order.
    pub(crate) taken: u64,
    /// The last number given to a message sent.
    pub(crate) sent: u64,
    /// The last `ack` the client was told (in data or an `Ack`): not stored.
    told: u64,
    kept: VecDeque<Kept>,
    kept_bytes: usize,
}

impl Session {
    /// Whether a client that has every message up to `received` can go on: nothing after
    /// it was dropped, and it claims nothing that was never sent.
    pub(crate) fn resumable(&self, received: u64) -> bool {
        let oldest = self.kept.front().map_or(self.sent + 1, |k| k.seq);
        received <= self.sent && oldest <= received.saturating_add(1)
    }

    /// When the session ends if nobody attaches it.
    pub(crate) fn expires_at(&self) -> Option<u64> {
        self.detached_at.map(|t| t.saturating_add(RESUME_WINDOW_MS))
    }
}

/// Every session of the object, and what to store.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_id: BTreeMap<SessionId, Session>,
    by_client: BTreeMap<ClientId, SessionId>,
    /// Sessions whose stored summary must be written at the end of the input.
    changed: BTreeSet<SessionId>,
    /// Sessions whose client's messages advanced in this input (an `Ack` may be owed).
    advanced: Vec<SessionId>,
    /// Rows to write (`Some`) or delete (`None`), in order.
    pub(crate) writes: Vec<(String, Option<Vec<u8>>)>,
    pub(crate) counters: SessionCounters,
}

/// What the sessions have done since the object was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Sessions a client came back to, positions kept.
    pub resumed: u64,
    /// Sessions that ended because nobody came back within the window, or came back too
    /// late to be resumed.
    pub expired: u64,
    /// Messages sent again to a client that came back.
    pub replayed: u64,
    /// Client messages dropped as already taken (or out of order).
    pub duplicates: u64,
    /// Storage rows the sessions wrote or deleted (what they cost in storage).
    pub rows_written: u64,
}

impl Sessions {
    pub(crate) fn get(&self, id: &SessionId) -> Option<&Session> {
        self.by_id.get(id)
    }

    /// The session of client `id`, if it has one.
    pub(crate) fn of_client(&self, id: ClientId) -> Option<&Session> {
        self.by_id.get(self.by_client.get(&id)?)
    }

    /// Sessions nobody is attached to (their clients are still the application's).
    pub(crate) fn detached(&self) -> impl Iterator<Item = &Session> {
        self.by_id.values().filter(|s| s.at.is_none())
    }

    /// The earliest time a detached session expires.
    pub(crate) fn next_expiry(&self) -> Option<u64> {
        self.by_id.values().filter_map(Session::expires_at).min()
    }

    /// Sessions whose window is over at `now`.
    pub(crate) fn expired(&self, now: u64) -> Vec<SessionId> {
        let due = |s: &&Session| s.expires_at().is_some_and(|t| t <= now);
        self.by_id.values().filter(due).filter_map(|s| s.client.session).collect()
    }

    /// A new session for `client` (which names it), attached at `at`.
    pub(crate) fn begin(&mut self, client: Client, at: (SocketId, StreamId)) {
        let Some(id) = client.session else { return };
        self.by_client.insert(client.id(), id);
        let session = Session {
            client,
            at: Some(at),
            detached_at: None,
            taken: 0,
            sent: 0,
            told: 0,
            kept: VecDeque::new(),
            kept_bytes: 0,
        };
        self.by_id.insert(id, session);
        self.changed.insert(id);
    }

    /// Ends session `id`: it and its rows are gone. Returns its client.
    pub(crate) fn end(&mut self, id: SessionId) -> Option<Client> {
        let s = self.by_id.remove(&id)?;
        self.by_client.remove(&s.client.id());
        self.changed.remove(&id);
        for k in &s.kept {
            self.writes.push((store::kept_key(id, k.seq), None));
        }
        self.writes.push((store::session_key(id), None));
        Some(s.client)
    }

    /// Attaches session `id` to `at` for a client that has every message up to
    /// `received` (it was checked [`Session::resumable`]), with its current `identity`:
    /// `Welcome`, then what it missed. Returns where it was attached before.
    pub(crate) fn resume(
        &mut self,
        id: SessionId,
        at: (SocketId, StreamId),
        identity: Identity,
        received: u64,
        outboxes: &mut Outboxes,
    ) -> Option<(SocketId, StreamId)> {
        let s = self.by_id.get_mut(&id)?;
        let before = s.at.replace(at);
        s.detached_at = None;
        s.client.identity = identity;
        s.client.stream = at.1;
        s.told = s.taken;
        self.counters.resumed += 1;
        push(outboxes, at, &Envelope::Welcome { resumed: true, ack: s.taken });
        for k in s.kept.iter().filter(|k| k.seq > received) {
            self.counters.replayed += 1;
            let env = Envelope::Data { text: k.text, seq: k.seq, ack: s.taken, payload: &k.payload };
            push(outboxes, at, &env);
        }
        self.changed.insert(id);
        before
    }

    /// Session `id` lost its stream: it waits for its client.
    pub(crate) fn detach(&mut self, id: SessionId, now: u64) {
        if let Some(s) = self.by_id.get_mut(&id) {
            s.at = None;
            s.detached_at = Some(now);
            self.changed.insert(id);
        }
    }

    /// Sends `msg` in session `id`: numbered, kept until acknowledged, and sent now if
    /// the session is attached.
    pub(crate) fn send(&mut self, id: SessionId, msg: Msg<'_>, now: u64, outboxes: &mut Outboxes) {
        let Some(s) = self.by_id.get_mut(&id) else { return };
        s.sent += 1;
        let (seq, text, payload) = (s.sent, matches!(msg, Msg::Text(_)), msg.as_bytes());
        if let Some(at) = s.at {
            s.told = s.taken;
            push(outboxes, at, &Envelope::Data { text, seq, ack: s.taken, payload });
        }
        let mut row = Vec::with_capacity(9 + payload.len());
        row.push(u8::from(text));
        row.extend_from_slice(&now.to_be_bytes());
        row.extend_from_slice(payload);
        self.writes.push((store::kept_key(id, seq), Some(row)));
        s.kept_bytes += payload.len();
        s.kept.push_back(Kept { seq, text, at: now, payload: payload.to_vec() });
        // The bounds: what a client needs after a gap longer than these cannot be resumed.
        while s.kept.len() > MAX_REPLAY_MESSAGES
            || s.kept_bytes > MAX_REPLAY_BYTES
            || s.kept.front().is_some_and(|k| k.at.saturating_add(RESUME_WINDOW_MS) < now)
        {
            let Some(k) = s.kept.pop_front() else { break };
            s.kept_bytes -= k.payload.len();
            self.writes.push((store::kept_key(id, k.seq), None));
        }
        self.changed.insert(id);
    }

    /// The client acknowledged every message up to `ack`: they are dropped.
    pub(crate) fn acknowledge(&mut self, id: SessionId, ack: u64) {
        let Some(s) = self.by_id.get_mut(&id) else { return };
        while s.kept.front().is_some_and(|k| k.seq <= ack) {
            let Some(k) = s.kept.pop_front() else { break };
            s.kept_bytes -= k.payload.len();
            self.writes.push((store::kept_key(id, k.seq), None));
        }
    }

    /// Whether the client's message `seq` is the next one; if so it is taken.
    pub(crate) fn take(&mut self, id: SessionId, seq: u64) -> bool {
        let Some(s) = self.by_id.get_mut(&id) else { return false };
        if seq != s.taken.wrapping_add(1) {
            self.counters.duplicates += 1;
            return false;
        }
        s.taken = seq;
        self.changed.insert(id);
        self.advanced.push(id);
        true
    }

    /// The end of an input: an `Ack` to each attached session whose client's messages
    /// advanced and that was told nothing since, and every changed summary stored.
    pub(crate) fn finish_input(&mut self, outboxes: &mut Outboxes) {
        for id in std::mem::take(&mut self.advanced) {
            let Some(s) = self.by_id.get_mut(&id) else { continue };
            if let (Some(at), true) = (s.at, s.told < s.taken) {
                s.told = s.taken;
                push(outboxes, at, &Envelope::Ack { ack: s.taken });
            }
        }
        for id in std::mem::take(&mut self.changed) {
            if let Some(s) = self.by_id.get(&id) {
                self.writes.push((store::session_key(id), Some(encode_summary(s))));
            }
        }
    }

    /// Rebuilds the sessions from their rows (keys under [`store::SESSION_PREFIX`]).
    /// Returns the attached ones with where they were, for the caller to place.
    pub(crate) fn restore(
        &mut self,
        rows: &[(String, Vec<u8>)],
        services: &'static [&'static str],
    ) -> Vec<(SessionId, SocketId, StreamId)> {
        let mut placed = Vec::new();
        for (key, value) in rows {
            let Some(store::SessionRow::Summary(id)) = store::SessionRow::of(key) else { continue };
            let Some((s, at)) = decode_summary(id, value, services) else { continue };
            if let Some((socket, stream)) = at {
                placed.push((id, socket, stream));
            }
            self.by_client.insert(s.client.id(), id);
            self.by_id.insert(id, s);
        }
        for (key, value) in rows {
            let Some(store::SessionRow::Kept(id, seq)) = store::SessionRow::of(key) else { continue };
            let Some(s) = self.by_id.get_mut(&id) else {
                // A message of a session that is gone.
                self.writes.push((key.clone(), None));
                continue;
            };
            let Some((&text, rest)) = value.split_first() else { continue };
            let (Some(at), Some(payload)) = (rest.get(..8).and_then(store::decode_time), rest.get(8..)) else {
                continue;
            };
            s.kept_bytes += payload.len();
            s.kept.push_back(Kept { seq, text: text == 1, at, payload: payload.to_vec() });
        }
        for s in self.by_id.values_mut() {
            s.kept.make_contiguous().sort_by_key(|k| k.seq);
        }
        placed
    }
}

fn push(outboxes: &mut Outboxes, (socket, stream): (SocketId, StreamId), env: &Envelope<'_>) {
    outboxes.push(socket, FrameKind::Binary, stream, &env.encode());
}

/// A session's stored summary: `taken:u64 sent:u64 origin:u64 origin_stream:u32
/// at_socket:u64 at_stream:u32 (0, 0 = detached) detached_at:u64` then the client's
/// [`Client::encode`]. Its kept messages are rows of their own.
fn encode_summary(s: &Session) -> Vec<u8> {
    let (at_socket, at_stream) = s.at.map_or((0, 0), |(so, st)| (so.bits(), st.0));
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&s.taken.to_be_bytes());
    out.extend_from_slice(&s.sent.to_be_bytes());
    out.extend_from_slice(&s.client.id().origin().bits().to_be_bytes());
    out.extend_from_slice(&s.client.id().stream().0.to_be_bytes());
    out.extend_from_slice(&at_socket.to_be_bytes());
    out.extend_from_slice(&at_stream.to_be_bytes());
    out.extend_from_slice(&s.detached_at.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&s.client.encode());
    out
}

type Placed = Option<(SocketId, StreamId)>;

fn decode_summary(id: SessionId, b: &[u8], services: &'static [&'static str]) -> Option<(Session, Placed)> {
    let u64_at = |i: usize| Some(u64::from_be_bytes(b.get(i..i + 8)?.try_into().ok()?));
    let u32_at = |i: usize| Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let (taken, sent) = (u64_at(0)?, u64_at(8)?);
    let origin = ClientId::new(SocketId::from_bits(u64_at(16)?), StreamId(u32_at(24)?));
    let (at_socket, at_stream, detached_at) = (u64_at(28)?, u32_at(36)?, u64_at(40)?);
    let at = (at_stream != 0).then(|| (SocketId::from_bits(at_socket), StreamId(at_stream)));
    let stream = at.map_or(origin.stream(), |(_, st)| st);
    let client = Client::decode(origin, stream, b.get(48..)?, services)?.with_session(id);
    let session = Session {
        client,
        at: None,
        detached_at: (detached_at != 0).then_some(detached_at),
        taken,
        sent,
        told: 0,
        kept: VecDeque::new(),
        kept_bytes: 0,
    };
    Some((session, at))
}

impl Sessions {
    /// Places a restored session at `at` (its socket is live).
    pub(crate) fn place(&mut self, id: SessionId, at: (SocketId, StreamId)) {
        if let Some(s) = self.by_id.get_mut(&id) {
            s.at = Some(at);
            s.detached_at = None;
        }
    }

    /// A restored session whose socket is gone: detached since `now` if it was not.
    pub(crate) fn orphaned(&mut self, id: SessionId, now: u64) {
        if let Some(s) = self.by_id.get_mut(&id) {
            if s.at.is_none() && s.detached_at.is_none() {
                s.detached_at = Some(now);
                self.changed.insert(id);
            }
        }
    }
}
