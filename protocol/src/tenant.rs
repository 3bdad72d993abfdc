//! Tenant names: which Durable Object a stream belongs to. The snippet takes them from
//! its route (`/db/{tenant}/…`) and puts them in the backend URL; the backend takes them
//! from its own route. Both check them with [`is_valid`], so a name one side accepts the
//! other accepts too.

/// The tenant of the routes without a `/db/{tenant}` prefix.
pub const DEFAULT_TENANT: &str = "default";

/// Longest tenant name: long enough for a UUID or a slug with a prefix, short enough to
/// keep URLs, log lines and the stats document small.
pub const MAX_TENANT_LEN: usize = 64;

/// Whether `name` is a tenant name: 1–[`MAX_TENANT_LEN`] bytes of `[A-Za-z0-9_.-]`, and
/// not `.` or `..` (which a URL would resolve as a path step, not a name). The charset
/// needs no escaping anywhere a name goes: URL paths, JSON, log lines.
pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TENANT_LEN
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_for_charset_length_and_path_steps() {
        for good in ["default", "room-1", "a.b_c", "x", "...", &"x".repeat(MAX_TENANT_LEN)] {
            assert!(is_valid(good), "{good}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "a%2fb", "é", &"x".repeat(MAX_TENANT_LEN + 1)] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
