//! What the snippet's own responses carry: the headers every one of them has, whatever
//! route made it (the glue's `js::response` sets them, and nothing else builds a
//! response with a body); and the demo room's files with the policy they are served
//! under, kept here so a native test can hold the page to its policy.

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

/// A file served as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticFile {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its text.
    pub body: &'static str,
}

/// The demo room's policy: scripts, styles and connections from its own origin only — no
/// inline code of any kind, so markup that slipped into the page could run nothing and
/// restyle nothing — and no framing, forms or `<base>`.
pub const DEMO_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                            img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The demo room's page (its script imports `/client.js`).
const DEMO_HTML: &str = include_str!("../../static/demo.html");
/// The page's script: a file of its own rather than inline, so [`DEMO_CSP`] needs neither
/// 'unsafe-inline' nor a hash that would have to be kept in step with the script by hand.
const DEMO_JS: &str = include_str!("../../static/demo.js");
/// The page's styles, a file of their own for the same reason.
const DEMO_CSS: &str = include_str!("../../static/demo.css");

/// The demo room's file at `path`: the page at `/`, its script and its styles.
pub fn demo_file(path: &str) -> Option<StaticFile> {
    let (content_type, body) = match path {
        "/" => ("text/html; charset=utf-8", DEMO_HTML),
        "/demo.js" => ("text/javascript; charset=utf-8", DEMO_JS),
        "/demo.css" => ("text/css; charset=utf-8", DEMO_CSS),
        _ => return None,
    };
    Some(StaticFile { content_type, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy's value for `directive`.
    fn directive(name: &str) -> Option<&'static str> {
        DEMO_CSP.split(';').map(str::trim).find_map(|d| d.strip_prefix(name)?.strip_prefix(' '))
    }

    /// The names of the attributes in `html`'s tags (a scan good enough for this page).
    fn attribute_names(html: &str) -> Vec<String> {
        let mut names = Vec::new();
        for tag in html.split('<').skip(1).filter_map(|t| t.split_once('>').map(|(inside, _)| inside)) {
            for (before, _) in tag.match_indices('=').map(|(i, _)| tag.split_at(i)) {
                let name = before.rsplit(char::is_whitespace).next().unwrap_or_default();
                if before.len() > name.len() {
                    names.push(name.to_ascii_lowercase());
                }
            }
        }
        names
    }

    #[test]
    fn the_demo_policy_allows_no_inline_code() {
        assert!(!DEMO_CSP.contains("unsafe"), "{DEMO_CSP}");
        assert_eq!(directive("script-src"), Some("'self'"));
        assert_eq!(directive("style-src"), Some("'self'"));
        assert_eq!(directive("default-src"), Some("'none'"));
        assert_eq!(directive("frame-ancestors"), Some("'none'"));
    }

    /// What the policy forbids, the page does not need: every script and stylesheet is
    /// a file served beside it, and no markup carries code or styles of its own.
    #[test]
    fn the_demo_page_needs_nothing_its_policy_forbids() {
        let html = DEMO_HTML.to_ascii_lowercase();
        assert!(!html.contains("<style"), "an inline stylesheet");
        assert!(!html.contains("javascript:"), "a javascript: URL");
        for script in html.split("<script").skip(1) {
            let (tag, rest) = script.split_once('>').unwrap_or_default();
            assert!(tag.contains(" src=\""), "an inline script: <script{tag}>");
            assert!(rest.starts_with("</script>"), "a script with a body beside its src");
        }
        for name in attribute_names(DEMO_HTML) {
            assert!(name != "style" && !name.starts_with("on"), "an inline {name} attribute");
        }
        for (path, kind) in [("/demo.js", "javascript"), ("/demo.css", "css")] {
            assert!(DEMO_HTML.contains(&format!("\"{path}\"")), "the page loads {path}");
            let file = demo_file(path).expect("served");
            assert!(file.content_type.starts_with(&format!("text/{kind}")), "{path}: {}", file.content_type);
        }
        assert!(attribute_names("<p id=\"a\" onclick=\"x()\" style=\"c\">").contains(&"onclick".to_owned()));
    }

    /// The script writes every string with `textContent`, and asks the policy for no
    /// `eval`-like code (which it forbids without 'unsafe-eval').
    #[test]
    fn the_demo_script_neither_writes_markup_nor_evaluates_text() {
        for risky in [".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
            assert!(!DEMO_JS.contains(risky), "{risky}");
        }
        assert!(DEMO_JS.contains("textContent"));
        assert_eq!(demo_file("/"), Some(StaticFile { content_type: "text/html; charset=utf-8", body: DEMO_HTML }));
        assert_eq!(demo_file("/client.js"), None, "the client library is the glue's, served to any origin");
    }

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
