//! The `Database` Durable Object: one per tenant. A WebSocket server on the Hibernation
//! API, answering JSON-RPC from its SQLite storage, authorizing every call from the
//! caller's identity (see `backend_core::authz`).
//!
//! Hibernation: `new()` runs again after every wake, so nothing that must survive lives
//! only in fields. A socket's attachment holds what it is (endpoint, tenant, and for a
//! direct socket its caller); the snippet's multiplexed sockets keep one storage key per
//! open stream (`mux/{socket}/{stream}` in the sync KV store), loaded back lazily.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use backend_core::authz::{self, Caller};
use backend_core::route::{self, Endpoint};
use backend_core::rpc::{self, stats_object, DbError, SqlMode};
use backend_core::{session, Db, Service, Session, SqlResult, StreamEntry};
use protocol::Identity;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use worker::*;

use crate::kv::Kv;
use crate::sql;

/// What a socket is, kept in its attachment so it survives hibernation.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Attachment {
    /// `mux`, `ws` or `echo`.
    endpoint: String,
    /// The tenant this object serves.
    #[serde(default)]
    tenant: String,
    /// Mux sockets: the id under which their streams are stored.
    #[serde(default)]
    socket: String,
    /// Direct sockets: the caller, hex-encoded (`Identity::to_hex`).
    #[serde(default)]
    identity: String,
}

/// One tenant's database.
#[durable_object]
pub struct Database {
    state: State,
    /// The raw `DurableObjectState` (for `storage.kv` and `storage.transactionSync`).
    raw: wasm_bindgen::JsValue,
    kv: Option<Kv>,
    /// Stream tables of the mux sockets, by socket id (reloaded from storage after a wake).
    sessions: RefCell<HashMap<String, Session>>,
    /// Since this instance was constructed (reset by hibernation; `wakes` counts those).
    messages: Cell<u64>,
    http_requests: Cell<u64>,
    sockets_accepted: Cell<u64>,
    wakes: u64,
}

fn now_secs() -> u64 {
    (js_sys::Date::now() / 1000.0).max(0.0) as u64
}

fn stream_key(socket: &str, id: u32) -> String {
    format!("mux/{socket}/{id:010}")
}

/// Who sent a request that passed the Worker's bearer check: the identity the snippet
/// put in [`protocol::IDENTITY_HEADER`] (trusted only because the request also carried
/// the backend's own token), or the operator when none was sent.
fn identity_of(req: &Request) -> Result<Identity> {
    match req.headers().get(protocol::IDENTITY_HEADER)? {
        Some(hex) => Identity::from_hex(hex.trim())
            .map_err(|e| Error::RustError(format!("bad {} header: {e}", protocol::IDENTITY_HEADER))),
        None => Ok(authz::operator()),
    }
}

fn json_response(status: u16, body: &Value) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

/// The object's storage plus what `stats` reports.
struct ObjectDb<'a> {
    obj: &'a Database,
}

impl Db for ObjectDb<'_> {
    fn sql(&mut self, q: &str, params: &[Value], mode: SqlMode) -> std::result::Result<SqlResult, DbError> {
        sql::run(&self.obj.raw, q, params, mode)
    }

    /// Pushes to every JSON-RPC stream and socket whose caller may read and whose token
    /// has not expired.
    fn broadcast(&mut self, notification: &str) -> u64 {
        let now = now_secs();
        let mut delivered = 0;
        for ws in self.obj.state.get_websockets_with_tag("ws") {
            let attachment = ws.deserialize_attachment::<Attachment>().ok().flatten().unwrap_or_default();
            let caller = Caller::new(Identity::from_hex(&attachment.identity).unwrap_or_default(), now);
            if caller.grants.read() && !caller.expired() && ws.send_with_str(notification).is_ok() {
                delivered += 1;
            }
        }
        for ws in self.obj.state.get_websockets_with_tag("mux") {
            let Some(socket) = self.obj.mux_socket(&ws) else { continue };
            let rpc: Vec<u32> = self.obj.with_session(&socket, |s| {
                let listening = |e: &StreamEntry| {
                    e.service == Service::Rpc && e.caller.grants.read() && !e.caller.identity.expired(now)
                };
                s.streams.iter().filter(|(_, e)| listening(e)).map(|(id, _)| *id).collect()
            });
            let batches = session::push_batches(&rpc, notification);
            if !batches.is_empty() && batches.into_iter().all(|b| ws.send_with_bytes(b).is_ok()) {
                delivered += rpc.len() as u64;
            }
        }
        delivered
    }

    fn stats(&mut self) -> Value {
        let sockets = self.obj.state.get_websockets();
        let streams: usize = self
            .obj
            .state
            .get_websockets_with_tag("mux")
            .iter()
            .filter_map(|ws| self.obj.mux_socket(ws))
            .map(|socket| self.obj.with_session(&socket, |s| s.streams.len()))
            .sum();
        let count = |tag: &str| self.obj.state.get_websockets_with_tag(tag).len() as u64;
        stats_object(&[
            ("sockets", sockets.len() as u64),
            ("muxSockets", count("mux")),
            ("wsSockets", count("ws")),
            ("echoSockets", count("echo")),
            ("streams", streams as u64),
            ("messages", self.obj.messages.get()),
            ("httpRequests", self.obj.http_requests.get()),
            ("socketsAccepted", self.obj.sockets_accepted.get()),
            ("wakes", self.obj.wakes),
        ])
    }
}

impl Database {
    fn db(&self) -> ObjectDb<'_> {
        ObjectDb { obj: self }
    }

    fn mux_socket(&self, ws: &WebSocket) -> Option<String> {
        ws.deserialize_attachment::<Attachment>().ok().flatten().map(|a| a.socket).filter(|s| !s.is_empty())
    }

    /// Runs `f` on the stream table of mux socket `socket`, loading it from storage first
    /// if this instance has not seen it since it woke. The table is taken out of the map
    /// while `f` runs: `f` may reach the `Db`, whose `broadcast` and `stats` visit every
    /// table again, and a `RefCell` borrow held across that would panic (resetting the
    /// object).
    fn with_session<R>(&self, socket: &str, f: impl FnOnce(&mut Session) -> R) -> R {
        let taken = self.sessions.borrow_mut().remove(socket);
        let mut session = taken.unwrap_or_else(|| self.load_session(socket));
        let result = f(&mut session);
        self.sessions.borrow_mut().insert(socket.to_owned(), session);
        result
    }

    fn load_session(&self, socket: &str) -> Session {
        let tenant = self.kv.as_ref().and_then(|kv| kv.get_bytes(&format!("mux/{socket}")).ok().flatten());
        let mut session = Session::new(&String::from_utf8(tenant.unwrap_or_default()).unwrap_or_default());
        let Some(kv) = &self.kv else { return session };
        let entries = kv.list_bytes(&format!("mux/{socket}/")).unwrap_or_default();
        for (key, bytes) in entries {
            let id = key.rsplit('/').next().and_then(|id| id.parse::<u32>().ok());
            if let (Some(id), Some(entry)) = (id, StreamEntry::decode(&bytes)) {
                session.streams.insert(id, entry);
            }
        }
        session
    }

    /// Deletes the stored tables of mux sockets that no longer exist (a socket that died
    /// without a close event leaves its keys behind).
    fn sweep_sessions(&self) {
        let Some(kv) = &self.kv else { return };
        let live: Vec<String> =
            self.state.get_websockets_with_tag("mux").iter().filter_map(|ws| self.mux_socket(ws)).collect();
        for (key, _) in kv.list_bytes("mux/").unwrap_or_default() {
            let socket = key.split('/').nth(1).unwrap_or_default();
            if !live.iter().any(|l| l == socket) {
                let _ = kv.delete(&key);
            }
        }
    }

    fn forget_session(&self, socket: &str) {
        self.sessions.borrow_mut().remove(socket);
        let Some(kv) = &self.kv else { return };
        for (key, _) in kv.list_bytes(&format!("mux/{socket}/")).unwrap_or_default() {
            let _ = kv.delete(&key);
        }
        let _ = kv.delete(&format!("mux/{socket}"));
    }

    fn accept(&self, req: &Request, tenant: &str, endpoint: Endpoint) -> Result<Response> {
        let identity = identity_of(req)?;
        if endpoint != Endpoint::Mux {
            if let Err(why) = authz::check_open(&identity, tenant, now_secs()) {
                return json_response(403, &serde_json::json!({ "error": why }));
            }
        }
        let pair = WebSocketPair::new()?;
        self.state.accept_websocket_with_tags(&pair.server, &[endpoint.name()]);
        let mut attachment =
            Attachment { endpoint: endpoint.name().to_owned(), tenant: tenant.to_owned(), ..Attachment::default() };
        if endpoint == Endpoint::Mux {
            self.sweep_sessions();
            let socket = format!("{:012x}", (js_sys::Math::random() * 2f64.powi(48)) as u64);
            if let Some(kv) = &self.kv {
                kv.put_bytes(&format!("mux/{socket}"), tenant.as_bytes()).map_err(Error::RustError)?;
            }
            self.sessions.borrow_mut().insert(socket.clone(), Session::new(tenant));
            attachment.socket = socket;
        } else {
            attachment.identity = identity.to_hex();
        }
        pair.server.serialize_attachment(&attachment)?;
        self.sockets_accepted.set(self.sockets_accepted.get() + 1);
        Response::from_websocket(pair.client)
    }

    fn mux_message(&self, ws: &WebSocket, socket: &str, bytes: &[u8]) -> Result<()> {
        let db = &mut self.db();
        let (outcome, persisted) = self.with_session(socket, |s| {
            let outcome = s.handle_message(bytes, db, now_secs());
            let persisted: Vec<(u32, Vec<u8>)> =
                outcome.opened.iter().filter_map(|id| s.streams.get(id).map(|e| (*id, e.encode()))).collect();
            (outcome, persisted)
        });
        if let Some(kv) = &self.kv {
            for (id, entry) in persisted {
                kv.put_bytes(&stream_key(socket, id), &entry).map_err(Error::RustError)?;
            }
            for id in &outcome.closed {
                kv.delete(&stream_key(socket, *id)).map_err(Error::RustError)?;
            }
        }
        for reply in outcome.replies {
            ws.send_with_bytes(reply)?;
        }
        Ok(())
    }
}

impl DurableObject for Database {
    fn new(state: State, _env: Env) -> Self {
        // Heartbeats are answered by the runtime without waking the object.
        if let Ok(pair) = WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        let raw = wasm_bindgen::JsValue::from(state._inner());
        let state = sql::state_of(&raw);
        let storage = js_sys::Reflect::get(&raw, &"storage".into()).unwrap_or(wasm_bindgen::JsValue::UNDEFINED);
        let kv = Kv::of(&storage).ok();
        // Bookkeeping lives in the KV store, which no SQL statement can reach.
        let wakes = kv
            .as_ref()
            .and_then(|kv| {
                let n = kv.get_f64("wakes").ok().flatten().unwrap_or(0.0) + 1.0;
                kv.put("wakes", &n.into()).ok().map(|_| n as u64)
            })
            .unwrap_or(0);
        Database {
            state,
            raw,
            kv,
            sessions: RefCell::new(HashMap::new()),
            messages: Cell::new(0),
            http_requests: Cell::new(0),
            sockets_accepted: Cell::new(0),
            wakes,
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        let Ok((tenant, endpoint)) = route::parse(&path) else {
            return Response::error("not found", 404);
        };
        if endpoint.is_websocket() {
            return self.accept(&req, tenant, endpoint);
        }
        self.http_requests.set(self.http_requests.get() + 1);
        let identity = identity_of(&req)?;
        let content_type = req.headers().get("Content-Type")?.unwrap_or_default();
        let body = req.bytes().await?;
        let service = if endpoint == Endpoint::Query { "/query" } else { "/rpc" };
        let request = backend_core::session::HttpRequest {
            method: "POST".into(),
            path: service.into(),
            content_type,
            identity,
            body,
        };
        let res = session::answer(&request, tenant, &mut self.db(), now_secs());
        let headers = Headers::new();
        if !res.content_type.is_empty() {
            headers.set("Content-Type", &res.content_type)?;
        }
        Ok(Response::from_bytes(res.body)?.with_status(res.status).with_headers(headers))
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        self.messages.set(self.messages.get() + 1);
        let attachment: Attachment = ws.deserialize_attachment()?.unwrap_or_default();
        if attachment.endpoint == "mux" {
            let bytes = match message {
                WebSocketIncomingMessage::Binary(b) => b,
                // Text is not a batch: the mux decoder answers it with a session error.
                WebSocketIncomingMessage::String(s) => s.into_bytes(),
            };
            return self.mux_message(&ws, &attachment.socket, &bytes);
        }
        let identity = Identity::from_hex(&attachment.identity).unwrap_or_default();
        let caller = Caller::new(identity, now_secs());
        if caller.expired() {
            let _ = ws.close(Some(1008), Some("token expired"));
            return Ok(());
        }
        let bytes = match message {
            // The echo service answers each message in its own kind.
            WebSocketIncomingMessage::String(s) if attachment.endpoint == "echo" => return ws.send_with_str(s),
            WebSocketIncomingMessage::Binary(b) if attachment.endpoint == "echo" => return ws.send_with_bytes(b),
            WebSocketIncomingMessage::Binary(b) => b,
            WebSocketIncomingMessage::String(s) => s.into_bytes(),
        };
        match rpc::handle(&bytes, &mut self.db(), &caller) {
            Some(reply) => ws.send_with_str(reply),
            None => Ok(()),
        }
    }

    async fn websocket_close(&self, ws: WebSocket, code: usize, reason: String, _was_clean: bool) -> Result<()> {
        if let Some(socket) = self.mux_socket(&ws) {
            self.forget_session(&socket);
        }
        // Reciprocate with a code that may be sent (1005/1006/1015 are reserved).
        let code = match code {
            1005 | 1006 | 1015 => 1000,
            c => u16::try_from(c).unwrap_or(1000),
        };
        let _ = ws.close(Some(code), Some(reason));
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: Error) -> Result<()> {
        if let Some(socket) = self.mux_socket(&ws) {
            self.forget_session(&socket);
        }
        let _ = ws.close(Some(1011), Some("socket error"));
        Ok(())
    }
}
