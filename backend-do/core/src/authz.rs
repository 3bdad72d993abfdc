//! What each caller may do. The snippet authenticates a caller and sends its
//! [`Identity`] in the stream's `Open` (or the request's `Request`) frame; the backend
//! decides every call from that identity alone, never from anything in a payload.
//!
//! | scope | grants |
//! |---|---|
//! | `read` | `ping`, `echo`, `whoami`, the raw echo service, and SQL that changes nothing (run in a transaction that is always rolled back) |
//! | `write` | everything `read` grants, and any SQL |
//! | `publish` | `broadcast` |
//! | `admin` | everything, including `stats` |
//!
//! Unknown scopes are ignored here (an application behind the proxy may use its own).

use protocol::Identity;

/// The scopes this backend knows, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Grants(u8);

impl Grants {
    const READ: u8 = 1;
    const WRITE: u8 = 2;
    const PUBLISH: u8 = 4;
    const ADMIN: u8 = 8;

    /// The grants in an identity's scope list, with `admin` ⊇ all and `write` ⊇ `read`.
    pub fn of(identity: &Identity) -> Grants {
        let mut bits = 0;
        for scope in identity.scopes.split_ascii_whitespace() {
            bits |= match scope {
                "read" => Self::READ,
                "write" => Self::WRITE | Self::READ,
                "publish" => Self::PUBLISH,
                "admin" => Self::ADMIN | Self::WRITE | Self::READ | Self::PUBLISH,
                _ => 0,
            };
        }
        Grants(bits)
    }

    /// May read (ping, echo, read-only SQL).
    pub fn read(self) -> bool {
        self.0 & Self::READ != 0
    }
    /// May run any SQL.
    pub fn write(self) -> bool {
        self.0 & Self::WRITE != 0
    }
    /// May broadcast.
    pub fn publish(self) -> bool {
        self.0 & Self::PUBLISH != 0
    }
    /// May see the object's own statistics and bookkeeping.
    pub fn admin(self) -> bool {
        self.0 & Self::ADMIN != 0
    }
}

/// The caller of one call: who, what they may do, and the time of the call.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who the snippet says the caller is.
    pub identity: Identity,
    /// The identity's grants.
    pub grants: Grants,
    /// Now, in seconds since the epoch (to check the identity's expiry).
    pub now_secs: u64,
}

impl Caller {
    /// A caller from an identity, at `now_secs`.
    pub fn new(identity: Identity, now_secs: u64) -> Caller {
        let grants = Grants::of(&identity);
        Caller { identity, grants, now_secs }
    }

    /// Whether the caller's grant has ended.
    pub fn expired(&self) -> bool {
        self.identity.expired(self.now_secs)
    }
}

/// The identity of the operator: a client that presented the backend's own bearer token
/// directly (every tenant, `admin`, no expiry).
pub fn operator() -> Identity {
    Identity { subject: "operator".into(), tenant: protocol::ANY_TENANT.into(), scopes: "admin".into(), expires_at: 0 }
}

/// Why an identity may not open a stream on this tenant's object: admission is the mux
/// server's (the same rule for every stream, request and direct socket).
pub use snippet_proxy_do::check_open;

#[cfg(test)]
mod tests {
    use super::*;

    fn id(scopes: &str) -> Identity {
        Identity { subject: "u".into(), tenant: "t".into(), scopes: scopes.into(), expires_at: 100 }
    }

    #[test]
    fn scopes_imply_what_the_table_says() {
        let g = Grants::of(&id("read"));
        assert!(g.read() && !g.write() && !g.publish() && !g.admin());
        let g = Grants::of(&id("write"));
        assert!(g.read() && g.write() && !g.publish() && !g.admin());
        let g = Grants::of(&id("publish"));
        assert!(!g.read() && g.publish());
        let g = Grants::of(&id("admin"));
        assert!(g.read() && g.write() && g.publish() && g.admin());
        let op = Grants::of(&operator());
        assert!(op.read() && op.write() && op.publish() && op.admin(), "the operator may do everything");
        assert_eq!(Grants::of(&id("  custom  READ Admin ")), Grants::default(), "exact, case-sensitive");
        assert_eq!(Grants::of(&id("")), Grants::default());
    }
}
