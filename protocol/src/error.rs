use std::fmt;

/// Why a message, frame or payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The message had no bytes at all.
    Empty,
    /// The message's version byte is not [`crate::VERSION`].
    UnsupportedVersion(u8),
    /// A frame kind byte this version does not define.
    UnknownKind(u8),
    /// The reserved flags byte was not zero.
    ReservedFlags(u8),
    /// A length field exceeds [`crate::MAX_FRAME_PAYLOAD`].
    PayloadTooLarge(usize),
    /// The input ended inside a header, frame or field.
    Truncated {
        /// Bytes the item needed.
        needed: usize,
        /// Bytes there were.
        available: usize,
    },
    /// A field that must be UTF-8 was not.
    InvalidUtf8(&'static str),
    /// A payload had bytes left after its last field.
    TrailingBytes(usize),
    /// A hex-encoded identity had a character outside `[0-9a-f]` or an odd length.
    InvalidHex,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty message"),
            DecodeError::UnsupportedVersion(v) => {
                write!(f, "unsupported protocol version {v} (this side speaks {})", crate::VERSION)
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            DecodeError::ReservedFlags(b) => {
                write!(f, "reserved flags byte is {b:#04x}, must be 0")
            }
            DecodeError::PayloadTooLarge(n) => {
                write!(f, "payload of {n} bytes exceeds {}", crate::MAX_FRAME_PAYLOAD)
            }
            DecodeError::Truncated { needed, available } => {
                write!(f, "truncated: needed {needed} bytes, had {available}")
            }
            DecodeError::InvalidUtf8(field) => write!(f, "field `{field}` is not valid UTF-8"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} bytes after the last field"),
            DecodeError::InvalidHex => write!(f, "not lowercase hex"),
        }
    }
}

impl std::error::Error for DecodeError {}
