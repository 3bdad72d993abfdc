//! A deterministic pair for tests (quinn-proto's `Pair`): the real [`Mux`] against the
//! real backend object core of each tenant (`snippet_proxy_do::Object` running
//! backend-do's app), on a simulated clock.
//! Every upstream message is handed over synchronously; time moves only when a test
//! says so. A text `ping` on an upstream is answered `pong` by the simulated runtime
//! itself (the backends' auto-response), without reaching the object, unless the
//! backend is stalled: a busy object's runtime answers nothing (RUNTIME.md §17).

use std::collections::{BTreeMap, HashMap, HashSet};

use backend_core::rpc::{DbError, SqlMode};
use backend_core::{Backend, Db, SqlResult};
use snippet_proxy_do::{Object, SocketId};

use super::*;

/// A database that has nothing and stores nothing: the tests exercise the mux, the
/// session's framing and its echo service.
struct NoDb;

impl Db for NoDb {
    fn sql(&mut self, _: &str, _: &[serde_json::Value], _: SqlMode) -> Result<SqlResult, DbError> {
        Ok(SqlResult { columns: vec![], rows: vec![], rows_read: 0, rows_written: 0 })
    }
    fn stats(&mut self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn broadcast(&mut self, _: &str) -> u64 {
        0
    }
}

/// One simulated upstream socket, and its id at the tenant's object.
struct Socket {
    tenant: String,
    at_object: SocketId,
    open: bool,
}

pub(crate) struct Sim {
    pub mux: Mux,
    pub now: u64,
    /// The context that polls actions (and so owns what it connects).
    pub here: Here,
    sockets: BTreeMap<UpstreamId, Socket>,
    /// Each tenant's backend object.
    objects: HashMap<String, Object<Backend<NoDb>>>,
    /// Connects wait here until [`Sim::accept`] when `manual` is set.
    pub connecting: Vec<(UpstreamId, String)>,
    pub manual: bool,
    /// Tenants whose backend refuses connections.
    pub refusing: HashSet<String>,
    /// Tenants whose backend reads but never answers (stalled).
    pub stalled: HashSet<String>,
    /// Sockets whose backend end reads but never answers.
    pub stalled_sockets: HashSet<UpstreamId>,
    pub got: HashMap<StreamId, Vec<Delivery>>,
    /// Sockets the mux closed, with the code.
    pub closed: Vec<(UpstreamId, u16)>,
    pub abandoned: Vec<UpstreamId>,
    /// Requests whose tasks the mux had dropped.
    pub abandoned_requests: Vec<StreamId>,
    /// Streams whose context is gone: their deliveries are never collected.
    pub dead: HashSet<StreamId>,
    pub logs: Vec<String>,
    /// Frames in each message the backends received.
    pub frames_seen: Vec<usize>,
    /// Every binary message the backends received (stalled ones too), in order.
    pub received: Vec<(UpstreamId, Vec<u8>)>,
    /// Every text message the backends received (stalled ones too), in order.
    pub texts_seen: Vec<(UpstreamId, String)>,
}

/// A caller allowed on every tenant, whose grant never ends.
pub(crate) fn who() -> Identity {
    Identity { subject: "u".into(), tenant: "*".into(), scopes: "read write".into(), expires_at: 0 }
}

pub(crate) fn rpc(body: &str) -> Request {
    Request {
        method: "POST".into(),
        path: "/rpc".into(),
        content_type: "application/json".into(),
        identity: who(),
        body: body.as_bytes().to_vec(),
    }
}

impl Sim {
    pub fn new(cfg: Config) -> Sim {
        Sim {
            mux: Mux::new(cfg),
            now: 1_000,
            here: Here::Background,
            sockets: BTreeMap::new(),
            objects: HashMap::new(),
            connecting: Vec::new(),
            manual: false,
            refusing: HashSet::new(),
            stalled: HashSet::new(),
            stalled_sockets: HashSet::new(),
            got: HashMap::new(),
            closed: Vec::new(),
            abandoned: Vec::new(),
            abandoned_requests: Vec::new(),
            dead: HashSet::new(),
            logs: Vec::new(),
            frames_seen: Vec::new(),
            received: Vec::new(),
            texts_seen: Vec::new(),
        }
    }

    pub fn client(&mut self, tenant: &str, path: &str) -> StreamId {
        let now = self.now;
        self.mux.open_client(tenant, path, who(), "sub:u", None, now).expect("open")
    }

    /// A client of the client library: a session stream attaching at `received`.
    pub fn session_client(&mut self, tenant: &str, path: &str, session: SessionId, received: u64) -> StreamId {
        let now = self.now;
        let attach = Some(Attach { session, received });
        self.mux.open_client(tenant, path, who(), "sub:u", attach, now).expect("open")
    }

    /// A client's binary message.
    pub fn send_binary(&mut self, id: StreamId, bytes: &[u8]) {
        let now = self.now;
        self.mux.handle_client_message(id, false, bytes.to_vec(), now).expect("send");
    }

    pub fn send(&mut self, id: StreamId, text: &str) {
        let now = self.now;
        self.mux.handle_client_message(id, true, text.as_bytes().to_vec(), now).expect("send");
    }

    pub fn request(&mut self, tenant: &str, body: &str) -> StreamId {
        let now = self.now;
        match self.mux.open_request(tenant, rpc(body), now).expect("open") {
            Route::Stream(id) => id,
            Route::Direct(_) => panic!("expected the upstream"),
        }
    }

    /// Lets `ms` pass, handling every deadline on the way, and runs everything.
    pub fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        loop {
            self.run();
            match self.mux.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.timeout();
                }
                _ => break,
            }
        }
        self.now = end;
        self.timeout();
        self.run();
    }

    /// Handles the deadlines due now, and checks the core's promise to the glue: the next
    /// deadline is later than now, or there is none (else a timer would fire at once, again
    /// and again).
    pub fn timeout(&mut self) {
        let now = self.now;
        self.mux.handle_timeout(now);
        self.mux.check_conns();
        if let Some(t) = self.mux.poll_timeout() {
            assert!(t > now, "handle_timeout({now}) left a deadline at {t}");
        }
    }

    /// Steps to the next deadline as a glue's timer would (at most `limit` steps), running
    /// everything after each; returns the times stepped to.
    pub fn step_deadlines(&mut self, limit: usize) -> Vec<u64> {
        let mut times = Vec::new();
        while let Some(t) = self.mux.poll_timeout() {
            if times.len() == limit {
                break;
            }
            self.now = self.now.max(t);
            times.push(self.now);
            self.timeout();
            self.run();
        }
        times
    }

    /// A pending connect completes.
    pub fn accept(&mut self, id: UpstreamId) {
        let Some(pos) = self.connecting.iter().position(|(c, _)| *c == id) else { return };
        let (_, tenant) = self.connecting.remove(pos);
        self.open_socket(id, tenant);
        self.run();
    }

    /// A pending connect fails.
    pub fn refuse(&mut self, id: UpstreamId) {
        self.connecting.retain(|(c, _)| *c != id);
        let now = self.now;
        self.mux.handle_upstream_closed(id, "refused", now);
        self.run();
    }

    /// The backend end of a socket closes it (a restart).
    pub fn drop_socket(&mut self, id: UpstreamId) {
        self.object_hears_closed(id, 1006);
        let now = self.now;
        self.mux.handle_upstream_closed(id, "backend closed the connection (1006)", now);
        self.run();
    }

    /// Feeds raw bytes as if the backend sent them on `id`.
    pub fn inject(&mut self, id: UpstreamId, msg: &[u8]) {
        let now = self.now;
        self.mux.handle_upstream_message(id, msg, now);
        self.run();
    }

    pub fn open_sockets(&self) -> Vec<UpstreamId> {
        self.sockets.iter().filter(|(_, s)| s.open).map(|(id, _)| *id).collect()
    }

    pub fn socket_of(&self, tenant: &str) -> Vec<UpstreamId> {
        self.sockets.iter().filter(|(_, s)| s.open && s.tenant == tenant).map(|(id, _)| *id).collect()
    }

    fn open_socket(&mut self, id: UpstreamId, tenant: String) {
        if self.refusing.contains(&tenant) {
            let now = self.now;
            self.mux.handle_upstream_closed(id, "cannot connect to backend: refused", now);
            return;
        }
        let at_object = SocketId::from_bits(self.sockets.len() as u64 + 1);
        let live: Vec<SocketId> = self
            .sockets
            .values()
            .filter(|s| s.open && s.tenant == tenant)
            .map(|s| s.at_object)
            .chain([at_object])
            .collect();
        let now = self.now;
        let object = self.objects.entry(tenant.clone()).or_insert_with(|| Object::new(Backend::new(NoDb)));
        object.handle_accept(at_object, &tenant, &live, now);
        self.sockets.insert(id, Socket { tenant: tenant.clone(), at_object, open: true });
        self.object_sends(&tenant);
        if !self.mux.handle_connected(id, now) {
            self.close(id, 1000);
        }
    }

    fn close(&mut self, id: UpstreamId, code: u16) {
        if self.sockets.get(&id).is_some_and(|s| s.open) {
            self.closed.push((id, code));
        }
        self.object_hears_closed(id, code);
    }

    /// The tenant's object hears that socket `id` closed (and answers what it decides).
    fn object_hears_closed(&mut self, id: UpstreamId, code: u16) {
        let Some(s) = self.sockets.get_mut(&id).filter(|s| s.open) else { return };
        s.open = false;
        let (tenant, at_object) = (s.tenant.clone(), s.at_object);
        let now = self.now;
        if let Some(object) = self.objects.get_mut(&tenant) {
            object.handle_closed(at_object, code, "", now);
        }
        self.object_sends(&tenant);
    }

    /// Delivers what the tenant's object sent to the sockets still open.
    fn object_sends(&mut self, tenant: &str) {
        let Some(object) = self.objects.get_mut(tenant) else { return };
        let mut sends = Vec::new();
        while let Some(action) = object.poll_action() {
            if let snippet_proxy_do::Action::Send { socket, message } = action {
                sends.push((socket, message));
            }
        }
        let now = self.now;
        for (socket, message) in sends {
            let to = self.sockets.iter().find(|(_, s)| s.open && s.at_object == socket).map(|(id, _)| *id);
            if let Some(id) = to {
                self.mux.handle_upstream_message(id, &message, now);
            }
        }
    }

    /// Runs actions, transmits and deliveries until nothing moves.
    pub fn run(&mut self) {
        loop {
            let mut moved = false;
            let now = self.now;
            while let Some(a) = self.mux.poll_action(self.here, now) {
                moved = true;
                match a {
                    Action::Connect { upstream, tenant } => {
                        if self.manual {
                            self.connecting.push((upstream, tenant));
                        } else {
                            self.open_socket(upstream, tenant);
                        }
                    }
                    Action::Abandon(id) => {
                        self.abandoned.push(id);
                        self.connecting.retain(|(c, _)| *c != id);
                        self.object_hears_closed(id, 1006);
                    }
                    Action::AbandonRequest(id) => self.abandoned_requests.push(id),
                    Action::Log { tenant, msg } => self.logs.push(format!("tenant {tenant}: {msg}")),
                    Action::WakeUpstream(_) | Action::WakeStream(_) => {}
                }
            }
            let ids: Vec<UpstreamId> = self.open_sockets();
            for id in ids {
                while let Some(t) = self.mux.poll_transmit(id, now) {
                    moved = true;
                    match t {
                        Transmit::Close { code, .. } => {
                            self.close(id, code);
                            break;
                        }
                        Transmit::Message(msg) => self.backend_receives(id, &msg),
                        Transmit::Text(text) => self.backend_receives_text(id, text),
                    }
                }
            }
            let streams: Vec<StreamId> =
                self.mux.streams.keys().copied().filter(|id| !self.dead.contains(id)).collect();
            for sid in streams {
                while let Some(d) = self.mux.poll_delivery(sid, now) {
                    moved = true;
                    self.got.entry(sid).or_default().push(d);
                }
            }
            // The connection index must answer as a scan of the pool would, every step.
            self.mux.check_conns();
            if !moved {
                return;
            }
        }
    }

    /// A text message reaches the backend's runtime: `ping` is answered by its
    /// auto-response (not when the object is busy); anything else goes to the object.
    fn backend_receives_text(&mut self, id: UpstreamId, text: &str) {
        self.texts_seen.push((id, text.to_owned()));
        let Some(sock) = self.sockets.get(&id) else { return };
        if self.stalled.contains(&sock.tenant) || self.stalled_sockets.contains(&id) {
            return;
        }
        let now = self.now;
        if text == "ping" {
            self.mux.handle_upstream_text(id, b"pong", now);
            return;
        }
        let (tenant, at_object) = (sock.tenant.clone(), sock.at_object);
        if let Some(object) = self.objects.get_mut(&tenant) {
            object.handle_message(at_object, text.as_bytes(), now);
        }
        self.object_sends(&tenant);
    }

    /// The `Open`s the backends received for stream `id`, in order, with their socket.
    pub fn opens_of(&self, id: StreamId) -> Vec<(UpstreamId, Open)> {
        let mut out = Vec::new();
        for (up, msg) in &self.received {
            for f in protocol::decode_message(msg).expect("version").map(|f| f.expect("frame")) {
                if f.kind == protocol::FrameKind::Open && f.stream == id {
                    out.push((*up, Open::decode(f.payload).expect("open")));
                }
            }
        }
        out
    }

    /// The frames the backends received for stream `id`, in order: (socket, kind, payload).
    pub fn frames_of(&self, id: StreamId) -> Vec<(UpstreamId, protocol::FrameKind, Vec<u8>)> {
        let mut out = Vec::new();
        for (up, msg) in &self.received {
            for f in protocol::decode_message(msg).expect("version").map(|f| f.expect("frame")) {
                if f.stream == id {
                    out.push((*up, f.kind, f.payload.to_vec()));
                }
            }
        }
        out
    }

    /// Binary messages a stream received, in order.
    pub fn binaries(&self, id: StreamId) -> Vec<Vec<u8>> {
        let got = self.got.get(&id).map(Vec::as_slice).unwrap_or_default();
        got.iter()
            .filter_map(|d| match d {
                Delivery::Binary(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    fn backend_receives(&mut self, id: UpstreamId, msg: &[u8]) {
        let frames = protocol::decode_message(msg).map(|f| f.count()).unwrap_or(0);
        self.frames_seen.push(frames);
        self.received.push((id, msg.to_vec()));
        let Some(sock) = self.sockets.get(&id) else { return };
        if self.stalled.contains(&sock.tenant) || self.stalled_sockets.contains(&id) {
            return;
        }
        let (tenant, at_object) = (sock.tenant.clone(), sock.at_object);
        let now = self.now;
        if let Some(object) = self.objects.get_mut(&tenant) {
            object.handle_message(at_object, msg, now);
        }
        self.object_sends(&tenant);
    }

    /// What the tenant's backend object has done with its clients.
    pub fn object_counters(&self, tenant: &str) -> snippet_proxy_do::Counters {
        self.objects.get(tenant).map(Object::counters).unwrap_or_default()
    }

    /// Text messages a stream received, in order.
    pub fn texts(&self, id: StreamId) -> Vec<String> {
        let got = self.got.get(&id).map(Vec::as_slice).unwrap_or_default();
        got.iter()
            .filter_map(|d| match d {
                Delivery::Text(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    /// The stream's final delivery, if it ended.
    pub fn last(&self, id: StreamId) -> Option<&Delivery> {
        self.got.get(&id).and_then(|v| v.last()).filter(|d| d.is_final())
    }
}
