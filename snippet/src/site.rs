//! What the snippet serves to browsers besides the proxy: the client library at
//! `/client.js` (the package's file in `client/`, byte for byte, so a page imports it
//! with no build step) and the demo room at `/`, with its script at `/demo.js` and its
//! styles at `/demo.css` (`DEMO_PAGE=off` serves the route list at `/` instead, and not
//! the other two). All static text compiled into the wasm: no binding, no storage.

use mux_core::site::{demo_file, DEMO_CSP};
use wasm_bindgen::JsValue;

use crate::js;

/// The client library, as published in `client/`.
const CLIENT_JS: &str = include_str!("../../client/snippet-proxy-client.js");

/// How long browsers and caches may keep the files: short, so a deploy shows within
/// minutes, long enough that a page's reloads do not fetch them again.
const CACHE_CONTROL: &str = "public, max-age=300";

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

/// `GET /`, `/demo.js` and `/demo.css`: the demo room, under its policy (`DEMO_CSP`: its
/// own origin's files only, no inline code). The page reads its token from the URL's
/// fragment, which the browser never sends, so no token reaches a log through it.
pub fn demo(path: &str) -> Result<web_sys::Response, JsValue> {
    let Some(file) = demo_file(path) else {
        return js::json_error(404, "not found; see GET /help for the routes");
    };
    let res = js::response(200, file.content_type, file.body.as_bytes())?;
    let h = res.headers();
    h.set("Cache-Control", CACHE_CONTROL)?;
    h.set("Content-Security-Policy", DEMO_CSP)?;
    h.set("Referrer-Policy", "no-referrer")?;
    Ok(res)
}
