//! Payloads of the structured frame kinds. Strings are `len:u16` + UTF-8 bytes; integers
//! are big-endian; a trailing body takes the rest of the payload.

use crate::facts::CloseCode;
use crate::session::Attach;
use crate::{DecodeError, Identity};

/// Payload of an [`crate::FrameKind::Open`] frame: a client WebSocket stream begins.
/// Layout: `path:str identity [attach]` — the [`Attach`] only on a session's stream
/// (version 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The backend service the stream talks to, e.g. `/rpc` or `/echo`.
    pub path: String,
    /// The caller the snippet authenticated for this stream.
    pub identity: Identity,
    /// The session this stream carries, for a client of the client library
    /// (PROTOCOL.md §14); `None` for a plain client.
    pub attach: Option<Attach>,
}

/// Payload of a [`crate::FrameKind::Request`] frame: one whole HTTP request.
/// Layout: `method:str path:str content_type:str identity body…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path the client asked for, e.g. `/rpc`.
    pub path: String,
    /// The request's `Content-Type`, empty when absent.
    pub content_type: String,
    /// The caller the snippet authenticated for this request.
    pub identity: Identity,
    /// The request body.
    pub body: Vec<u8>,
}

/// Payload of a [`crate::FrameKind::Response`] frame: the reply to a `Request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The response's `Content-Type`, empty when absent.
    pub content_type: String,
    /// The response body.
    pub body: Vec<u8>,
}

/// Payload of a [`crate::FrameKind::Close`] frame. Codes follow RFC 6455.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// WebSocket close code.
    pub code: u16,
    /// Human-readable reason (at most [`crate::facts::MAX_CLOSE_REASON`] bytes when
    /// forwarded to a WebSocket).
    pub reason: String,
}

/// Payload of a [`crate::FrameKind::Error`] frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// Machine-readable code: an HTTP-like status (400 bad frame, 404 unknown stream, …).
    pub code: u16,
    /// What went wrong.
    pub message: String,
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    // Longer strings are cut at a char boundary: these are paths and short labels.
    let s = truncate_utf8(s, u16::MAX as usize);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::PayloadTooLarge(n))?;
        let out =
            self.buf.get(self.pos..end).ok_or(DecodeError::Truncated { needed: end, available: self.buf.len() })?;
        self.pos = end;
        Ok(out)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        match *self.take(2)? {
            [a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(DecodeError::Truncated { needed: self.pos, available: self.buf.len() }),
        }
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        match *self.take(8)? {
            [a, b, c, d, e, f, g, h] => Ok(u64::from_be_bytes([a, b, c, d, e, f, g, h])),
            _ => Err(DecodeError::Truncated { needed: self.pos, available: self.buf.len() }),
        }
    }
    /// Bytes not read yet.
    pub(crate) fn left(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Fails when bytes are left over after the last field.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len() - self.pos))
        }
    }
    pub(crate) fn str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8(field))
    }
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        out
    }
    fn rest_str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        String::from_utf8(self.rest().to_vec()).map_err(|_| DecodeError::InvalidUtf8(field))
    }
}

impl Open {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.path.len() + 32);
        put_str(&mut out, &self.path);
        self.identity.put(&mut out);
        if let Some(a) = &self.attach {
            a.put(&mut out);
        }
        out
    }
    /// Decodes the payload. After the identity come either nothing or exactly an
    /// [`Attach`]; anything else is [`DecodeError::TrailingBytes`].
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let (path, identity) = (r.str("path")?, Identity::read(&mut r)?);
        let attach = match r.left() {
            0 => None,
            Attach::LEN => Some(Attach::read(&mut r)?),
            _ => None,
        };
        r.finish()?;
        Ok(Open { path, identity, attach })
    }
}

impl Request {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            6 + 32 + self.method.len() + self.path.len() + self.content_type.len() + self.body.len(),
        );
        put_str(&mut out, &self.method);
        put_str(&mut out, &self.path);
        put_str(&mut out, &self.content_type);
        self.identity.put(&mut out);
        out.extend_from_slice(&self.body);
        out
    }
    /// Decodes the payload.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        Ok(Request {
            method: r.str("method")?,
            path: r.str("path")?,
            content_type: r.str("content_type")?,
            identity: Identity::read(&mut r)?,
            body: r.rest().to_vec(),
        })
    }
}

impl Response {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.content_type.len() + self.body.len());
        out.extend_from_slice(&self.status.to_be_bytes());
        put_str(&mut out, &self.content_type);
        out.extend_from_slice(&self.body);
        out
    }
    /// Decodes the payload.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        Ok(Response { status: r.u16()?, content_type: r.str("content_type")?, body: r.rest().to_vec() })
    }
}

impl Close {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.reason.len());
        out.extend_from_slice(&self.code.to_be_bytes());
        out.extend_from_slice(self.reason.as_bytes());
        out
    }
    /// Decodes the payload. An empty payload means 1005 (no status received).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        if buf.is_empty() {
            return Ok(Close { code: CloseCode::NO_STATUS.get(), reason: String::new() });
        }
        let mut r = Reader::new(buf);
        Ok(Close { code: r.u16()?, reason: r.rest_str("reason")? })
    }
}

impl ErrorFrame {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.message.len());
        out.extend_from_slice(&self.code.to_be_bytes());
        out.extend_from_slice(self.message.as_bytes());
        out
    }
    /// Decodes the payload.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        Ok(ErrorFrame { code: r.u16()?, message: r.rest_str("message")? })
    }
}
