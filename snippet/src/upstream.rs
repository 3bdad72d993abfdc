//! The one upstream WebSocket per isolate, owned by the request context that opened it.
//! Only the owner's tasks and listeners touch the socket; everyone else queues frames in
//! the mux and wakes the owner's pump (DESIGN.md §2.3, §2.5).

use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

use mux_core::Upstream;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::executor;
use crate::js;
use crate::state::{self, OwnerKind};

/// Makes sure an upstream exists or is being opened. If none is, the *current* context
/// becomes its owner. Concurrent first requests share one attempt: the mux state is
/// `Connecting` from the first call on, so later callers only queue and wait.
///
/// While a failed upstream backs off, the first caller arms a retry timer in its own
/// context; when it fires, that context tries again (and becomes the owner).
pub fn ensure(kind: OwnerKind) {
    enum Next {
        Connect(u64, state::Backend),
        Retry(u64),
        Nothing,
    }
    let now = js::now();
    let next = state::with(|s| {
        if s.mux.can_connect(now) {
            s.mux.upstream_connecting();
            s.generation += 1;
            s.owner = kind;
            return Next::Connect(s.generation, s.backend.clone());
        }
        match s.mux.next_connect_at() {
            Some(at) if !s.retry_scheduled => {
                s.retry_scheduled = true;
                Next::Retry(at.saturating_sub(now))
            }
            _ => Next::Nothing,
        }
    });
    match next {
        Next::Connect(generation, backend) => executor::spawn(run_owner(generation, backend)),
        Next::Retry(delay) => executor::spawn(async move {
            js::sleep(delay as f64).await;
            state::with(|s| s.retry_scheduled = false);
            // Only if someone still needs the upstream: a stream is open.
            if state::with(|s| s.mux.open_streams() != (0, 0)) {
                ensure(kind);
            }
        }),
        Next::Nothing => state::flush(),
    }
}

/// Marks the upstream of `generation` down (if it is still the current one) and tells
/// every stream. Returns whether it was current.
fn down(generation: u64, why: &str) -> bool {
    let (current, pump) = state::with(|s| {
        if s.generation != generation || s.mux.upstream() == Upstream::Down {
            return (false, None);
        }
        s.mux.upstream_down(why, js::now());
        s.mux.count_error();
        s.owner = OwnerKind::None;
        s.last_error = Some(why.to_owned());
        (true, s.pump_waker.take())
    });
    if current {
        js::log_error(why);
    }
    state::flush();
    if let Some(pump) = pump {
        pump.wake();
    }
    current
}

/// Listeners on the upstream socket, removed when the owner task ends.
struct Listeners {
    ws: web_sys::WebSocket,
    on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
    on_close: Closure<dyn FnMut(web_sys::CloseEvent)>,
    on_error: Closure<dyn FnMut(web_sys::Event)>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        let t: &web_sys::EventTarget = self.ws.as_ref();
        let _ = t.remove_event_listener_with_callback("message", self.on_message.as_ref().unchecked_ref());
        let _ = t.remove_event_listener_with_callback("close", self.on_close.as_ref().unchecked_ref());
        let _ = t.remove_event_listener_with_callback("error", self.on_error.as_ref().unchecked_ref());
    }
}

fn listen(ws: &web_sys::WebSocket, generation: u64, closed: Rc<Cell<bool>>) -> Listeners {
    let on_message = Closure::new(move |e: web_sys::MessageEvent| {
        let (_, bytes) = js::message_data(&e);
        let (result, session_errors) = state::with(|s| {
            if s.generation != generation {
                return (Ok(()), Vec::new());
            }
            let result = s.mux.handle_upstream_message(&bytes, js::now());
            let errors = s.mux.take_session_errors();
            if let Some(last) = errors.last() {
                s.last_error = Some(last.clone());
            }
            (result, errors)
        });
        for e in &session_errors {
            js::log_error(e);
        }
        state::flush();
        if let Err(err) = result {
            // A malformed message poisons the whole session: nothing after it can be
            // trusted to be framed right. The pump closes the socket (1002).
            down(generation, &format!("malformed message from backend: {err}"));
        }
    });
    let closed_c = closed.clone();
    let on_close = Closure::new(move |e: web_sys::CloseEvent| {
        closed_c.set(true);
        down(generation, &format!("backend closed the connection ({} {})", e.code(), e.reason()));
    });
    let on_error = Closure::new(move |_e: web_sys::Event| {
        closed.set(true);
        down(generation, "upstream WebSocket error");
    });
    let t: &web_sys::EventTarget = ws.as_ref();
    let _ = t.add_event_listener_with_callback("message", on_message.as_ref().unchecked_ref());
    let _ = t.add_event_listener_with_callback("close", on_close.as_ref().unchecked_ref());
    let _ = t.add_event_listener_with_callback("error", on_error.as_ref().unchecked_ref());
    Listeners { ws: ws.clone(), on_message, on_close, on_error }
}

/// The owner task: connect, then send whatever the mux has queued until the upstream
/// goes down. Runs in (and only in) the owner's request context.
async fn run_owner(generation: u64, backend: state::Backend) {
    if backend.url.is_empty() {
        down(generation, "BACKEND_URL is not configured");
        return;
    }
    let ws = match js::connect_websocket(&backend.url, &backend.token).await {
        Ok(ws) => ws,
        Err(e) => {
            down(generation, &format!("cannot connect to backend: {e}"));
            return;
        }
    };
    let closed = Rc::new(Cell::new(false));
    let _listeners = listen(&ws, generation, closed.clone());
    let still_current = state::with(|s| {
        let current = s.generation == generation && s.mux.upstream() == Upstream::Connecting;
        if current {
            s.mux.upstream_up();
        }
        current
    });
    if !still_current {
        js::close(&ws, 1000, "superseded");
        return;
    }
    state::flush();
    loop {
        // Send everything queued, one batch per WebSocket message.
        while let Some(batch) =
            state::with(|s| if s.generation == generation { s.mux.poll_transmit(js::now()) } else { None })
        {
            if let Err(e) = js::send_binary(&ws, &batch) {
                // Includes "Cannot perform I/O on behalf of a different request": fatal
                // for this upstream (DESIGN.md §2.5).
                down(generation, &format!("send failed: {}", js::describe(&e)));
                js::close(&ws, 1011, "send failed");
                return;
            }
        }
        let alive = state::with(|s| s.generation == generation && s.mux.upstream() == Upstream::Up);
        if !alive || closed.get() {
            if !closed.get() {
                js::close(&ws, 1002, "session error");
            }
            return;
        }
        // Sleep until a producer (any context) wakes the pump.
        let mut registered = false;
        poll_fn(|cx| {
            if registered {
                return Poll::Ready(());
            }
            registered = true;
            let ready = state::with(|s| {
                let ready = s.mux.wants_transmit() || s.generation != generation || s.mux.upstream() != Upstream::Up;
                if !ready {
                    s.pump_waker = Some(cx.waker().clone());
                }
                ready
            });
            if ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}
