//! An upstream's pump, run in the context that opened it (its owner): only this task and
//! the socket's listeners touch the socket (RUNTIME.md §1, §4). Everyone else changes the
//! core, which wakes the pump; the pump asks the core what to send or whether to close.

use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use mux_core::keeper::Holder;
use mux_core::{Here, Transmit, UpstreamId};
use wasm_bindgen::prelude::*;

use crate::js::{self, KeepAlive, Listeners, Target};
use crate::state;

/// The socket is gone (closed, failed, never opened): the core tells every stream on it.
fn lost(id: UpstreamId, why: &str, here: Here) {
    let waker = state::with(|s| {
        s.mux.handle_upstream_closed(id, why, js::now());
        s.pump_wakers.remove(&id)
    });
    if let Some(w) = waker {
        w.wake();
    }
    state::settle(here, None);
}

fn listen(ws: &web_sys::WebSocket, id: UpstreamId, here: Here, closed: Rc<Cell<bool>>) -> Listeners {
    let on_message = Closure::new(move |e: web_sys::MessageEvent| js::turn(|| on_message(id, here, &e)));
    let closed_c = closed.clone();
    let on_close = Closure::new(move |e: web_sys::CloseEvent| {
        closed_c.set(true);
        lost(id, &format!("backend closed the connection ({} {})", e.code(), e.reason()), here);
    });
    let on_error = Closure::new(move |_e: web_sys::Event| {
        closed.set(true);
        lost(id, "upstream WebSocket error", here);
    });
    Listeners::attach(ws, on_message, on_close, on_error)
}

/// A message from the backend: a batch for the core to route, or the runtime's `pong`.
fn on_message(id: UpstreamId, here: Here, e: &web_sys::MessageEvent) {
    match js::message_data(e, protocol::MAX_MESSAGE_BYTES) {
        // Text: the runtime's `pong` to a probe (anything else is read as a batch).
        Ok((true, text)) => state::with(|s| s.mux.handle_upstream_text(id, &text, js::now())),
        Ok((false, bytes)) => state::with(|s| s.mux.handle_upstream_message(id, &bytes, js::now())),
        Err(n) => {
            let why = format!("backend sent {n} bytes, over the protocol's message limit");
            return lost(id, &why, here);
        }
    }
    state::settle(here, None);
}

/// Upstream `id`'s pump: connect to `target`, then send whatever the core has for it until
/// the core closes it (handed over, evicted, retired, a protocol error) or the socket is
/// lost. `keep_alive` holds an HTTP or scheduled owner's context open for as long as the
/// pump runs. The pump may hold the core's timer meanwhile (its context lives at least as
/// long as its connection).
pub async fn pump(id: UpstreamId, target: Target, token: String, owner: Here, keep_alive: Option<KeepAlive>) {
    // A bounded owner's context has done its own work by the time its pump's events
    // come: it keeps what it owns but may take on nothing new.
    let here = match owner {
        Here::Client(_) => owner,
        Here::Request | Here::Background | Here::Lingering => Here::Lingering,
    };
    state::holding(Holder::Pump(id), here, None, run(id, &target, &token, here)).await;
    state::with(|s| {
        s.pump_tasks.remove(&id);
        s.pump_wakers.remove(&id);
    });
    state::settle(here, None);
    drop(keep_alive);
}

async fn run(id: UpstreamId, target: &Target, token: &str, here: Here) {
    let ws = match js::connect_websocket(target, token).await {
        Ok(ws) => ws,
        Err(e) => return lost(id, &format!("cannot connect to backend: {e}"), here),
    };
    let closed = Rc::new(Cell::new(false));
    let _listeners = listen(&ws, id, here, closed.clone());
    if !state::with(|s| s.mux.handle_connected(id, js::now())) {
        js::close(&ws, 1000, "superseded");
        return;
    }
    state::settle(here, None);
    loop {
        let next = poll_fn(|cx| {
            state::with(|s| {
                let next = s.mux.poll_transmit(id, js::now());
                if next.is_some() || closed.get() {
                    return Poll::Ready(next);
                }
                s.pump_wakers.insert(id, cx.waker().clone());
                Poll::Pending
            })
        })
        .await;
        match next {
            None => return,
            Some(Transmit::Close { code, reason }) => {
                js::close(&ws, code, reason);
                return;
            }
            Some(Transmit::Message(batch)) => {
                if let Err(e) = js::send_binary(&ws, &batch) {
                    // Includes "Cannot perform I/O on behalf of a different request": fatal
                    // for this upstream (RUNTIME.md §1).
                    lost(id, &format!("send failed: {}", js::describe(&e)), here);
                    js::close(&ws, 1011, "send failed");
                    return;
                }
            }
            // A heartbeat, idle check or keep-warm ping, answered by the backend's runtime.
            Some(Transmit::Text(text)) => {
                if let Err(e) = ws.send_with_str(text) {
                    lost(id, &format!("send failed: {}", js::describe(&e)), here);
                    js::close(&ws, 1011, "send failed");
                    return;
                }
            }
        }
        state::settle(here, None);
    }
}
