//! How the object's mux sockets are kept in its synchronous storage, so that they
//! survive hibernation (PROTOCOL.md §8). One key per fact, written as it changes:
//!
//! | key | value |
//! |---|---|
//! | `mux/{socket}` | the tenant the socket serves (UTF-8) |
//! | `mux/{socket}/barrier` | when its last hand-over barrier arrived (ms, u64 big-endian) |
//! | `mux/{socket}/{stream:010}` | a client: service byte + identity ([`Client::encode`]) |
//! | `mux/{socket}/{stream:010}/origin` | the socket an adopted client first opened on |
//!
//! | `sess/{session}` | a session's summary (positions, where it is attached, its client), written when it begins, attaches or detaches |
//! | `sess/log/{n:020}` | one journal record per input: sessions' new positions and the messages sent, each payload once (`sessions/journal.rs`) |
//!
//! Stream ids are zero-padded so that keys list in id order. The core says what to write
//! ([`crate::Action::Put`], [`crate::Action::Delete`]); the glue only carries it out and,
//! after a wake, hands every row back to [`crate::Object::restore`].

use protocol::session::SessionId;
use protocol::StreamId;

use crate::ids::SocketId;

/// Every key of the mux sockets starts with this.
pub const SOCKET_PREFIX: &str = "mux/";

/// The key of socket `socket`'s tenant.
pub(crate) fn socket_key(socket: SocketId) -> String {
    format!("{SOCKET_PREFIX}{socket}")
}

/// The key of socket `socket`'s last barrier time.
pub(crate) fn barrier_key(socket: SocketId) -> String {
    format!("{SOCKET_PREFIX}{socket}/barrier")
}

/// The key of stream `stream`'s client on socket `socket`.
pub(crate) fn stream_key(socket: SocketId, stream: StreamId) -> String {
    format!("{SOCKET_PREFIX}{socket}/{:010}", stream.0)
}

/// The key of the origin of stream `stream`'s client on socket `socket` (only for a
/// client adopted from another socket).
pub(crate) fn origin_key(socket: SocketId, stream: StreamId) -> String {
    format!("{}/origin", stream_key(socket, stream))
}

/// What one stored row is, by its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Row {
    Tenant(SocketId),
    Barrier(SocketId),
    Client(SocketId, StreamId),
    Origin(SocketId, StreamId),
    /// Under a socket's prefix but nothing this version writes: deleted with the socket.
    Other(SocketId),
}

impl Row {
    /// The socket the row belongs to.
    pub(crate) fn socket(&self) -> SocketId {
        match *self {
            Row::Tenant(s) | Row::Barrier(s) | Row::Client(s, _) | Row::Origin(s, _) | Row::Other(s) => s,
        }
    }

    /// The row a key names; `None` for keys outside [`SOCKET_PREFIX`] or without a
    /// socket id (the application's own rows).
    pub(crate) fn of(key: &str) -> Option<Row> {
        let rest = key.strip_prefix(SOCKET_PREFIX)?;
        let mut parts = rest.split('/');
        let socket = SocketId::parse(parts.next()?)?;
        let stream = |s: &str| (s.len() == 10).then(|| s.parse().ok().map(StreamId)).flatten();
        Some(match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => Row::Tenant(socket),
            (Some("barrier"), None, _) => Row::Barrier(socket),
            (Some(s), None, _) => stream(s).map_or(Row::Other(socket), |id| Row::Client(socket, id)),
            (Some(s), Some("origin"), None) => stream(s).map_or(Row::Other(socket), |id| Row::Origin(socket, id)),
            _ => Row::Other(socket),
        })
    }
}

/// Every key of the sessions (PROTOCOL.md §14) starts with this.
pub const SESSION_PREFIX: &str = "sess/";

/// The key of a session's summary.
pub(crate) fn session_key(id: SessionId) -> String {
    format!("{SESSION_PREFIX}{id}")
}

/// The key of journal record `n` (zero-padded, so they list in order).
pub(crate) fn record_key(n: u64) -> String {
    format!("{SESSION_PREFIX}log/{n:020}")
}

/// What one stored session row is, by its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionRow {
    Summary(SessionId),
    Record(u64),
}

impl SessionRow {
    pub(crate) fn of(key: &str) -> Option<SessionRow> {
        let rest = key.strip_prefix(SESSION_PREFIX)?;
        if let Some(n) = rest.strip_prefix("log/") {
            return (n.len() == 20).then(|| n.parse().ok().map(SessionRow::Record)).flatten();
        }
        SessionId::parse(rest).map(SessionRow::Summary)
    }
}

/// A barrier time as stored.
pub(crate) fn encode_time(ms: u64) -> Vec<u8> {
    ms.to_be_bytes().to_vec()
}

/// A stored barrier time; `None` if malformed.
pub(crate) fn decode_time(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_reads_back_as_its_row() {
        let s = SocketId::from_bits(0xabc);
        let id = StreamId(42);
        assert_eq!(Row::of(&socket_key(s)), Some(Row::Tenant(s)));
        assert_eq!(Row::of(&barrier_key(s)), Some(Row::Barrier(s)));
        assert_eq!(Row::of(&stream_key(s, id)), Some(Row::Client(s, id)));
        assert_eq!(Row::of(&origin_key(s, id)), Some(Row::Origin(s, id)));
        assert_eq!(stream_key(s, id), "mux/000000000abc/0000000042");
        assert_eq!(Row::of("mux/000000000abc/42"), Some(Row::Other(s)));
        assert_eq!(Row::of("mux/000000000abc/0000000042/x"), Some(Row::Other(s)));
        assert_eq!(Row::of("mux/nope"), None);
        assert_eq!(Row::of("wakes"), None);
        assert_eq!(decode_time(&encode_time(123_456)), Some(123_456));
        let session = SessionId::from_bytes([0xab; 16]);
        assert_eq!(SessionRow::of(&session_key(session)), Some(SessionRow::Summary(session)));
        assert_eq!(SessionRow::of(&record_key(7)), Some(SessionRow::Record(7)));
        assert_eq!(SessionRow::of("sess/nope"), None);
        assert_eq!(SessionRow::of("sess/log/7"), None);
        assert_eq!(SessionRow::of(&format!("{}/7", session_key(session))), None);
        assert_eq!(decode_time(b"short"), None);
    }
}
