//! `POST /rpc` and `POST /query`: one HTTP request = one stream on the upstream, answered
//! with the backend's status and body. The waiting request holds its own timer, which is
//! both its timeout and the pending I/O that keeps workerd from calling it hung.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;

use mux_core::{json_string, Delivery, Refused, Request};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::js;
use crate::state::{self, OwnerKind};
use crate::upstream;

/// How long an HTTP request waits for its reply before a 504.
pub const REQUEST_TIMEOUT_MS: f64 = 30_000.0;

fn error(status: u16, msg: &str) -> Result<web_sys::Response, JsValue> {
    js::json(status, &format!("{{\"error\":{}}}", json_string(msg)))
}

/// Proxies one HTTP request over the shared upstream.
pub async fn proxy(req: web_sys::Request, path: &str) -> Result<web_sys::Response, JsValue> {
    let limit = state::with(|s| s.mux.config().max_message_bytes);
    let declared = req
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return error(413, &format!("body exceeds the limit of {limit} bytes"));
    }
    let content_type = req
        .headers()
        .get("Content-Type")
        .ok()
        .flatten()
        .unwrap_or_default();
    let body = JsFuture::from(req.array_buffer()?).await?;
    let body = js_sys::Uint8Array::new(&body).to_vec();
    let request = Request {
        method: req.method(),
        path: path.to_owned(),
        content_type,
        body,
    };
    let opened = state::with(|s| s.mux.open_http(&request));
    let id = match opened {
        Ok(id) => id,
        Err(Refused::TooLarge { limit, .. }) => {
            return error(413, &format!("body exceeds the limit of {limit} bytes"))
        }
        Err(e @ (Refused::TooManyStreams | Refused::Backpressure)) => {
            let res = error(503, &format!("{e}; retry shortly"))?;
            res.headers().set("Retry-After", "1")?;
            return Ok(res);
        }
        Err(e) => return error(500, &e.to_string()),
    };
    state::with(|s| s.http_proxied += 1);
    upstream::ensure(OwnerKind::Http);

    let mut timer = pin!(js::sleep(REQUEST_TIMEOUT_MS));
    let reply = poll_fn(|cx| {
        let delivered = state::with(|s| match s.mux.poll_delivery(id) {
            Some(d) => Some(Some(d)),
            None if !s.mux.is_open(id) => Some(None),
            None => {
                s.stream_wakers.insert(id, cx.waker().clone());
                None
            }
        });
        if let Some(d) = delivered {
            return Poll::Ready(d);
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    state::with(|s| {
        s.stream_wakers.remove(&id);
    });
    match reply {
        Some(Delivery::Response(r)) => js::response(r.status, &r.content_type, &r.body),
        Some(other) => {
            state::with(|s| s.mux.count_error());
            error(
                502,
                &format!("backend answered an HTTP request with a WebSocket frame: {other:?}"),
            )
        }
        None => {
            state::with(|s| {
                s.mux.client_closed(id, 1000, "timeout");
                s.mux.count_error();
            });
            error(
                504,
                &format!(
                    "no reply from the backend within {} ms",
                    REQUEST_TIMEOUT_MS as u64
                ),
            )
        }
    }
}
