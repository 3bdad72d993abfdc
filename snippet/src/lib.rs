//! snippet-proxy's edge function. See the README for what it does and RUNTIME.md for
//! the workerd rules that shape it.
//!
//! The fetch handler is exported by hand (not `#[event(fetch)]`): each request is a task
//! of the pinned [`executor`], so every poll of it runs in its own request context.
#![deny(missing_docs)]

mod auth;
mod client;
mod cors;
mod crypto;
mod executor;
mod http;
mod js;
mod jwks;
mod site;
mod state;
mod stats;
mod upstream;

use mux_core::auth::Need;
use mux_core::backend::Reach;
use mux_core::keeper::Holder;
use mux_core::log::{Level, Line};
use mux_core::tenant::{self, Endpoint, Routed};
use mux_core::Here;
use wasm_bindgen::prelude::*;

/// The Worker's fetch handler (called by worker-build's shim with `env` and `ctx`).
#[wasm_bindgen]
pub fn fetch(req: web_sys::Request, env: JsValue, ctx: JsValue) -> js_sys::Promise {
    let done = js::with_resolvers();
    let promise = done.promise();
    executor::spawn(async move {
        let response = match route(req, &env, &ctx).await {
            Ok(r) => JsValue::from(r),
            Err(e) => {
                let why = format!("request failed: {}", js::describe(&e));
                state::with(|s| s.mux.note_error(why.clone()));
                js::fail(500, "internal error", &why, "").map(JsValue::from).unwrap_or(e)
            }
        };
        done.resolve(&response);
    });
    promise
}

fn var(env: &JsValue, name: &str) -> Option<String> {
    js_sys::Reflect::get(env, &name.into()).ok().and_then(|v| v.as_string())
}

/// The first configuration var that is set to something other than a string (wrangler
/// allows JSON values): reading it as "unset" could silently switch a check off.
fn non_string_var(env: &JsValue) -> Option<&'static str> {
    let mut names = mux_core::auth::AuthConfig::vars().chain(mux_core::Config::VARS.iter().copied()).chain(Reach::VARS);
    names.find(|name| {
        js_sys::Reflect::get(env, &(*name).into()).is_ok_and(|v| !v.is_undefined() && v.as_string().is_none())
    })
}

/// Applies the vars once per isolate (before the first stream exists). Returns the
/// configuration error, if any: every request then answers 500 naming the var.
fn configure(env: &JsValue) -> Option<String> {
    state::with(|s| {
        if s.configured {
            s.mux.count_request();
            return None;
        }
        if let Some(name) = non_string_var(env) {
            return Some(format!("{name} must be a string"));
        }
        s.backend = match backend(env) {
            Ok(b) => b,
            Err(e) => return Some(e),
        };
        let door = match mux_core::auth::AuthConfig::from_vars(|name| var(env, name)) {
            Ok(d) => d,
            Err(e) => return Some(e),
        };
        match mux_core::Config::from_vars(|name| var(env, name)) {
            Ok(cfg) => {
                s.mux = mux_core::Mux::new(mux_core::Config { seed: js::random_u64(), ..cfg });
                s.mux.count_request();
                jwks::configure(&door.remote.urls, door.remote.limits);
                if let Some(line) = &door.skipped_static {
                    js::log(Line::new(Level::Warn, format!("AUTH_JWKS: {line}")));
                }
                s.door = std::rc::Rc::new(door);
                s.configured = true;
                None
            }
            Err(e) => Some(e),
        }
    })
}

/// Where the backends are: `BACKEND_URL` or `BACKEND_BINDING` (a namespace in `env`),
/// and `BACKEND_TOKEN`.
fn backend(env: &JsValue) -> Result<state::Backend, String> {
    let reach = Reach::from_vars(var(env, "BACKEND_URL").as_deref(), var(env, "BACKEND_BINDING").as_deref())?;
    let via = match reach.binding() {
        Some(name) => js::Via::binding(env, name)?,
        None => js::Via::Fetch,
    };
    Ok(state::Backend { reach, via, token: var(env, "BACKEND_TOKEN").unwrap_or_default() })
}

async fn route(req: web_sys::Request, env: &JsValue, ctx: &JsValue) -> Result<web_sys::Response, JsValue> {
    if let Some(e) = configure(env) {
        return js::bad_configuration(&e);
    }
    let url = web_sys::Url::new(&req.url())?;
    let path = url.pathname();
    let method = req.method();
    let test_routes = var(env, "SNIPPET_TEST_ROUTES").as_deref() == Some("1");
    match (method.as_str(), path.as_str()) {
        ("GET", "/" | "/demo.js" | "/demo.css") if site::demo_enabled(var(env, "DEMO_PAGE").as_deref()) => {
            return site::demo(&path)
        }
        ("GET", "/" | "/help") => return js::response(200, "text/plain; charset=utf-8", HELP.as_bytes()),
        ("GET", "/client.js") => return site::client_js(),
        _ => {}
    }
    let routed = tenant::route(&path);
    let (need, tenant) = match (&routed, path.as_str()) {
        (Routed::Tenant(t, _), _) => (Some(Need::Connect), *t),
        // A malformed name never reaches the door or an upstream (answered below, once the
        // origin is known, so an allowed page can read why).
        (Routed::BadTenant, _) => (None, ""),
        // `/__metrics` has what `/__stats` has, so the same door: an operator token, or
        // none with STATS_PUBLIC.
        (Routed::Other, "/__stats" | "/__metrics") if state::with(|s| s.door.stats_public) => (None, ""),
        (Routed::Other, "/__stats" | "/__metrics") => (Some(Need::Admin), ""),
        (Routed::Other, "/__test/warm") if test_routes => (Some(Need::Admin), ""),
        (Routed::Other, _) => return js::json_error(404, "not found; see GET / for the routes"),
    };
    // Cross-site WebSocket hijacking and cross-origin HTTP: a browser's page from an
    // origin not on the list gets nothing, before any token is looked at.
    let origin = req.headers().get("Origin").ok().flatten();
    let door = state::with(|s| s.door.clone());
    if !door.origin_allowed(origin.as_deref(), &url.origin()) {
        return js::json_error(403, "this origin is not allowed (ALLOWED_ORIGINS)");
    }
    if method == "OPTIONS" {
        return cors::preflight(origin.as_deref());
    }
    // Refusals carry CORS headers too: a page on an allowed origin can then tell a refusal
    // (stop and say why) from a network failure (retry).
    let refused = |r: Result<web_sys::Response, JsValue>| r.inspect(|r| cors::decorate(r, origin.as_deref()));
    if routed == Routed::BadTenant {
        return refused(js::json_error(400, protocol::facts::TENANT_RULE));
    }
    let auth::Admitted { identity, caller } = match need {
        None => auth::Admitted { identity: mux_core::Identity::default(), caller: String::new() },
        Some(need) => {
            let websocket = matches!(routed, Routed::Tenant(_, Endpoint::Ws | Endpoint::WsEcho));
            match auth::admit(&door, &req, &url, tenant, need, websocket).await {
                Ok(admitted) => admitted,
                Err(auth::Refusal::Auth(e)) => return refused(js::refuse(&e)),
                Err(auth::Refusal::Server(detail)) => {
                    return refused(js::fail(500, "authentication is misconfigured", &detail, tenant))
                }
            }
        }
    };
    let response = match (method.as_str(), routed) {
        (_, Routed::Tenant(t, e @ (Endpoint::Ws | Endpoint::WsEcho))) => {
            client::upgrade(&req, &url.search(), t, e.service(), identity, &caller)
        }
        ("POST", Routed::Tenant(t, e @ (Endpoint::Rpc | Endpoint::Query))) => {
            http::proxy(req, t, e.service(), ctx, identity, &caller).await
        }
        (_, Routed::Tenant(..)) => js::json_error(405, "method not allowed"),
        ("GET", _) if path == "/__stats" => js::json(200, &stats::render()),
        ("GET", _) if path == "/__metrics" => {
            js::response(200, mux_core::metrics::CONTENT_TYPE, stats::metrics().as_bytes())
        }
        ("GET", _) if path == "/__test/warm" => warm(&url).await,
        _ => js::json_error(405, "method not allowed"),
    }?;
    cors::decorate(&response, origin.as_deref());
    Ok(response)
}

/// The Worker's scheduled handler (a cron trigger in `wrangler.toml`): a keep-warm round.
/// The core picks the tenants and queues a ping on each; this context opens the upstreams
/// that need it (owning them, with `waitUntil`, for at most `OWNER_LIFETIME_MS`) and waits,
/// bounded by `WATCHDOG_MS`, for the answers — holding the core's timer meanwhile if no
/// client does.
#[wasm_bindgen]
pub fn scheduled(_event: JsValue, env: JsValue, ctx: JsValue) -> js_sys::Promise {
    let done = js::with_resolvers();
    let promise = done.promise();
    executor::spawn(async move {
        if let Some(e) = configure(&env) {
            js::log(Line::error(format!("bad configuration: {e}")));
            done.resolve(&JsValue::UNDEFINED);
            return;
        }
        let (round, pinged, before, wait) = state::with(|s| {
            s.rounds = s.rounds.wrapping_add(1);
            let before = s.mux.counters().keep_warm_pongs;
            (s.rounds, s.mux.handle_keep_warm(js::now()), before, s.mux.config().watchdog_ms)
        });
        state::settle(Here::Background, Some(&ctx));
        let until = js::now() + wait;
        let answered = async {
            while js::now() < until && state::with(|s| s.mux.counters().keep_warm_pongs) < before + pinged {
                js::sleep(50.0).await;
            }
        };
        state::holding(Holder::Round(round), Here::Background, Some(ctx.clone()), answered).await;
        js::log(stats::round_summary(round, pinged, before));
        done.resolve(&JsValue::UNDEFINED);
    });
    promise
}

const HELP: &str = "snippet-proxy\n\
GET  /                       the demo room (DEMO_PAGE=off: this text)\n\
GET  /help                   this text\n\
GET  /client.js              the browser client library (an ES module)\n\
GET  /db/{tenant}/ws        WebSocket: JSON-RPC to the tenant's backend over its shared upstream\n\
GET  /db/{tenant}/ws/echo   WebSocket: raw echo service\n\
POST /db/{tenant}/rpc       JSON-RPC over the shared upstream\n\
POST /db/{tenant}/query     {\"sql\": ..., \"params\": [...]} over the shared upstream\n\
(/ws, /ws/echo, /rpc, /query: the same for tenant default)\n\
GET  /__stats                this isolate's counters (JSON; an operator token)\n\
GET  /__metrics              the same for Prometheus (text format 0.0.4; an operator token)\n\
Every route but the first three needs a bearer token: Authorization: Bearer <jwt>,\n\
?access_token=<jwt>, or a Sec-WebSocket-Protocol entry bearer.<jwt>.\n";

/// Test-only (`SNIPPET_TEST_ROUTES=1`): makes `n` wake promises through the executor's
/// real path, to warm V8's promise code before a context check (RUNTIME.md §2).
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
