//! What the snippet's own responses carry: the headers every one of them has, whatever
//! route made it (the glue's `js::response` sets them, and nothing else builds a
//! response with a body).

/// Headers on every response the snippet makes itself — errors and refusals, `/__stats`,
/// the help text, the static files, preflights, and the backend's answers it relays.
/// `nosniff`: a browser must never second-guess a declared type, so a JSON answer that
/// echoes a caller's text is never run as a script or rendered as a page.
pub const RESPONSE_HEADERS: [(&str, &str); 1] = [("X-Content-Type-Options", "nosniff")];

/// The headers of a response whose body is `content_type` (none when empty, as for a
/// 204): the type, then [`RESPONSE_HEADERS`].
pub fn response_headers(content_type: &str) -> Vec<(&'static str, &str)> {
    let declared = Some(("Content-Type", content_type)).filter(|_| !content_type.is_empty());
    declared.into_iter().chain(RESPONSE_HEADERS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_response_says_nosniff() {
        for content_type in ["application/json", "text/plain; charset=utf-8", "text/html; charset=utf-8", ""] {
            let headers = response_headers(content_type);
            assert!(headers.contains(&("X-Content-Type-Options", "nosniff")), "{content_type:?}: {headers:?}");
            let declared = headers.iter().find(|(name, _)| *name == "Content-Type").map(|(_, v)| *v);
            assert_eq!(declared, Some(content_type).filter(|c| !c.is_empty()));
        }
    }
}
