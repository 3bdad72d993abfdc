//! snippet-proxy's edge function. See the README for what it does and DESIGN.md §2 for
//! the workerd rules that shape it.
//!
//! The fetch handler is exported by hand (not `#[event(fetch)]`): each request is a task
//! of the pinned [`executor`], so every poll of it runs in its own request context.
#![deny(missing_docs)]

mod client;
mod executor;
mod http;
mod js;
mod state;
mod stats;
mod upstream;

use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    type FetchResolvers;
    #[wasm_bindgen(js_namespace = Promise, js_name = withResolvers)]
    fn fetch_resolvers() -> FetchResolvers;
    #[wasm_bindgen(method, getter)]
    fn promise(this: &FetchResolvers) -> js_sys::Promise;
    #[wasm_bindgen(method)]
    fn resolve(this: &FetchResolvers, value: &JsValue);
}

/// The Worker's fetch handler (called by worker-build's shim with `env` and `ctx`).
#[wasm_bindgen]
pub fn fetch(req: web_sys::Request, env: JsValue, ctx: JsValue) -> js_sys::Promise {
    let done = fetch_resolvers();
    let promise = done.promise();
    executor::spawn(async move {
        let response = match route(req, &env, &ctx).await {
            Ok(r) => JsValue::from(r),
            Err(e) => {
                state::with(|s| s.mux.count_error());
                js::log_error(&format!("request failed: {}", js::describe(&e)));
                js::json_error(500, &js::describe(&e)).map(JsValue::from).unwrap_or(e)
            }
        };
        done.resolve(&response);
    });
    promise
}

fn var(env: &JsValue, name: &str) -> Option<String> {
    js_sys::Reflect::get(env, &name.into()).ok().and_then(|v| v.as_string())
}

async fn route(req: web_sys::Request, env: &JsValue, ctx: &JsValue) -> Result<web_sys::Response, JsValue> {
    let test_routes = var(env, "SNIPPET_TEST_ROUTES").as_deref() == Some("1");
    let config_error = state::with(|s| {
        s.requests_handled += 1;
        if let Some(url) = var(env, "BACKEND_URL") {
            s.backend.url = url;
        }
        if let Some(token) = var(env, "BACKEND_TOKEN") {
            s.backend.token = token;
        }
        if s.configured {
            return None;
        }
        // Applied once, before the first stream exists.
        match mux_core::Config::from_vars(|name| var(env, name)) {
            Ok(cfg) => {
                s.mux = mux_core::Mux::new(mux_core::Config { seed: js::random_u64(), ..cfg });
                s.configured = true;
                None
            }
            Err(e) => Some(e),
        }
    });
    if let Some(e) = config_error {
        js::log_error(&format!("bad configuration: {e}"));
        return js::json_error(500, &format!("bad configuration: {e}"));
    }
    let url = web_sys::Url::new(&req.url())?;
    let path = url.pathname();
    let method = req.method();
    match (method.as_str(), path.as_str()) {
        ("GET", "/__stats") => js::json(200, &stats::render()),
        (_, "/ws") => client::upgrade(&req, "/rpc"),
        (_, "/ws/echo") => client::upgrade(&req, "/echo"),
        ("POST", "/rpc" | "/query") => http::proxy(req, &path, ctx).await,
        (_, "/rpc" | "/query") => js::json(405, r#"{"error":"use POST"}"#),
        ("GET", "/__test/warm") if test_routes => warm(&url).await,
        ("GET", "/") => js::response(200, "text/plain; charset=utf-8", HELP.as_bytes()),
        _ => js::json(404, r#"{"error":"not found; see GET / for the routes"}"#),
    }
}

const HELP: &str = "snippet-proxy\n\
GET  /ws        WebSocket: JSON-RPC to the backend over the shared upstream\n\
GET  /ws/echo   WebSocket: raw echo service\n\
POST /rpc       JSON-RPC over the shared upstream\n\
POST /query     {\"sql\": ..., \"params\": [...]} over the shared upstream\n\
GET  /__stats   this isolate's counters (JSON)\n";

/// Test-only (`SNIPPET_TEST_ROUTES=1`): makes `n` wake promises through the executor's
/// real path, to warm V8's promise code before a context check (DESIGN.md §2.3).
async fn warm(url: &web_sys::Url) -> Result<web_sys::Response, JsValue> {
    let search = url.search();
    let n: u64 = search
        .trim_start_matches('?')
        .split('&')
        .find_map(|kv| kv.strip_prefix("n="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let before = executor::wake_promises_created();
    for _ in 0..n {
        executor::yield_now().await;
    }
    let made = executor::wake_promises_created() - before;
    js::json(200, &format!("{{\"wakePromises\":{made}}}"))
}
