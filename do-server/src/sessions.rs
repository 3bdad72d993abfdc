//! Resumable sessions, the object's side (PROTOCOL.md §14): each session's positions and
//! the messages it sent that its client has not acknowledged, kept in storage, so that a
//! client that reconnects — through any snippet isolate, after the object hibernated or
//! restarted — gets what it missed and nothing twice, and the application sees one
//! client throughout.
//!
//! This module keeps the state and says what to store: a summary row per session when
//! it begins, attaches or detaches ([`summary`]), and one journal record per input for
//! what moved in it ([`journal`]). [`crate::Object`] decides when; the glue stores it.

mod journal;
mod summary;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use protocol::session::{Envelope, SessionId, MAX_REPLAY_BYTES, MAX_REPLAY_MESSAGES, RESUME_WINDOW_MS};
use protocol::{FrameKind, Identity, StreamId};

use crate::app::{Client, Msg};
use crate::ids::{ClientId, SocketId};
use crate::out::Outboxes;
use crate::store;
use journal::{Holds, Record, MAX_RECORD_BYTES};

/// A message the session sent and its client has not acknowledged.
#[derive(Debug, Clone)]
struct Kept {
    seq: u64,
    text: bool,
    /// When it was sent (ms): kept no longer than [`RESUME_WINDOW_MS`].
    at: u64,
    /// Shared with the other sessions a broadcast went to.
    payload: Rc<[u8]>,
    /// The journal record it is stored in.
    record: u64,
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
    /// The record holding its latest positions, unless its summary does.
    positions_in: Option<u64>,
    /// The first record that can be this session's (see `summary`).
    since: u64,
}

impl Session {
    fn new(client: Client, at: Option<(SocketId, StreamId)>, taken: u64, sent: u64, since: u64) -> Session {
        let kept = VecDeque::new();
        Session { client, at, detached_at: None, taken, sent, told: 0, kept, kept_bytes: 0, positions_in: None, since }
    }

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
    /// Sessions whose summary row must be written at the end of the input.
    changed: BTreeSet<SessionId>,
    /// Sessions whose client's messages advanced in this input (an `Ack` may be owed).
    advanced: Vec<SessionId>,
    /// Sessions whose positions moved in this input (the record carries them).
    moved: BTreeSet<SessionId>,
    /// The input's records, being built (more than one only past [`MAX_RECORD_BYTES`]).
    building: Vec<(u64, Record)>,
    /// Records and what they still hold; `true` once stored (those of this input are
    /// not yet).
    records: BTreeMap<u64, (Holds, bool)>,
    next_record: u64,
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
        // Its records start with a fresh one: what this input recorded before it began
        // (perhaps for an earlier session under the same id) is not its own.
        let since = self.new_record();
        self.by_id.insert(id, Session::new(client, Some(at), 0, 0, since));
        self.changed.insert(id);
    }

    /// Ends session `id`: it and what it holds in storage are gone. Returns its client.
    pub(crate) fn end(&mut self, id: SessionId) -> Option<Client> {
        let s = self.by_id.remove(&id)?;
        self.by_client.remove(&s.client.id());
        self.changed.remove(&id);
        self.moved.remove(&id);
        for k in &s.kept {
            self.release(k.record, Holds { messages: 1, positions: 0 });
        }
        if let Some(r) = s.positions_in {
            self.release(r, Holds { messages: 0, positions: 1 });
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
        self.moved.insert(id);
        // One larger than the whole replay bound is never kept: a client that missed it
        // cannot be resumed, and one that has it needs nothing older — so nothing older is
        // kept either (a replay must never skip a message).
        if payload.len() > MAX_REPLAY_BYTES {
            self.drop_kept(id, u64::MAX);
        } else {
            self.start_record(payload.len());
            if let Some((n, r)) = self.building.last_mut() {
                let payload = r.add(id, seq, text, now, payload);
                if let Some((h, _)) = self.records.get_mut(n) {
                    h.messages += 1;
                }
                if let Some(s) = self.by_id.get_mut(&id) {
                    s.kept_bytes += payload.len();
                    s.kept.push_back(Kept { seq, text, at: now, payload, record: *n });
                }
            }
        }
        self.trim(id, now);
    }

    /// Makes sure this input has a record with room for `len` more bytes.
    fn start_record(&mut self, len: usize) {
        let full = self.building.last().is_none_or(|(_, r)| !r.entries.is_empty() && r.size() + len > MAX_RECORD_BYTES);
        if full {
            self.new_record();
        }
    }

    /// Starts another record for this input; returns its number.
    fn new_record(&mut self) -> u64 {
        let n = self.next_record;
        self.building.push((n, Record::default()));
        self.records.insert(n, (Holds::default(), false));
        self.next_record += 1;
        n
    }

    /// The replay bounds: what a client needs after a gap longer than these cannot be
    /// resumed, and its records are freed.
    fn trim(&mut self, id: SessionId, now: u64) {
        self.drop_kept_while(id, |s, k| {
            s.kept.len() > MAX_REPLAY_MESSAGES
                || s.kept_bytes > MAX_REPLAY_BYTES
                || k.at.saturating_add(RESUME_WINDOW_MS) < now
        });
    }

    /// The client acknowledged every message up to `ack`: they are dropped.
    pub(crate) fn acknowledge(&mut self, id: SessionId, ack: u64) {
        self.drop_kept(id, ack);
    }

    /// Drops session `id`'s kept messages up to `ack`, freeing their records.
    fn drop_kept(&mut self, id: SessionId, ack: u64) {
        self.drop_kept_while(id, |_, k| k.seq <= ack);
    }

    /// Drops session `id`'s oldest kept messages while `more(session, oldest)` holds,
    /// freeing their records.
    fn drop_kept_while(&mut self, id: SessionId, more: impl Fn(&Session, &Kept) -> bool) {
        let Some(s) = self.by_id.get_mut(&id) else { return };
        let mut freed = Vec::new();
        while s.kept.front().is_some_and(|k| more(s, k)) {
            let Some(k) = s.kept.pop_front() else { break };
            s.kept_bytes -= k.payload.len();
            freed.push(k.record);
        }
        for r in freed {
            self.release(r, Holds { messages: 1, positions: 0 });
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
        self.moved.insert(id);
        self.advanced.push(id);
        true
    }

    /// Record `n` no longer needs what `gone` says: a stored one is deleted once it needs
    /// nothing (one of this input is then simply not stored).
    fn release(&mut self, n: u64, gone: Holds) {
        let Some((h, stored)) = self.records.get_mut(&n) else { return };
        h.messages = h.messages.saturating_sub(gone.messages);
        h.positions = h.positions.saturating_sub(gone.positions);
        if h.empty() && *stored {
            self.records.remove(&n);
            self.writes.push((store::record_key(n), None));
        }
    }

    /// The end of an input: an `Ack` to each attached session whose client's messages
    /// advanced and that was told nothing since; the input's record(s) and every changed
    /// summary stored.
    pub(crate) fn finish_input(&mut self, outboxes: &mut Outboxes) {
        for id in std::mem::take(&mut self.advanced) {
            let Some(s) = self.by_id.get_mut(&id) else { continue };
            if let (Some(at), true) = (s.at, s.told < s.taken) {
                s.told = s.taken;
                push(outboxes, at, &Envelope::Ack { ack: s.taken });
            }
        }
        // Positions that moved go in the last record, unless the summary is written anyway.
        let moved: Vec<SessionId> =
            std::mem::take(&mut self.moved).into_iter().filter(|id| !self.changed.contains(id)).collect();
        if !moved.is_empty() {
            self.start_record(0);
        }
        let mut building = std::mem::take(&mut self.building);
        if let Some((n, last)) = building.last_mut() {
            for id in moved {
                let Some(s) = self.by_id.get_mut(&id) else { continue };
                last.positions.push((id, s.taken, s.sent));
                let before = s.positions_in.replace(*n);
                if let Some((h, _)) = self.records.get_mut(n) {
                    h.positions += 1;
                }
                if let Some(r) = before {
                    self.release(r, Holds { messages: 0, positions: 1 });
                }
            }
        }
        for (n, record) in building {
            match self.records.get_mut(&n) {
                // Everything in it was acknowledged or dropped within the input.
                Some((h, _)) if h.empty() => {
                    self.records.remove(&n);
                }
                Some((_, stored)) => {
                    *stored = true;
                    self.writes.push((store::record_key(n), Some(record.encode())));
                }
                None => {}
            }
        }
        for id in std::mem::take(&mut self.changed) {
            let Some(s) = self.by_id.get_mut(&id) else { continue };
            // The summary carries the positions: a record holding them no longer must.
            let before = s.positions_in.take();
            self.writes.push((store::session_key(id), Some(summary::encode_summary(s))));
            if let Some(r) = before {
                self.release(r, Holds { messages: 0, positions: 1 });
            }
        }
    }

    /// Rebuilds the sessions from their rows (keys under [`store::SESSION_PREFIX`]): the
    /// summaries, then the records in order. Returns the attached ones with where they
    /// were, for the caller to place.
    pub(crate) fn restore(
        &mut self,
        rows: &[(String, Vec<u8>)],
        services: &'static [&'static str],
    ) -> Vec<(SessionId, SocketId, StreamId)> {
        let mut placed = Vec::new();
        let mut records = Vec::new();
        for (key, value) in rows {
            match store::SessionRow::of(key) {
                Some(store::SessionRow::Summary(id)) => {
                    let Some((s, at)) = summary::decode_summary(id, value, services) else { continue };
                    if let Some((socket, stream)) = at {
                        placed.push((id, socket, stream));
                    }
                    self.by_client.insert(s.client.id(), id);
                    self.by_id.insert(id, s);
                }
                Some(store::SessionRow::Record(n)) => match journal::Record::decode(value) {
                    Some(r) => records.push((n, r)),
                    None => self.writes.push((key.clone(), None)),
                },
                None => {}
            }
        }
        records.sort_by_key(|(n, _)| *n);
        // New records are numbered after every record and every session's `since`.
        self.next_record = self.by_id.values().map(|s| s.since).max().unwrap_or(0);
        for (n, record) in records {
            self.restore_record(n, record);
        }
        let ids: Vec<SessionId> = self.by_id.keys().copied().collect();
        for id in ids {
            self.keep_unbroken(id);
        }
        placed
    }

    /// A restored session keeps only its messages that run without a gap up to the last
    /// it sent: one found in a record another session still holds, older than a message
    /// that was dropped since, must not make it look resumable from before that gap.
    fn keep_unbroken(&mut self, id: SessionId) {
        let Some(s) = self.by_id.get_mut(&id) else { return };
        s.kept.make_contiguous().sort_by_key(|k| k.seq);
        let mut expect = s.sent;
        let unbroken = s.kept.iter().rev().take_while(|k| {
            let ok = k.seq == expect;
            expect = expect.saturating_sub(1);
            ok
        });
        let first = s.kept.len() - unbroken.count();
        if let Some(k) = first.checked_sub(1).and_then(|i| s.kept.get(i)) {
            let last_broken = k.seq;
            self.drop_kept(id, last_broken);
        }
    }

    fn restore_record(&mut self, n: u64, record: Record) {
        self.next_record = self.next_record.max(n + 1);
        self.records.insert(n, (Holds::default(), true));
        for (id, taken, sent) in record.positions {
            let Some(s) = self.by_id.get_mut(&id).filter(|s| n >= s.since) else { continue };
            s.taken = s.taken.max(taken);
            s.sent = s.sent.max(sent);
            let before = s.positions_in.replace(n);
            if let Some((h, _)) = self.records.get_mut(&n) {
                h.positions += 1;
            }
            if let Some(r) = before {
                self.release(r, Holds { messages: 0, positions: 1 });
            }
        }
        for e in record.entries {
            for (id, seq) in e.to {
                let Some(s) = self.by_id.get_mut(&id).filter(|s| n >= s.since) else { continue };
                s.sent = s.sent.max(seq);
                s.kept_bytes += e.payload.len();
                s.kept.push_back(Kept { seq, text: e.text, at: e.at, payload: Rc::clone(&e.payload), record: n });
                if let Some((h, _)) = self.records.get_mut(&n) {
                    h.messages += 1;
                }
            }
        }
        if self.records.get(&n).is_some_and(|(h, _)| h.empty()) {
            self.records.remove(&n);
            self.writes.push((store::record_key(n), None));
        }
    }

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

fn push(outboxes: &mut Outboxes, (socket, stream): (SocketId, StreamId), env: &Envelope<'_>) {
    outboxes.push(socket, FrameKind::Binary, stream, &env.encode());
}
