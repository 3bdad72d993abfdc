//! The worker-rs glue (feature `worker`): what a Durable Object calls to serve the
//! snippet's mux sockets with the Hibernation API. It keeps sockets, storage and a
//! timer; every decision is the core's ([`Object`]).
//!
//! Hibernation: the object's constructor runs again after every wake, so nothing that
//! must survive lives only in memory. A mux socket's attachment says what it is (tag
//! [`TAG`], tenant, its [`SocketId`]); its clients are rows of the synchronous KV store
//! ([`crate::store`]), written as the core asks and read back, all at once, the first
//! time a woken instance needs them.

mod kv;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use worker::{Error, Request, Response, Result, State, WebSocket, WebSocketIncomingMessage, WebSocketPair};

pub use kv::Kv;

use crate::{authorized, store, Action, App, Client, Identity, Msg, Object, Out, SocketId, View, METRICS_CONTENT_TYPE};

/// The tag mux sockets are accepted with (and their attachment's `endpoint`).
pub const TAG: &str = "mux";

/// What a socket is, kept in its attachment so it survives hibernation. The shape is
/// backend-do's, so an application may keep its own sockets' attachments in the same
/// form (`endpoint` other than [`TAG`]).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Attachment {
    /// The socket's tag: [`TAG`] for the mux server's, the application's own otherwise.
    pub endpoint: String,
    /// The tenant this object serves.
    #[serde(default)]
    pub tenant: String,
    /// Mux sockets: their [`SocketId`], under which their clients are stored.
    #[serde(default)]
    pub socket: String,
    /// The application's direct sockets: the caller, hex-encoded (`Identity::to_hex`).
    #[serde(default)]
    pub identity: String,
}

fn now_ms() -> u64 {
    js_sys::Date::now().max(0.0) as u64
}

fn json_error(status: u16, message: &str) -> Result<Response> {
    Ok(Response::from_json(&serde_json::json!({ "error": message }))?.with_status(status))
}

/// The object's core, built from storage the first time a woken instance needs it.
enum Slot<A: App> {
    Asleep(A),
    // Boxed: the core is much larger than an app waiting to be woken.
    Awake(Box<Object<A>>),
    /// Only while the core is being built.
    Empty,
}

/// The text the snippet's liveness checks send, and the runtime's answer.
pub const AUTO_PING: &str = "ping";
/// See [`AUTO_PING`].
pub const AUTO_PONG: &str = "pong";

/// What the glue shares with its timer.
struct Inner<A: App> {
    kv: Option<Kv>,
    slot: RefCell<Slot<A>>,
    /// The mux sockets by id (this instance's objects: the runtime gives new ones after
    /// a wake).
    sockets: RefCell<HashMap<SocketId, WebSocket>>,
    /// When the armed timer fires (ms), if one is armed.
    timer_at: Cell<Option<u64>>,
}

/// The mux side of one Durable Object serving app `A`: keep one in the object, built in
/// its constructor.
pub struct MuxServer<A: App + 'static> {
    state: State,
    inner: Rc<Inner<A>>,
}

impl<A: App + 'static> MuxServer<A> {
    /// The server of the object whose state is `state`, for `app`.
    /// [`MuxServer::state`] gives the state back.
    pub fn new(state: State, app: A) -> MuxServer<A> {
        // `State` hides its storage object; the KV store is reached through the raw one.
        let raw = JsValue::from(state._inner());
        let storage = js_sys::Reflect::get(&raw, &"storage".into()).unwrap_or(JsValue::UNDEFINED);
        let kv = Kv::of(&storage).ok();
        let state = State::from(raw.unchecked_into::<worker::worker_sys::DurableObjectState>());
        // The snippet checks an idle upstream, and its heartbeat, with a text `ping`
        // (PROTOCOL.md §5.3): the runtime answers it without waking the object, and it
        // is the object's only setting of its kind, so the server sets it for every app.
        if let Ok(pair) = worker::WebSocketRequestResponsePair::new(AUTO_PING, AUTO_PONG) {
            state.set_websocket_auto_response(&pair);
        }
        let inner = Inner {
            kv,
            slot: RefCell::new(Slot::Asleep(app)),
            sockets: RefCell::new(HashMap::new()),
            timer_at: Cell::new(None),
        };
        MuxServer { state, inner: Rc::new(inner) }
    }

    /// The object's state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The object's synchronous KV store, if it is SQLite-backed (without it, clients do
    /// not survive hibernation).
    pub fn kv(&self) -> Option<&Kv> {
        self.inner.kv.as_ref()
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
        self.accept_bound(req, tenant)
    }

    /// [`MuxServer::accept`] without a bearer check, for an object no public route
    /// forwards to unchecked: its callers are Workers bound to its namespace (the
    /// snippet's `BACKEND_BINDING`), and the binding is the credential — only Workers its
    /// account binds to the class reach an object. 426 without `Upgrade: websocket`.
    pub fn accept_bound(&self, req: &Request, tenant: &str) -> Result<Response> {
        if !req.headers().get("Upgrade")?.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
            return json_error(426, "this endpoint needs a WebSocket upgrade");
        }
        let pair = WebSocketPair::new()?;
        let socket = SocketId::from_bits((js_sys::Math::random() * 2f64.powi(SocketId::BITS as i32)) as u64);
        let attachment = Attachment {
            endpoint: TAG.to_owned(),
            tenant: tenant.to_owned(),
            socket: socket.to_string(),
            identity: String::new(),
        };
        pair.server.serialize_attachment(&attachment)?;
        self.state.accept_websocket_with_tags(&pair.server, &[TAG]);
        self.wake();
        self.inner.sockets.borrow_mut().insert(socket, pair.server);
        // The runtime's list, not this instance's map: a socket that died without a close
        // event (a restart, a deploy) is missing only from the former.
        let live: Vec<SocketId> = self.state.get_websockets_with_tag(TAG).iter().filter_map(mux_socket).collect();
        self.inner.sockets.borrow_mut().retain(|id, _| live.contains(id));
        self.inner.run(|o| o.handle_accept(socket, tenant, &live, now_ms()))?;
        Response::from_websocket(pair.client)
    }

    /// Handles a message from `websocket_message`. A mux socket's message is handled and
    /// answered (`Ok(None)`); any other socket's message is handed back.
    pub fn message(
        &self,
        ws: &WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<Option<WebSocketIncomingMessage>> {
        let Some(socket) = mux_socket(ws) else { return Ok(Some(message)) };
        self.wake();
        let bytes = match message {
            WebSocketIncomingMessage::Binary(b) => b,
            // The snippet sends binary only; text is decoded as a batch all the same (a
            // stray one gets a session error).
            WebSocketIncomingMessage::String(s) => s.into_bytes(),
        };
        self.inner.run(|o| o.handle_message(socket, &bytes, now_ms()))?;
        Ok(None)
    }

    /// Handles `websocket_close`: the close is answered (with the same code, or 1000 for
    /// one a close frame cannot carry) and the socket's clients move on with a hand-over
    /// under way, or close. Returns whether it was a mux socket.
    pub fn close(&self, ws: &WebSocket, code: usize, reason: &str) -> bool {
        let Some(socket) = mux_socket(ws) else { return false };
        self.wake();
        let code = u16::try_from(code).unwrap_or(1006);
        let _ = self.inner.run(|o| o.handle_closed(socket, code, reason, now_ms()));
        self.inner.sockets.borrow_mut().remove(&socket);
        true
    }

    /// Handles `websocket_error` like [`MuxServer::close`], closing the socket with 1011.
    /// Returns whether it was a mux socket.
    pub fn error(&self, ws: &WebSocket) -> bool {
        let Some(socket) = mux_socket(ws) else { return false };
        self.wake();
        let _ = self.inner.run(|o| o.handle_error(socket, now_ms()));
        self.inner.sockets.borrow_mut().remove(&socket);
        true
    }

    /// Sends `msg` at once to every open, unexpired client that passes `filter` (from
    /// outside any socket's message: plain HTTP, a timer, another kind of socket).
    /// Returns how many it went to.
    pub fn broadcast(&self, filter: &dyn Fn(&Client) -> bool, msg: Msg<'_>) -> Result<u64> {
        self.wake();
        self.inner.run(|o| o.broadcast(filter, msg, now_ms()))
    }

    /// Answers a request that came as plain HTTP to the object (not over a mux socket)
    /// exactly as the same request over one: admission for `tenant`, then
    /// [`App::on_request`], whose broadcasts reach every mux socket.
    pub fn request(&self, req: &crate::Request, tenant: &str) -> Result<crate::Response> {
        self.wake();
        self.inner.run(|o| o.request(req, tenant, now_ms()))
    }

    /// Answers plain HTTP to the object (the snippet's fallback when it has no upstream,
    /// or the token holder itself) as a request for `path`: its caller is the identity the
    /// snippet put in `X-Snippet-Identity`, trusted only because the Worker checked the
    /// backend token first, or `operator` when there is none; then [`MuxServer::request`].
    /// A malformed identity header is an error.
    pub async fn fetch(&self, req: &mut Request, tenant: &str, path: &str, operator: Identity) -> Result<Response> {
        let identity = match req.headers().get(protocol::IDENTITY_HEADER)? {
            Some(hex) => Identity::from_hex(hex.trim())
                .map_err(|e| Error::RustError(format!("bad {} header: {e}", protocol::IDENTITY_HEADER)))?,
            None => operator,
        };
        let content_type = req.headers().get("Content-Type")?.unwrap_or_default();
        let body = req.bytes().await?;
        let request =
            crate::Request { method: req.method().to_string(), path: path.into(), content_type, identity, body };
        let res = self.request(&request, tenant)?;
        let headers = worker::Headers::new();
        if !res.content_type.is_empty() {
            headers.set("Content-Type", &res.content_type)?;
        }
        Ok(Response::from_bytes(res.body)?.with_status(res.status).with_headers(headers))
    }

    /// Runs `f` with the app and an [`Out`] outside any mux socket: for work that arrives
    /// another way (a socket of the application's own, a timer).
    pub fn with_out<R>(&self, tenant: &str, f: impl FnOnce(&mut A, &mut Out<'_>) -> R) -> Result<R> {
        self.wake();
        self.inner.run(|o| o.with_out(tenant, now_ms(), f))
    }

    /// The operator's view of the object ([`View`]): the snippet upstreams (mux sockets)
    /// the runtime has now with the streams on each, and what the server has done since
    /// this instance woke. Serve it only behind an operator's credentials (it names the
    /// object's sockets and load); [`MuxServer::view_response`] answers with it.
    pub fn view(&self) -> Result<View> {
        self.wake();
        let live: Vec<SocketId> = self.state.get_websockets_with_tag(TAG).iter().filter_map(mux_socket).collect();
        self.inner.run(|o| o.view(now_ms(), &live))
    }

    /// [`MuxServer::view`] as a response: Prometheus text (0.0.4) when `prometheus`, else
    /// JSON. The caller has checked that the request is an operator's.
    pub fn view_response(&self, prometheus: bool) -> Result<Response> {
        let view = self.view()?;
        if !prometheus {
            return Response::from_json(&view.to_json());
        }
        let headers = worker::Headers::new();
        headers.set("Content-Type", METRICS_CONTENT_TYPE)?;
        Ok(Response::ok(view.to_prometheus())?.with_headers(headers))
    }

    /// Open clients on every mux socket.
    pub fn clients(&self) -> usize {
        self.wake();
        self.inner.run(|o| o.clients()).unwrap_or(0)
    }

    /// Builds the core from storage if this instance has not yet: every live mux socket
    /// and every stored row. Clients of sockets that died meanwhile close for the app.
    fn wake(&self) {
        let asleep = matches!(*self.inner.slot.borrow(), Slot::Asleep(_));
        if !asleep {
            return;
        }
        let mut live = Vec::new();
        for ws in self.state.get_websockets_with_tag(TAG) {
            let Some(a) = mux_attachment(&ws) else { continue };
            let Some(id) = SocketId::parse(&a.socket) else { continue };
            live.push((id, a.tenant));
            self.inner.sockets.borrow_mut().insert(id, ws);
        }
        let rows = match &self.inner.kv {
            Some(kv) => [store::SOCKET_PREFIX, store::SESSION_PREFIX]
                .iter()
                .flat_map(|prefix| kv.list_bytes(prefix).unwrap_or_default())
                .collect(),
            None => Vec::new(),
        };
        let slot = std::mem::replace(&mut *self.inner.slot.borrow_mut(), Slot::Empty);
        if let Slot::Asleep(app) = slot {
            let object = Object::restore(app, live, rows, now_ms());
            *self.inner.slot.borrow_mut() = Slot::Awake(Box::new(object));
            let _ = self.inner.carry_out();
        }
    }
}

impl<A: App + 'static> Inner<A> {
    /// Runs `f` on the core, then carries out what it asks for and arms its timer.
    fn run<R>(self: &Rc<Self>, f: impl FnOnce(&mut Object<A>) -> R) -> Result<R> {
        let r = {
            let mut slot = self.slot.borrow_mut();
            let Slot::Awake(object) = &mut *slot else {
                return Err(Error::RustError("the mux server's core is not built".into()));
            };
            f(object)
        };
        self.carry_out()?;
        self.arm();
        Ok(r)
    }

    /// Sends, closes and stores what the core decided, in order. A send to a socket that
    /// has gone is dropped (its close event is on its way).
    fn carry_out(&self) -> Result<()> {
        loop {
            let action = match &mut *self.slot.borrow_mut() {
                Slot::Awake(object) => object.poll_action(),
                _ => None,
            };
            let Some(action) = action else { return Ok(()) };
            match action {
                Action::Send { socket, message } => {
                    if let Some(ws) = self.sockets.borrow().get(&socket) {
                        let _ = ws.send_with_bytes(message);
                    }
                }
                Action::Close { socket, code, reason } => {
                    if let Some(ws) = self.sockets.borrow().get(&socket) {
                        let _ = ws.close(Some(code), Some(reason));
                    }
                }
                Action::Put { key, value } => {
                    if let Some(kv) = &self.kv {
                        kv.put_bytes(&key, &value).map_err(Error::RustError)?;
                    }
                }
                Action::Delete { key } => {
                    if let Some(kv) = &self.kv {
                        kv.delete(&key).map_err(Error::RustError)?;
                    }
                }
            }
        }
    }

    /// Arms a timer for the core's next deadline, unless one fires by then already. The
    /// object stays awake while it is armed (the grace window is seconds long).
    fn arm(self: &Rc<Self>) {
        let due = match &*self.slot.borrow() {
            Slot::Awake(object) => object.poll_timeout(),
            _ => None,
        };
        let Some(due) = due else { return };
        if self.timer_at.get().is_some_and(|at| at <= due) {
            return;
        }
        self.timer_at.set(Some(due));
        let inner = Rc::clone(self);
        let wait = Duration::from_millis(due.saturating_sub(now_ms()));
        worker::wasm_bindgen_futures::spawn_local(async move {
            worker::Delay::from(wait).await;
            if inner.timer_at.get() == Some(due) {
                inner.timer_at.set(None);
            }
            let _ = inner.run(|o| o.handle_timeout(now_ms()));
        });
    }
}

/// A mux socket's attachment, if `ws` is one.
fn mux_attachment(ws: &WebSocket) -> Option<Attachment> {
    ws.deserialize_attachment::<Attachment>().ok().flatten().filter(|a| a.endpoint == TAG && !a.socket.is_empty())
}

/// A mux socket's id, if `ws` is one.
fn mux_socket(ws: &WebSocket) -> Option<SocketId> {
    mux_attachment(ws).and_then(|a| SocketId::parse(&a.socket))
}
