//! What the snippet serves to browsers besides the proxy: the client library at
//! `/client.js` (the package's file in `client/`, byte for byte, so a page imports it
//! with no build step) and the demo page at `/` (`DEMO_PAGE=off` serves the route list
//! there instead). Both are static text compiled into the wasm: no binding, no storage.

use wasm_bindgen::JsValue;

use crate::js;

/// The client library, as published in `client/`.
const CLIENT_JS: &str = include_str!("../../client/snippet-proxy-client.js");
/// The demo room (plain HTML; its script imports `/client.js`).
const DEMO_HTML: &str = include_str!("../static/demo.html");

/// How long browsers and caches may keep the files: short, so a deploy shows within
/// minutes, long enough that a page's reloads do not fetch them again.
const CACHE_CONTROL: &str = "public, max-age=300";

/// The demo page's policy: its own scripts, styles and connections only; no framing.
/// The inline module script and style need 'unsafe-inline'; they hold no data.
const DEMO_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
                        connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                        frame-ancestors 'none'";

/// Whether `DEMO_PAGE` leaves the demo on (the default; `off`, `false` or `0` turn it off).
pub fn demo_enabled(value: Option<&str>) -> bool {
    !matches!(value.map(str::trim), Some("off" | "false" | "0"))
}

/// `GET /client.js`: readable from any origin (it is public code, sent without
/// credentials), so pages on other sites can import it too.
pub fn client_js() -> Result<web_sys::Response, JsValue> {
    let res = js::response(200, "text/javascript; charset=utf-8", CLIENT_JS.as_bytes())?;
    let h = res.headers();
    h.set("Cache-Control", CACHE_CONTROL)?;
    h.set("Access-Control-Allow-Origin", "*")?;
    Ok(res)
}

/// `GET /`: the demo room. The page reads its token from the URL's fragment, which the
/// browser never sends, so no token reaches a log through this route.
pub fn demo() -> Result<web_sys::Response, JsValue> {
    let res = js::response(200, "text/html; charset=utf-8", DEMO_HTML.as_bytes())?;
    let h = res.headers();
    h.set("Cache-Control", CACHE_CONTROL)?;
    h.set("Content-Security-Policy", DEMO_CSP)?;
    h.set("Referrer-Policy", "no-referrer")?;
    Ok(res)
}
