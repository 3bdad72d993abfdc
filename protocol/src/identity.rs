//! Who a stream belongs to: the caller the snippet authenticated, as it travels to the
//! backend in every `Open` and `Request` frame. The backend authorizes each call from
//! this and from nothing the client sent.

use crate::payload::{put_str, Reader};
use crate::DecodeError;

/// The subject of an anonymous caller (admitted only when the snippet's operator set
/// `ALLOW_ANONYMOUS=true`).
pub const ANONYMOUS: &str = "";

/// The tenant value that matches every tenant (an operator's token).
pub const ANY_TENANT: &str = "*";

/// The HTTP header that carries [`Identity::to_hex`] when the snippet reaches the backend
/// over plain HTTP (a fallback). The backend trusts it only together with its own bearer
/// token.
pub const IDENTITY_HEADER: &str = "X-Snippet-Identity";

/// A verified caller.
///
/// Encoded as `subject:str tenant:str scopes:str expires_at:u64` (strings are `len:u16`
/// + UTF-8, the integer big-endian).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Who the caller is (the token's `sub`); [`ANONYMOUS`] (empty) for an anonymous caller.
    pub subject: String,
    /// The tenant the caller may use (the token's `tenant`), or [`ANY_TENANT`].
    pub tenant: String,
    /// Granted scopes, space-separated (OAuth style), e.g. `"read publish"`.
    pub scopes: String,
    /// When the grant ends, in seconds since the Unix epoch; 0 = never.
    pub expires_at: u64,
}

impl Identity {
    /// Whether the caller was admitted without a token.
    pub fn is_anonymous(&self) -> bool {
        self.subject == ANONYMOUS
    }

    /// Whether `scope` is among the granted scopes (exact, case-sensitive match).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.split_ascii_whitespace().any(|s| s == scope)
    }

    /// Whether the identity is for `tenant` (or for every tenant).
    pub fn allows_tenant(&self, tenant: &str) -> bool {
        self.tenant == ANY_TENANT || self.tenant == tenant
    }

    /// Whether the grant has ended at `now_secs` (seconds since the epoch).
    pub fn expired(&self, now_secs: u64) -> bool {
        self.expires_at != 0 && now_secs >= self.expires_at
    }

    pub(crate) fn put(&self, out: &mut Vec<u8>) {
        put_str(out, &self.subject);
        put_str(out, &self.tenant);
        put_str(out, &self.scopes);
        out.extend_from_slice(&self.expires_at.to_be_bytes());
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Identity, DecodeError> {
        Ok(Identity {
            subject: r.str("subject")?,
            tenant: r.str("tenant")?,
            scopes: r.str("scopes")?,
            expires_at: r.u64()?,
        })
    }

    /// The encoded identity on its own.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + self.subject.len() + self.tenant.len() + self.scopes.len());
        self.put(&mut out);
        out
    }

    /// Decodes [`Identity::encode`]'s output; trailing bytes are an error.
    pub fn decode(buf: &[u8]) -> Result<Identity, DecodeError> {
        let mut r = Reader::new(buf);
        let id = Identity::read(&mut r)?;
        r.finish()?;
        Ok(id)
    }

    /// Lowercase hex of [`Identity::encode`]: how the snippet hands the identity to the
    /// backend in a header when a request goes over plain HTTP (a fallback).
    pub fn to_hex(&self) -> String {
        self.encode().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses [`Identity::to_hex`]'s output.
    pub fn from_hex(s: &str) -> Result<Identity, DecodeError> {
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(DecodeError::InvalidHex),
        };
        let bytes = s.as_bytes();
        if !bytes.len().is_multiple_of(2) {
            return Err(DecodeError::InvalidHex);
        }
        let raw: Result<Vec<u8>, DecodeError> = bytes
            .chunks_exact(2)
            .map(|pair| match *pair {
                [hi, lo] => Ok((nibble(hi)? << 4) | nibble(lo)?),
                _ => Err(DecodeError::InvalidHex),
            })
            .collect();
        Identity::decode(&raw?)
    }
}
