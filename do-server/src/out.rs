//! How the application answers: [`Out`] sends to clients on whichever socket they are,
//! closes them, and broadcasts. What it sends waits in each socket's outbox, in order,
//! and leaves as batches under [`MAX_BATCH_BYTES`] when the object's current input is
//! handled.

use std::collections::BTreeMap;

use protocol::{encode_frame, Close, ErrorFrame, FrameKind, StreamId};

use crate::app::{Client, Msg};
use crate::ids::{ClientId, SocketId};
use crate::sessions::Sessions;
use crate::table::Tables;

pub use protocol::facts::{MAX_BATCH_BYTES, MAX_CLOSE_REASON};

/// Frames packed into messages of at most [`MAX_BATCH_BYTES`] (a lone larger frame gets
/// a message of its own).
#[derive(Debug, Default)]
pub(crate) struct Batches {
    done: Vec<Vec<u8>>,
    open: Vec<u8>,
    /// Frames in `done` and `open`.
    frames: u64,
}

impl Batches {
    fn push(&mut self, kind: FrameKind, stream: StreamId, payload: &[u8]) -> Result<(), protocol::DecodeError> {
        let empty = self.open.len() <= 1;
        if !empty && self.open.len() + protocol::frame_len(payload.len()) > MAX_BATCH_BYTES {
            self.done.push(std::mem::take(&mut self.open));
        }
        if self.open.is_empty() {
            protocol::begin_message(&mut self.open);
        }
        encode_frame(&mut self.open, kind, stream, payload)?;
        self.frames += 1;
        Ok(())
    }

    /// The messages so far, in order, and the frames in them; the batches start empty again.
    pub(crate) fn take(&mut self) -> (Vec<Vec<u8>>, u64) {
        let mut out = std::mem::take(&mut self.done);
        if self.open.len() > 1 {
            out.push(std::mem::take(&mut self.open));
        }
        self.open.clear();
        (out, std::mem::take(&mut self.frames))
    }
}

/// Every socket's outbox.
#[derive(Debug, Default)]
pub(crate) struct Outboxes {
    pub(crate) by_socket: BTreeMap<SocketId, Batches>,
    /// Streams answered with an `Error` frame, and its code. The snippet ends a stream on
    /// any error of its own and never sends its `Close`, so the object forgets them too,
    /// or an upstream that lives for days would fill its table with streams nobody has.
    pub(crate) errored: Vec<(SocketId, StreamId, u16)>,
    /// Clients the application closed, with the code and reason: forgotten after the
    /// callback, then closed for the app like any other.
    pub(crate) closing: Vec<(ClientId, u16, String)>,
    /// What left, for the object's counters.
    pub(crate) counted: Sent,
}

/// What the outboxes sent since the object was made.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    /// `Error` frames queued.
    pub(crate) errors: u64,
    /// Messages (batches) handed to the glue to send.
    pub(crate) messages: u64,
    /// Frames in them.
    pub(crate) frames: u64,
}

impl Outboxes {
    /// Queues a frame for `socket`; one too large for any message becomes an error for
    /// its stream, so the client hears why instead of waiting.
    pub(crate) fn push(&mut self, socket: SocketId, kind: FrameKind, stream: StreamId, payload: &[u8]) {
        let batches = self.by_socket.entry(socket).or_default();
        if batches.push(kind, stream, payload).is_err() {
            let why = format!("the reply of {} bytes is larger than a message may carry", payload.len());
            self.error(socket, stream, 500, why);
        }
    }

    /// Queues an `Error` frame; the stream (unless it is the session) ends with it.
    pub(crate) fn error(&mut self, socket: SocketId, stream: StreamId, code: u16, message: String) {
        self.counted.errors += 1;
        if stream != StreamId::SESSION {
            self.errored.push((socket, stream, code));
        }
        self.push(socket, FrameKind::Error, stream, &ErrorFrame { code, message }.encode());
    }
}

/// The application's way to answer, handed to every [`crate::App`] callback.
pub struct Out<'a> {
    pub(crate) tables: &'a Tables,
    pub(crate) outboxes: &'a mut Outboxes,
    pub(crate) sessions: &'a mut Sessions,
    /// The client whose `Open` is being handled, and its socket: not in the tables yet,
    /// but it may be sent to (a greeting).
    pub(crate) opening: Option<(ClientId, SocketId, StreamId)>,
    pub(crate) tenant: &'a str,
    pub(crate) now_ms: u64,
}

impl Out<'_> {
    /// The tenant this object serves.
    pub fn tenant(&self) -> &str {
        self.tenant
    }

    /// The time the input is handled at, in seconds since the epoch (what expiry is
    /// checked against).
    pub fn now_secs(&self) -> u64 {
        self.now_ms / 1000
    }

    /// Every open client, on every mux socket of the object, and every session's client
    /// whose connection dropped and may come back (the client being opened is not among
    /// them yet). After hibernation too: the clients come back from storage even when
    /// the app's own memory did not.
    pub fn clients(&self) -> impl Iterator<Item = &Client> {
        self.tables.clients().map(|(_, c)| c).chain(self.sessions.detached().map(|s| &s.client))
    }

    /// What the object's sessions have done since it last woke (PROTOCOL.md §14).
    pub fn session_counters(&self) -> crate::SessionCounters {
        self.sessions.counters
    }

    /// Where client `id` is now (its socket and stream), if it is open.
    fn locate(&self, id: ClientId) -> Option<(SocketId, StreamId)> {
        if let Some((_, socket, stream)) = self.opening.filter(|(o, _, _)| *o == id) {
            return Some((socket, stream));
        }
        let (socket, client) = self.tables.find(id)?;
        (!self.ending(socket, client)).then_some((socket, client.stream))
    }

    /// Whether `client`, on `socket`, is ending within the current input: closed by the
    /// app or answered with an `Error`, it reaches nobody any more.
    fn ending(&self, socket: SocketId, client: &Client) -> bool {
        self.outboxes.closing.iter().any(|(c, _, _)| *c == client.id())
            || self.outboxes.errored.iter().any(|(s, st, _)| *s == socket && *st == client.stream)
    }

    /// Whether client `id` has a session, and if so whether it is ending in this input.
    fn session_ending(&self, id: ClientId) -> Option<bool> {
        let s = self.sessions.of_client(id)?;
        let closing = self.outboxes.closing.iter().any(|(c, _, _)| *c == id);
        Some(closing || s.at.is_some_and(|(so, st)| self.outboxes.errored.iter().any(|(s, t, _)| *s == so && *t == st)))
    }

    /// Sends `msg` to client `id`, after everything queued for its socket before. A
    /// client that is not open (closed, errored, or unknown) gets nothing. A session's
    /// client gets it even while its connection is down: it is kept for when it
    /// comes back (PROTOCOL.md §14).
    pub fn send(&mut self, id: ClientId, msg: Msg<'_>) {
        if let Some(ending) = self.session_ending(id) {
            if let (false, Some(session)) = (ending, self.sessions.of_client(id).and_then(|s| s.client.session)) {
                self.sessions.send(session, msg, self.now_ms, self.outboxes);
            }
            return;
        }
        if let Some((socket, stream)) = self.locate(id) {
            self.outboxes.push(socket, msg.kind(), stream, msg.as_bytes());
        }
    }

    /// Closes client `id` with `code` and `reason` (cut to [`MAX_CLOSE_REASON`] bytes):
    /// the snippet sends nothing more for it, and once the current callback returns the
    /// app hears [`crate::App::on_close`] with the same code and reason, as for any
    /// other end. A code a close frame may not carry becomes 1000.
    pub fn close(&mut self, id: ClientId, code: u16, reason: &str) {
        let at = match self.session_ending(id) {
            Some(true) => return,
            Some(false) => self.sessions.of_client(id).and_then(|s| s.at),
            None => match self.locate(id) {
                Some(at) => Some(at),
                None => return,
            },
        };
        let code = crate::sendable_close_code(code);
        let reason = protocol::truncate_utf8(reason, MAX_CLOSE_REASON).to_owned();
        if let Some((socket, stream)) = at {
            self.outboxes.push(socket, FrameKind::Close, stream, &Close { code, reason: reason.clone() }.encode());
        }
        self.outboxes.closing.push((id, code, reason));
    }

    /// Sends `msg` at once to every open client, on every mux socket of the object, whose
    /// caller has not expired and who passes `filter`. Returns how many it went to.
    pub fn broadcast(&mut self, filter: &dyn Fn(&Client) -> bool, msg: Msg<'_>) -> u64 {
        let now_secs = self.now_secs();
        let mut delivered = 0;
        let tables = self.tables;
        for (socket, client) in tables.clients() {
            if client.identity.expired(now_secs) || !filter(client) || self.ending(socket, client) {
                continue;
            }
            match client.session {
                Some(session) => self.sessions.send(session, msg, self.now_ms, self.outboxes),
                None => self.outboxes.push(socket, msg.kind(), client.stream, msg.as_bytes()),
            }
            delivered += 1;
        }
        // Clients whose connection dropped: kept for when they come back.
        let away: Vec<_> = self
            .sessions
            .detached()
            .filter(|s| !s.client.identity.expired(now_secs) && filter(&s.client))
            .filter(|s| !self.outboxes.closing.iter().any(|(c, _, _)| *c == s.client.id()))
            .filter_map(|s| s.client.session)
            .collect();
        for session in away {
            self.sessions.send(session, msg, self.now_ms, self.outboxes);
            delivered += 1;
        }
        delivered
    }
}
