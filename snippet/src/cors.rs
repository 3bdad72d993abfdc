//! CORS for the HTTP routes (the origin itself was already checked against
//! `ALLOWED_ORIGINS` by the router: only allowed origins reach here).

use wasm_bindgen::JsValue;

/// How long a browser may cache a preflight answer (seconds): fewer OPTIONS round trips,
/// short enough that a changed allow-list takes effect within minutes.
const PREFLIGHT_MAX_AGE_SECS: &str = "600";

/// Answers a preflight `OPTIONS` request: 204 with what a page may send.
pub fn preflight(origin: Option<&str>) -> Result<web_sys::Response, JsValue> {
    let res = crate::js::response(204, "", b"")?;
    let h = res.headers();
    if let Some(origin) = origin {
        h.set("Access-Control-Allow-Origin", origin)?;
        h.set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")?;
        h.set("Access-Control-Allow-Headers", "Authorization, Content-Type")?;
        h.set("Access-Control-Max-Age", PREFLIGHT_MAX_AGE_SECS)?;
        h.set("Vary", "Origin")?;
    }
    Ok(res)
}

/// Lets the page at `origin` read `res` (no-op without an `Origin`, and for upgrades).
pub fn decorate(res: &web_sys::Response, origin: Option<&str>) {
    let Some(origin) = origin else { return };
    if res.status() == 101 {
        return;
    }
    let h = res.headers();
    let _ = h.set("Access-Control-Allow-Origin", origin);
    let _ = h.set("Access-Control-Expose-Headers", "Retry-After, WWW-Authenticate, X-Request-Id");
    let _ = h.append("Vary", "Origin");
}
