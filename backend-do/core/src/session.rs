//! One multiplexed upstream (the snippet's `/mux` socket) as seen by the backend: a
//! table of open streams, each with the caller the snippet authenticated for it, and the
//! handling of each incoming batch. [`Outcome`] says which entries were added or removed
//! so the Durable Object can persist them (one storage key per stream) and rebuild the
//! table after hibernation.

use std::collections::BTreeMap;

use protocol::{encode_frame, ErrorFrame, FrameKind, Identity, Open, Request, Response, StreamId};

use crate::authz::{self, Caller};
use crate::rpc::{self, Db};
/// An HTTP request as the backend sees it (the same shape as a `Request` frame).
pub use protocol::Request as HttpRequest;
/// An HTTP response as the backend builds it.
pub use protocol::Response as HttpResponse;

/// Most streams one session may have open: the protocol's limit, which the snippet's
/// `MAX_CLIENTS` may not exceed, so a snippet within its limits is never refused here,
/// while one session still cannot grow the object's memory and storage without end.
pub const MAX_STREAMS: usize = protocol::MAX_SESSION_STREAMS;

/// Reply batches are closed before they would pass this many bytes (a lone larger frame
/// travels alone). The snippet's own default batch bound: big enough to amortise the
/// per-message cost, small enough that no stream's replies wait long behind another's.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// What a stream talks to, chosen by the path in its `Open` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `/rpc`: each message is a JSON-RPC request (or batch).
    Rpc,
    /// `/echo`: each message comes back verbatim.
    Echo,
}

impl Service {
    /// The service for a path, if any.
    pub fn from_path(path: &str) -> Option<Service> {
        match path {
            "/rpc" => Some(Service::Rpc),
            "/echo" => Some(Service::Echo),
            _ => None,
        }
    }
}

/// One open stream: its service and its caller.
#[derive(Debug, Clone)]
pub struct StreamEntry {
    /// What the stream talks to.
    pub service: Service,
    /// Who opened it (the time in it is refreshed for each message).
    pub caller: Caller,
}

impl StreamEntry {
    /// Persistent form: `service:u8` (1 = rpc, 2 = echo) then the encoded identity.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![match self.service {
            Service::Rpc => 1,
            Service::Echo => 2,
        }];
        out.extend_from_slice(&self.caller.identity.encode());
        out
    }

    /// Reads [`StreamEntry::encode`]'s output.
    pub fn decode(buf: &[u8]) -> Option<StreamEntry> {
        let (service, rest) = buf.split_first()?;
        let service = match service {
            1 => Service::Rpc,
            2 => Service::Echo,
            _ => return None,
        };
        let identity = Identity::decode(rest).ok()?;
        Some(StreamEntry { service, caller: Caller::new(identity, 0) })
    }
}

/// The stream table of one multiplexed socket on one tenant's object.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// The tenant this object serves: every stream's identity must allow it.
    pub tenant: String,
    /// Open streams.
    pub streams: BTreeMap<u32, StreamEntry>,
}

/// What handling one message produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The reply messages, in order (none when nothing needs an answer), each within
    /// [`MAX_BATCH_BYTES`] unless it holds a single larger frame.
    pub replies: Vec<Vec<u8>>,
    /// Streams opened by this message: persist their entries.
    pub opened: Vec<u32>,
    /// Streams closed by this message: forget their entries.
    pub closed: Vec<u32>,
    /// Frames in the message.
    pub frames: u64,
    /// Error frames sent back.
    pub errors: u64,
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

struct Reply {
    batches: Batches,
    errors: u64,
}

impl Reply {
    /// Queues a frame; one too large for any message becomes an error for its stream,
    /// so the client hears why instead of waiting.
    fn push(&mut self, kind: FrameKind, stream: StreamId, payload: &[u8]) {
        if self.batches.push(kind, stream, payload).is_err() {
            let why = format!("the reply of {} bytes is larger than a message may carry", payload.len());
            self.error(stream, 500, why);
        }
    }
    fn error(&mut self, stream: StreamId, code: u16, message: String) {
        self.errors += 1;
        self.push(FrameKind::Error, stream, &ErrorFrame { code, message }.encode());
    }
}

impl Session {
    /// An empty table for `tenant`'s object.
    pub fn new(tenant: &str) -> Session {
        Session { tenant: tenant.to_owned(), streams: BTreeMap::new() }
    }

    /// Handles one message from the snippet and builds the reply batch. Never panics; a
    /// malformed frame gets a session-level `Error` frame (stream 0) and ends the
    /// processing of that message only — earlier frames are answered, other streams and
    /// later messages are unaffected. `now_secs` is the time the callers' expiry is
    /// checked against.
    pub fn handle_message(&mut self, msg: &[u8], db: &mut dyn Db, now_secs: u64) -> Outcome {
        let mut out = Outcome::default();
        let mut reply = Reply { batches: Batches::default(), errors: 0 };
        match protocol::decode_message(msg) {
            Err(e) => {
                let head: Vec<String> = msg.iter().take(8).map(|b| format!("{b:02x}")).collect();
                let what = format!("bad message ({} bytes, starting {}): {e}", msg.len(), head.join(" "));
                reply.error(StreamId::SESSION, 400, what)
            }
            Ok(frames) => {
                for frame in frames {
                    let frame = match frame {
                        Ok(f) => f,
                        Err(e) => {
                            reply.error(StreamId::SESSION, 400, format!("bad frame: {e}"));
                            break;
                        }
                    };
                    out.frames += 1;
                    self.handle_frame(frame, db, now_secs, &mut reply, &mut out);
                }
            }
        }
        out.errors = reply.errors;
        out.replies = reply.batches.finish();
        out
    }

    fn handle_frame(
        &mut self,
        f: protocol::Frame<'_>,
        db: &mut dyn Db,
        now: u64,
        reply: &mut Reply,
        out: &mut Outcome,
    ) {
        let id = f.stream;
        match f.kind {
            FrameKind::Open => {
                let open = match Open::decode(f.payload) {
                    Ok(o) => o,
                    Err(e) => return reply.error(id, 400, format!("bad open frame: {e}")),
                };
                if id == StreamId::SESSION {
                    return reply.error(id, 400, "stream 0 is the session; it cannot be opened".into());
                }
                let Some(service) = Service::from_path(&open.path) else {
                    return reply.error(id, 404, format!("no service at {:?} (try /rpc or /echo)", open.path));
                };
                if let Err(why) = authz::check_open(&open.identity, &self.tenant, now) {
                    return reply.error(id, 403, why);
                }
                if self.streams.len() >= MAX_STREAMS && !self.streams.contains_key(&id.0) {
                    return reply.error(id, 503, format!("too many streams on this session (limit {MAX_STREAMS})"));
                }
                self.streams.insert(id.0, StreamEntry { service, caller: Caller::new(open.identity, now) });
                out.opened.push(id.0);
            }
            FrameKind::Text | FrameKind::Binary => match self.streams.get_mut(&id.0) {
                None => reply.error(id, 404, format!("unknown stream {id}")),
                Some(entry) => {
                    entry.caller.now_secs = now;
                    let caller = &entry.caller;
                    match entry.service {
                        _ if caller.expired() => reply.error(id, 401, "the caller's token has expired".into()),
                        Service::Echo if !caller.grants.read() => {
                            reply.error(id, 403, "the echo service needs the read scope".into())
                        }
                        Service::Echo => reply.push(f.kind, id, f.payload),
                        Service::Rpc => {
                            if let Some(answer) = rpc::handle(f.payload, db, caller) {
                                reply.push(FrameKind::Text, id, answer.as_bytes());
                            }
                        }
                    }
                }
            },
            FrameKind::Close => {
                if self.streams.remove(&id.0).is_some() {
                    out.closed.push(id.0);
                }
            }
            FrameKind::Request => {
                let req = match Request::decode(f.payload) {
                    Ok(r) => r,
                    Err(e) => return reply.error(id, 400, format!("bad request frame: {e}")),
                };
                reply.push(FrameKind::Response, id, &answer(&req, &self.tenant, db, now).encode());
            }
            FrameKind::Ping => reply.push(FrameKind::Pong, id, f.payload),
            FrameKind::Pong | FrameKind::Response | FrameKind::Error => {}
        }
    }
}

/// The messages carrying the text `message` to each of `streams` (server push), split so
/// that none passes [`MAX_BATCH_BYTES`] however many streams listen.
pub fn push_batches(streams: &[u32], message: &str) -> Vec<Vec<u8>> {
    let mut out = Batches::default();
    for id in streams {
        if out.push(FrameKind::Text, StreamId(*id), message.as_bytes()).is_err() {
            return Vec::new();
        }
    }
    out.finish()
}

const JSON: &str = "application/json";

fn json_response(status: u16, body: String) -> Response {
    Response { status, content_type: JSON.into(), body: body.into_bytes() }
}

/// Answers one HTTP request on `tenant`'s object for the caller in `req.identity`,
/// whichever way it arrived (a `Request` frame, or plain HTTP to the Durable Object):
/// 401 once its token has expired, 403 for another tenant, else [`http`].
pub fn answer(req: &Request, tenant: &str, db: &mut dyn Db, now_secs: u64) -> Response {
    match authz::check_open(&req.identity, tenant, now_secs) {
        Ok(()) => http(req, db, &Caller::new(req.identity.clone(), now_secs)),
        Err(why) => {
            let status = if req.identity.expired(now_secs) { 401 } else { 403 };
            json_response(status, serde_json::json!({ "error": why }).to_string())
        }
    }
}

/// Answers one HTTP request for `caller`, whichever way it arrived (a `Request` frame, or
/// plain HTTP to the Durable Object): `/rpc` JSON-RPC, `/query` the `{sql, params}` body,
/// `/echo` (needs `read`).
pub fn http(req: &Request, db: &mut dyn Db, caller: &Caller) -> Response {
    let json = json_response;
    if req.method != "POST" {
        return json(405, r#"{"error":"use POST"}"#.into());
    }
    match req.path.as_str() {
        "/rpc" => match rpc::handle(&req.body, db, caller) {
            Some(answer) => json(200, answer),
            None => Response { status: 204, content_type: String::new(), body: Vec::new() },
        },
        "/query" => {
            let (status, body) = rpc::handle_query(&req.body, db, caller);
            json(status, body)
        }
        "/echo" if !caller.grants.read() => json(403, r#"{"error":"echo needs the read scope"}"#.into()),
        "/echo" => Response { status: 200, content_type: req.content_type.clone(), body: req.body.clone() },
        other => json(404, serde_json::json!({ "error": format!("no service at {other}") }).to_string()),
    }
}

#[cfg(test)]
mod tests;
