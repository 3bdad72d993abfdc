//! Names of the object's mux sockets and of its clients.

use std::fmt;

use protocol::StreamId;

/// One of the object's mux sockets (one snippet isolate's upstream). Random, 48 bits: ids
/// only need to differ among one object's sockets, and 48 bits make a collision among
/// even thousands negligible. Written as 12 lowercase hex digits in storage keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketId(u64);

impl SocketId {
    /// Bits in an id.
    pub const BITS: u32 = 48;

    /// The id made of the low 48 bits of `bits` (the glue passes random bits; tests pass
    /// small numbers).
    pub fn from_bits(bits: u64) -> SocketId {
        SocketId(bits & ((1 << Self::BITS) - 1))
    }

    /// [`SocketId::from_bits`] in a constant (tests).
    #[cfg(test)]
    pub(crate) const fn from_bits_const(bits: u64) -> SocketId {
        SocketId(bits & ((1 << Self::BITS) - 1))
    }

    /// Its bits (storage).
    pub(crate) fn bits(&self) -> u64 {
        self.0
    }

    /// Reads the 12 lowercase hex digits of [`SocketId`]'s `Display`.
    pub fn parse(s: &str) -> Option<SocketId> {
        let lower_hex = s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        lower_hex.then(|| u64::from_str_radix(s, 16).ok()).flatten().map(SocketId)
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012x}", self.0)
    }
}

/// One client of the application, stable from its first `Open` to its real close: the
/// socket it first opened on and its stream id there. A hand-over re-opens the same
/// stream id on another socket (PROTOCOL.md §5.2) and the client keeps its id. Unique
/// among the object's clients (a stream id alone is unique on its socket only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId {
    origin: SocketId,
    stream: StreamId,
}

impl ClientId {
    pub(crate) fn new(origin: SocketId, stream: StreamId) -> ClientId {
        ClientId { origin, stream }
    }

    /// The socket the client first opened on.
    pub(crate) fn origin(&self) -> SocketId {
        self.origin
    }

    /// Its stream id, on every socket it is ever on: a hand-over re-opens the same id.
    pub(crate) fn stream(&self) -> StreamId {
        self.stream
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.origin, self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_ids_read_back_and_refuse_anything_else() {
        let id = SocketId::from_bits(0xdead_beef_cafe_f00d);
        assert_eq!(id.to_string(), "beefcafef00d");
        assert_eq!(SocketId::parse("beefcafef00d"), Some(id));
        for bad in ["BEEFCAFEF00D", "beefcafef00", "beefcafef00d0", "+eefcafef00d", ""] {
            assert_eq!(SocketId::parse(bad), None, "{bad}");
        }
        let client = ClientId::new(SocketId::from_bits(10), StreamId(7));
        assert_eq!(client.to_string(), "00000000000a:7");
    }
}
