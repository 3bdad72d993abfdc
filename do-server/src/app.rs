//! What the application sees: clients and their messages, never frames.

use protocol::session::SessionId;
use protocol::{FrameKind, Identity, Request, Response, StreamId};

use crate::ids::{ClientId, SocketId};
use crate::out::Out;

/// Most services an application may declare: a stream's service is stored as one byte
/// (its position in [`App::SERVICES`] plus one, 0 meaning none), so the storage form of
/// a stream table stays what it has always been.
pub const MAX_SERVICES: usize = u8::MAX as usize;

/// A Durable Object application behind snippet-proxy. Every callback runs synchronously
/// while one input of the object is handled, so replies leave in the order of the frames
/// that caused them (PROTOCOL.md §5.1) — keep it that way: no awaiting in here.
///
/// The application sees each client once, from its first `Open` to its real close,
/// however many times the snippet hands its upstream over to a new socket in between
/// (the stream is adopted by the new socket: no `on_close`, no `on_open`).
pub trait App {
    /// The services a stream may open, by the path in its `Open` (e.g. `/rpc`). A
    /// stream's service is stored as its position here, so across deploys only ever
    /// append: reordering or removing one turns stored streams into the wrong service.
    /// At most [`MAX_SERVICES`] are reachable.
    const SERVICES: &'static [&'static str];

    /// A client opened a stream to one of [`App::SERVICES`]; its identity has already
    /// been admitted (this tenant, not expired). `Err` refuses it: the snippet closes the
    /// client (`protocol::facts::error_close`).
    fn on_open(&mut self, client: &Client, out: &mut Out<'_>) -> Result<(), Refusal> {
        let _ = (client, out);
        Ok(())
    }

    /// A message from a client whose caller has not expired (an expired one gets 401
    /// and is closed without reaching here). `Err` sends the stream an error, which ends
    /// it for the snippet, and the client closes ([`App::on_close`]).
    fn on_message(&mut self, client: &Client, msg: Msg<'_>, out: &mut Out<'_>) -> Result<(), Refusal>;

    /// One HTTP-like request (the snippet's `POST /rpc` and `/query`, or plain HTTP to the
    /// object through `glue::MuxServer::request`), its caller already admitted. It has no
    /// stream to reply on: the answer is the returned response.
    fn on_request(&mut self, req: &Request, out: &mut Out<'_>) -> Response;

    /// A client is gone for good, with the code and reason of its end: the client's own
    /// close, the app's [`Out::close`], an error the stream was answered with, a second
    /// `Open` of its stream id, or the loss of its socket (when no hand-over took it on
    /// within the grace window). Called once per client. The client is already gone:
    /// sends to it reach nobody.
    fn on_close(&mut self, client: &Client, code: u16, reason: &str, out: &mut Out<'_>) {
        let _ = (client, code, reason, out);
    }
}

/// One client: a stream the snippet opened for one of its callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The stream id on the client's current socket (a hand-over keeps it).
    pub stream: StreamId,
    /// The service it opened, one of [`App::SERVICES`].
    pub service: &'static str,
    /// Who the snippet authenticated (subject, tenant, scopes, expiry).
    pub identity: Identity,
    id: ClientId,
    /// `service`'s storage byte: its position in [`App::SERVICES`] plus one.
    code: u8,
    /// Its session, for a client of the client library (PROTOCOL.md §14): it then
    /// outlives its connections.
    pub(crate) session: Option<SessionId>,
}

impl Client {
    /// The client opening `stream` on `socket` to `path`, if `path` is one of `services`.
    pub(crate) fn open(
        socket: SocketId,
        stream: StreamId,
        path: &str,
        identity: Identity,
        services: &'static [&'static str],
    ) -> Option<Client> {
        let (i, service) = services.iter().enumerate().find(|(_, s)| **s == path)?;
        let code = u8::try_from(i + 1).ok()?;
        Some(Client { stream, service, identity, id: ClientId::new(socket, stream), code, session: None })
    }

    /// Who this client is, the same across hand-overs: what to send to
    /// ([`Out::send`]) and to key per-client state by.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Storage form: `service:u8` (position in the app's services + 1) then the encoded
    /// identity — for backend-do, 1 = `/rpc`, 2 = `/echo`, as it has always stored them.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.code];
        out.extend_from_slice(&self.identity.encode());
        out
    }

    /// Reads [`Client::encode`]'s output; `None` for a service `services` does not have
    /// or a malformed identity.
    pub(crate) fn decode(
        id: ClientId,
        stream: StreamId,
        buf: &[u8],
        services: &'static [&'static str],
    ) -> Option<Client> {
        let (&code, rest) = buf.split_first()?;
        let service = services.get(usize::from(code).checked_sub(1)?)?;
        let identity = Identity::decode(rest).ok()?;
        Some(Client { stream, service, identity, id, code, session: None })
    }

    /// The same client, carrying session `id`.
    pub(crate) fn with_session(self, id: SessionId) -> Client {
        Client { session: Some(id), ..self }
    }

    /// Whether the client has a session: it then survives its connection dropping
    /// (within the resume window), and the application sees it once throughout.
    pub fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// The same client under id `id` (an adopted client's stored origin).
    pub(crate) fn with_id(self, id: ClientId) -> Client {
        Client { id, ..self }
    }

    /// Whether `other` is this client opened again: the same stream id, service and
    /// caller (what the snippet re-sends on the new socket of a hand-over).
    pub(crate) fn same_open(&self, other: &Client) -> bool {
        // A session's client moves by its session (PROTOCOL.md §14), never by this.
        self.session.is_none()
            && self.stream == other.stream
            && self.code == other.code
            && self.identity == other.identity
    }
}

/// One WebSocket message, as the client sent it or as it will receive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message. A `Text` frame that is not UTF-8 (a client's runtime never sends
    /// one) arrives as this; the snippet delivers such text as binary anyway.
    Binary(&'a [u8]),
}

impl<'a> Msg<'a> {
    /// The message's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Msg::Text(s) => s.as_bytes(),
            Msg::Binary(b) => b,
        }
    }

    pub(crate) fn kind(&self) -> FrameKind {
        match self {
            Msg::Text(_) => FrameKind::Text,
            Msg::Binary(_) => FrameKind::Binary,
        }
    }

    pub(crate) fn of_frame(kind: FrameKind, payload: &'a [u8]) -> Msg<'a> {
        match (kind, std::str::from_utf8(payload)) {
            (FrameKind::Text, Ok(text)) => Msg::Text(text),
            _ => Msg::Binary(payload),
        }
    }
}

/// Why the application refused a stream or a message: an `Error` frame on the stream
/// with this HTTP-like code (PROTOCOL.md §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401, 403, 404, 503, …
    pub code: u16,
    /// Goes to the snippet's log, not to the client.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: u16, message: impl Into<String>) -> Refusal {
        Refusal { code, message: message.into() }
    }
}
