//! One multiplexed upstream (the snippet's `/mux` socket) as seen by the backend: a
//! table of open streams and the handling of each incoming batch. The table is small
//! plain data so the Durable Object can keep it in the socket's attachment and find it
//! again after hibernation.

use std::collections::BTreeMap;

use protocol::{encode_frame, ErrorFrame, FrameKind, Open, Request, Response, StreamId};

/// An HTTP request as the backend sees it (the same shape as a `Request` frame).
pub use protocol::Request as HttpRequest;
/// An HTTP response as the backend builds it.
pub use protocol::Response as HttpResponse;
use serde::{Deserialize, Serialize};

use crate::rpc::{self, Db};

/// Most streams one session may have open. The table lives in the socket attachment,
/// which workerd caps at 16 KiB; at ≤ 10 bytes a stream, 1,000 leaves ample room.
pub const MAX_STREAMS: usize = 1_000;

/// What a stream talks to, chosen by the path in its `Open` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// The stream table of one multiplexed socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Open streams and their services.
    pub streams: BTreeMap<u32, Service>,
}

/// What handling one message produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The reply batch, if any frame needs an answer.
    pub reply: Option<Vec<u8>>,
    /// The stream table changed: persist it.
    pub changed: bool,
    /// Frames in the message.
    pub frames: u64,
    /// Error frames sent back.
    pub errors: u64,
}

struct Reply {
    buf: Vec<u8>,
    frames: usize,
    errors: u64,
}

impl Reply {
    fn push(&mut self, kind: FrameKind, stream: StreamId, payload: &[u8]) {
        if encode_frame(&mut self.buf, kind, stream, payload).is_ok() {
            self.frames += 1;
        }
    }
    fn error(&mut self, stream: StreamId, code: u16, message: String) {
        self.errors += 1;
        self.push(FrameKind::Error, stream, &ErrorFrame { code, message }.encode());
    }
}

impl Session {
    /// Handles one message from the snippet and builds the reply batch. Never panics; a
    /// malformed frame gets a session-level `Error` frame (stream 0) and ends the
    /// processing of that message only — earlier frames are answered, other streams and
    /// later messages are unaffected.
    pub fn handle_message(&mut self, msg: &[u8], db: &mut dyn Db) -> Outcome {
        let mut out = Outcome::default();
        let mut reply = Reply { buf: Vec::new(), frames: 0, errors: 0 };
        protocol::begin_message(&mut reply.buf);
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
                    self.handle_frame(frame, db, &mut reply, &mut out.changed);
                }
            }
        }
        out.errors = reply.errors;
        if reply.frames > 0 {
            out.reply = Some(reply.buf);
        }
        out
    }

    fn handle_frame(&mut self, f: protocol::Frame<'_>, db: &mut dyn Db, reply: &mut Reply, changed: &mut bool) {
        let id = f.stream;
        match f.kind {
            FrameKind::Open => {
                let path = match Open::decode(f.payload) {
                    Ok(o) => o.path,
                    Err(e) => return reply.error(id, 400, format!("bad open frame: {e}")),
                };
                if id == StreamId::SESSION {
                    return reply.error(id, 400, "stream 0 is the session; it cannot be opened".into());
                }
                let Some(service) = Service::from_path(&path) else {
                    return reply.error(id, 404, format!("no service at {path:?} (try /rpc or /echo)"));
                };
                if self.streams.len() >= MAX_STREAMS && !self.streams.contains_key(&id.0) {
                    return reply.error(id, 503, format!("too many streams on this session (limit {MAX_STREAMS})"));
                }
                self.streams.insert(id.0, service);
                *changed = true;
            }
            FrameKind::Text | FrameKind::Binary => match self.streams.get(&id.0) {
                None => reply.error(id, 404, format!("unknown stream {id}")),
                Some(Service::Echo) => reply.push(f.kind, id, f.payload),
                Some(Service::Rpc) => {
                    if let Some(answer) = rpc::handle(f.payload, db) {
                        reply.push(FrameKind::Text, id, answer.as_bytes());
                    }
                }
            },
            FrameKind::Close => {
                if self.streams.remove(&id.0).is_some() {
                    *changed = true;
                }
            }
            FrameKind::Request => {
                let req = match Request::decode(f.payload) {
                    Ok(r) => r,
                    Err(e) => return reply.error(id, 400, format!("bad request frame: {e}")),
                };
                let res = http(&req, db);
                reply.push(FrameKind::Response, id, &res.encode());
            }
            FrameKind::Ping => reply.push(FrameKind::Pong, id, f.payload),
            FrameKind::Pong | FrameKind::Response | FrameKind::Error => {}
        }
    }
}

/// One batch carrying the text `message` to each of `streams` (server push).
pub fn push_batch(streams: &[u32], message: &str) -> Option<Vec<u8>> {
    if streams.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    protocol::begin_message(&mut out);
    for id in streams {
        encode_frame(&mut out, FrameKind::Text, StreamId(*id), message.as_bytes()).ok()?;
    }
    Some(out)
}

const JSON: &str = "application/json";

/// Answers one HTTP request, whichever way it arrived (a `Request` frame, or plain HTTP
/// to the Durable Object): `/rpc` JSON-RPC, `/query` the `{sql, params}` body, `/echo`.
pub fn http(req: &Request, db: &mut dyn Db) -> Response {
    let json = |status: u16, body: String| Response { status, content_type: JSON.into(), body: body.into_bytes() };
    if req.method != "POST" {
        return json(405, r#"{"error":"use POST"}"#.into());
    }
    match req.path.as_str() {
        "/rpc" => match rpc::handle(&req.body, db) {
            Some(answer) => json(200, answer),
            None => Response { status: 204, content_type: String::new(), body: Vec::new() },
        },
        "/query" => {
            let (status, body) = rpc::handle_query(&req.body, db);
            json(status, body)
        }
        "/echo" => Response { status: 200, content_type: req.content_type.clone(), body: req.body.clone() },
        other => json(404, serde_json::json!({ "error": format!("no service at {other}") }).to_string()),
    }
}

#[cfg(test)]
mod tests;
