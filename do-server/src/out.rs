//! How the application answers: [`Out`] collects replies for the socket being handled
//! into batches under [`MAX_BATCH_BYTES`], and hands broadcasts to the other sockets
//! through a [`Fanout`] the glue supplies.

use std::collections::BTreeMap;

use protocol::{encode_frame, Close, ErrorFrame, FrameKind, StreamId};

use crate::app::{Client, Msg};

/// Reply batches are closed before they would pass this many bytes (a lone larger frame
/// travels alone). The snippet's own default batch bound: big enough to amortise the
/// per-message cost, small enough that no stream's replies wait long behind another's.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Longest close reason a WebSocket close frame may carry (RFC 6455: 125 bytes of
/// payload, 2 of them the code); the snippet passes the reason on to its client as is.
pub const MAX_CLOSE_REASON: usize = 123;

/// The mux sockets other than the one being handled. The glue implements it over every
/// socket of the object (loading their stream tables after hibernation); a test or a
/// single-socket setup uses [`NoFanout`].
pub trait Fanout {
    /// Sends `msg`, at once, to every stream of every other socket whose client passes
    /// `filter`. Returns how many streams it went to.
    fn broadcast(&mut self, filter: &dyn Fn(&Client) -> bool, msg: Msg<'_>) -> u64;
}

/// No other sockets.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFanout;

impl Fanout for NoFanout {
    fn broadcast(&mut self, _: &dyn Fn(&Client) -> bool, _: Msg<'_>) -> u64 {
        0
    }
}

/// Frames packed into messages of at most [`MAX_BATCH_BYTES`] (a lone larger frame gets
/// a message of its own).
#[derive(Default)]
struct Batches {
    done: Vec<Vec<u8>>,
    open: Vec<u8>,
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
        encode_frame(&mut self.open, kind, stream, payload)
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        if self.open.len() > 1 {
            self.done.push(self.open);
        }
        self.done
    }
}

/// The messages carrying `msg` to each of `streams` (server push), split so that none
/// passes [`MAX_BATCH_BYTES`] however many streams listen. Empty when `msg` is too large
/// for any message.
pub fn push_batches(streams: &[u32], msg: Msg<'_>) -> Vec<Vec<u8>> {
    let mut out = Batches::default();
    for id in streams {
        if out.push(msg.kind(), StreamId(*id), msg.as_bytes()).is_err() {
            return Vec::new();
        }
    }
    out.finish()
}

/// What one incoming message (or one detached call) has produced so far.
#[derive(Default)]
pub(crate) struct Sink {
    batches: Batches,
    /// Broadcasts to this socket's own streams: they leave first, as they always have
    /// (a push is sent the moment it is made, before the reply batch is complete).
    pushes: Vec<Vec<u8>>,
    /// Streams the application closed: the session forgets them after the callback.
    pub(crate) closing: Vec<StreamId>,
    /// Streams answered with an `Error` frame, and its code. The snippet ends a stream on
    /// any error of its own, and never sends its `Close`; so the session forgets them too,
    /// or an upstream that lives for days would fill its table with streams nobody has.
    pub(crate) errored: Vec<(StreamId, u16)>,
    pub(crate) errors: u64,
}

impl Sink {
    /// Queues a frame; one too large for any message becomes an error for its stream,
    /// so the client hears why instead of waiting.
    pub(crate) fn push(&mut self, kind: FrameKind, stream: StreamId, payload: &[u8]) {
        if self.batches.push(kind, stream, payload).is_err() {
            let why = format!("the reply of {} bytes is larger than a message may carry", payload.len());
            self.error(stream, 500, why);
        }
    }

    pub(crate) fn error(&mut self, stream: StreamId, code: u16, message: String) {
        self.errors += 1;
        if stream != StreamId::SESSION {
            self.errored.push((stream, code));
        }
        self.push(FrameKind::Error, stream, &ErrorFrame { code, message }.encode());
    }

    /// The messages to send, in order.
    pub(crate) fn finish(self) -> Vec<Vec<u8>> {
        let mut out = self.pushes;
        out.extend(self.batches.finish());
        out
    }
}

/// The application's way to answer, handed to every [`crate::App`] callback.
pub struct Out<'a> {
    pub(crate) sink: &'a mut Sink,
    /// The stream table of the socket being handled; `None` outside any socket (plain
    /// HTTP to the object, a socket that has gone).
    pub(crate) own: Option<&'a BTreeMap<u32, Client>>,
    /// The stream whose `Open` is being handled: not in the table yet, but it may be
    /// replied to (a greeting).
    pub(crate) opening: Option<StreamId>,
    pub(crate) fanout: &'a mut dyn Fanout,
    pub(crate) tenant: &'a str,
    pub(crate) now_secs: u64,
}

impl Out<'_> {
    /// The tenant this object serves.
    pub fn tenant(&self) -> &str {
        self.tenant
    }

    /// The time the message is handled at, in seconds since the epoch (what expiry is
    /// checked against).
    pub fn now_secs(&self) -> u64 {
        self.now_secs
    }

    /// Sends `msg` to `stream` on the socket being handled, after everything queued
    /// before it. A stream that is not open there (closed, never opened, or no socket at
    /// all) gets nothing.
    pub fn reply(&mut self, stream: StreamId, msg: Msg<'_>) {
        if self.is_open(stream) {
            self.sink.push(msg.kind(), stream, msg.as_bytes());
        }
    }

    fn is_open(&self, stream: StreamId) -> bool {
        self.opening == Some(stream) || self.own.is_some_and(|own| own.contains_key(&stream.0))
    }

    /// Closes `stream` on the socket being handled with `code` (RFC 6455; the snippet
    /// turns 1005/1006/1015 into 1000) and `reason` (cut to [`MAX_CLOSE_REASON`] bytes),
    /// and forgets it: the snippet sends nothing more for it.
    pub fn close(&mut self, stream: StreamId, code: u16, reason: &str) {
        if !self.is_open(stream) {
            return;
        }
        let reason = protocol::truncate_utf8(reason, MAX_CLOSE_REASON).to_owned();
        self.sink.push(FrameKind::Close, stream, &Close { code, reason }.encode());
        self.sink.closing.push(stream);
    }

    /// Sends `msg` to every stream, on every mux socket of the object, whose client
    /// passes `filter`, unprompted and at once: on the socket being handled it leaves
    /// before this message's replies. Returns how many streams it went to.
    pub fn broadcast(&mut self, filter: &dyn Fn(&Client) -> bool, msg: Msg<'_>) -> u64 {
        let mut delivered = 0;
        if let Some(own) = self.own {
            let ids: Vec<u32> = own.values().filter(|c| filter(c)).map(|c| c.stream.0).collect();
            let batches = push_batches(&ids, msg);
            if !batches.is_empty() {
                delivered += ids.len() as u64;
                self.sink.pushes.extend(batches);
            }
        }
        delivered + self.fanout.broadcast(filter, msg)
    }
}

/// Runs `f` with an [`Out`] that belongs to no socket: for work that arrives another way
/// (plain HTTP to the object, a direct WebSocket) and may broadcast to the mux clients.
/// Its replies and closes reach nobody.
pub fn detached<R>(tenant: &str, now_secs: u64, fanout: &mut dyn Fanout, f: impl FnOnce(&mut Out<'_>) -> R) -> R {
    let mut sink = Sink::default();
    f(&mut Out { sink: &mut sink, own: None, opening: None, fanout, tenant, now_secs })
}
