//! The rules and numbers both ends of the upstream, and every language they are written
//! in, must agree on, stated once: which close codes may be sent and how the others are
//! replaced, the close a backend `Error` gives the client, the close of an expired token,
//! the batch bound, the close reason limit and the tenant-name rule.
//!
//! The snippet, the Rust backends and this crate use these items directly. The
//! JavaScript packages cannot import Rust, so a test of this crate exports them to
//! `protocol/vectors/facts.json` (PROTOCOL.md §13; `BLESS=1 cargo test -p
//! snippet-proxy-protocol facts` rewrites it, a plain run fails when it differs),
//! `scripts/write-facts.mjs` turns that file into their generated modules, and a test in
//! each package fails when its module differs from the file.

/// A WebSocket close code (RFC 6455 §7.4). It holds any `u16`: a peer may send anything,
/// and the runtime reports codes no close frame carries. The methods say what may be done
/// with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: the purpose of the connection is fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint goes away.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1005: the close frame carried no code (reported, never sent).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1008: the peer broke a policy (not allowed, token expired, a rate limit).
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1011: the server failed.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1013: the server is overloaded; try again later.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// The code `code`.
    pub const fn new(code: u16) -> CloseCode {
        CloseCode(code)
    }

    /// The code as a number.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// Whether a close frame may carry this code and the other end accepts it: the codes
    /// RFC 6455 defines for use (1000–1003, 1007–1014) and those for registration and
    /// private use (3000–4999). The rest is reserved or out of range. A client's close
    /// is held to it ([`CloseCode::from_client`]); so is a backend's `Close` frame, which
    /// the snippet hands to the client's socket as it is.
    pub const fn is_allowed(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// Whether this is a code the runtime reports but no close frame carries (RFC 6455
    /// §7.4.1): 1005 no code, 1006 dropped without a close frame, 1015 TLS failure.
    /// Passing one to `close()` is refused.
    pub const fn is_reported_only(self) -> bool {
        matches!(self.0, 1005 | 1006 | 1015)
    }

    /// The code to close a socket with for this one, e.g. to answer a peer's close or to
    /// pass a backend's close on: itself, except that a reported-only code becomes
    /// [`CloseCode::NORMAL`], since `close()` refuses it.
    pub const fn sendable(self) -> CloseCode {
        if self.is_reported_only() {
            CloseCode::NORMAL
        } else {
            self
        }
    }

    /// The code the snippet answers a client's close with, and tells the backend: an
    /// allowed code as it is; 1005 (the client sent none) as [`CloseCode::NORMAL`] and
    /// 1006 (its connection dropped) as [`CloseCode::GOING_AWAY`], which is what they
    /// mean; anything else as [`CloseCode::PROTOCOL_ERROR`], so the backend never sees a
    /// code that is not allowed.
    pub const fn from_client(self) -> CloseCode {
        match self.0 {
            1005 => CloseCode::NORMAL,
            1006 => CloseCode::GOING_AWAY,
            _ if self.is_allowed() => self,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> CloseCode {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The close the snippet gives a client whose stream the backend ended with an `Error`
/// frame of HTTP-like `code`, and the reason it says (the backend's own message goes to
/// the snippet's log, not to the client). The code tells the client what kind of refusal
/// it was: one that retrying cannot change (1008), a busy backend (1013), or a failure
/// (1011). A backend that keeps an application informed tells it the same.
pub const fn error_close(code: u16) -> (CloseCode, &'static str) {
    match code {
        401 | 403 => (CloseCode::POLICY, "refused by the backend: not allowed"),
        503 => (CloseCode::TRY_AGAIN_LATER, "refused by the backend: too busy; retry later"),
        _ => (CloseCode::INTERNAL_ERROR, "refused by the backend"),
    }
}

/// The close of a client whose token expired while it was connected: the snippet (and the
/// reference backend, for its direct sockets) closes it with this, and a client that sees
/// it reconnects at once with a fresh token rather than giving up.
pub const TOKEN_EXPIRED: (CloseCode, &str) = (CloseCode::POLICY, "token expired");

/// What a backend package tells its application a client ended with when the client's
/// socket went and no hand-over took it on (PROTOCOL.md §5.2): 1006, the code a dropped
/// connection reports, since the backend cannot know what the snippet told the client.
pub const CLIENT_LOST: (CloseCode, &str) = (CloseCode::new(1006), "upstream lost");

/// What a backend package tells its application a client ended with when the snippet
/// opened its stream id again on the same socket: a new client takes its place.
pub const CLIENT_REPLACED: (CloseCode, &str) = (CloseCode::NORMAL, "replaced by a new Open");

/// The close a client of the client library sends when it gives up on a connection to
/// come back on another (a heartbeat or handshake timeout): it keeps its session. A
/// browser may only send 1000 and 3000–4999, so the library needs one of those that
/// does not mean "I am leaving".
pub const SESSION_RECONNECTING: (CloseCode, &str) = (CloseCode::new(4000), "reconnecting");

/// Whether a client's close ends its session at once (PROTOCOL.md §14): the codes a
/// client chooses when it means to leave — 1000, and the application's 3000–4999 except
/// [`SESSION_RECONNECTING`]. Any other close (1001 going away, 1006 dropped, a limit of
/// the snippet, an expired token, the library's reconnect) only detaches the session,
/// which then waits [`crate::session::RESUME_WINDOW_MS`] for the client to come back.
pub const fn ends_session(code: CloseCode) -> bool {
    matches!(code.0, 1000 | 3000..=4999) && code.0 != SESSION_RECONNECTING.0 .0
}

/// What a backend package tells its application a session's client ended with when it
/// did not come back within [`crate::session::RESUME_WINDOW_MS`] (or came back too late
/// to be resumed).
pub const SESSION_EXPIRED: (CloseCode, &str) = (CloseCode::new(1006), "session not resumed in time");

/// The close a backend sends (a `Close` frame) to a session's previous stream when the
/// session is attached to a new one: the old connection, usually dead without knowing
/// it, ends; a client that is still there reconnects and resumes.
pub const SESSION_MOVED: (CloseCode, &str) = (CloseCode::NORMAL, "session resumed on another connection");

/// The default bound of a batch: a sender closes a message before adding a frame would
/// take it past this many bytes (version byte included); a single larger frame goes
/// alone. Big enough to amortise the per-message cost, small enough that no stream's
/// frames wait long behind another's. A receiver must accept any batch up to
/// [`crate::MAX_MESSAGE_BYTES`].
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Longest close reason, in bytes: a close frame's payload is at most 125 bytes (RFC 6455
/// §5.5), 2 of them the code. A longer reason makes `close()` fail, so senders cut it at a
/// char boundary ([`crate::truncate_utf8`]).
pub const MAX_CLOSE_REASON: usize = 123;

/// The tenant of the routes without a `/db/{tenant}` prefix.
pub const DEFAULT_TENANT: &str = "default";

/// Longest tenant name: long enough for a UUID or a slug with a prefix, short enough to
/// keep URLs, log lines and the stats document small.
pub const MAX_TENANT_LEN: usize = 64;

/// Names made only of allowed characters that are still not tenant names: a URL would
/// resolve them as a path step.
const PATH_STEPS: [&str; 2] = [".", ".."];

/// The tenant-name rule as a refusal of a bad name states it.
pub const TENANT_RULE: &str = "tenant names are 1-64 characters of [A-Za-z0-9_.-] (not . or ..)";

/// Whether `name` is a tenant name: 1–[`MAX_TENANT_LEN`] bytes of `[A-Za-z0-9_.-]`, and
/// not `.` or `..`. The charset needs no escaping anywhere a name goes: URL paths, JSON,
/// log lines. The snippet checks it on its routes and the backends on theirs, so a name
/// one side accepts the other accepts too.
pub fn is_valid_tenant(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TENANT_LEN
        && !PATH_STEPS.contains(&name)
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests;
