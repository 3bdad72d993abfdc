//! Client WebSockets: each is a stream on the upstream. The client's own request
//! context owns its socket: its listeners queue frames in the mux, and its delivery task
//! (woken through its own wake promise) writes what the backend sent.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;

use mux_core::keeper::Holder;
use mux_core::log::Line;
use mux_core::{Delivery, Here, Identity, Refused, StreamId};
use protocol::facts::{CloseCode, TOKEN_EXPIRED};
use wasm_bindgen::prelude::*;

use crate::executor;
use crate::js::{self, BoundListeners};
use crate::state;

/// Handles `GET …/ws` (JSON-RPC service) and `GET …/ws/echo` (raw echo) upgrades for a
/// caller the door admitted to `tenant`, against the allowance of `caller`. `query` (the
/// URL's search) may ask for a session stream (`session` and `received`, PROTOCOL.md §14).
pub fn upgrade(
    req: &web_sys::Request,
    query: &str,
    tenant: &str,
    service: &str,
    identity: Identity,
    caller: &str,
) -> Result<web_sys::Response, JsValue> {
    let is_upgrade = req.headers().get("Upgrade").ok().flatten().is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_upgrade {
        return js::json_error(426, "expected a WebSocket upgrade (Upgrade: websocket)");
    }
    let attach = match mux_core::session::from_query(query) {
        Ok(attach) => attach,
        Err(why) => return js::json_error(400, why),
    };
    // A browser that offers protocols fails unless one is chosen; the token entry never is.
    let offered = req.headers().get("Sec-WebSocket-Protocol").ok().flatten();
    let protocol = offered.as_deref().and_then(mux_core::auth::select_protocol).map(str::to_owned);
    if offered.is_some() && protocol.is_none() {
        return js::json_error(400, "offer a subprotocol besides the bearer.<token> entry, e.g. snippet-proxy");
    }
    let expires_at = identity.expires_at;
    let opened = state::with(|s| s.mux.open_client(tenant, service, identity, caller, attach, js::now()));
    let id = match opened {
        Ok(id) => id,
        Err(Refused::TooManyStreams) => return js::retry_later("too many clients on this isolate; retry shortly"),
        Err(e @ Refused::PoolFull { .. }) => return js::retry_later(&e.to_string()),
        Err(e @ Refused::TooManyConnections { .. }) => return js::too_many(&e.to_string(), 1_000),
        Err(e @ Refused::RateLimited { retry_after_ms, .. }) => return js::too_many(&e.to_string(), retry_after_ms),
        Err(e) => return js::json_error(500, &e.to_string()),
    };
    let (client, server) = match js::websocket_pair() {
        Ok(pair) => pair,
        Err(e) => {
            state::with(|s| s.mux.handle_client_closed(id, 1011, "accept failed", js::now()));
            state::settle(Here::Request, None);
            return js::fail(500, "cannot accept the WebSocket", &e, tenant);
        }
    };
    let listeners = listen(id, &server);
    let here = Here::Client(id);
    let task = executor::spawn(state::holding(
        Holder::Client(id),
        here,
        None,
        deliver(id, tenant.to_owned(), server, listeners, expires_at),
    ));
    state::with(|s| s.client_tasks.insert(id, task));
    state::settle(Here::Client(id), None);
    js::upgrade_response(&client, protocol.as_deref())
}

/// Resolves when the caller's token expires (`expires_at` in epoch seconds; 0 = never).
/// Timers are re-armed in steps, as `setTimeout` takes at most 2³¹−1 ms.
async fn expiry(expires_at: u64) {
    if expires_at == 0 {
        std::future::pending::<()>().await;
    }
    loop {
        let left = (expires_at as f64) * 1000.0 - js::now_ms();
        if left <= 0.0 {
            return;
        }
        js::sleep(left.min(2_147_483_647.0)).await;
    }
}

/// The client went away (or must be sent away): forget its route, tell the backend, wake
/// its delivery task so it ends.
fn detach(id: StreamId, code: u16, reason: &str) {
    let task = state::with(|s| {
        s.mux.handle_client_closed(id, code, reason, js::now());
        s.stream_wakers.remove(&id);
        s.client_tasks.get(&id).copied()
    });
    // Called in the client's own context: polled here, whatever woke it before.
    if let Some(task) = task {
        executor::wake_here(task);
    }
    state::settle(Here::Client(id), None);
}

thread_local! {
    /// Every client socket's listener: bound per socket to its stream (`BoundListeners`).
    static ON_EVENT: Closure<dyn FnMut(u32, u32, web_sys::Event)> = Closure::new(on_event);
}

fn listen(id: StreamId, ws: &web_sys::WebSocket) -> BoundListeners {
    ON_EVENT.with(|f| BoundListeners::attach(ws, f.as_ref().unchecked_ref(), id.0))
}

/// An event of stream `id`'s client socket, of kind `kind` (its index in
/// [`js::SOCKET_EVENTS`]); the socket is the event's target.
fn on_event(kind: u32, id: u32, e: web_sys::Event) {
    let id = StreamId(id);
    match kind {
        0 => js::turn(|| on_message(id, &e)),
        1 => {
            // Reciprocate so the client sees an orderly close (the runtime's close handshake
            // expects the receiving side to answer); a code a client may not send gets 1002.
            let close: &web_sys::CloseEvent = e.unchecked_ref();
            let code = CloseCode::new(close.code()).from_client();
            let reason = if code == CloseCode::PROTOCOL_ERROR { "invalid close code" } else { "" };
            close_target(&e, code.get(), reason);
            detach(id, code.get(), &close.reason());
        }
        _ => detach(id, 1006, "client socket error"),
    }
}

/// Closes the socket an event came from (asked only off the message path: it is two
/// calls out of wasm).
fn close_target(e: &web_sys::Event, code: u16, reason: &str) {
    if let Some(sock) = e.target().and_then(|t| t.dyn_into::<web_sys::WebSocket>().ok()) {
        js::close(&sock, code, reason);
    }
}

/// A client's message: queued for the backend (moved, not copied), or the client is sent
/// away for what it broke.
fn on_message(id: StreamId, event: &web_sys::Event) {
    let limit = state::with(|s| s.mux.config().max_message_bytes);
    let sent = match js::message_data(event.unchecked_ref(), limit) {
        Ok((text, bytes)) => state::with(|s| s.mux.handle_client_message(id, text, bytes, js::now())),
        Err(size) => Err(Refused::TooLarge { size, limit }),
    };
    match sent {
        Ok(()) => state::settle(Here::Client(id), None),
        Err(Refused::UnknownStream) => {}
        Err(Refused::TooLarge { limit, .. }) => {
            close_target(event, 1009, &format!("message too large (limit {limit} bytes)"));
            detach(id, 1009, "message too large");
        }
        Err(e @ Refused::RateLimited { .. }) => {
            close_target(event, 1008, &e.to_string());
            detach(id, 1008, "rate limit exceeded");
        }
        // A session client that breaks the envelope protocol (PROTOCOL.md §14.1).
        Err(e @ Refused::BadEnvelope { .. }) => {
            close_target(event, 1002, &e.to_string());
            detach(id, 1002, "bad session message");
        }
        Err(
            Refused::Backpressure
            | Refused::TooManyStreams
            | Refused::TooManyConnections { .. }
            | Refused::PoolFull { .. }
            | Refused::BadTenant,
        ) => {
            close_target(event, 1013, "upstream queue full; try again later");
            detach(id, 1013, "backpressure");
        }
    }
}

/// The stream's delivery task: writes the backend's messages to the client, in order,
/// until the stream ends, or closes it with 1008 when the caller's token expires. Always
/// polled in the client's own context.
async fn deliver(id: StreamId, tenant: String, ws: web_sys::WebSocket, listeners: BoundListeners, expires_at: u64) {
    let mut expired = pin!(expiry(expires_at));
    loop {
        let next = poll_fn(|cx| match state::poll_delivery(id, cx) {
            Poll::Ready(d) => Poll::Ready(Some(d)),
            Poll::Pending => expired.as_mut().poll(cx).map(|()| None),
        })
        .await;
        let Some(next) = next else {
            let (code, reason) = TOKEN_EXPIRED;
            js::close(&ws, code.get(), reason);
            detach(id, code.get(), reason);
            break;
        };
        let sent = match next {
            None => break,
            Some(Delivery::Text(t)) => ws.send_with_str(&t),
            Some(Delivery::Binary(b)) => js::send_binary(&ws, &b),
            Some(Delivery::Close(c)) => {
                js::close(&ws, c.code, &c.reason);
                break;
            }
            // Sent away while the backend still holds its stream: the backend is told too.
            Some(Delivery::Refused { code, reason }) => {
                js::close(&ws, code, &reason);
                detach(id, code, &reason);
                break;
            }
            // The proxy ends the stream: the client gets a short reason and a reference to
            // the log line that holds the detail (as HTTP errors carry a request id).
            Some(Delivery::Aborted { code, reason, detail }) => {
                let rid = js::request_id();
                let line = Line::error(format!("stream {id} closed {code} {reason}: {detail}"));
                js::log(line.str("requestId", &rid).str("tenant", &tenant).num("closeCode", u64::from(code)));
                js::close(&ws, code, &format!("{reason} (ref {rid})"));
                break;
            }
            // A response on a WebSocket stream is a backend bug; end the stream clearly.
            Some(Delivery::Response(_) | Delivery::Fallback(_) | Delivery::Failed { .. }) => {
                js::close(&ws, 1011, "backend sent an HTTP response on a WebSocket stream");
                detach(id, 1011, "protocol error");
                break;
            }
        };
        if let Err(e) = sent {
            let why = js::describe(&e);
            let msg = format!("stream {id}: send to client failed: {why}");
            js::log(Line::error(msg.as_str()).str("tenant", &tenant));
            state::with(|s| s.mux.note_error(format!("tenant {tenant}: {msg}")));
            js::close(&ws, 1011, "send to client failed");
            detach(id, 1011, &why);
            break;
        }
    }
    state::with(|s| {
        s.stream_wakers.remove(&id);
        s.client_tasks.remove(&id);
    });
    drop(listeners);
    // Its client is gone: another holder takes the timer over, if it was this one's.
    state::settle(Here::Client(id), None);
}
