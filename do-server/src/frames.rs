//! What the object does with each frame the snippet sends on one of its sockets
//! (PROTOCOL.md §4.2).

use protocol::facts::CloseCode;
use protocol::session::{Attach, Envelope};
use protocol::{Close, Frame, FrameKind, Open, Request, StreamId};

use crate::admit::check_open;
use crate::app::{App, Client, Msg};
use crate::close::{ends_session, CLIENT_REPLACED, SESSION_EXPIRED, SESSION_MOVED};
use crate::ids::SocketId;
use crate::object::{respond, Object};
use crate::out::Out;
use crate::table::Table;

/// Most clients one socket may have open: the protocol's limit, which the snippet never
/// exceeds on one upstream, so a snippet within its limits is never refused here, while
/// one socket still cannot grow the object's memory and storage without end.
pub const MAX_STREAMS: usize = protocol::MAX_SESSION_STREAMS;

/// A snippet `Ping` on stream 0 with a 9-byte payload starting with this purpose is a
/// hand-over barrier (PROTOCOL.md §5.3).
const BARRIER_PURPOSE: u8 = 1;

impl<A: App> Object<A> {
    pub(crate) fn handle_frame(&mut self, socket: SocketId, f: Frame<'_>, now: u64) {
        match f.kind {
            FrameKind::Open => self.handle_open(socket, f.stream, f.payload, now),
            FrameKind::Text | FrameKind::Binary => self.handle_data(socket, f.stream, f.kind, f.payload, now),
            FrameKind::Close => self.handle_close_frame(socket, f.stream, f.payload, now),
            FrameKind::Request => self.handle_request(socket, f.stream, f.payload, now),
            // Answered in place, after every reply to the frames before it: the barrier
            // the snippet's hand-over waits for (PROTOCOL.md §5.2).
            FrameKind::Ping => {
                if f.stream == StreamId::SESSION && f.payload.len() == 9 && f.payload.first() == Some(&BARRIER_PURPOSE)
                {
                    self.counters.handovers += 1;
                    self.mark_barrier(socket, now);
                }
                self.outboxes.push(socket, FrameKind::Pong, f.stream, f.payload);
            }
            FrameKind::Pong | FrameKind::Response | FrameKind::Error => {}
        }
    }

    /// Why `open` on `socket`'s `stream` may not become a client, as an error frame's
    /// code and message; else the client it opens.
    fn admit(
        &self,
        socket: SocketId,
        stream: StreamId,
        payload: &[u8],
        now: u64,
    ) -> Result<(Client, Option<Attach>), (Refused, u16, String)> {
        let open = Open::decode(payload).map_err(|e| (Refused::Malformed, 400, format!("bad open frame: {e}")))?;
        if stream == StreamId::SESSION {
            return Err((Refused::Malformed, 400, "stream 0 is the session; it cannot be opened".into()));
        }
        let Some(client) = Client::open(socket, stream, &open.path, open.identity, A::SERVICES) else {
            let known = A::SERVICES.join(" or ");
            return Err((Refused::Service, 404, format!("no service at {:?} (try {known})", open.path)));
        };
        let table = self.tables.socket(socket).map_or(&EMPTY, |t| t);
        check_open(&client.identity, &table.tenant, now / 1000).map_err(|why| (Refused::Admission, 403, why))?;
        if table.clients.len() >= MAX_STREAMS && !table.clients.contains_key(&stream) {
            return Err((Refused::Limit, 503, format!("too many streams on this session (limit {MAX_STREAMS})")));
        }
        Ok((client, open.attach))
    }

    /// Refuses (or ends) `socket`'s `stream` with an `Error` frame, counted under `why`.
    fn refuse(&mut self, socket: SocketId, stream: StreamId, why: Refused, code: u16, message: String) {
        let r = &mut self.counters.refused;
        *match why {
            Refused::Malformed => &mut r.malformed,
            Refused::Service => &mut r.service,
            Refused::Admission => &mut r.admission,
            Refused::Limit => &mut r.limit,
            Refused::App => &mut r.app,
            Refused::Expired => &mut r.expired,
        } += 1;
        self.outboxes.error(socket, stream, code, message);
    }

    fn handle_open(&mut self, socket: SocketId, stream: StreamId, payload: &[u8], now: u64) {
        let (client, attach) = match self.admit(socket, stream, payload, now) {
            Ok(c) => c,
            Err((refused, code, why)) => return self.refuse(socket, stream, refused, code, why),
        };
        if let Some(old) = self.forget(socket, stream) {
            // A second Open of an id in use: the old client ends, a new one begins —
            // unless it re-attaches the same session, which then goes on here.
            if old.session.is_none() || old.session != attach.map(|a| a.session) {
                self.end(&old, CLIENT_REPLACED.0.get(), CLIENT_REPLACED.1, now);
                self.settle(now);
            }
        }
        if let Some(attach) = attach {
            return self.attach(socket, client, attach, now);
        }
        if let Some(adopted) = self.adopt(socket, &client, now) {
            // A hand-over: the client moves here and the app hears nothing.
            self.counters.adopted += 1;
            self.store(socket, &adopted);
            self.tables.insert(socket, adopted);
            return;
        }
        match self.call(socket, None, Some(&client), now, |app, c, out| app.on_open(c, out)) {
            Some(Ok(())) => {
                self.counters.opened += 1;
                self.store(socket, &client);
                self.tables.insert(socket, client);
            }
            Some(Err(refusal)) => self.refuse(socket, stream, Refused::App, refusal.code, refusal.message),
            None => {}
        }
    }

    fn handle_data(&mut self, socket: SocketId, stream: StreamId, kind: FrameKind, payload: &[u8], now: u64) {
        let Some(client) = self.tables.client(socket, stream) else {
            return self.outboxes.error(socket, stream, 404, format!("unknown stream {stream}"));
        };
        if client.identity.expired(now / 1000) {
            return self.refuse(socket, stream, Refused::Expired, 401, "the caller's token has expired".into());
        }
        let msg = match client.session {
            None => Msg::of_frame(kind, payload),
            Some(session) => match self.take_envelope(socket, stream, session, kind, payload) {
                Some(msg) => msg,
                None => return,
            },
        };
        if let Some(Err(refusal)) =
            self.call(socket, Some(stream), None, now, |app, c, out| app.on_message(c, msg, out))
        {
            self.refuse(socket, stream, Refused::App, refusal.code, refusal.message);
        }
    }

    fn handle_close_frame(&mut self, socket: SocketId, stream: StreamId, payload: &[u8], now: u64) {
        let Some(client) = self.forget(socket, stream) else { return };
        // The snippet always sends a well-formed close; a malformed one still ends the
        // stream, as "no status".
        let close = Close::decode(payload).unwrap_or(Close { code: CloseCode::NO_STATUS.get(), reason: String::new() });
        // A session outlives a connection that dropped; only a client that left on
        // purpose ends it.
        if let (Some(session), false) = (client.session, ends_session(CloseCode::new(close.code))) {
            return self.sessions.detach(session, now);
        }
        self.end(&client, close.code, &close.reason, now);
    }

    /// Reads one envelope of a session's stream: acknowledgements are applied, and a
    /// message is returned if it is the next one the client sent. Anything a client may
    /// not send ends the stream (400).
    fn take_envelope<'p>(
        &mut self,
        socket: SocketId,
        stream: StreamId,
        session: protocol::session::SessionId,
        kind: FrameKind,
        payload: &'p [u8],
    ) -> Option<Msg<'p>> {
        let env = match (kind, Envelope::decode(payload)) {
            (FrameKind::Binary, Ok(env)) => env,
            (FrameKind::Binary, Err(e)) => {
                self.outboxes.error(socket, stream, 400, format!("bad session envelope: {e}"));
                return None;
            }
            _ => {
                self.outboxes.error(socket, stream, 400, "a session's stream carries binary envelopes only".into());
                return None;
            }
        };
        match env {
            Envelope::Data { text, seq, ack, payload } => {
                self.sessions.acknowledge(session, ack);
                let kind = if text { FrameKind::Text } else { FrameKind::Binary };
                self.sessions.take(session, seq).then(|| Msg::of_frame(kind, payload))
            }
            Envelope::Ack { ack } => {
                self.sessions.acknowledge(session, ack);
                None
            }
            Envelope::Welcome { .. } | Envelope::Ping(_) | Envelope::Pong(_) => {
                self.outboxes.error(socket, stream, 400, "a client sends data and acks only".into());
                None
            }
        }
    }

    /// An `Open` that carries a session (PROTOCOL.md §14.2): it goes on, begins anew, or
    /// is refused.
    fn attach(&mut self, socket: SocketId, client: Client, attach: Attach, now: u64) {
        let (id, stream) = (attach.session, client.stream);
        let client = client.with_session(id);
        let stored = self.sessions.get(&id).map(|s| (s.client.clone(), s.resumable(attach.received)));
        match stored {
            Some((old, _))
                if old.identity.subject != client.identity.subject || old.identity.tenant != client.identity.tenant =>
            {
                let why = "session belongs to another caller".into();
                return self.refuse(socket, stream, Refused::Admission, 403, why);
            }
            Some((_, true)) => {
                let before =
                    self.sessions.resume(id, (socket, stream), client.identity, attach.received, &mut self.outboxes);
                if let Some(before) = before.filter(|b| *b != (socket, stream)) {
                    self.leave(before, now);
                }
                if let Some(resumed) = self.sessions.get(&id).map(|s| s.client.clone()) {
                    self.tables.insert(socket, resumed);
                }
                return;
            }
            Some((old, false)) => {
                // Too late: what it missed is gone. It ends, and begins anew under its id.
                if let Some(before) = self.sessions.get(&id).and_then(|s| s.at) {
                    self.leave(before, now);
                }
                self.sessions.counters.expired += 1;
                self.end(&old, SESSION_EXPIRED.0.get(), SESSION_EXPIRED.1, now);
                self.settle(now);
            }
            None => {}
        }
        self.sessions.begin(client.clone(), (socket, stream));
        let welcome = Envelope::Welcome { resumed: false, ack: 0 }.encode();
        self.outboxes.push(socket, FrameKind::Binary, stream, &welcome);
        match self.call(socket, None, Some(&client), now, |app, c, out| app.on_open(c, out)) {
            Some(Ok(())) => {
                self.counters.opened += 1;
                self.tables.insert(socket, client);
            }
            Some(Err(refusal)) => {
                self.sessions.end(id);
                self.refuse(socket, stream, Refused::App, refusal.code, refusal.message);
            }
            None => {}
        }
    }

    /// A session moved off `(socket, stream)`: the stream is forgotten, and told so
    /// unless its socket is handing over (its streams are re-opened elsewhere).
    fn leave(&mut self, (socket, stream): (SocketId, StreamId), now: u64) {
        self.tables.remove(socket, stream);
        let handing_over = self
            .tables
            .socket(socket)
            .and_then(|t| t.barrier_at)
            .is_some_and(|at| now.saturating_sub(at) <= crate::HANDOVER_WINDOW_MS);
        if self.tables.socket(socket).is_some() && !handing_over {
            let (code, reason) = SESSION_MOVED;
            let close = Close { code: code.get(), reason: reason.into() };
            self.outboxes.push(socket, FrameKind::Close, stream, &close.encode());
        }
    }

    fn handle_request(&mut self, socket: SocketId, stream: StreamId, payload: &[u8], now: u64) {
        let req = match Request::decode(payload) {
            Ok(r) => r,
            Err(e) => return self.outboxes.error(socket, stream, 400, format!("bad request frame: {e}")),
        };
        let tenant = self.tables.socket(socket).map_or("", |t| t.tenant.as_str());
        let sessions = &mut self.sessions;
        let mut out =
            Out { tables: &self.tables, outboxes: &mut self.outboxes, sessions, opening: None, tenant, now_ms: now };
        let res = respond(&mut self.app, &req, &mut out);
        let res = self.count_request(res);
        self.outboxes.push(socket, FrameKind::Response, stream, &res.encode());
    }
}

/// Why the object refused a stream (the counter it goes under, [`crate::Refusals`]).
#[derive(Debug, Clone, Copy)]
enum Refused {
    Malformed,
    Service,
    Admission,
    Limit,
    App,
    Expired,
}

static EMPTY: Table = Table {
    tenant: String::new(),
    clients: std::collections::BTreeMap::new(),
    barrier_at: None,
    messages_in: 0,
    messages_out: 0,
};
