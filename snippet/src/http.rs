//! `POST /rpc` and `POST /query`: one HTTP request = one stream on the upstream, answered
//! with the backend's status and body. The waiting request holds its own timer, which
//! drives the core's deadline (504) and is the pending I/O that keeps workerd from calling
//! it hung (RUNTIME.md §3). When no upstream can carry a request that has not left yet,
//! it goes to the backend directly over HTTP (a fallback).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use mux_core::{Delivery, Identity, Refused, Request};
use wasm_bindgen::prelude::*;

use crate::js;
use crate::state;
use crate::upstream;
use mux_core::OwnerKind;

/// Proxies one HTTP request over the shared upstream on behalf of `identity`.
pub async fn proxy(
    req: web_sys::Request,
    path: &str,
    ctx: &JsValue,
    identity: Identity,
) -> Result<web_sys::Response, JsValue> {
    // The cheap refusals first: the caller's rate, then the declared size, before any
    // byte of the body is read.
    let caller = crate::client::caller_key(&req, &identity);
    let (limit, allowed) = state::with(|s| (s.mux.config().max_message_bytes, s.mux.take_request(&caller, js::now())));
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

    let now = js::now();
    let opened = state::with(|s| {
        if s.mux.should_fall_back(now) {
            return Ok(None);
        }
        s.mux.open_http(&request, now).map(Some)
    });
    let id = match opened {
        Ok(Some(id)) => id,
        Ok(None) => return fallback(&request).await,
        Err(Refused::TooLarge { .. }) => return too_large(),
        Err(e @ (Refused::TooManyStreams | Refused::Backpressure)) => {
            return js::retry_later(&format!("{e}; retry shortly"))
        }
        Err(e) => return js::json_error(500, &e.to_string()),
    };
    upstream::ensure(OwnerKind::Http, None, Some(ctx));

    // Our own timer, re-armed for whatever the core's next deadline for us is.
    let mut timer: Option<Pin<Box<dyn Future<Output = ()>>>> = None;
    let reply = poll_fn(|cx| loop {
        if let Poll::Ready(d) = state::poll_delivery(id, cx) {
            return Poll::Ready(d);
        }
        let t = timer.get_or_insert_with(|| {
            let wait = state::with(|s| s.mux.config().request_timeout_ms);
            Box::pin(js::sleep(wait as f64 + 1.0))
        });
        if t.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        timer = None;
        state::with(|s| s.mux.handle_timeout(js::now()));
    })
    .await;
    state::with(|s| {
        s.stream_wakers.remove(&id);
    });
    state::flush();
    match reply {
        Some(Delivery::Response(r)) => js::response(r.status, &r.content_type, &r.body),
        Some(Delivery::Fallback(r)) => fallback(&r).await,
        Some(Delivery::Failed { status, reason, detail }) => js::fail(status, reason, &detail),
        Some(_) => {
            state::with(|s| s.mux.count_error());
            js::fail(502, "backend protocol error", "the backend sent a WebSocket frame for an HTTP request")
        }
        None => js::fail(502, "no reply", "the request's stream ended without a reply"),
    }
}

/// Sends the request to the backend directly over HTTP (counted in `fallbacks`).
async fn fallback(request: &Request) -> Result<web_sys::Response, JsValue> {
    let backend = state::with(|s| {
        s.fallbacks += 1;
        s.backend.clone()
    });
    let url = format!("{}{}", mux_core::http_base(&backend.url), request.path);
    match js::post(&url, &backend.token, &request.identity, &request.content_type, &request.body).await {
        Ok(res) => Ok(res),
        Err(e) => {
            state::with(|s| s.mux.count_error());
            js::fail(502, "backend unreachable", &format!("no upstream, and direct HTTP to {url} failed: {e}"))
        }
    }
}
