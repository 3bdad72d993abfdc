//! One multiplexed upstream (the snippet's `/mux` socket) as the object sees it: a table
//! of open streams, each with the caller the snippet authenticated for it, and the
//! handling of each incoming batch (PROTOCOL.md §4.2). [`Outcome`] says which entries
//! changed so the glue can persist them (one storage key per stream) and rebuild the
//! table after hibernation ([`Session::restore`]).

use std::collections::BTreeMap;

use protocol::{Close, FrameKind, Open, Request, Response, StreamId};

use crate::admit::{check_open, check_request};
use crate::app::{App, Client, Msg};
use crate::out::{Fanout, Out, Sink};

/// Most streams one session may have open: the protocol's limit, which the snippet never
/// exceeds on one upstream, so a snippet within its limits is never refused here, while
/// one session still cannot grow the object's memory and storage without end.
pub const MAX_STREAMS: usize = protocol::MAX_SESSION_STREAMS;

/// Storage keys of mux sockets start with this (`mux/{socket}` holds the tenant,
/// `mux/{socket}/{stream:010}` one stream: PROTOCOL.md §8).
pub const SOCKET_PREFIX: &str = "mux/";

/// The key holding socket `socket`'s tenant.
pub fn socket_key(socket: &str) -> String {
    format!("{SOCKET_PREFIX}{socket}")
}

/// The prefix of socket `socket`'s stream keys.
pub fn stream_prefix(socket: &str) -> String {
    format!("{SOCKET_PREFIX}{socket}/")
}

/// The key of stream `id` of socket `socket`: zero-padded, so keys list in id order.
pub fn stream_key(socket: &str, id: u32) -> String {
    format!("{SOCKET_PREFIX}{socket}/{id:010}")
}

/// The stream id in a key made by [`stream_key`].
pub fn stream_of_key(key: &str) -> Option<u32> {
    key.rsplit('/').next().and_then(|id| id.parse().ok())
}

/// The close code to answer a peer's close with: the same, except the codes a close
/// frame may not carry (1005, 1006, 1015 and anything out of range), which become 1000.
pub fn reciprocal_close_code(code: usize) -> u16 {
    match code {
        1005 | 1006 | 1015 => 1000,
        c => u16::try_from(c).unwrap_or(1000),
    }
}

/// The stream table of one mux socket on one tenant's object.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// The tenant this object serves: every stream's identity must allow it.
    pub tenant: String,
    /// Open streams, by id.
    pub streams: BTreeMap<u32, Client>,
}

/// What handling one message produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The messages to send back, in order (none when nothing needs an answer): this
    /// socket's share of broadcasts first, then the replies, each within
    /// [`crate::MAX_BATCH_BYTES`] unless it holds a single larger frame.
    pub replies: Vec<Vec<u8>>,
    /// Streams opened by this message: persist their entries.
    pub opened: Vec<u32>,
    /// Streams closed by this message (by the client or by the app): forget their entries.
    pub closed: Vec<u32>,
    /// Frames in the message.
    pub frames: u64,
    /// Error frames sent back.
    pub errors: u64,
}

impl Outcome {
    /// Every stream whose stored entry may have changed, once each: store the ones still
    /// in the table, delete the others (right even for a stream closed and reopened in
    /// one message).
    pub fn touched(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.opened.iter().chain(&self.closed).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

impl Session {
    /// An empty table for `tenant`'s object.
    pub fn new(tenant: &str) -> Session {
        Session { tenant: tenant.to_owned(), streams: BTreeMap::new() }
    }

    /// A table rebuilt from its stored entries (key per [`stream_key`], value per
    /// [`Client::encode`]); entries that do not decode are skipped.
    /// `services` are the app's [`App::SERVICES`].
    pub fn restore(
        tenant: &str,
        services: &'static [&'static str],
        entries: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Session {
        let mut session = Session::new(tenant);
        for (key, bytes) in entries {
            let Some(id) = stream_of_key(&key) else { continue };
            if let Some(client) = Client::decode(StreamId(id), &bytes, services) {
                session.streams.insert(id, client);
            }
        }
        session
    }

    /// Handles one message from the snippet and builds the reply messages. Never panics;
    /// a malformed frame gets a session-level `Error` frame (stream 0) and ends the
    /// processing of that message only — earlier frames are answered, later messages are
    /// handled normally (the snippet, though, ends the upstream on a session error).
    /// `now_secs` is the time the callers' expiry is checked against; `fanout` reaches
    /// the object's other mux sockets when the app broadcasts.
    pub fn handle_message<A: App>(
        &mut self,
        app: &mut A,
        msg: &[u8],
        now_secs: u64,
        fanout: &mut dyn Fanout,
    ) -> Outcome {
        let mut out = Outcome::default();
        let mut sink = Sink::default();
        match protocol::decode_message(msg) {
            Err(e) => {
                let head: Vec<String> = msg.iter().take(8).map(|b| format!("{b:02x}")).collect();
                let what = format!("bad message ({} bytes, starting {}): {e}", msg.len(), head.join(" "));
                sink.error(StreamId::SESSION, 400, what)
            }
            Ok(frames) => {
                for frame in frames {
                    let frame = match frame {
                        Ok(f) => f,
                        Err(e) => {
                            sink.error(StreamId::SESSION, 400, format!("bad frame: {e}"));
                            break;
                        }
                    };
                    out.frames += 1;
                    self.handle_frame(app, frame, now_secs, &mut sink, fanout, &mut out);
                    // Streams the app closed while handling the frame.
                    for id in std::mem::take(&mut sink.closing) {
                        if self.streams.remove(&id.0).is_some() {
                            out.closed.push(id.0);
                        }
                    }
                    // Streams that got an error: the snippet has ended them (with the
                    // close code it maps the error to), so the app hears they closed.
                    for (id, code) in std::mem::take(&mut sink.errored) {
                        let Some(client) = self.streams.remove(&id.0) else { continue };
                        out.closed.push(id.0);
                        let (code, reason) = ended_by_error(code);
                        let mut o = Out {
                            sink: &mut sink,
                            own: Some(&self.streams),
                            opening: None,
                            fanout: &mut *fanout,
                            tenant: &self.tenant,
                            now_secs,
                        };
                        app.on_close(&client, code, reason, &mut o);
                        sink.errored.clear(); // errors made by on_close are for a gone stream
                    }
                }
            }
        }
        out.errors = sink.errors;
        out.replies = sink.finish();
        out
    }

    fn handle_frame<A: App>(
        &mut self,
        app: &mut A,
        f: protocol::Frame<'_>,
        now: u64,
        sink: &mut Sink,
        fanout: &mut dyn Fanout,
        outcome: &mut Outcome,
    ) {
        let id = f.stream;
        match f.kind {
            FrameKind::Open => {
                let open = match Open::decode(f.payload) {
                    Ok(o) => o,
                    Err(e) => return sink.error(id, 400, format!("bad open frame: {e}")),
                };
                if id == StreamId::SESSION {
                    return sink.error(id, 400, "stream 0 is the session; it cannot be opened".into());
                }
                let Some(client) = Client::open(id, &open.path, open.identity, A::SERVICES) else {
                    let known = A::SERVICES.join(" or ");
                    return sink.error(id, 404, format!("no service at {:?} (try {known})", open.path));
                };
                if let Err(why) = check_open(&client.identity, &self.tenant, now) {
                    return sink.error(id, 403, why);
                }
                if self.streams.len() >= MAX_STREAMS && !self.streams.contains_key(&id.0) {
                    return sink.error(id, 503, format!("too many streams on this session (limit {MAX_STREAMS})"));
                }
                let opening = Some(id);
                let mut out =
                    Out { sink, own: Some(&self.streams), opening, fanout, tenant: &self.tenant, now_secs: now };
                match app.on_open(&client, &mut out) {
                    Ok(()) => {
                        self.streams.insert(id.0, client);
                        outcome.opened.push(id.0);
                    }
                    Err(refusal) => sink.error(id, refusal.code, refusal.message),
                }
            }
            FrameKind::Text | FrameKind::Binary => {
                let Some(client) = self.streams.get(&id.0) else {
                    return sink.error(id, 404, format!("unknown stream {id}"));
                };
                if client.identity.expired(now) {
                    return sink.error(id, 401, "the caller's token has expired".into());
                }
                let msg = Msg::of_frame(f.kind, f.payload);
                let mut out =
                    Out { sink, own: Some(&self.streams), opening: None, fanout, tenant: &self.tenant, now_secs: now };
                if let Err(refusal) = app.on_message(client, msg, &mut out) {
                    sink.error(id, refusal.code, refusal.message);
                }
            }
            FrameKind::Close => {
                let Some(client) = self.streams.remove(&id.0) else { return };
                outcome.closed.push(id.0);
                // The snippet always sends a well-formed close; a malformed one still
                // ends the stream, as "no status".
                let close = Close::decode(f.payload).unwrap_or(Close { code: 1005, reason: String::new() });
                let mut out =
                    Out { sink, own: Some(&self.streams), opening: None, fanout, tenant: &self.tenant, now_secs: now };
                app.on_close(&client, close.code, &close.reason, &mut out);
            }
            FrameKind::Request => {
                let req = match Request::decode(f.payload) {
                    Ok(r) => r,
                    Err(e) => return sink.error(id, 400, format!("bad request frame: {e}")),
                };
                let mut out =
                    Out { sink, own: Some(&self.streams), opening: None, fanout, tenant: &self.tenant, now_secs: now };
                let res = respond(app, &req, &mut out);
                sink.push(FrameKind::Response, id, &res.encode());
            }
            // Answered in place, after every reply to the frames before it: the barrier
            // the snippet's hand-over waits for (PROTOCOL.md §5.2).
            FrameKind::Ping => sink.push(FrameKind::Pong, id, f.payload),
            FrameKind::Pong | FrameKind::Response | FrameKind::Error => {}
        }
    }

    /// The socket is gone (closed or failed): every stream on it ends, and the app hears
    /// [`App::on_close`] for each with the socket's `code` and `reason`. The table is
    /// left empty.
    pub fn end<A: App>(&mut self, app: &mut A, code: u16, reason: &str, now_secs: u64, fanout: &mut dyn Fanout) {
        let streams = std::mem::take(&mut self.streams);
        for client in streams.values() {
            crate::out::detached(&self.tenant, now_secs, fanout, |out| app.on_close(client, code, reason, out));
        }
    }
}

/// Answers one request for the app after admission (a refused caller gets a JSON 401 or
/// 403 and never reaches [`App::on_request`]).
pub fn respond<A: App>(app: &mut A, req: &Request, out: &mut Out<'_>) -> Response {
    match check_request(req, out.tenant, out.now_secs) {
        Ok(()) => app.on_request(req, out),
        Err(refused) => refused,
    }
}

#[cfg(test)]
mod tests;

/// The close code and reason the snippet gives a client whose stream got error `code`
/// (401/403: not allowed, 503: busy, else a server error), as the app hears it.
fn ended_by_error(code: u16) -> (u16, &'static str) {
    match code {
        401 | 403 => (1008, "refused by the backend: not allowed"),
        503 => (1013, "refused by the backend: too busy"),
        _ => (1011, "refused by the backend"),
    }
}
