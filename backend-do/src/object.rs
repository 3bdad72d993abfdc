//! The `Database` Durable Object: one per tenant. A WebSocket server on the Hibernation
//! API, answering JSON-RPC from its SQLite storage, authorizing every call from the
//! caller's identity (see `backend_core::authz`).
//!
//! The snippet's multiplexed sockets are `snippet_proxy_do`'s ([`MuxServer`], with
//! `backend_core::Backend` as the app): it keeps their clients across hibernation and
//! hand-overs. What is left here is the database, the direct sockets (`/ws`, `/echo`),
//! whose attachment holds what they are (endpoint, tenant, caller), and the counters.

use std::cell::Cell;
use std::rc::Rc;

use backend_core::authz::{self, Caller};
use backend_core::route::{self, Endpoint};
use backend_core::rpc::{self, stats_object, DbError, SqlMode};
use backend_core::{Backend, Db, SqlResult};
use protocol::facts::{CloseCode, TOKEN_EXPIRED};
use protocol::Identity;
use serde_json::Value;
// A direct socket (`ws` or `echo`) keeps the mux server's attachment shape, so every
// socket of the object reads the same way after hibernation.
use snippet_proxy_do::glue::{Attachment, Kv, MuxServer};
use worker::*;

use crate::sql;

/// One tenant's database.
#[durable_object]
pub struct Database {
    /// The snippet's sockets, the app over the database, and the object's state
    /// (`mux.state()`).
    mux: MuxServer<Backend<ObjectDb>>,
    /// The bearer token the snippet's upgrade must carry (the Worker checked it already;
    /// empty: the object is reached only through a binding, see [`Database::accept`]).
    token: String,
    /// `MAINTENANCE_TENANTS`, checked here too (the operator's view excepted, as by the
    /// Worker): a snippet with a binding comes straight to the object, past the Worker.
    maintenance: String,
    counters: Rc<Counters>,
}

/// Since this instance was constructed (reset by hibernation; `wakes` counts those).
#[derive(Default)]
struct Counters {
    messages: Cell<u64>,
    http_requests: Cell<u64>,
    sockets_accepted: Cell<u64>,
    wakes: u64,
    /// When this instance was constructed (ms): a measurement of idle wakes tells the
    /// wake its own stats call caused (after the idle period) from one during it.
    woke_at: u64,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

fn now_secs() -> u64 {
    (js_sys::Date::now() / 1000.0).max(0.0) as u64
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

/// The object's storage plus what `stats` reports. Its `broadcast` reaches the direct
/// sockets; the mux clients are reached through `backend_core::app::Bound`, which every call goes through.
struct ObjectDb {
    /// The raw `DurableObjectState` (for `storage.transactionSync`).
    raw: wasm_bindgen::JsValue,
    state: State,
    counters: Rc<Counters>,
}

impl Db for ObjectDb {
    fn sql(&mut self, q: &str, params: &[Value], mode: SqlMode) -> std::result::Result<SqlResult, DbError> {
        sql::run(&self.raw, q, params, mode)
    }

    /// Pushes to every direct JSON-RPC socket whose caller may read and whose token has
    /// not expired.
    fn broadcast(&mut self, notification: &str) -> u64 {
        let now = now_secs();
        let mut delivered = 0;
        for ws in self.state.get_websockets_with_tag("ws") {
            let attachment = ws.deserialize_attachment::<Attachment>().ok().flatten().unwrap_or_default();
            let caller = Caller::new(Identity::from_hex(&attachment.identity).unwrap_or_default(), now);
            if caller.grants.read() && !caller.expired() && ws.send_with_str(notification).is_ok() {
                delivered += 1;
            }
        }
        delivered
    }

    /// The object's figures (`Bound` adds the mux clients as `streams`).
    fn stats(&mut self) -> Value {
        let count = |tag: &str| self.state.get_websockets_with_tag(tag).len() as u64;
        let c = &self.counters;
        stats_object(&[
            ("sockets", self.state.get_websockets().len() as u64),
            ("muxSockets", count("mux")),
            ("wsSockets", count("ws")),
            ("echoSockets", count("echo")),
            ("messages", c.messages.get()),
            ("httpRequests", c.http_requests.get()),
            ("socketsAccepted", c.sockets_accepted.get()),
            ("wakes", c.wakes),
            ("lastWakeAt", c.woke_at),
        ])
    }
}

impl Database {
    fn state(&self) -> &State {
        self.mux.state()
    }

    fn accept(&self, req: &Request, tenant: &str, endpoint: Endpoint) -> Result<Response> {
        let identity = identity_of(req)?;
        if endpoint == Endpoint::Mux {
            // Without BACKEND_TOKEN this object's Worker refuses every request (500), so
            // whoever reaches the object came through a namespace binding (the snippet's
            // BACKEND_BINDING): the binding is the credential. With one, it is checked
            // here too, whichever way the request came.
            let res = match self.token.as_str() {
                "" => self.mux.accept_bound(req, tenant)?,
                token => self.mux.accept(req, token, tenant)?,
            };
            if res.status_code() == 101 {
                bump(&self.counters.sockets_accepted);
            }
            return Ok(res);
        }
        if let Err(why) = authz::check_open(&identity, tenant, now_secs()) {
            return json_response(403, &serde_json::json!({ "error": why }));
        }
        let pair = WebSocketPair::new()?;
        self.state().accept_websocket_with_tags(&pair.server, &[endpoint.name()]);
        let attachment = Attachment {
            endpoint: endpoint.name().to_owned(),
            tenant: tenant.to_owned(),
            identity: identity.to_hex(),
            ..Attachment::default()
        };
        pair.server.serialize_attachment(&attachment)?;
        bump(&self.counters.sockets_accepted);
        Response::from_websocket(pair.client)
    }
}

impl DurableObject for Database {
    fn new(state: State, env: Env) -> Self {
        // The mux server sets the runtime's `ping` → `pong` auto-response, which also answers
        // the heartbeats of the object's plain sockets without waking it.
        let raw = wasm_bindgen::JsValue::from(state._inner());
        // Bookkeeping lives in the KV store, which no SQL statement can reach.
        let storage = js_sys::Reflect::get(&raw, &"storage".into()).unwrap_or(wasm_bindgen::JsValue::UNDEFINED);
        let wakes = Kv::of(&storage)
            .ok()
            .and_then(|kv| {
                let n = kv.get_f64("wakes").ok().flatten().unwrap_or(0.0) + 1.0;
                kv.put("wakes", &n.into()).ok().map(|_| n as u64)
            })
            .unwrap_or(0);
        let counters = Rc::new(Counters { wakes, woke_at: js_sys::Date::now() as u64, ..Counters::default() });
        let db = ObjectDb { raw: raw.clone(), state: sql::state_of(&raw), counters: Rc::clone(&counters) };
        let mux = MuxServer::new(sql::state_of(&raw), Backend::new(db));
        let token = env.secret("BACKEND_TOKEN").map(|s| s.to_string()).unwrap_or_default();
        let maintenance = env.var("MAINTENANCE_TENANTS").map(|v| v.to_string()).unwrap_or_default();
        Database { mux, token, maintenance, counters }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        let Ok((tenant, endpoint)) = route::parse(&path) else {
            return Response::error("not found", 404);
        };
        if !endpoint.is_view() && route::listed(&self.maintenance, tenant) {
            return json_response(503, &serde_json::json!({ "error": route::MAINTENANCE }));
        }
        if endpoint.is_websocket() {
            return self.accept(&req, tenant, endpoint);
        }
        // The operator's view: the Worker let only the backend token's holders through.
        if endpoint.is_view() {
            return self.mux.view_response(endpoint == Endpoint::Metrics);
        }
        bump(&self.counters.http_requests);
        // The Worker let only POST through.
        let service = if endpoint == Endpoint::Query { "/query" } else { "/rpc" };
        self.mux.fetch(&mut req, tenant, service, authz::operator()).await
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        bump(&self.counters.messages);
        let Some(message) = self.mux.message(&ws, message)? else {
            return Ok(());
        };
        let attachment: Attachment = ws.deserialize_attachment()?.unwrap_or_default();
        let identity = Identity::from_hex(&attachment.identity).unwrap_or_default();
        let caller = Caller::new(identity, now_secs());
        if caller.expired() {
            let (code, reason) = TOKEN_EXPIRED;
            let _ = ws.close(Some(code.get()), Some(reason));
            return Ok(());
        }
        let bytes = match message {
            // The echo service answers each message in its own kind.
            WebSocketIncomingMessage::String(s) if attachment.endpoint == "echo" => return ws.send_with_str(s),
            WebSocketIncomingMessage::Binary(b) if attachment.endpoint == "echo" => return ws.send_with_bytes(b),
            WebSocketIncomingMessage::Binary(b) => b,
            WebSocketIncomingMessage::String(s) => s.into_bytes(),
        };
        let reply =
            self.mux.with_out(&attachment.tenant, |app, out| rpc::handle(&bytes, &mut app.bound(out), &caller))?;
        match reply {
            Some(reply) => ws.send_with_str(reply),
            None => Ok(()),
        }
    }

    async fn websocket_close(&self, ws: WebSocket, code: usize, reason: String, _was_clean: bool) -> Result<()> {
        if !self.mux.close(&ws, code, &reason) {
            // Reciprocate with a code that may be sent; one no close frame can carry is 1000.
            let code = u16::try_from(code).map_or(CloseCode::NORMAL, |c| CloseCode::new(c).sendable());
            let _ = ws.close(Some(code.get()), Some(reason));
        }
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: Error) -> Result<()> {
        if !self.mux.error(&ws) {
            let _ = ws.close(Some(1011), Some("socket error"));
        }
        Ok(())
    }
}
