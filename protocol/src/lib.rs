//! The frame format spoken on snippet-proxy's multiplexed upstream WebSocket.
//!
//! One upstream WebSocket message (always a *binary* message) is a **batch**:
//!
//! ```text
//! message = version:u8  frame*            (version = VERSION)
//! frame   = kind:u8  flags:u8  stream:u32  len:u32  payload[len]     (big-endian)
//! ```
//!
//! The header is a fixed 10 bytes. `flags` is reserved and must be 0. Stream id 0 is
//! the session itself (session-level errors, pings); every client WebSocket and every
//! HTTP request is its own stream with a non-zero id chosen by the snippet.
//!
//! | kind | name | direction | payload |
//! |------|------|-----------|---------|
//! | 1 | [`FrameKind::Open`] | snippet → backend | [`Open`]: the service path of a WebSocket stream and the caller's [`Identity`] |
//! | 2 | [`FrameKind::Text`] | both | UTF-8 text message |
//! | 3 | [`FrameKind::Binary`] | both | binary message |
//! | 4 | [`FrameKind::Close`] | both | [`Close`]: code + reason; the stream is gone afterwards |
//! | 5 | [`FrameKind::Request`] | snippet → backend | [`Request`]: one whole HTTP request, with the caller's [`Identity`] |
//! | 6 | [`FrameKind::Response`] | backend → snippet | [`Response`]: the one reply to a `Request` |
//! | 7 | [`FrameKind::Error`] | both | [`ErrorFrame`]: code + message (stream 0: session-level) |
//! | 8 | [`FrameKind::Ping`] | both | opaque bytes, answered by a `Pong` with the same bytes |
//! | 9 | [`FrameKind::Pong`] | both | the bytes of the `Ping` it answers |
//!
//! Decoding is a pure function over a complete WebSocket message: it never panics and
//! reports a typed [`DecodeError`] for anything malformed.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// Compiled into the snippet's wasm, where a panic resets the whole instance (RUNTIME.md §5).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

mod error;
pub mod exposition;
pub mod facts;
mod identity;
mod payload;
pub mod session;

pub use error::DecodeError;
pub use identity::{Identity, ANONYMOUS, ANY_TENANT, IDENTITY_HEADER};
pub use payload::{truncate_utf8, Close, ErrorFrame, Open, Request, Response};

/// The protocol version written as the first byte of every upstream message.
///
/// 2: `Open` and `Request` carry the caller's [`Identity`]. 3: an `Open` may end with a
/// session's [`session::Attach`] (PROTOCOL.md §14). Decoders take [`OLDEST_VERSION`] up
/// to this (a v2 message is a v3 message without sessions), so a backend can be
/// upgraded before the snippets in front of it. A backend given another version answers
/// a session-level `Error`; the snippet ends the upstream.
pub const VERSION: u8 = 3;

/// The oldest version decoders accept.
pub const OLDEST_VERSION: u8 = 2;

/// Size of a frame header: kind, flags, stream id, payload length.
pub const HEADER_LEN: usize = 10;

/// Largest upstream message: the runtime closes a WebSocket (1009) that receives a
/// larger one (workerd's default receive limit is 32 MiB), which would end every stream
/// on it. Senders split batches well below this ([`facts::MAX_BATCH_BYTES`]).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// Largest payload a single frame may carry: a message holding only this frame is
/// exactly [`MAX_MESSAGE_BYTES`] (version byte + header + payload).
pub const MAX_FRAME_PAYLOAD: usize = MAX_MESSAGE_BYTES - 1 - HEADER_LEN;

/// Most streams one session may have open at once. The backend refuses an `Open` past
/// it; the snippet never admits more client WebSockets than this (`MAX_CLIENTS`), so a
/// client it upgraded is never refused by the backend afterwards.
pub const MAX_SESSION_STREAMS: usize = 10_000;

/// A stream on the multiplexed connection. `StreamId::SESSION` (0) is the connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u32);

impl StreamId {
    /// The session-level pseudo stream.
    pub const SESSION: StreamId = StreamId(0);
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a frame is. See the table in the crate docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // each variant is documented in the crate-level table
pub enum FrameKind {
    Open = 1,
    Text = 2,
    Binary = 3,
    Close = 4,
    Request = 5,
    Response = 6,
    Error = 7,
    Ping = 8,
    Pong = 9,
}

impl TryFrom<u8> for FrameKind {
    type Error = DecodeError;
    fn try_from(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            1 => FrameKind::Open,
            2 => FrameKind::Text,
            3 => FrameKind::Binary,
            4 => FrameKind::Close,
            5 => FrameKind::Request,
            6 => FrameKind::Response,
            7 => FrameKind::Error,
            8 => FrameKind::Ping,
            9 => FrameKind::Pong,
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }
}

/// One decoded frame, borrowing its payload from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// What the frame is.
    pub kind: FrameKind,
    /// Which stream it belongs to.
    pub stream: StreamId,
    /// The raw payload; decode it with the matching type in this crate.
    pub payload: &'a [u8],
}

/// Encoded size of a frame with a payload of `payload_len` bytes.
pub const fn frame_len(payload_len: usize) -> usize {
    HEADER_LEN + payload_len
}

/// Starts a new batch in `out` (clears it and writes the version byte).
pub fn begin_message(out: &mut Vec<u8>) {
    out.clear();
    out.push(VERSION);
}

/// Appends one frame to a batch started with [`begin_message`].
///
/// Payloads longer than [`MAX_FRAME_PAYLOAD`] are a caller bug; the encoder refuses them
/// rather than writing a frame that every decoder would reject.
pub fn encode_frame(out: &mut Vec<u8>, kind: FrameKind, stream: StreamId, payload: &[u8]) -> Result<(), DecodeError> {
    if payload.len() > MAX_FRAME_PAYLOAD {
        return Err(DecodeError::PayloadTooLarge(payload.len()));
    }
    out.reserve(frame_len(payload.len()));
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&stream.0.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Convenience: a whole message holding exactly one frame.
pub fn single_frame_message(kind: FrameKind, stream: StreamId, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + frame_len(payload.len()));
    begin_message(&mut out);
    // A payload over the cap cannot be framed; the message then holds no frame and the
    // caller's size checks (far below the cap) make this unreachable in practice.
    let _ = encode_frame(&mut out, kind, stream, payload);
    out
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` is empty, and the frame plus the number of bytes it used
/// otherwise. A frame cut short is an error: a WebSocket message is always complete.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, DecodeError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let Some(&[kind, flags, s0, s1, s2, s3, l0, l1, l2, l3]) = buf.get(..HEADER_LEN) else {
        return Err(DecodeError::Truncated { needed: HEADER_LEN, available: buf.len() });
    };
    let kind = FrameKind::try_from(kind)?;
    if flags != 0 {
        return Err(DecodeError::ReservedFlags(flags));
    }
    let stream = StreamId(u32::from_be_bytes([s0, s1, s2, s3]));
    let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
    if len > MAX_FRAME_PAYLOAD {
        return Err(DecodeError::PayloadTooLarge(len));
    }
    let end = HEADER_LEN.checked_add(len).ok_or(DecodeError::PayloadTooLarge(len))?;
    let Some(payload) = buf.get(HEADER_LEN..end) else {
        return Err(DecodeError::Truncated { needed: end, available: buf.len() });
    };
    Ok(Some((Frame { kind, stream, payload }, end)))
}

/// Iterates over the frames of one upstream message. Stops at the first error.
pub struct Frames<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, DecodeError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match decode_frame(self.rest) {
            Ok(None) => None,
            Ok(Some((frame, used))) => {
                self.rest = self.rest.get(used..).unwrap_or_default();
                Some(Ok(frame))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Checks the version byte of a message and returns an iterator over its frames.
pub fn decode_message(msg: &[u8]) -> Result<Frames<'_>, DecodeError> {
    match msg.split_first() {
        None => Err(DecodeError::Empty),
        Some((&(OLDEST_VERSION..=VERSION), rest)) => Ok(Frames { rest, failed: false }),
        Some((&other, _)) => Err(DecodeError::UnsupportedVersion(other)),
    }
}

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
