//! Streams: one per client WebSocket or HTTP request, each on its tenant's link. What a
//! stream queues for the upstream stays a value until the batch it goes out in is built,
//! so a request that must travel another way is handed back as it came.

use std::collections::VecDeque;

use protocol::{encode_frame, Close, FrameKind, Identity, Open, Request, Response, StreamId};

use crate::link::UpstreamId;
use crate::quota;
use crate::session::Session;

/// A message for the client side of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A text message for a client WebSocket.
    Text(String),
    /// A binary message for a client WebSocket.
    Binary(Vec<u8>),
    /// The stream is over: close the client WebSocket with this code.
    Close(Close),
    /// The HTTP reply.
    Response(Response),
    /// The upstream could not carry this HTTP request and it never left: send it to the
    /// backend directly over HTTP instead.
    Fallback(Request),
    /// The client must be sent away while its stream is still open at the backend (it
    /// went over its reply budget): close the client with `code` and `reason`, and report
    /// the close ([`crate::Mux::handle_client_closed`]) so the backend is told.
    Refused {
        /// WebSocket close code.
        code: u16,
        /// What the client is told (and the backend).
        reason: String,
    },
    /// The WebSocket stream failed in the proxy (upstream lost, refused by the backend):
    /// close the client with `code` and the short `reason`; `detail` is for the log.
    Aborted {
        /// WebSocket close code.
        code: u16,
        /// What the client is told.
        reason: &'static str,
        /// What the operator's log is told.
        detail: String,
    },
    /// The HTTP request failed in the proxy (timeout, upstream lost, refused by the
    /// backend's session): answer `status` with the short `reason`; `detail` is for the log.
    Failed {
        /// HTTP status.
        status: u16,
        /// What the client is told.
        reason: &'static str,
        /// What the operator's log is told.
        detail: String,
    },
}

impl Delivery {
    /// Whether it ends the stream.
    pub(crate) fn is_final(&self) -> bool {
        !matches!(self, Delivery::Text(_) | Delivery::Binary(_) | Delivery::Refused { .. })
    }
}

/// A client WebSocket's part of a stream.
#[derive(Debug)]
pub(crate) struct Client {
    /// The backend service, sent in `Open` (again after a hand-over).
    pub path: String,
    /// The caller, sent in `Open`.
    pub identity: Identity,
    /// Whose connection allowance it holds ([`quota::caller_key`]).
    pub caller: String,
    /// The client's message and byte allowances.
    pub messages: quota::Bucket,
    pub bytes: quota::Bucket,
    /// What it may be sent ([`crate::Config::client_reply_bytes_per_sec`]).
    pub replies: quota::Bucket,
    /// It went over that budget: it is being closed, and nothing more is delivered.
    pub over_budget: bool,
    /// The connection its `Open` went out on (none while it waits to be sent).
    pub on: Option<UpstreamId>,
    /// The session it carries, if its client asked for one (PROTOCOL.md §14).
    pub session: Option<Session>,
}

/// An HTTP request's part of a stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    /// When it times out (504); once `expired`, when its context must have collected its
    /// final delivery.
    pub deadline: u64,
    /// Its deadline passed once: it has its final delivery (a reply or the 504).
    pub expired: bool,
    /// The connection it left on, and when (round-trip samples).
    pub sent: Option<(UpstreamId, u64)>,
}

/// What a stream is.
#[derive(Debug)]
pub(crate) enum Role {
    Client(Client),
    Request(Pending),
}

/// A frame waiting for the upstream, not yet encoded.
#[derive(Debug)]
pub(crate) enum Out {
    /// The client's `Open` (from [`Client::path`], [`Client::identity`] and, for a
    /// session, its position when the frame is encoded).
    Open,
    /// A client message.
    Data { text: bool, payload: Vec<u8> },
    /// The client left.
    Close(Close),
    /// The HTTP request.
    Request(Request),
}

/// Bytes an `Out` is counted for in the queue bounds (its frame, close enough: the
/// identity and the short fields are estimated, the payload is exact).
pub(crate) fn out_size(out: &Out, client: Option<&Client>) -> usize {
    const FIELDS: usize = 64;
    let payload = match out {
        Out::Open => client.map_or(0, |c| {
            let attach = if c.session.is_some() { protocol::session::Attach::LEN } else { 0 };
            c.path.len() + identity_size(&c.identity) + attach
        }),
        Out::Data { payload, .. } => payload.len(),
        Out::Close(c) => 2 + c.reason.len(),
        Out::Request(r) => {
            r.method.len() + r.path.len() + r.content_type.len() + identity_size(&r.identity) + r.body.len()
        }
    };
    protocol::frame_len(payload + FIELDS)
}

fn identity_size(i: &Identity) -> usize {
    i.subject.len() + i.tenant.len() + i.scopes.len()
}

/// One stream.
#[derive(Debug)]
pub(crate) struct Stream {
    pub tenant: String,
    pub role: Role,
    /// Frames waiting for the upstream, oldest first, with their counted size.
    pub outbox: VecDeque<(Out, usize)>,
    pub outbox_bytes: usize,
    /// What the backend sent, waiting for the client side to take it.
    pub inbox: VecDeque<Delivery>,
    /// The client left: drop what arrives; forget the stream once its outbox drains.
    pub detached: bool,
}

impl Stream {
    pub fn is_client(&self) -> bool {
        matches!(self.role, Role::Client(_))
    }

    pub fn client(&self) -> Option<&Client> {
        match &self.role {
            Role::Client(c) => Some(c),
            Role::Request(_) => None,
        }
    }

    /// The request a stream still holds unsent, taken out for a direct fallback.
    pub fn take_unsent_request(&mut self) -> Option<Request> {
        if !matches!(self.role, Role::Request(Pending { sent: None, .. })) {
            return None;
        }
        if !matches!(self.outbox.front(), Some((Out::Request(_), _))) {
            return None;
        }
        match self.outbox.pop_front() {
            Some((Out::Request(r), _)) => Some(r),
            _ => None,
        }
    }
}

/// Encodes `out` of stream `id` as a frame appended to `msg`.
pub(crate) fn encode_out(msg: &mut Vec<u8>, id: StreamId, out: &Out, client: Option<&Client>) -> bool {
    let ok = match out {
        Out::Open => {
            let Some(c) = client else { return false };
            let attach = c.session.as_ref().map(Session::attach);
            let open = Open { path: c.path.clone(), identity: c.identity.clone(), attach };
            encode_frame(msg, FrameKind::Open, id, &open.encode())
        }
        Out::Data { text: true, payload } => encode_frame(msg, FrameKind::Text, id, payload),
        Out::Data { text: false, payload } => encode_frame(msg, FrameKind::Binary, id, payload),
        Out::Close(c) => encode_frame(msg, FrameKind::Close, id, &c.encode()),
        Out::Request(r) => encode_frame(msg, FrameKind::Request, id, &r.encode()),
    };
    ok.is_ok()
}
