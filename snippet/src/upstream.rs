//! An upstream's pump, run in the context that opened it (its owner): only this task and
//! the socket's listeners touch the socket (RUNTIME.md §1, §4). Everyone else changes the
//! core, which wakes the pump; the pump asks the core what to send or whether to close.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use mux_core::{Here, Transmit, UpstreamId};
use wasm_bindgen::prelude::*;

use crate::js::{self, KeepAlive, Listeners};
use crate::state;

/// A sleep in this context.
type Timer = Pin<Box<dyn Future<Output = ()>>>;

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
    let on_message = Closure::new(move |e: web_sys::MessageEvent| {
        match js::message_data(&e, protocol::MAX_MESSAGE_BYTES) {
            Ok((_, bytes)) => state::with(|s| s.mux.handle_upstream_message(id, &bytes, js::now())),
            Err(n) => {
                let why = format!("backend sent {n} bytes, over the protocol's message limit");
                return lost(id, &why, here);
            }
        }
        state::settle(here, None);
    });
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

/// Upstream `id`'s pump: connect to `url`, then send whatever the core has for it until
/// the core closes it (handed over, evicted, a protocol error) or the socket is lost.
/// `keep_alive` holds an HTTP owner's context open for as long as the pump runs.
pub async fn pump(id: UpstreamId, url: String, token: String, here: Here, keep_alive: Option<KeepAlive>) {
    run(id, &url, &token, here).await;
    state::with(|s| {
        s.pump_tasks.remove(&id);
        s.pump_wakers.remove(&id);
        if s.timekeeper == Some(id) {
            s.timekeeper = None;
            s.timer = None;
        }
    });
    // Another pump takes the timer over, if it was ours.
    state::settle(here, None);
    drop(keep_alive);
}

async fn run(id: UpstreamId, url: &str, token: &str, here: Here) {
    let ws = match js::connect_websocket(url, token).await {
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
    // The timekeeper's sleep: until when, and the timer.
    let mut sleep: Option<(u64, Timer)> = None;
    loop {
        let next = poll_fn(|cx| loop {
            let (next, deadline) = state::with(|s| {
                let next = s.mux.poll_transmit(id, js::now());
                if next.is_none() && !closed.get() {
                    s.pump_wakers.insert(id, cx.waker().clone());
                }
                // One pump keeps the core's timer: its context lives as long as its socket.
                let keeper = *s.timekeeper.get_or_insert(id) == id;
                let deadline = if keeper { s.mux.poll_timeout() } else { None };
                if keeper {
                    s.timer = deadline.map(|at| (at, 0));
                }
                (next, deadline)
            });
            if next.is_some() || closed.get() {
                return Poll::Ready(next);
            }
            let Some(at) = deadline else {
                sleep = None;
                return Poll::Pending;
            };
            if sleep.as_ref().map(|(t, _)| *t) != Some(at) {
                let wait = at.saturating_sub(js::now()) as f64 + 1.0;
                sleep = Some((at, Box::pin(js::sleep(wait))));
            }
            let fired = sleep.as_mut().is_some_and(|(_, f)| f.as_mut().poll(cx).is_ready());
            if !fired {
                return Poll::Pending;
            }
            sleep = None;
            state::settle(here, None);
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
        }
        state::settle(here, None);
    }
}
