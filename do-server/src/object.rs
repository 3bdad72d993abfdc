//! The mux side of one Durable Object, without I/O (the snippet core's shape): every
//! socket's clients, hand-overs between sockets, fan-out and admission. The glue hands
//! it each event with the time (`handle_*`) and carries out what it asks for
//! ([`Object::poll_action`]: send, close a socket, write or delete a stored row), and
//! wakes it at [`Object::poll_timeout`] ([`Object::handle_timeout`]).
//!
//! The rule it keeps: the application sees a client once, from its first `Open` to its
//! real close, across any number of hand-overs. The snippet moves an upstream to a new
//! socket by sending a barrier `Ping` on the old one, re-opening every stream (same id,
//! path and identity) on the new one, then closing the old one (PROTOCOL.md §5.2). A
//! re-open adopts the client from the old socket; the old socket's clients that were not
//! re-opened when it closes wait out [`HANDOVER_GRACE_MS`], then close for real.

use std::collections::VecDeque;

use protocol::{Request, Response, StreamId};

use crate::admit::check_request;
use crate::app::{App, Client, Msg};
use crate::close::{error_close, reciprocal_close_code, CLIENT_LOST, SESSION_EXPIRED};
use crate::ids::{ClientId, SocketId};
use crate::out::{Out, Outboxes};
use crate::sessions::{SessionCounters, Sessions};
use crate::store::{self, Row};
use crate::table::Tables;

/// How long after a barrier `Ping` a socket's clients may be re-opened on another socket
/// and keep their identity: the snippet re-opens them as soon as the barrier's `Pong`
/// returns, which its watchdog bounds to 5 s, so this is that with a wide margin for a
/// busy object.
pub const HANDOVER_WINDOW_MS: u64 = 30_000;

/// How long the clients of a socket that closed during a hand-over wait for their
/// re-open before they close for real: the re-opens are sent before the old socket's
/// close, but on another socket, so they may arrive after it; this covers the delay
/// between two sockets of one isolate several times over.
pub const HANDOVER_GRACE_MS: u64 = 5_000;

/// What the object asks the glue to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Send `message` (one batch) on `socket`.
    Send {
        /// The socket.
        socket: SocketId,
        /// The batch.
        message: Vec<u8>,
    },
    /// Close `socket` with `code` and `reason` (answering its close, or after an error).
    Close {
        /// The socket.
        socket: SocketId,
        /// A code a close frame may carry.
        code: u16,
        /// The reason.
        reason: String,
    },
    /// Store `value` at `key` (see [`crate::store`]).
    Put {
        /// The row's key.
        key: String,
        /// Its value.
        value: Vec<u8>,
    },
    /// Delete the row at `key`.
    Delete {
        /// The row's key.
        key: String,
    },
}

/// What the object has done since this instance was made: in memory only, so they start
/// at 0 again when the object hibernates, is evicted or restarts (nothing is written per
/// message; [`crate::View::woke_at`] says since when). Each is one integer incremented
/// where the event happens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Mux sockets accepted (snippet upstreams that connected).
    pub sockets_accepted: u64,
    /// Mux sockets that went: closed, failed, or found dead (vanished without a close event).
    pub sockets_closed: u64,
    /// WebSocket messages received on mux sockets (each a batch of frames).
    pub messages_in: u64,
    /// Frames in them that were decoded and handled.
    pub frames_in: u64,
    /// WebSocket messages (batches) sent on mux sockets.
    pub messages_out: u64,
    /// Frames in them.
    pub frames_out: u64,
    /// Clients the application opened (`on_open` accepted them; a session begun counts once).
    pub opened: u64,
    /// Clients closed for the application (`on_close` calls), for any reason.
    pub closed: u64,
    /// Requests answered (`Request` frames and plain HTTP to the object), refused ones included.
    pub requests: u64,
    /// Hand-overs begun: barrier `Ping`s received, each a snippet isolate announcing that
    /// a newer socket of its own replaces this one (PROTOCOL.md §5.2).
    pub handovers: u64,
    /// Clients re-opened on a new socket by a hand-over, kept without a close or an open.
    pub adopted: u64,
    /// Clients whose socket closed during a hand-over: they waited for their re-open.
    pub orphaned: u64,
    /// Clients closed because their socket went and no hand-over took them on.
    pub lost: u64,
    /// `Error` frames sent.
    pub errors: u64,
    /// Streams and requests refused, by reason.
    pub refused: Refusals,
    /// What the sessions did (PROTOCOL.md §14).
    pub sessions: SessionCounters,
}

/// Streams refused (or ended) by the object, and requests refused admission, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refusals {
    /// An undecodable `Open`, or one on stream 0 (400).
    pub malformed: u64,
    /// An `Open` for a service the application does not serve (404).
    pub service: u64,
    /// An `Open` whose caller is for another tenant or expired, or a session's re-attach
    /// by another caller (401/403).
    pub admission: u64,
    /// An `Open` past [`crate::MAX_STREAMS`] on its socket (503).
    pub limit: u64,
    /// The application's [`crate::Refusal`] (of an open or a message).
    pub app: u64,
    /// A message from a client whose token had expired: its stream ends (401).
    pub expired: u64,
    /// A request whose caller is for another tenant or expired (401/403).
    pub request: u64,
}

/// A client whose socket closed during a hand-over, waiting for its re-open.
#[derive(Debug)]
struct Orphan {
    client: Client,
    until: u64,
}

/// The mux side of one Durable Object serving application `A`.
pub struct Object<A: App> {
    pub(crate) app: A,
    /// The tenant the object serves (its sockets' tenant), for callbacks outside any socket.
    tenant: String,
    pub(crate) tables: Tables,
    pub(crate) outboxes: Outboxes,
    pub(crate) sessions: Sessions,
    orphans: Vec<Orphan>,
    actions: VecDeque<Action>,
    pub(crate) counters: Counters,
    /// When this instance was built from storage (ms; 0 for [`Object::new`]).
    pub(crate) woke_at: u64,
}

impl<A: App> Object<A> {
    /// An object with no sockets yet.
    pub fn new(app: A) -> Object<A> {
        Object {
            app,
            tenant: String::new(),
            tables: Tables::default(),
            outboxes: Outboxes::default(),
            sessions: Sessions::default(),
            orphans: Vec::new(),
            actions: VecDeque::new(),
            counters: Counters::default(),
            woke_at: 0,
        }
    }

    /// The object as it was before hibernation: `live` are the mux sockets the runtime
    /// still has (id and the tenant it was accepted for), `rows` every stored row under
    /// [`store::SOCKET_PREFIX`]. Rows of sockets that are gone (they died without a close
    /// event: a restart, a deploy) are deleted and their clients closed, as lost.
    pub fn restore(
        app: A,
        live: impl IntoIterator<Item = (SocketId, String)>,
        rows: impl IntoIterator<Item = (String, Vec<u8>)>,
        now: u64,
    ) -> Object<A> {
        let mut object = Object::new(app);
        object.woke_at = now;
        for (socket, tenant) in live {
            object.tables.add_socket(socket, &tenant);
        }
        let mut dead = Tables::default();
        let mut origins = Vec::new();
        let mut session_rows = Vec::new();
        for (key, value) in rows {
            if key.starts_with(store::SESSION_PREFIX) {
                session_rows.push((key, value));
                continue;
            }
            let Some(row) = Row::of(&key) else { continue };
            let socket = row.socket();
            let live = object.tables.socket(socket).is_some();
            let tables = if live { &mut object.tables } else { &mut dead };
            tables.add_socket(socket, "");
            match row {
                Row::Tenant(_) => {
                    let stored = String::from_utf8(value).unwrap_or_default();
                    if let Some(t) = tables.socket_mut(socket).filter(|t| t.tenant.is_empty()) {
                        t.tenant = stored;
                    }
                }
                Row::Barrier(_) => {
                    if let Some(t) = tables.socket_mut(socket) {
                        t.barrier_at = store::decode_time(&value);
                    }
                }
                Row::Client(_, stream) => {
                    let id = ClientId::new(socket, stream);
                    if let Some(client) = Client::decode(id, stream, &value, A::SERVICES) {
                        tables.insert(socket, client);
                    }
                }
                Row::Origin(_, stream) => origins.push((socket, stream, value)),
                Row::Other(_) => {}
            }
            if !live {
                object.actions.push_back(Action::Delete { key });
            }
        }
        // An adopted client keeps the id it was first opened with.
        for (socket, stream, origin) in origins {
            let origin = std::str::from_utf8(&origin).ok().and_then(SocketId::parse);
            let tables = if object.tables.socket(socket).is_some() { &mut object.tables } else { &mut dead };
            if let (Some(origin), Some(client)) = (origin, tables.remove(socket, stream)) {
                tables.insert(socket, client.with_id(ClientId::new(origin, stream)));
            }
        }
        if let Some((_, t)) = object.tables.sockets().find(|(_, t)| !t.tenant.is_empty()) {
            object.tenant = t.tenant.clone();
        }
        for (session, socket, stream) in object.sessions.restore(&session_rows, A::SERVICES) {
            let live = object.tables.socket(socket).is_some();
            match object.sessions.get(&session).map(|s| s.client.clone()) {
                Some(client) if live => {
                    object.sessions.place(session, (socket, stream));
                    object.tables.insert(socket, client);
                }
                _ => object.sessions.orphaned(session, now),
            }
        }
        // Sockets that died unheard count as gone when the wake finds them.
        object.counters.sockets_closed += dead.sockets().count() as u64;
        let lost: Vec<Client> = dead.clients().map(|(_, c)| c.clone()).collect();
        object.close_lost(lost, now);
        object.expire_sessions(now);
        object.flush();
        object
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// The application, to change.
    pub fn app_mut(&mut self) -> &mut A {
        &mut self.app
    }

    /// Open clients, on every socket, and sessions' clients waiting to come back.
    pub fn clients(&self) -> usize {
        self.tables.len() + self.sessions.detached().count()
    }

    /// Mux sockets.
    pub fn sockets(&self) -> usize {
        self.tables.sockets().count()
    }

    /// The tenant the object serves, as its sockets were accepted for ('' before any).
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Clients of a socket that closed mid-hand-over, waiting out their grace window.
    pub(crate) fn orphan_count(&self) -> usize {
        self.orphans.len()
    }

    /// What the object has done since it was made.
    pub fn counters(&self) -> Counters {
        let c = &self.outboxes.counted;
        Counters {
            errors: c.errors,
            messages_out: c.messages,
            frames_out: c.frames,
            sessions: self.sessions.counters,
            ..self.counters
        }
    }

    /// The next thing to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Object::handle_timeout`] is next due (ms), if anything waits.
    pub fn poll_timeout(&self) -> Option<u64> {
        let orphans = self.orphans.iter().map(|o| o.until).min();
        [orphans, self.sessions.next_expiry()].into_iter().flatten().min()
    }

    /// Time passed: clients that waited out their grace window for a re-open close, and
    /// sessions nobody came back to within the resume window end.
    pub fn handle_timeout(&mut self, now: u64) {
        let (due, waiting): (Vec<Orphan>, Vec<Orphan>) =
            std::mem::take(&mut self.orphans).into_iter().partition(|o| o.until <= now);
        self.orphans = waiting;
        self.close_lost(due.into_iter().map(|o| o.client).collect(), now);
        self.expire_sessions(now);
        self.flush();
    }

    /// Ends the sessions whose window is over.
    fn expire_sessions(&mut self, now: u64) {
        for session in self.sessions.expired(now) {
            let Some(client) = self.sessions.get(&session).map(|s| s.client.clone()) else { continue };
            self.sessions.counters.expired += 1;
            self.end(&client, SESSION_EXPIRED.0.get(), SESSION_EXPIRED.1, now);
            self.settle(now);
        }
    }

    /// The snippet connected a new mux socket for `tenant`. `live` are every mux socket
    /// the runtime still has: sockets the object knows that are not among them died
    /// without a close event, and their clients close.
    pub fn handle_accept(&mut self, socket: SocketId, tenant: &str, live: &[SocketId], now: u64) {
        let gone: Vec<SocketId> = self.tables.sockets().map(|(s, _)| s).filter(|s| !live.contains(s)).collect();
        for s in gone {
            self.drop_socket(s, false, now);
        }
        self.counters.sockets_accepted += 1;
        self.tables.add_socket(socket, tenant);
        if !tenant.is_empty() {
            self.tenant = tenant.to_owned();
        }
        self.actions.push_back(Action::Put { key: store::socket_key(socket), value: tenant.as_bytes().to_vec() });
        self.flush();
    }

    /// Mux socket `socket` closed with `code` and `reason`: the close is answered, and its
    /// clients move on (a hand-over under way), wait for their re-open, or close.
    pub fn handle_closed(&mut self, socket: SocketId, code: u16, reason: &str, now: u64) {
        let code = reciprocal_close_code(usize::from(code));
        self.actions.push_back(Action::Close { socket, code, reason: reason.to_owned() });
        self.drop_socket(socket, true, now);
        self.flush();
    }

    /// Mux socket `socket` failed: it is closed with 1011, then handled as closed.
    pub fn handle_error(&mut self, socket: SocketId, now: u64) {
        self.actions.push_back(Action::Close { socket, code: 1011, reason: "socket error".into() });
        self.drop_socket(socket, true, now);
        self.flush();
    }

    /// Handles one message from the snippet on `socket`. Never panics; a malformed frame
    /// gets a session-level `Error` (stream 0) and ends the handling of that message only:
    /// earlier frames are answered (the snippet, though, ends the upstream on it).
    pub fn handle_message(&mut self, socket: SocketId, msg: &[u8], now: u64) {
        if self.tables.socket(socket).is_none() {
            // Not accepted through this object (its tenant unknown): every Open is refused.
            self.tables.add_socket(socket, "");
        }
        self.counters.messages_in += 1;
        if let Some(t) = self.tables.socket_mut(socket) {
            t.messages_in += 1;
        }
        match protocol::decode_message(msg) {
            Err(e) => {
                let head: Vec<String> = msg.iter().take(8).map(|b| format!("{b:02x}")).collect();
                let what = format!("bad message ({} bytes, starting {}): {e}", msg.len(), head.join(" "));
                self.outboxes.error(socket, StreamId::SESSION, 400, what);
            }
            Ok(frames) => {
                for frame in frames {
                    match frame {
                        Ok(f) => {
                            self.counters.frames_in += 1;
                            self.handle_frame(socket, f, now);
                        }
                        Err(e) => {
                            self.outboxes.error(socket, StreamId::SESSION, 400, format!("bad frame: {e}"));
                            break;
                        }
                    }
                    self.settle(now);
                }
            }
        }
        self.flush();
    }

    /// Answers a request that came another way than over a mux socket (plain HTTP to the
    /// object) exactly as over one: admission for `tenant`, then [`App::on_request`],
    /// whose broadcasts reach every mux socket.
    pub fn request(&mut self, req: &Request, tenant: &str, now: u64) -> Response {
        let res = self.with_out(tenant, now, |app, out| respond(app, req, out));
        self.count_request(res)
    }

    /// Counts a request answered (`Err`: admission refused it), and gives its response.
    pub(crate) fn count_request(&mut self, res: Result<Response, Response>) -> Response {
        self.counters.requests += 1;
        res.unwrap_or_else(|refused| {
            self.counters.refused.request += 1;
            refused
        })
    }

    /// Runs `f` with an [`Out`] that belongs to no socket, for work that arrives another
    /// way (plain HTTP, a timer, a socket of the application's own): its sends and
    /// broadcasts reach the mux clients.
    pub fn with_out<R>(&mut self, tenant: &str, now: u64, f: impl FnOnce(&mut A, &mut Out<'_>) -> R) -> R {
        let mut out = Out {
            tables: &self.tables,
            outboxes: &mut self.outboxes,
            sessions: &mut self.sessions,
            opening: None,
            tenant,
            now_ms: now,
        };
        let r = f(&mut self.app, &mut out);
        self.settle(now);
        self.flush();
        r
    }

    /// Sends `msg` to every open, unexpired client that passes `filter` (see
    /// [`Out::broadcast`]). Returns how many it went to.
    pub fn broadcast(&mut self, filter: &dyn Fn(&Client) -> bool, msg: Msg<'_>, now: u64) -> u64 {
        let tenant = std::mem::take(&mut self.tenant);
        let n = self.with_out(&tenant, now, |_, out| out.broadcast(filter, msg));
        self.tenant = tenant;
        n
    }

    /// Calls `f` with the app and an [`Out`] for `socket`'s tenant.
    pub(crate) fn call<R>(
        &mut self,
        socket: SocketId,
        stream: Option<StreamId>,
        opening: Option<&Client>,
        now: u64,
        f: impl FnOnce(&mut A, &Client, &mut Out<'_>) -> R,
    ) -> Option<R> {
        let tenant = self.tables.socket(socket).map_or("", |t| t.tenant.as_str());
        let client = match (opening, stream) {
            (Some(c), _) => c,
            (None, Some(stream)) => self.tables.client(socket, stream)?,
            (None, None) => return None,
        };
        let opening = opening.map(|c| (c.id(), socket, c.stream));
        let sessions = &mut self.sessions;
        let mut out =
            Out { tables: &self.tables, outboxes: &mut self.outboxes, sessions, opening, tenant, now_ms: now };
        Some(f(&mut self.app, client, &mut out))
    }

    /// Applies what the last callback decided: clients the app closed, and clients whose
    /// stream got an `Error`, are forgotten and closed for the app (whose `on_close` may
    /// decide more of both).
    pub(crate) fn settle(&mut self, now: u64) {
        loop {
            let closing = std::mem::take(&mut self.outboxes.closing);
            let errored = std::mem::take(&mut self.outboxes.errored);
            if closing.is_empty() && errored.is_empty() {
                return;
            }
            for (id, code, reason) in closing {
                let at = self.tables.find(id).map(|(s, c)| (s, c.stream));
                let client = match at {
                    Some((socket, stream)) => self.forget(socket, stream),
                    // A session's client whose connection is down.
                    None => self.sessions.of_client(id).map(|s| s.client.clone()),
                };
                if let Some(client) = client {
                    self.end(&client, code, &reason, now);
                }
            }
            for (socket, stream, code) in errored {
                if let Some(client) = self.forget(socket, stream) {
                    let (code, reason) = error_close(code);
                    self.end(&client, code.get(), reason, now);
                }
            }
        }
    }

    /// Takes a client off its socket and out of storage.
    pub(crate) fn forget(&mut self, socket: SocketId, stream: StreamId) -> Option<Client> {
        let client = self.tables.remove(socket, stream)?;
        // A session's client is stored as its session, not as a row of its stream.
        if client.session.is_none() {
            self.unstore(socket, &client);
        }
        Some(client)
    }

    /// The app hears that `client` is gone for good (its session, if any, with it).
    pub(crate) fn end(&mut self, client: &Client, code: u16, reason: &str, now: u64) {
        self.counters.closed += 1;
        if let Some(session) = client.session {
            self.sessions.end(session);
        }
        let tenant = self.tenant.as_str();
        let sessions = &mut self.sessions;
        let mut out =
            Out { tables: &self.tables, outboxes: &mut self.outboxes, sessions, opening: None, tenant, now_ms: now };
        self.app.on_close(client, code, reason, &mut out);
    }

    /// Clients whose socket went for good.
    fn close_lost(&mut self, lost: Vec<Client>, now: u64) {
        for client in lost {
            self.counters.lost += 1;
            self.end(&client, CLIENT_LOST.0.get(), CLIENT_LOST.1, now);
            self.settle(now);
        }
    }

    /// Forgets a socket that went. Its clients wait for their re-open if a hand-over was
    /// under way on it (`closed`: it closed, rather than vanished), else close.
    fn drop_socket(&mut self, socket: SocketId, closed: bool, now: u64) {
        self.outboxes.by_socket.remove(&socket);
        let Some(table) = self.tables.remove_socket(socket) else { return };
        self.counters.sockets_closed += 1;
        self.actions.push_back(Action::Delete { key: store::socket_key(socket) });
        if table.barrier_at.is_some() {
            self.actions.push_back(Action::Delete { key: store::barrier_key(socket) });
        }
        // A session's client only loses its connection: it waits for its client to come
        // back (PROTOCOL.md §14), whether or not a hand-over was under way.
        let (in_session, clients): (Vec<Client>, Vec<Client>) =
            table.clients.into_values().partition(|c| c.session.is_some());
        for session in in_session.iter().filter_map(|c| c.session) {
            self.sessions.detach(session, now);
        }
        for client in &clients {
            self.unstore(socket, client);
        }
        let handing_over = closed && table.barrier_at.is_some_and(|at| now.saturating_sub(at) <= HANDOVER_WINDOW_MS);
        if handing_over {
            self.counters.orphaned += clients.len() as u64;
            let until = now + HANDOVER_GRACE_MS;
            self.orphans.extend(clients.into_iter().map(|client| Orphan { client, until }));
        } else {
            self.close_lost(clients, now);
        }
    }

    /// Takes a client re-opened on `socket` from the socket it was on, if a hand-over is
    /// moving it: a socket whose barrier is recent, or the orphans of one that closed.
    pub(crate) fn adopt(&mut self, socket: SocketId, opened: &Client, now: u64) -> Option<Client> {
        let recent = |at: Option<u64>| at.is_some_and(|at| now.saturating_sub(at) <= HANDOVER_WINDOW_MS);
        let donor = self.tables.sockets().find_map(|(s, t)| {
            let moving = s != socket && recent(t.barrier_at);
            moving.then(|| t.clients.get(&opened.stream).filter(|c| c.same_open(opened)).map(|_| s)).flatten()
        });
        if let Some(donor) = donor {
            return self.forget(donor, opened.stream);
        }
        let i = self.orphans.iter().position(|o| o.client.same_open(opened))?;
        Some(self.orphans.swap_remove(i).client)
    }

    /// Stores a client that is now on `socket`.
    pub(crate) fn store(&mut self, socket: SocketId, client: &Client) {
        let key = store::stream_key(socket, client.stream);
        self.actions.push_back(Action::Put { key, value: client.encode() });
        if client.id().origin() != socket {
            let key = store::origin_key(socket, client.stream);
            self.actions.push_back(Action::Put { key, value: client.id().origin().to_string().into_bytes() });
        }
    }

    fn unstore(&mut self, socket: SocketId, client: &Client) {
        self.actions.push_back(Action::Delete { key: store::stream_key(socket, client.stream) });
        if client.id().origin() != socket {
            self.actions.push_back(Action::Delete { key: store::origin_key(socket, client.stream) });
        }
    }

    /// Marks a hand-over barrier on `socket` (stored: the re-opens may meet a woken
    /// instance).
    pub(crate) fn mark_barrier(&mut self, socket: SocketId, now: u64) {
        if let Some(t) = self.tables.socket_mut(socket) {
            t.barrier_at = Some(now);
            self.actions.push_back(Action::Put { key: store::barrier_key(socket), value: store::encode_time(now) });
        }
    }

    /// Turns the outboxes into `Send` actions, socket by socket, in order, after the
    /// sessions' acknowledgements and rows.
    fn flush(&mut self) {
        self.sessions.finish_input(&mut self.outboxes);
        self.sessions.counters.rows_written += self.sessions.writes.len() as u64;
        for (key, value) in self.sessions.writes.drain(..) {
            self.actions.push_back(match value {
                Some(value) => Action::Put { key, value },
                None => Action::Delete { key },
            });
        }
        let counted = &mut self.outboxes.counted;
        for (socket, batches) in &mut self.outboxes.by_socket {
            let (messages, frames) = batches.take();
            counted.messages += messages.len() as u64;
            counted.frames += frames;
            if let Some(t) = self.tables.socket_mut(*socket) {
                t.messages_out += messages.len() as u64;
            }
            for message in messages {
                self.actions.push_back(Action::Send { socket: *socket, message });
            }
        }
    }
}

/// Answers one request for the app after admission (a refused caller gets a JSON 401 or
/// 403, as `Err`, and never reaches [`App::on_request`]).
pub(crate) fn respond<A: App>(app: &mut A, req: &Request, out: &mut Out<'_>) -> Result<Response, Response> {
    check_request(req, out.tenant, out.now_secs())?;
    Ok(app.on_request(req, out))
}

#[cfg(test)]
mod tests;
