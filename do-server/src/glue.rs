//! The worker-rs glue (feature `worker`): what a Durable Object calls to serve the
//! snippet's mux sockets with the Hibernation API. It owns sockets, storage and the
//! clock; every decision is the core's ([`Session`]).
//!
//! Hibernation: the object's constructor runs again after every wake, so nothing that
//! must survive lives only in memory. A mux socket's attachment says what it is (tag
//! [`TAG`], tenant, a random socket id); its stream table is kept in the synchronous KV
//! store, one key per stream (`mux/{socket}/{stream:010}`, PROTOCOL.md §8), written as
//! each message changes it and read back lazily the first time a woken instance needs it.

mod kv;

use std::cell::RefCell;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use worker::{Error, Request, Response, Result, State, WebSocket, WebSocketIncomingMessage, WebSocketPair};

pub use kv::Kv;

use crate::{
    authorized, detached, push_batches, reciprocal_close_code, respond, socket_key, stream_key, stream_prefix, App,
    Client, Fanout, Msg, Out, Session, SOCKET_PREFIX,
};

/// The tag mux sockets are accepted with (and their attachment's `endpoint`).
pub const TAG: &str = "mux";

/// Random bits in a socket id: ids only need to differ among one object's live sockets,
/// and 48 bits (12 hex digits) make a collision among even thousands negligible.
const SOCKET_ID_BITS: i32 = 48;

/// What a socket is, kept in its attachment so it survives hibernation. The shape is
/// backend-do's, so an application may keep its own sockets' attachments in the same
/// form (`endpoint` other than [`TAG`]) and sockets accepted before this crate existed
/// still read.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Attachment {
    /// The socket's tag: [`TAG`] for the mux server's, the application's own otherwise.
    pub endpoint: String,
    /// The tenant this object serves.
    #[serde(default)]
    pub tenant: String,
    /// Mux sockets: the id under which their streams are stored.
    #[serde(default)]
    pub socket: String,
    /// The application's direct sockets: the caller, hex-encoded (`Identity::to_hex`).
    #[serde(default)]
    pub identity: String,
}

fn now_secs() -> u64 {
    (js_sys::Date::now() / 1000.0).max(0.0) as u64
}

fn json_error(status: u16, message: &str) -> Result<Response> {
    Ok(Response::from_json(&serde_json::json!({ "error": message }))?.with_status(status))
}

/// The mux side of one Durable Object: keep one in the object, built in its constructor.
pub struct MuxServer {
    state: State,
    kv: Option<Kv>,
    /// The app's [`App::SERVICES`], to read stored tables back.
    services: &'static [&'static str],
    /// Stream tables of the mux sockets, by socket id (reloaded from storage after a wake).
    sessions: RefCell<HashMap<String, Session>>,
}

impl MuxServer {
    /// The server of the object whose state is `state`, for an app whose
    /// [`App::SERVICES`] are `services`. [`MuxServer::state`] gives the state back.
    pub fn new(state: State, services: &'static [&'static str]) -> MuxServer {
        // `State` hides its storage object; the KV store is reached through the raw one.
        let raw = JsValue::from(state._inner());
        let storage = js_sys::Reflect::get(&raw, &"storage".into()).unwrap_or(JsValue::UNDEFINED);
        let kv = Kv::of(&storage).ok();
        let state = State::from(raw.unchecked_into::<worker::worker_sys::DurableObjectState>());
        MuxServer { state, kv, services, sessions: RefCell::new(HashMap::new()) }
    }

    /// The object's state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The object's synchronous KV store, if it is SQLite-backed (without it, stream
    /// tables do not survive hibernation).
    pub fn kv(&self) -> Option<&Kv> {
        self.kv.as_ref()
    }

    /// Accepts the snippet's upgrade for `tenant`'s object: 500 without a configured
    /// `token` (fail closed), 401 unless the request carries `Authorization: Bearer
    /// {token}`, 426 without `Upgrade: websocket`; else a hibernatable socket tagged
    /// [`TAG`] and `101`. No caller is checked here: each stream carries its own.
    pub fn accept(&self, req: &Request, token: &str, tenant: &str) -> Result<Response> {
        if token.is_empty() {
            return json_error(500, "the mux token is not configured");
        }
        if !authorized(req.headers().get("Authorization")?.as_deref(), token) {
            return json_error(401, "missing or wrong bearer token");
        }
        if !req.headers().get("Upgrade")?.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            return json_error(426, "this endpoint needs a WebSocket upgrade");
        }
        let pair = WebSocketPair::new()?;
        self.state.accept_websocket_with_tags(&pair.server, &[TAG]);
        self.sweep();
        let socket = format!("{:012x}", (js_sys::Math::random() * 2f64.powi(SOCKET_ID_BITS)) as u64);
        if let Some(kv) = &self.kv {
            kv.put_bytes(&socket_key(&socket), tenant.as_bytes()).map_err(Error::RustError)?;
        }
        self.sessions.borrow_mut().insert(socket.clone(), Session::new(tenant));
        let attachment =
            Attachment { endpoint: TAG.to_owned(), tenant: tenant.to_owned(), socket, identity: String::new() };
        pair.server.serialize_attachment(&attachment)?;
        Response::from_websocket(pair.client)
    }

    /// Handles a message from `websocket_message`. A mux socket's message is handled for
    /// `app` and answered (`Ok(None)`); any other socket's message is handed back.
    pub fn message<A: App>(
        &self,
        app: &mut A,
        ws: &WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<Option<WebSocketIncomingMessage>> {
        let attachment: Attachment = ws.deserialize_attachment()?.unwrap_or_default();
        if attachment.endpoint != TAG {
            return Ok(Some(message));
        }
        if A::SERVICES != self.services {
            return Err(Error::RustError("MuxServer::new was given other services than the app's".into()));
        }
        let bytes = match message {
            WebSocketIncomingMessage::Binary(b) => b,
            // The snippet sends binary only; text is decoded as a batch all the same (a
            // stray one gets a session error).
            WebSocketIncomingMessage::String(s) => s.into_bytes(),
        };
        let socket = attachment.socket.as_str();
        let now = now_secs();
        let (outcome, changes) = self.with_session(socket, &attachment.tenant, |s| {
            let outcome = s.handle_message(app, &bytes, now, &mut Others { server: self, except: Some(socket) });
            let changes: Vec<(u32, Option<Vec<u8>>)> =
                outcome.touched().into_iter().map(|id| (id, s.streams.get(&id).map(Client::encode))).collect();
            (outcome, changes)
        });
        if let Some(kv) = &self.kv {
            for (id, entry) in changes {
                let key = stream_key(socket, id);
                match entry {
                    Some(entry) => kv.put_bytes(&key, &entry),
                    None => kv.delete(&key),
                }
                .map_err(Error::RustError)?;
            }
        }
        for reply in outcome.replies {
            ws.send_with_bytes(reply)?;
        }
        Ok(None)
    }

    /// Handles `websocket_close`: for a mux socket, every stream on it ends
    /// ([`App::on_close`] with the socket's code), its table is deleted and the close is
    /// answered (with the same code, or 1000 for one a close frame cannot carry).
    /// Returns whether it was a mux socket.
    pub fn close<A: App>(&self, app: &mut A, ws: &WebSocket, code: usize, reason: &str) -> bool {
        let Some(attachment) = mux_attachment(ws) else { return false };
        self.end(app, &attachment, u16::try_from(code).unwrap_or(1006), reason);
        let _ = ws.close(Some(reciprocal_close_code(code)), Some(reason));
        true
    }

    /// Handles `websocket_error` like [`MuxServer::close`] (streams end with 1006), and
    /// closes the socket with 1011. Returns whether it was a mux socket.
    pub fn error<A: App>(&self, app: &mut A, ws: &WebSocket) -> bool {
        let Some(attachment) = mux_attachment(ws) else { return false };
        self.end(app, &attachment, 1006, "socket error");
        let _ = ws.close(Some(1011), Some("socket error"));
        true
    }

    /// Sends `msg` at once to every stream of every mux socket whose client passes
    /// `filter` (from outside any socket's message: plain HTTP, a timer, another kind of
    /// socket). Returns how many streams it went to.
    pub fn broadcast(&self, filter: &dyn Fn(&Client) -> bool, msg: Msg<'_>) -> u64 {
        Others { server: self, except: None }.broadcast(filter, msg)
    }

    /// Answers a request that came as plain HTTP to the object (not over a mux socket)
    /// exactly as the same request over one: admission for `tenant`, then
    /// [`App::on_request`], whose broadcasts reach every mux socket.
    pub fn request<A: App>(&self, app: &mut A, req: &crate::Request, tenant: &str) -> crate::Response {
        self.with_out(tenant, |out| respond(app, req, out))
    }

    /// Runs `f` with an [`Out`] outside any mux socket (see [`crate::detached`]): its
    /// broadcasts reach every mux socket.
    pub fn with_out<R>(&self, tenant: &str, f: impl FnOnce(&mut Out<'_>) -> R) -> R {
        detached(tenant, now_secs(), &mut Others { server: self, except: None }, f)
    }

    /// Open streams on all mux sockets (loading tables as needed).
    pub fn streams(&self) -> usize {
        self.live().iter().map(|a| self.with_session(&a.socket, &a.tenant, |s| s.streams.len())).sum()
    }

    /// The attachments of the live mux sockets.
    fn live(&self) -> Vec<Attachment> {
        self.state.get_websockets_with_tag(TAG).iter().filter_map(mux_attachment).collect()
    }

    /// Runs `f` on the stream table of mux socket `socket`, loading it from storage first
    /// if this instance has not seen it since it woke. The table is taken out of the map
    /// while `f` runs: `f` may broadcast (or count streams), which visits every table
    /// again, and a `RefCell` borrow held across that would panic (resetting the object).
    fn with_session<R>(&self, socket: &str, tenant: &str, f: impl FnOnce(&mut Session) -> R) -> R {
        let taken = self.sessions.borrow_mut().remove(socket);
        let mut session = taken.unwrap_or_else(|| self.load(socket, tenant));
        let result = f(&mut session);
        self.sessions.borrow_mut().insert(socket.to_owned(), session);
        result
    }

    /// A socket's table as stored; the tenant stored with it wins over the attachment's.
    fn load(&self, socket: &str, tenant: &str) -> Session {
        let Some(kv) = &self.kv else { return Session::new(tenant) };
        let stored = kv.get_bytes(&socket_key(socket)).ok().flatten().and_then(|t| String::from_utf8(t).ok());
        let entries = kv.list_bytes(&stream_prefix(socket)).unwrap_or_default();
        Session::restore(stored.as_deref().unwrap_or(tenant), self.services, entries)
    }

    /// Ends every stream of a socket that has gone and deletes its table.
    fn end<A: App>(&self, app: &mut A, attachment: &Attachment, code: u16, reason: &str) {
        let socket = attachment.socket.as_str();
        let taken = self.sessions.borrow_mut().remove(socket);
        let mut session = taken.unwrap_or_else(|| self.load(socket, &attachment.tenant));
        session.end(app, code, reason, now_secs(), &mut Others { server: self, except: Some(socket) });
        let Some(kv) = &self.kv else { return };
        for (key, _) in kv.list_bytes(&stream_prefix(socket)).unwrap_or_default() {
            let _ = kv.delete(&key);
        }
        let _ = kv.delete(&socket_key(socket));
    }

    /// Deletes the stored tables of mux sockets that no longer exist (a socket that died
    /// without a close event leaves its keys behind).
    fn sweep(&self) {
        let Some(kv) = &self.kv else { return };
        let live = self.live();
        for (key, _) in kv.list_bytes(SOCKET_PREFIX).unwrap_or_default() {
            let socket = key.split('/').nth(1).unwrap_or_default();
            if !live.iter().any(|a| a.socket == socket) {
                let _ = kv.delete(&key);
            }
        }
    }
}

/// A mux socket's attachment, if `ws` is one.
fn mux_attachment(ws: &WebSocket) -> Option<Attachment> {
    ws.deserialize_attachment::<Attachment>().ok().flatten().filter(|a| a.endpoint == TAG && !a.socket.is_empty())
}

/// Every mux socket of the object but `except` (the one whose message is being handled:
/// the core reaches its streams itself).
struct Others<'s> {
    server: &'s MuxServer,
    except: Option<&'s str>,
}

impl Fanout for Others<'_> {
    fn broadcast(&mut self, filter: &dyn Fn(&Client) -> bool, msg: Msg<'_>) -> u64 {
        let mut delivered = 0;
        for ws in self.server.state.get_websockets_with_tag(TAG) {
            let Some(a) = mux_attachment(&ws) else { continue };
            if Some(a.socket.as_str()) == self.except {
                continue;
            }
            let ids: Vec<u32> = self.server.with_session(&a.socket, &a.tenant, |s| {
                s.streams.values().filter(|c| filter(c)).map(|c| c.stream.0).collect()
            });
            let batches = push_batches(&ids, msg);
            if !batches.is_empty() && batches.into_iter().all(|b| ws.send_with_bytes(b).is_ok()) {
                delivered += ids.len() as u64;
            }
        }
        delivered
    }
}
