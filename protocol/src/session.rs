//! Resumable sessions (PROTOCOL.md §14): what the client library and a backend package
//! say to each other inside one client stream, carried by the snippet.
//!
//! A session stream's messages — binary WebSocket messages at the client, `Binary`
//! frames upstream — are each one **envelope**:
//!
//! ```text
//! envelope = type:u8 body
//!   1 Text     seq:u64 ack:u64 payload      a message (UTF-8 text), both ways
//!   2 Binary   seq:u64 ack:u64 payload      a message (bytes), both ways
//!   3 Ack      ack:u64                      "I have every message up to `ack`", both ways
//!   4 Welcome  flags:u8 ack:u64             backend → client, first on every attach
//!                                           (flags bit 0: resumed; other bits reserved, 0)
//!   5 Ping     opaque                       client → snippet, answered there
//!   6 Pong     the Ping's bytes             snippet → client
//! ```
//!
//! Each side numbers the messages it sends 1, 2, 3, … (`seq`) and tells the other the
//! highest number it has taken in order (`ack`). The backend keeps what it sent until it
//! is acknowledged, so a client that reconnects within [`RESUME_WINDOW_MS`] gets what it
//! missed, in order, before anything new; the client re-sends what the backend's
//! `Welcome` says it has not seen. Each side drops what it has seen already by number.
//!
//! Which stream is a session's is said once, in its `Open`: a v3 `Open` may end with an
//! [`Attach`] (the session id and the client's position).

use std::fmt;

use crate::payload::Reader;
use crate::DecodeError;

/// How long a backend keeps a session whose client went without ending it, waiting for
/// the client to come back: the window mature gateways use (two minutes), long enough
/// for a runtime update, a network change or a snippet restart, short enough that a
/// client that is gone for good costs storage only briefly.
pub const RESUME_WINDOW_MS: u64 = 120_000;

/// Most unacknowledged messages a backend keeps per session; older ones are dropped, and
/// a client that needed them is told its session could not be resumed. A few hundred,
/// as mature gateways keep, covers a two-minute gap of a chatty stream; a client that
/// reads acknowledges long before.
pub const MAX_REPLAY_MESSAGES: usize = 300;

/// Most bytes of unacknowledged messages a backend keeps per session (the same rule):
/// two full batches, so one session cannot grow an object's storage without end.
pub const MAX_REPLAY_BYTES: usize = 512 * 1024;

/// Longest `Ping` body the snippet answers: a client's heartbeat needs a counter, not a
/// payload; a longer one ends the client (1002).
pub const MAX_PING_BYTES: usize = 64;

/// The bytes of a [`SessionId`].
pub const SESSION_ID_BYTES: usize = 16;

/// The fixed part of a `Text`/`Binary` envelope: type, seq, ack.
pub const DATA_HEADER_LEN: usize = 17;

/// One session, named by its client: 128 random bits, so nobody can guess another's.
/// Written as 32 lowercase hex digits (the upgrade's `session` parameter, storage keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId([u8; SESSION_ID_BYTES]);

impl SessionId {
    /// The id made of these bytes.
    pub const fn from_bytes(bytes: [u8; SESSION_ID_BYTES]) -> SessionId {
        SessionId(bytes)
    }

    /// Its bytes.
    pub const fn as_bytes(&self) -> &[u8; SESSION_ID_BYTES] {
        &self.0
    }

    /// Reads the 32 lowercase hex digits of [`SessionId`]'s `Display`.
    pub fn parse(s: &str) -> Option<SessionId> {
        let hex = s.as_bytes();
        if hex.len() != 2 * SESSION_ID_BYTES {
            return None;
        }
        let mut out = [0u8; SESSION_ID_BYTES];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            let (hi, lo) = match pair {
                [hi, lo] => (digit(*hi)?, digit(*lo)?),
                _ => return None,
            };
            *byte = hi << 4 | lo;
        }
        Some(SessionId(out))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// What a v3 `Open` adds for a session stream: the session, and the last message the
/// client has of it (0 = none). The backend replays what follows that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attach {
    /// The session the stream carries.
    pub session: SessionId,
    /// The highest backend message number the client (or, when the snippet re-attaches
    /// by itself, the snippet) has received.
    pub received: u64,
}

impl Attach {
    /// Encoded size: the id and the position.
    pub const LEN: usize = SESSION_ID_BYTES + 8;

    pub(crate) fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.session.0);
        out.extend_from_slice(&self.received.to_be_bytes());
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Attach, DecodeError> {
        let id = r.take(SESSION_ID_BYTES)?;
        let mut session = [0u8; SESSION_ID_BYTES];
        session.copy_from_slice(id);
        Ok(Attach { session: SessionId(session), received: r.u64()? })
    }
}

/// One session message. See the module docs for the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope<'a> {
    /// A message of the application: `text` says whether it was sent as text.
    Data {
        /// Sent as a text message.
        text: bool,
        /// Its number among what its sender sent in this session, from 1.
        seq: u64,
        /// The highest number the sender has received from the other side, in order.
        ack: u64,
        /// The message.
        payload: &'a [u8],
    },
    /// Acknowledges every message up to `ack`.
    Ack {
        /// The position.
        ack: u64,
    },
    /// The backend attached the stream to the session: `resumed` when it continues one
    /// (positions kept), else a new one begins; `ack` is the last client message it has.
    Welcome {
        /// The session went on.
        resumed: bool,
        /// The backend's position.
        ack: u64,
    },
    /// A client's heartbeat, answered by the snippet.
    Ping(&'a [u8]),
    /// The snippet's answer.
    Pong(&'a [u8]),
}

const TEXT: u8 = 1;
const BINARY: u8 = 2;
const ACK: u8 = 3;
const WELCOME: u8 = 4;
const PING: u8 = 5;
const PONG: u8 = 6;

impl<'a> Envelope<'a> {
    /// Appends the encoded envelope to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match *self {
            Envelope::Data { text, seq, ack, payload } => {
                out.reserve(DATA_HEADER_LEN + payload.len());
                out.push(if text { TEXT } else { BINARY });
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&ack.to_be_bytes());
                out.extend_from_slice(payload);
            }
            Envelope::Ack { ack } => {
                out.push(ACK);
                out.extend_from_slice(&ack.to_be_bytes());
            }
            Envelope::Welcome { resumed, ack } => {
                out.push(WELCOME);
                out.push(u8::from(resumed));
                out.extend_from_slice(&ack.to_be_bytes());
            }
            Envelope::Ping(b) | Envelope::Pong(b) => {
                out.push(if matches!(self, Envelope::Ping(_)) { PING } else { PONG });
                out.extend_from_slice(b);
            }
        }
    }

    /// The encoded envelope.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Decodes one envelope. Never panics.
    pub fn decode(buf: &'a [u8]) -> Result<Envelope<'a>, DecodeError> {
        let (&kind, body) = buf.split_first().ok_or(DecodeError::Empty)?;
        let mut r = Reader::new(body);
        let env = match kind {
            TEXT | BINARY => {
                let (seq, ack) = (r.u64()?, r.u64()?);
                return Ok(Envelope::Data { text: kind == TEXT, seq, ack, payload: r.rest() });
            }
            ACK => Envelope::Ack { ack: r.u64()? },
            WELCOME => {
                let flags = match r.take(1)? {
                    [f] if f & !1 == 0 => *f,
                    [f] => return Err(DecodeError::ReservedFlags(*f)),
                    _ => return Err(DecodeError::Truncated { needed: 1, available: 0 }),
                };
                let resumed = flags == 1;
                Envelope::Welcome { resumed, ack: r.u64()? }
            }
            PING => return Ok(Envelope::Ping(body)),
            PONG => return Ok(Envelope::Pong(body)),
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(env)
    }

    /// The `seq` of a data envelope in `buf`, read without decoding the rest (the
    /// snippet notes what it passed on).
    pub fn data_seq(buf: &[u8]) -> Option<u64> {
        match buf {
            [TEXT | BINARY, s @ ..] => Some(u64::from_be_bytes(s.get(..8)?.try_into().ok()?)),
            _ => None,
        }
    }

    /// Whether `buf` is a `Ping` envelope.
    pub fn is_ping(buf: &[u8]) -> bool {
        buf.first() == Some(&PING)
    }
}

/// The `Pong` answering a `Ping` envelope `ping` (its type byte replaced).
pub fn pong_for(ping: &[u8]) -> Vec<u8> {
    let mut out = ping.to_vec();
    if let Some(kind) = out.first_mut() {
        *kind = PONG;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_envelope_has_a_fixed_layout() {
        let data = Envelope::Data { text: true, seq: 1, ack: 258, payload: b"hi" };
        assert_eq!(hex(&data.encode()), "010000000000000001000000000000010268 69".replace(' ', ""));
        assert_eq!(hex(&Envelope::Ack { ack: 7 }.encode()), "030000000000000007");
        assert_eq!(hex(&Envelope::Welcome { resumed: true, ack: 2 }.encode()), "04010000000000000002");
        assert_eq!(hex(&Envelope::Ping(b"\x00\x01").encode()), "050001");
        assert_eq!(pong_for(&Envelope::Ping(b"\x00\x01").encode()), Envelope::Pong(b"\x00\x01").encode());
        assert_eq!(Envelope::data_seq(&data.encode()), Some(1));
        assert_eq!(Envelope::data_seq(&Envelope::Ack { ack: 7 }.encode()), None);
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        assert_eq!(Envelope::decode(b""), Err(DecodeError::Empty));
        assert_eq!(Envelope::decode(b"\x09"), Err(DecodeError::UnknownKind(9)));
        assert!(matches!(Envelope::decode(b"\x01\x00"), Err(DecodeError::Truncated { .. })));
        assert_eq!(Envelope::decode(b"\x03\0\0\0\0\0\0\0\x01\x00"), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(Envelope::decode(b"\x04\x02\0\0\0\0\0\0\0\x01"), Err(DecodeError::ReservedFlags(2)));
    }

    #[test]
    fn session_ids_read_back_and_refuse_anything_else() {
        let id = SessionId::from_bytes([0xab; 16]);
        assert_eq!(SessionId::parse(&id.to_string()), Some(id));
        for bad in [
            "",
            "AB".repeat(16).as_str(),
            "ab".repeat(15).as_str(),
            &"ab".repeat(17),
            &format!("{}zz", "ab".repeat(15)),
        ] {
            assert_eq!(SessionId::parse(bad), None, "{bad}");
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    proptest! {
        #[test]
        fn envelopes_round_trip(kind in 0u8..5, seq: u64, ack: u64, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let env = match kind {
                0 => Envelope::Data { text: true, seq, ack, payload: &payload },
                1 => Envelope::Data { text: false, seq, ack, payload: &payload },
                2 => Envelope::Ack { ack },
                3 => Envelope::Welcome { resumed: seq % 2 == 0, ack },
                _ => Envelope::Ping(&payload),
            };
            let bytes = env.encode();
            prop_assert_eq!(Envelope::decode(&bytes), Ok(env));
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Envelope::decode(&bytes);
            let _ = Envelope::data_seq(&bytes);
        }
    }
}
