//! `test-client load --session`: a load client that speaks the client library's session
//! (PROTOCOL.md §14) — the upgrade names a session, every message travels as a numbered
//! envelope carrying what was received, and the backend's envelopes are unwrapped — so
//! the benchmark can set the cost of sessions against the same run without them.

use protocol::session::{Envelope, SessionId};
use tokio_tungstenite::tungstenite::Message;

/// One client's session: its id and both positions.
#[derive(Debug)]
pub(crate) struct Session {
    id: SessionId,
    sent: u64,
    received: u64,
    /// The backend's `Welcome` arrived: the path is up.
    pub(crate) welcomed: bool,
}

/// What one message from the backend was.
pub(crate) enum Incoming {
    /// An application message, unwrapped.
    Message(Message),
    /// A message already received (a replay after a resume): dropped.
    Duplicate,
    /// Something the session itself needs (a Welcome, an Ack, a Pong).
    Control,
    /// Not an envelope.
    Invalid,
}

impl Session {
    pub(crate) fn new() -> Session {
        Session { id: SessionId::from_bytes(fastrand::u128(..).to_be_bytes()), sent: 0, received: 0, welcomed: false }
    }

    /// `url` with the session's upgrade parameters.
    pub(crate) fn url(&self, url: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}session={}&received={}", self.id, self.received)
    }

    /// `msg` as the session's next envelope.
    pub(crate) fn wrap(&mut self, msg: Message) -> Message {
        self.sent += 1;
        let (text, payload) = match &msg {
            Message::Text(t) => (true, t.as_bytes()),
            Message::Binary(b) => (false, &b[..]),
            _ => return msg,
        };
        let env = Envelope::Data { text, seq: self.sent, ack: self.received, payload };
        Message::Binary(env.encode().into())
    }

    /// Reads one message from the backend.
    pub(crate) fn unwrap(&mut self, msg: &Message) -> Incoming {
        let Message::Binary(b) = msg else { return Incoming::Invalid };
        match Envelope::decode(b) {
            Ok(Envelope::Data { text, seq, payload, .. }) => {
                if seq != self.received + 1 {
                    return Incoming::Duplicate;
                }
                self.received = seq;
                Incoming::Message(match (text, std::str::from_utf8(payload)) {
                    (true, Ok(t)) => Message::Text(t.into()),
                    _ => Message::Binary(payload.to_vec().into()),
                })
            }
            Ok(Envelope::Welcome { .. }) => {
                self.welcomed = true;
                Incoming::Control
            }
            Ok(_) => Incoming::Control,
            Err(_) => Incoming::Invalid,
        }
    }
}
