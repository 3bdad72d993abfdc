//! Close codes as the object uses them. (Moves to the protocol crate's one table.)

/// The close code and reason the snippet gives a client whose stream got error `code`
/// (401/403: not allowed, 503: busy, else a server error), as the app hears it.
pub(crate) fn ended_by_error(code: u16) -> (u16, &'static str) {
    match code {
        401 | 403 => (1008, "refused by the backend: not allowed"),
        503 => (1013, "refused by the backend: too busy"),
        _ => (1011, "refused by the backend"),
    }
}

/// What a client whose socket went, with no hand-over to take it on, is told it ended with.
pub(crate) const UPSTREAM_LOST: (u16, &str) = (1006, "upstream lost");

/// What a client whose stream id was opened again is told it ended with.
pub(crate) const REPLACED: (u16, &str) = (1000, "replaced by a new Open");

/// A close code the app may have the snippet send: 1000–1003, 1007–1014, 3000–4999; any
/// other becomes 1000.
pub fn sendable_close_code(code: u16) -> u16 {
    match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => code,
        _ => 1000,
    }
}

/// The close code to answer a peer's close with: the same, except the codes a close
/// frame may not carry (1005, 1006, 1015 and anything out of range), which become 1000.
pub fn reciprocal_close_code(code: usize) -> u16 {
    match code {
        1005 | 1006 | 1015 => 1000,
        c => u16::try_from(c).unwrap_or(1000),
    }
}
