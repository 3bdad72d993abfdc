//! `POST /rpc` and `POST /query`: one HTTP request = one stream on the upstream, answered
//! with the backend's status and body. The waiting request holds its own timer, which
//! drives the core's deadline (504) and is the pending I/O that keeps workerd from calling
//! it hung (RUNTIME.md §3). When no upstream can carry a request that has not left yet,
//! it goes to the backend directly over HTTP (a fallback).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use mux_core::{Delivery, Here, Identity, Refused, Request, Route};
use wasm_bindgen::prelude::*;

use crate::js;
use crate::state;

/// How long past its own deadline a waiting request keeps pending I/O (see `hold_for`):
/// ample for a wake from another context to arrive (they are delivered as events, not
/// timed), and short next to anything a client would wait for.
const HOLD_MARGIN_MS: f64 = 2_000.0;

/// Proxies one HTTP request over `tenant`'s upstream on behalf of `identity`, against
/// the allowance of `caller`.
pub async fn proxy(
    req: web_sys::Request,
    tenant: &str,
    path: &str,
    ctx: &JsValue,
    identity: Identity,
    caller: &str,
) -> Result<web_sys::Response, JsValue> {
    // The cheap refusals first: the caller's rate, then the declared size, before any
    // byte of the body is read.
    let (limit, allowed) = state::with(|s| (s.mux.config().max_message_bytes, s.mux.admit_request(caller, js::now())));
    if let Err(e @ Refused::RateLimited { retry_after_ms, .. }) = allowed {
        return js::too_many(&e.to_string(), retry_after_ms);
    }
    let too_large = || js::json_error(413, &format!("body exceeds the limit of {limit} bytes"));
    let declared = req.headers().get("Content-Length").ok().flatten().and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let content_type = req.headers().get("Content-Type").ok().flatten().unwrap_or_default();
    let Some(body) = js::read_body(&req, limit).await? else {
        return too_large();
    };
    let request = Request { method: req.method(), path: path.to_owned(), content_type, identity, body };

    let opened = state::with(|s| s.mux.open_request(tenant, request, js::now()));
    let id = match opened {
        Ok(Route::Stream(id)) => id,
        Ok(Route::Direct(request)) => return fallback(tenant, &request).await,
        Err(Refused::TooLarge { .. }) => return too_large(),
        Err(e @ (Refused::TooManyStreams | Refused::Backpressure | Refused::PoolFull { .. })) => {
            return js::retry_later(&format!("{e}; retry shortly"))
        }
        Err(e) => return js::json_error(500, &e.to_string()),
    };
    // If this context ends before its reply (its client hung up), the core drops this
    // task once the reply has waited a watchdog's bound for it (`AbandonRequest`).
    if let Some(task) = crate::executor::current() {
        state::with(|s| s.request_tasks.insert(id, task));
    }
    state::settle(Here::Request, Some(ctx));

    // Our own timer: the pending I/O that keeps this context alive while it waits, and
    // the core's deadline for it (handled by `settle` when it fires). Another context may
    // handle that deadline first and wake us; the hold covers the moment between our
    // timer firing and that wake arriving.
    let wait = state::with(|s| s.mux.config().request_timeout_ms) as f64;
    js::hold_for(wait + HOLD_MARGIN_MS);
    let mut timer: Option<Pin<Box<dyn Future<Output = ()>>>> = None;
    let reply = poll_fn(|cx| loop {
        if let Poll::Ready(d) = state::poll_delivery(id, cx) {
            return Poll::Ready(d);
        }
        let t = timer.get_or_insert_with(|| Box::pin(js::sleep(wait + 1.0)));
        if t.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        timer = None;
        state::settle(Here::Request, Some(ctx));
    })
    .await;
    state::with(|s| {
        s.stream_wakers.remove(&id);
        s.request_tasks.remove(&id);
    });
    state::settle(Here::Request, Some(ctx));
    match reply {
        Some(Delivery::Response(r)) => js::response(r.status, &r.content_type, &r.body),
        Some(Delivery::Fallback(r)) => fallback(tenant, &r).await,
        Some(Delivery::Failed { status, reason, detail }) => js::fail(status, reason, &detail, tenant),
        Some(_) => {
            let why = "the backend sent a WebSocket frame for an HTTP request";
            state::with(|s| s.mux.note_error(why.to_owned()));
            js::fail(502, "backend protocol error", why, tenant)
        }
        None => js::fail(502, "no reply", "the request's stream ended without a reply", tenant),
    }
}

/// Sends the request to `tenant`'s backend directly over HTTP (the core counted it in
/// `fallbacks` when it decided so).
async fn fallback(tenant: &str, request: &Request) -> Result<web_sys::Response, JsValue> {
    let backend = state::with(|s| s.backend.clone());
    let url = format!("{}{}", backend.reach.http_base(tenant), request.path);
    match js::post(
        (&backend.via, tenant),
        &url,
        &backend.token,
        &request.identity,
        &request.content_type,
        &request.body,
    )
    .await
    {
        Ok(res) => Ok(res),
        Err(e) => {
            let why = format!("no upstream, and direct HTTP to {url} failed: {e}");
            state::with(|s| s.mux.note_error(why.clone()));
            js::fail(502, "backend unreachable", &why, tenant)
        }
    }
}
